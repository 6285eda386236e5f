"""
sft.py: step 0 (pretraining the base model) and step 1 (supervised fine-tuning).

InstructGPT, Section 3.5 "Models" (arXiv 2203.02155):
  - the starting point is GPT-3, pretrained on internet data. Here `--stage pretrain` trains a
    tiny GPT on the generated corpus of data.py (facts, sums, word games, stories, never the chat
    format): the base model continues text, it does not follow instructions;
  - "Supervised fine-tuning (SFT). We fine-tune GPT-3 on our labeler demonstrations using
    supervised learning." `--stage sft` trains on demonstrations in the chat format
    <|user|> prompt <|assistant|> response <|endoftext|>, with the loss on response tokens only,
    and measures the loss on prompts from held-out users (the split is by user id).

Run on CPU:
    python sft.py --stage pretrain --preset smoke --out-dir out/smoke
    python sft.py --stage sft --preset smoke --out-dir out/smoke          # --init defaults to pretrain.pt
    python sft.py --stage sft --init out/smoke/pretrain.pt --data demos.jsonl --out-dir out/mine
    python sft.py --stage pretrain --data my_text.txt --preset smoke --out-dir out/mine   # your own corpus
--data takes demonstrations ({"prompt","response"}, {"prompt","completion"}, Alpaca
{"instruction","input","output"}, chat {"messages": [...]}) or comparisons, whose best-ranked answer
demonstrates (HH-RLHF's chosen dialogues), as .jsonl, .jsonl.gz or a .json array (plumbing/formats.py).
With --stage pretrain it takes text (documents separated by blank lines, or {"text"} records): the
BPE and the base model learn your language or domain. --init also takes a local Hugging Face GPT-2
directory (its tokenizer files are read from the same directory). --pretrain-data gives SFT on your
own demonstrations a corpus to mix in (--ptx-coef) and to measure the pretraining loss on.
Ctrl-C saves OUT_DIR/<stage>.resume.pt; the same command with --resume continues to the same weights.
`torchrun --nproc_per_node N sft.py ...` runs data parallel (plumbing/ddp.py): each rank takes its rows of every
batch; --batch-size stays the global batch.

Where this departs from the paper:
  1. The base model is a few-million-parameter GPT pretrained here for minutes, not GPT-3.
  2. SFT's learning rate, epochs and dropout are chosen by the gold score of sampled answers to
     validation prompts (tools/sweep.py; the cpu preset runs 16 epochs, as the paper, without
     dropout: the paper used 0.2, which here lost gold and language); the paper chose its final
     SFT model by the RM's score on validation, we take the last epoch.
  3. ~2k simulated demonstrations on the cpu preset (paper: ~13k from labelers).
  4. Pretraining packs documents into fixed windows separated by EOS (GPT-3 did the same on
     300B tokens; here a few million).
  5. SFT mixes a pretraining batch's LM loss into every step (--ptx-coef, as PPO-ptx does in
     step 3; the paper's SFT does not). Without it, a model this small learns to end every
     sentence with EOS and its pretraining loss grows 5x; with it, the loss stays at the base
     model's and the validation gold score rises too.
"""

import os
import random
import time
from array import array
from dataclasses import asdict, dataclass, replace

import torch

import data
from gpt import GPT, GPTConfig, save_checkpoint
from world import gold_mean
from plumbing import ddp
from plumbing.checkpoint import lm_loss, load_any, load_start, respond
from plumbing.cli import UserError, arg, check_files, check_positive, ensure_out_dir, parse_config, run_cli
from plumbing.formats import demonstrations, read_records, read_texts, split_validation
from plumbing.loop import (MetricsLog, Resume, configure_optimizer, cosine_lr, descend, flops_per_token, gpu_peaks,
                           set_lr, setup, stop_on_signal)
from plumbing.plots import plot_losses
from plumbing.tokenizer import corpus_split, n_truncated, pack_pairs, pretrain_batch, train_tokenizer


@dataclass
class Config:
    stage: str = arg("sft", "pretrain (step 0: the base model) or sft (step 1: fine-tune on demonstrations)")
    preset: str = arg("cpu", "sizes and steps: smoke (CI, seconds), cpu (laptop, minutes), gpu")
    out_dir: str = arg("out/run", "run folder: checkpoints, JSONL data, metrics.jsonl, plots")
    init: str = arg("", "sft: checkpoint or GPT-2 directory to start from (default OUT_DIR/pretrain.pt)")
    data: str = arg("", "sft: demonstrations or comparisons (.jsonl, .jsonl.gz, .json) instead of the simulated "
                        "labelers; pretrain: your own text instead of the simulated corpus")
    pretrain_data: str = arg("", "sft with --data: text to mix in (--ptx-coef) and to measure the pretraining loss on")
    seed: int = arg(0, "seed for the world, the data order and the initialisation")
    # the model (pretrain only; sft keeps the model it starts from)
    n_layer: int = arg(4, "transformer blocks")
    n_head: int = arg(4, "attention heads")
    n_embd: int = arg(128, "width")
    block_size: int = arg(128, "longest sequence in tokens")
    vocab_size: int = arg(0, "BPE vocabulary, specials included (0: the preset's, data.PRESETS)")
    dropout: float = arg(0.0, "dropout (paper's SFT: residual dropout 0.2)")
    # optimisation
    batch_size: int = arg(32, "sequences per step")
    lr: float = arg(1e-3, "peak learning rate (cosine decay to 10%)")
    warmup: int = arg(50, "warmup steps")
    weight_decay: float = arg(0.1, "AdamW weight decay on matrices")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (after backward)")
    max_steps: int = arg(2000, "pretrain: optimisation steps")
    epochs: int = arg(4, "sft: passes over the demonstrations (paper: 16)")
    ptx_coef: float = arg(0.0, "sft: gamma times a pretraining batch's LM loss added to every step, as PPO-ptx does "
                               "in step 3 (not in the paper's SFT; keeps a tiny model's language)")
    ptx_batch: int = arg(8, "sft: pretraining windows per step when --ptx-coef > 0")
    eval_every: int = arg(200, "steps between validation losses and resumable checkpoints")
    eval_gold: int = arg(400, "sft: at the end, answer this many validation prompts (sampled and greedy) and report "
                              "their gold score and the pretraining loss: what tools/sweep.py chooses by")
    # engineering
    length_groups: int = arg(1, "sft: cut each batch into this many groups of similar length, each padded only to "
                                "its own longest row (the same loss, fewer positions; sft_loss)")
    compile: bool = arg(False, "torch.compile the model (CUDA)")
    device: str = arg("auto", "auto (cuda if available), cpu or cuda")
    resume: bool = arg(False, "continue from OUT_DIR/<stage>.resume.pt")
    quiet: bool = arg(False, "no per-step log lines")


PRESETS = {  # each overrides Config's defaults; flags given on the command line override both
    "smoke": dict(n_layer=3, n_head=4, n_embd=128, block_size=64, batch_size=32, max_steps=300,
                  lr=2e-3, warmup=20, epochs=8, ptx_coef=1.0, eval_every=100, eval_gold=40),
    # SFT's lr, epochs and ptx_coef: chosen on validation prompts by tools/sweep.py (docs/results.md)
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=32, max_steps=800,
                lr=3e-3, warmup=50, epochs=16, ptx_coef=1.0, eval_every=200, length_groups=4),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, max_steps=4000,
                lr=6e-4, warmup=100, epochs=6, ptx_coef=1.0, eval_every=500, dropout=0.1),
}


# -----------------------------------------------------------------------------
# The data of each stage, as token ids

def demo_pairs(tok, records, block_size=None):
    """Demonstrations -> (prompt ids in the chat format, response ids ending in EOS). With
    block_size, each keeps only what sft_batch can use (the prompt's last block_size + 1 ids, the
    response's first block_size + 2: its batches and n_truncated come out the same) in compact
    int32 arrays, so that 100k long records do not hold gigabytes of Python ints."""
    if block_size is None:
        return [(tok.chat_prompt(r["prompt"]), tok.chat_response(r["response"])) for r in records]
    keep = block_size + 1
    return [(array("i", tok.chat_prompt(r["prompt"])[-keep:]), array("i", tok.chat_response(r["response"])[:keep + 1]))
            for r in records]


def sft_batch(tok, pairs, block_size):  # exercise: SFT mask, Section 3.5
    """pairs: [(prompt_ids, response_ids)] with the response ending in eos_id. Returns x, y (B, T)
    right-padded with pad_id, y = x shifted by one with -1 on prompt and padding targets, and
    loss_mask (B, T) float = (y != -1): the loss is on response tokens only, EOS included.
    Too long: the prompt is cut from the left (then, if still too long, the response from the right)."""
    x, y, n_prompt = pack_pairs(tok, pairs, block_size)              # y: the next token, -1 on padding
    predicts_prompt = torch.arange(y.size(1))[None, :] < n_prompt[:, None] - 1  # (B, T): y is a prompt token
    y = y.masked_fill(predicts_prompt, -1)
    return x, y, (y != -1).float()


def sft_loss(model, x, y, groups=1):
    """Mean cross-entropy over the positions with a target: the response tokens of an sft_batch
    (-1 on prompt and padding, which the model's loss ignores). On pretraining windows, where every
    position has a target, the same call is step 0's language-modelling loss.

    groups > 1 is the fast path to the same loss: the rows sorted by length and cut into `groups`
    groups, each trimmed to its own longest row and weighted by its share of the targets, so short
    demonstrations stop paying for the batch's longest one's padding (about 64% of a cpu-preset SFT
    batch's positions). Only the order of the sums changes; a test holds the loss and its gradients
    equal to one pass."""
    if groups == 1:
        return model(x, y)[1]
    has_target = y != -1
    length = torch.where(has_target, torch.arange(1, y.size(1) + 1, device=y.device), 0).amax(1)  # last target + 1
    n = has_target.sum()
    if n == 0 or bool((length == y.size(1)).all()):  # nothing to trim (pretraining windows): one pass
        return model(x, y)[1]
    loss = 0.0
    for rows in length.argsort().chunk(groups):
        T, k = int(length[rows].max()), has_target[rows].sum()
        if k:
            loss = loss + model(x[rows, :T], y[rows, :T])[1] * (k / n)
    return loss


def epoch_batch(tok, pairs, batch_size, block_size, step, seed):
    """SFT's batch number `step`: epochs of the demonstrations, each in its own shuffled order
    (fixed by seed and epoch, so a resumed run sees the same batches). -> x, y (B, T)."""
    steps_per_epoch = (len(pairs) + batch_size - 1) // batch_size
    epoch, k = divmod(step, steps_per_epoch)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    x, y, _ = sft_batch(tok, [pairs[i] for i in order[k * batch_size:(k + 1) * batch_size].tolist()], block_size)
    return x, y


@torch.no_grad()
def response_loss(model, tok, pairs, batch_size, device, autocast):
    """The SFT loss on validation demonstrations: the mean over all their response tokens."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(pairs), batch_size):
        x, y, mask = sft_batch(tok, pairs[i:i + batch_size], model.config.block_size)
        with autocast():
            loss = model(x.to(device), y.to(device))[1].item()
        total, n = total + loss * mask.sum().item(), n + mask.sum().item()
    model.train()
    return total / max(n, 1)


def validation_metrics(model, tok, records, init_path, corpus_ids, seed, device):
    """What SFT's hyperparameters are chosen by (the paper chose its SFT checkpoint on validation):
    the gold score of answers to held-out users' validation prompts, sampled at temperature 1 (as
    RLHF samples and as the evaluation judges) and greedy, and the pretraining loss on held-out
    corpus text (`corpus_ids`) beside the starting model's (how much of its language SFT keeps)."""
    g = torch.Generator(device=device).manual_seed(ddp.seed(seed + 11))  # torchrun: a stream per rank
    prompts = [r["prompt"] for r in records]
    out = {**gold_mean(records, respond(model, tok, prompts, temperature=1.0, generator=g), "val_gold", per_prompt=True),
           **gold_mean(records, respond(model, tok, prompts), "val_gold_greedy")}
    out["pretrain_loss"] = lm_loss(model, corpus_ids, device)
    if init_path and not os.path.isdir(init_path):
        out["pretrain_loss_init"] = lm_loss(load_any(init_path, device)[0], corpus_ids, device)
    return out


def validate(cfg):
    if cfg.stage not in ("pretrain", "sft"):
        raise UserError(f"--stage must be pretrain or sft, got {cfg.stage}")
    check_positive(cfg, ("batch_size", "lr", "max_steps", "epochs", "eval_every", "block_size", "length_groups"))
    check_files(cfg, ("data", "pretrain_data"))
    if cfg.vocab_size and cfg.vocab_size < 260:
        raise UserError(f"--vocab-size must leave room for 256 bytes and 4 special tokens, got {cfg.vocab_size}")
    if cfg.ptx_coef < 0:
        raise UserError(f"--ptx-coef must be 0 or more, got {cfg.ptx_coef}")
    ensure_out_dir(cfg.out_dir)


# -----------------------------------------------------------------------------
# The two stages, each its data and model, then the one loop they share

def pretrain(cfg, device):
    """Step 0: a byte-level BPE and a GPT from scratch on the corpus (the simulated world's, or your
    own text with --data). -> model, tokenizer, its training windows and held-out ids, None (no
    starting checkpoint)."""
    world_files = cfg.out_dir if ddp.is_main() else None  # torchrun: rank 0 writes the world's JSONL
    corpus = read_texts(cfg.data) if cfg.data else data.build(cfg.preset, cfg.seed, world_files)["corpus"]
    tok = train_tokenizer("\n".join(corpus), cfg.vocab_size or data.PRESETS[cfg.preset]["vocab_size"])
    train_ids, val_ids = corpus_split(tok, corpus, cfg.block_size, f"--data {cfg.data}")
    model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=tok.vocab_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout)).to(device)
    print(f"pretrain: {len(corpus)} documents, {len(train_ids)} tokens, vocabulary {tok.vocab_size}, "
          f"model {model.num_params() / 1e6:.2f}M parameters")
    return model, tok, train_ids, val_ids


def demonstrations_of(cfg, tok, block_size):
    """Step 1's data: training demonstrations, validation ones (held-out users' prompts answered by
    training labelers), the corpus to mix in and to measure the pretraining loss on (ids, or None),
    and cfg (its ptx_coef 0 when your --data comes without --pretrain-data)."""
    ptx_ids = corpus_val_ids = None
    if cfg.data:
        train_recs, val_recs = split_validation(demonstrations(*read_records(cfg.data)), cfg.seed, cfg.data)
        if cfg.pretrain_data:
            ptx_ids, corpus_val_ids = corpus_split(tok, read_texts(cfg.pretrain_data), block_size,
                                                   f"--pretrain-data {cfg.pretrain_data}")
        elif cfg.ptx_coef:  # the mix reads a corpus, which your demonstrations do not come with
            print(f"sft: --data {cfg.data} without --pretrain-data: no corpus to mix in, so --ptx-coef "
                  f"{cfg.ptx_coef} is not used")
            cfg = replace(cfg, ptx_coef=0.0)
        return train_recs, val_recs, ptx_ids, corpus_val_ids, cfg
    world = data.build(cfg.preset, cfg.seed)
    ptx_ids, corpus_val_ids = corpus_split(tok, world["corpus"], block_size)
    rng = random.Random(cfg.seed + 1)  # held-out users' prompts, answered by training labelers
    writers = [l for l in world["labelers"] if not l.heldout]
    val_recs = [{"prompt": r["prompt"], "task": r["task"],
                 "response": rng.choice(writers).write_demonstration(r["task"], rng)} for r in world["val"]]
    return world["sft"], val_recs, ptx_ids, corpus_val_ids, cfg


def train(cfg, model, steps, get_batch, val_loss, ptx_ids, device, autocast, resume):
    """The loop both stages share: cosine learning rate; every eval_every steps the validation loss
    and a resumable state; the loss on this step's batch (+ gamma * a pretraining batch's LM loss,
    SFT's mix); one optimizer step. -> [(step, validation loss)] of every evaluation."""
    raw_model, log = model, resume.log
    optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay, device_type=device.type)
    step, val_history = 0, []

    def resumable():
        return dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(), step=step, val_history=val_history)

    if cfg.resume:
        state = resume.load(device)
        step, val_history = resume.restore(state, model=model, optimizer=optimizer), [tuple(v) for v in state["val_history"]]
        print(f"resumed {cfg.stage} at step {step}")
    model = ddp.wrap(torch.compile(model) if cfg.compile else model)  # DDP: backward averages gradients over ranks
    model.train()
    with stop_on_signal() as stop:
        while step < steps:
            resume.stop_if_asked(stop, f"step {step}", resumable)  # Ctrl-C / SIGTERM: save and leave
            lr = set_lr(optimizer, cosine_lr(step, steps, cfg.lr, cfg.warmup))
            if step % cfg.eval_every == 0 and not (val_history and val_history[-1][0] == step):
                val_history.append((step, val_loss()))
                log.log(step, val_loss=val_history[-1][1])
                resume.save(**resumable())
            t0 = time.time()
            x, y = get_batch(step)
            rows, n_rows = ddp.part(len(x))  # DDP: this rank's rows of the batch (one process: all)
            x, y = x[rows].to(device), y[rows].to(device)
            w = ddp.weight((y != -1).sum() if n_rows else 0)  # DDP: its share of the tokens (1 on one process)
            with autocast():
                loss = sft_loss(model, x, y, cfg.length_groups)
                total, ptx_loss = loss * w, None
                if ptx_ids is not None and cfg.ptx_coef:  # SFT's mix: the corpus's LM loss beside the demonstrations'
                    xp, yp = pretrain_batch(ptx_ids, cfg.ptx_batch, raw_model.config.block_size, step, cfg.seed + 7)
                    ptx_loss = sft_loss(model, ddp.share(xp).to(device), ddp.share(yp).to(device))
                    total = total + cfg.ptx_coef * ptx_loss
            norm = descend(optimizer, total, model.parameters(), cfg.grad_clip,
                           f"{cfg.stage}: the loss is not finite at step {step}; last good checkpoint kept")
            if step % 10 == 0 or step == steps - 1:
                log.log(step, **step_fields(cfg, raw_model, loss, w, ptx_loss, lr, norm, x, y, n_rows, t0, device))
            step += 1
    if not val_history or val_history[-1][0] != step:
        val_history.append((step, val_loss()))
        log.log(step, val_loss=val_history[-1][1])
    return val_history


def step_fields(cfg, model, loss, w, ptx_loss, lr, norm, x, y, n_rows, t0, device):
    """Bookkeeping: one log line's figures, the whole batch's under torchrun (ddp.mean and ddp.total
    reduce over ranks; on one process they hand back what they are given)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0
    tokens = int((y != -1).sum()) if cfg.stage == "sft" else y.numel()
    fields = dict(loss=ddp.mean(loss.item() * w), lr=lr, grad_norm=float(norm),
                  tok_per_s=round(ddp.total(x.numel() * (n_rows > 0)) / dt))
    if device.type == "cuda":
        flops = flops_per_token(model.config, model.config.block_size)
        fields["mfu"] = round(flops * x.numel() / dt / gpu_peaks(device)[0], 4)
    fields["train_tokens"] = int(ddp.total(tokens * (n_rows > 0)))
    if ptx_loss is not None:
        fields["ptx_loss"] = ddp.mean(ptx_loss.item())
    return {**fields, **ddp.rank_losses(loss.item(), n_rows)}  # DDP: each rank's loss on its own rows


def main(cfg=None):
    cfg = cfg or parse_config(Config, presets=PRESETS, description=__doc__)
    validate(cfg)
    device, autocast = setup(cfg.device, cfg.seed)
    ddp.check_divides({"--batch-size": cfg.batch_size, "--ptx-batch": cfg.ptx_batch if cfg.ptx_coef else 0})
    ddp.announce(cfg.stage)
    log, t_start = MetricsLog(cfg.out_dir, cfg.stage, cfg.quiet, cfg.resume), time.time()

    # 1) the data and the model: step 0 from scratch on the corpus, step 1 from step 0's model
    if cfg.stage == "pretrain":
        model, tok, train_ids, val_ids = pretrain(cfg, device)
        steps, ptx_ids, init_path = cfg.max_steps, None, None

        def get_batch(step):  # random windows of the corpus
            return pretrain_batch(train_ids, cfg.batch_size, model.config.block_size, step, cfg.seed)

        def val_loss():  # held-out corpus text
            return lm_loss(model, val_ids, device, autocast)
    else:
        model, tok, init_path = load_start(cfg, device)
        block = model.config.block_size
        train_recs, val_recs, ptx_ids, corpus_val_ids, cfg = demonstrations_of(cfg, tok, block)
        train_pairs, val_pairs = demo_pairs(tok, train_recs, block), demo_pairs(tok, val_recs, block)
        print(f"sft: {len(train_pairs)} demonstrations ({n_truncated(train_pairs, block)} cut to block_size {block}), "
              f"{len(val_pairs)} validation, from {init_path}")
        steps = cfg.epochs * ((len(train_pairs) + cfg.batch_size - 1) // cfg.batch_size)

        def get_batch(step):  # epochs of the demonstrations
            return epoch_batch(tok, train_pairs, cfg.batch_size, block, step, cfg.seed)

        def val_loss():  # held-out users' demonstrations, their response tokens
            return response_loss(model, tok, val_pairs, cfg.batch_size, device, autocast)

    # 2) the loop
    resume = Resume(cfg.out_dir, cfg.stage, cfg, log, t_start)
    val_history = train(cfg, model, steps, get_batch, val_loss, ptx_ids, device, autocast, resume)

    # 3) the end: what SFT's settings are chosen by, the checkpoint
    v = val_history[-1][1]
    metrics = {"val_loss": v, "first_val_loss": val_history[0][1], "steps": steps, "seconds": resume.seconds()}
    if cfg.stage == "sft" and cfg.eval_gold and not cfg.data:
        metrics.update(validation_metrics(model, tok, val_recs[:cfg.eval_gold], init_path, corpus_val_ids, cfg.seed,
                                          device))
        print(f"sft: on {min(len(val_recs), cfg.eval_gold)} validation prompts, gold score sampled "
              f"{metrics['val_gold']:+.3f}, greedy {metrics['val_gold_greedy']:+.3f}; pretraining loss "
              f"{metrics['pretrain_loss']:.3f} (the model it started from: {metrics.get('pretrain_loss_init', float('nan')):.3f})")
    elif cfg.stage == "sft" and cfg.pretrain_data:  # your own corpus: the "alignment tax" of your SFT
        metrics.update(pretrain_loss=lm_loss(model, corpus_val_ids, device),
                       pretrain_loss_init=lm_loss(load_any(init_path, device)[0], corpus_val_ids, device))
        print(f"sft: pretraining loss on held-out --pretrain-data text {metrics['pretrain_loss_init']:.3f} before, "
              f"{metrics['pretrain_loss']:.3f} after")
    if ddp.is_main():  # DDP: rank 0 writes
        save_checkpoint(os.path.join(cfg.out_dir, f"{cfg.stage}.pt"), model, stage=cfg.stage,
                        tokenizer=tok.state(), config=asdict(cfg), metrics=metrics, world_size=ddp.world())
        plot_losses(cfg.out_dir, cfg.stage)
    resume.done()
    print(f"{cfg.stage}: done in {metrics['seconds']:.0f}s, val loss {val_history[0][1]:.3f} -> {v:.3f}; "
          f"wrote {os.path.join(cfg.out_dir, cfg.stage + '.pt')}")
    return metrics


if __name__ == "__main__":
    run_cli(main)

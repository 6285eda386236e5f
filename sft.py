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
Any JSONL of demonstrations works with --data: {"prompt","response"}, {"prompt","completion"},
Alpaca {"instruction","input","output"} or chat {"messages": [...]}. --init also takes a local
Hugging Face GPT-2 directory (its tokenizer files are read from the same directory).
Ctrl-C saves OUT_DIR/<stage>.resume.pt; the same command with --resume continues to the same weights.

Where this departs from the paper:
  1. The base model is a few-million-parameter GPT pretrained here for minutes, not GPT-3.
  2. SFT runs a few epochs (paper: 16 epochs, cosine lr decay, residual dropout 0.2; it chose the
     final SFT model by the reward model's score on validation, we take the last epoch).
  3. ~2k simulated demonstrations on the cpu preset (paper: ~13k from labelers).
  4. Pretraining packs documents into fixed windows separated by EOS (GPT-3 did the same on
     300B tokens; here a few million).
"""

import contextlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass

import torch

import data
from gpt import (GPT, GPTConfig, MetricsLog, Resume, UserError, arg, check_positive, configure_optimizer,
    cosine_lr, ensure_out_dir, flops_per_token, gpu_peaks, load_any, parse_config, resize_vocab, run_cli,
    save_checkpoint, setup, stop_on_signal)


@dataclass
class Config:
    stage: str = arg("sft", "pretrain (step 0: the base model) or sft (step 1: fine-tune on demonstrations)")
    preset: str = arg("cpu", "sizes and steps: smoke (CI, seconds), cpu (laptop, minutes), gpu")
    out_dir: str = arg("out/run", "run folder: checkpoints, JSONL data, metrics.jsonl, plots")
    init: str = arg("", "sft: checkpoint or GPT-2 directory to start from (default OUT_DIR/pretrain.pt)")
    data: str = arg("", "sft: a JSONL file of demonstrations instead of the simulated labelers")
    seed: int = arg(0, "seed for the world, the data order and the initialisation")
    device: str = arg("auto", "auto (cuda if available), cpu or cuda")
    # the model (pretrain only; sft keeps the model it starts from)
    n_layer: int = arg(4, "transformer blocks")
    n_head: int = arg(4, "attention heads")
    n_embd: int = arg(128, "width")
    block_size: int = arg(128, "longest sequence in tokens")
    dropout: float = arg(0.0, "dropout (paper's SFT: residual dropout 0.2)")
    # optimisation
    batch_size: int = arg(32, "sequences per step")
    lr: float = arg(1e-3, "peak learning rate (cosine decay to 10%)")
    warmup: int = arg(50, "warmup steps")
    weight_decay: float = arg(0.1, "AdamW weight decay on matrices")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (after backward)")
    max_steps: int = arg(2000, "pretrain: optimisation steps")
    epochs: int = arg(4, "sft: passes over the demonstrations (paper: 16)")
    eval_every: int = arg(200, "steps between validation losses and resumable checkpoints")
    eval_gold: int = arg(100, "sft: at the end, answer this many validation prompts greedily and report the gold score")
    compile: bool = arg(False, "torch.compile the model (CUDA)")
    resume: bool = arg(False, "continue from OUT_DIR/<stage>.resume.pt")
    quiet: bool = arg(False, "no per-step log lines")


PRESETS = {  # each overrides Config's defaults; flags given on the command line override both
    "smoke": dict(n_layer=3, n_head=4, n_embd=128, block_size=64, batch_size=32, max_steps=300,
                  lr=2e-3, warmup=20, epochs=8, eval_every=100, eval_gold=40),
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=32, max_steps=800,
                lr=1e-3, warmup=50, epochs=8, eval_every=200),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, max_steps=4000,
                lr=6e-4, warmup=100, epochs=6, eval_every=500, dropout=0.1),
}


# -----------------------------------------------------------------------------
# The data of each stage, as token ids

def pretrain_stream(tok, corpus):
    """All documents as one stream of ids, each followed by EOS (how GPT-2/3 pack their data)."""
    ids = []
    for doc in corpus:
        ids += tok.encode(doc) + [tok.eos_id]
    return torch.tensor(ids, dtype=torch.long)


def pretrain_batch(stream, batch_size, block_size, step, seed):
    """Random windows of the stream. The windows depend only on (seed, step), so a resumed run
    sees the same batches as an uninterrupted one."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    start = torch.randint(0, len(stream) - block_size - 1, (batch_size,), generator=g)
    x = torch.stack([stream[s:s + block_size] for s in start.tolist()])
    y = torch.stack([stream[s + 1:s + block_size + 1] for s in start.tolist()])
    return x, y


@torch.no_grad()
def lm_loss(model, ids, device, autocast=None, max_windows=200):
    """Mean next-token loss over consecutive block_size windows of a token stream: the
    pretraining loss, also the "alignment tax" of RLHF when measured on held-out corpus text."""
    was_training = model.training
    model.eval()
    T = model.config.block_size
    starts = list(range(0, len(ids) - T - 1, T))[:max_windows]
    total = 0.0
    for i in range(0, len(starts), 16):
        x = torch.stack([ids[s:s + T] for s in starts[i:i + 16]]).to(device)
        y = torch.stack([ids[s + 1:s + T + 1] for s in starts[i:i + 16]]).to(device)
        with (autocast or contextlib.nullcontext)():
            total += model(x, y)[1].item() * len(x)
    model.train(was_training)
    return total / max(1, len(starts))


def corpus_split(tok, corpus, block_size):
    """The corpus as (train ids, validation ids): the last 5% is never trained on."""
    stream = pretrain_stream(tok, corpus)
    n_val = max(len(stream) // 20, block_size * 4)
    return stream[:-n_val], stream[-n_val:]


def demo_pairs(tok, records):
    """Demonstrations -> (prompt ids in the chat format, response ids ending in EOS)."""
    return [(tok.chat_prompt(r["prompt"]), tok.chat_response(r["response"])) for r in records]


def sft_loss(model, x, y):
    """Mean cross-entropy over response tokens: y is -1 on prompt and padding positions
    (data.sft_batch), which the model's loss ignores."""
    return model(x, y)[1]


# -----------------------------------------------------------------------------
# Answering prompts: what every later step and the evaluation use

@torch.no_grad()
def respond(model, tok, prompts, mode="chat", max_new_tokens=48, temperature=0.0, batch_size=64,
            generator=None, examples=None):
    """Answer each prompt. mode "chat": the SFT format, the answer ends at EOS. mode "base" /
    "fewshot": the plain text a pretrained model continues (data.base_prompt, or with
    `examples` Q/A pairs first); the answer ends at EOS or at the first newline, as an API's
    stop sequence would end it. Returns the answer strings."""
    device = next(model.parameters()).device
    answers = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        if mode == "chat":
            ids = [tok.chat_prompt(p) for p in chunk]
        else:
            text = [data.base_prompt(p) if mode == "base" else data.fewshot_prompt(p, examples) for p in chunk]
            ids = [tok.encode(t) for t in text]
        idx, mask, _ = data.left_pad(ids, tok.pad_id, max_len=model.config.block_size - max_new_tokens)
        out = model.generate(idx.to(device), max_new_tokens, attention_mask=mask.to(device),
                             temperature=temperature, eos_id=tok.eos_id, pad_id=tok.pad_id, generator=generator,
                             suppress_ids=tok.never_sampled)
        T = idx.size(1)
        for row, rmask in zip(out.tokens[:, T:].tolist(), out.response_mask.tolist()):
            row = [t for t, m in zip(row, rmask) if m and t != tok.eos_id]
            text = tok.decode(row)
            answers.append(text.split("\n")[0].strip() if mode != "chat" else text.strip())
    return answers


def gold_eval(model, tok, records, mode="chat", **kw):
    """Mean gold-rubric score (data.gold_score "total") of greedy answers to simulated prompts."""
    answers = respond(model, tok, [r["prompt"] for r in records], mode, **kw)
    scores = [data.gold_score(r["task"], a)["total"] for r, a in zip(records, answers)]
    return sum(scores) / max(1, len(scores)), answers


# -----------------------------------------------------------------------------

def load_language_model(path, device="cpu"):
    """A checkpoint of this project (pretrain, sft, ppo) or a local GPT-2 directory -> (model,
    tokenizer, stage). SFT, PPO and chat.py all start from here; a reward model, a checkpoint
    without a tokenizer or a vocabulary that does not fit is a one-line error."""
    model, ckpt = load_any(path, device)
    if os.path.isdir(path):
        tok, stage = data.gpt2_tokenizer(path), "pretrain"
        resize_vocab(model, tok.vocab_size)  # room for <|pad|>, <|user|>, <|assistant|>
    elif ckpt.get("stage") == "reward":
        raise UserError(f"{path}: a reward-model checkpoint; a language model (pretrain, sft or ppo) is needed here")
    elif "tokenizer" not in ckpt:
        raise UserError(f"{path}: checkpoint has no tokenizer")
    else:
        tok, stage = data.Tokenizer.from_state(ckpt["tokenizer"]), ckpt.get("stage", "sft")
    if model.config.vocab_size < tok.vocab_size:
        raise UserError(f"{path}: model vocabulary {model.config.vocab_size} is smaller than its tokenizer's {tok.vocab_size}")
    return model.to(device), tok, stage


def load_start(cfg, device, default="pretrain.pt"):
    """The model and tokenizer a stage starts from: --init, else OUT_DIR/<default>."""
    path = cfg.init or os.path.join(cfg.out_dir, default)
    if not cfg.init and not os.path.exists(path):
        raise UserError(f"{path}: no such checkpoint; run the stage before this one first or pass --init")
    model, tok, _ = load_language_model(path, device)
    model.set_dropout(cfg.dropout)
    return model, tok, path


def validate(cfg):
    if cfg.stage not in ("pretrain", "sft"):
        raise UserError(f"--stage must be pretrain or sft, got {cfg.stage}")
    check_positive(cfg, ("batch_size", "lr", "max_steps", "epochs", "eval_every", "block_size"))
    if cfg.data and not os.path.isfile(cfg.data):
        raise UserError(f"--data {cfg.data}: no such file")
    ensure_out_dir(cfg.out_dir)


def main(cfg=None):
    cfg = cfg or parse_config(Config, presets=PRESETS, description=__doc__)
    validate(cfg)
    device, autocast = setup(cfg.device, cfg.seed)
    log = MetricsLog(cfg.out_dir, cfg.stage, cfg.quiet, cfg.resume)
    t_start = time.time()

    # ---- the data and the model
    if cfg.stage == "pretrain":
        world = data.build(cfg.preset, cfg.seed, cfg.out_dir)
        tok = data.train_tokenizer("\n".join(world["corpus"]), data.PRESETS[cfg.preset]["vocab_size"])
        train_ids, val_ids = corpus_split(tok, world["corpus"], cfg.block_size)
        model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=tok.vocab_size, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout)).to(device)
        steps = cfg.max_steps
        print(f"pretrain: {len(world['corpus'])} documents, {len(train_ids)} tokens, vocabulary {tok.vocab_size}, "
              f"model {model.num_params() / 1e6:.2f}M parameters")
        init_path = None
    else:
        model, tok, init_path = load_start(cfg, device)
        if cfg.data:
            kind, records = data.read_jsonl(cfg.data)
            if kind != "sft":
                raise UserError(f"--data {cfg.data}: holds {kind} records; sft.py needs demonstrations")
            train_recs, val_recs = data.split_validation(records, cfg.seed, cfg.data)
        else:
            world = data.build(cfg.preset, cfg.seed)
            train_recs = world["sft"]
            rng = random.Random(cfg.seed + 1)  # held-out users' prompts, answered by training labelers
            writers = [l for l in world["labelers"] if not l.heldout]
            val_recs = [{"prompt": r["prompt"], "task": r["task"],
                         "response": rng.choice(writers).write_demonstration(r["task"], rng)} for r in world["val"]]
        train_pairs, val_pairs = demo_pairs(tok, train_recs), demo_pairs(tok, val_recs)
        cut = data.n_truncated(train_pairs, model.config.block_size)
        print(f"sft: {len(train_pairs)} demonstrations ({cut} cut to block_size {model.config.block_size}), "
              f"{len(val_pairs)} validation, from {init_path}")
        steps_per_epoch = (len(train_pairs) + cfg.batch_size - 1) // cfg.batch_size
        steps = cfg.epochs * steps_per_epoch

    def get_batch(step):
        if cfg.stage == "pretrain":
            return pretrain_batch(train_ids, cfg.batch_size, model.config.block_size, step, cfg.seed)
        epoch, k = divmod(step, steps_per_epoch)
        order = torch.randperm(len(train_pairs), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        chosen = [train_pairs[i] for i in order[k * cfg.batch_size:(k + 1) * cfg.batch_size].tolist()]
        x, y, _ = data.sft_batch(tok, chosen, model.config.block_size)
        return x, y

    @torch.no_grad()
    def val_loss():
        if cfg.stage == "pretrain":
            return lm_loss(raw_model, val_ids, device, autocast)
        model.eval()
        total, n = 0.0, 0
        for i in range(0, len(val_pairs), cfg.batch_size):  # mean over response tokens
            x, y, mask = data.sft_batch(tok, val_pairs[i:i + cfg.batch_size], model.config.block_size)
            with autocast():
                loss = model(x.to(device), y.to(device))[1].item()
            total, n = total + loss * mask.sum().item(), n + mask.sum().item()
        model.train()
        return total / max(n, 1)

    raw_model = model
    optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay, device_type=device.type)
    resume = Resume(cfg.out_dir, cfg.stage, cfg, log, t_start)
    step, val_history = 0, []  # val_history: (step, validation loss) of every evaluation so far
    if cfg.resume:
        state = resume.load(device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, val_history = state["step"], [tuple(v) for v in state["val_history"]]
        resume.restore_rng(state)
        print(f"resumed {cfg.stage} at step {step}")
    if cfg.compile:
        model = torch.compile(model)

    def resumable():
        return dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(), step=step,
                    val_history=val_history)

    # ---- the loop: lr, eval and checkpoint, forward/backward, one log line
    model.train()
    flops = flops_per_token(raw_model.config, raw_model.config.block_size)
    with stop_on_signal() as stop:
        while step < steps:
            if stop.requested:  # Ctrl-C / SIGTERM: the step in hand is finished; save, leave
                resume.interrupted(f"step {step}", **resumable())
            lr = cosine_lr(step, steps, cfg.lr, cfg.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if step % cfg.eval_every == 0 and not (val_history and val_history[-1][0] == step):
                v = val_loss()
                val_history.append((step, v))
                log.log(step, val_loss=v)
                resume.save(**resumable())
            t0 = time.time()
            x, y = get_batch(step)
            x, y = x.to(device), y.to(device)
            with autocast():
                _, loss = model(x, y)
            if not torch.isfinite(loss):
                raise UserError(f"{cfg.stage}: loss is {loss.item()} at step {step}; last good checkpoint kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)  # after backward
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.time() - t0
            tokens = int((y != -1).sum()) if cfg.stage == "sft" else y.numel()
            fields = dict(loss=loss.item(), lr=lr, grad_norm=float(norm), tok_per_s=round(x.numel() / dt))
            if device.type == "cuda":
                fields["mfu"] = round(flops * x.numel() / dt / gpu_peaks(device)[0], 4)
            fields["train_tokens"] = tokens
            if step % 10 == 0 or step == steps - 1:
                log.log(step, **fields)
            step += 1

    # ---- the end: validation, the checkpoint, an example or two
    if not val_history or val_history[-1][0] != step:
        val_history.append((step, val_loss()))
        log.log(step, val_loss=val_history[-1][1])
    v = val_history[-1][1]
    metrics = {"val_loss": v, "first_val_loss": val_history[0][1], "steps": steps,
               "seconds": resume.seconds()}
    if cfg.stage == "sft" and cfg.eval_gold and not cfg.data:
        recs = [r for r in val_recs if "task" in r][:cfg.eval_gold]
        metrics["gold_score"], answers = gold_eval(raw_model, tok, recs)
        msg = f"sft: gold score on {len(recs)} validation prompts {metrics['gold_score']:+.3f}"
        if init_path and not os.path.isdir(init_path):
            base, _ = load_any(init_path, device)
            metrics["gold_score_init"], _ = gold_eval(base, tok, recs, mode="base")
            msg += f" (the model it started from, prompted as a base model: {metrics['gold_score_init']:+.3f})"
        print(msg)
        for r, a in list(zip(recs, answers))[:3]:
            print(f"  {r['prompt']!r} -> {a!r}")
    save_checkpoint(os.path.join(cfg.out_dir, f"{cfg.stage}.pt"), raw_model, stage=cfg.stage,
                    tokenizer=tok.state(), config=asdict(cfg), metrics=metrics)
    resume.done()
    plot_losses(cfg.out_dir, cfg.stage)
    print(f"{cfg.stage}: done in {metrics['seconds']:.0f}s, val loss {val_history[0][1]:.3f} -> {v:.3f}; "
          f"wrote {os.path.join(cfg.out_dir, cfg.stage + '.pt')}")
    return metrics


def plot_losses(out_dir, stage):
    """<stage>_loss.png: training and validation loss against step, from metrics.jsonl."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]
    rows = [r for r in rows if r["stage"] == stage]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("loss", "val_loss"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), label=key, marker="o" if key == "val_loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"{stage}: loss" + (" on response tokens" if stage == "sft" else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{stage}_loss.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    run_cli(main)

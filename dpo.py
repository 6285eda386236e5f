"""
dpo.py: Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) beside step 3: the
policy learns from step 2's rankings directly, with no reward model and no sampling.

DPO's observation (its Section 4): for the objective PPO maximizes, InstructGPT's eq. 2 without the
pretraining term, max E[r(x,y)] - beta KL(pi || pi_SFT), the best policy is
pi*(y|x) = pi_SFT(y|x) exp(r(x,y) / beta) / Z(x). So any policy defines an implicit reward
    r(x, y) = beta * log(pi(y|x) / pi_SFT(y|x))   (+ beta log Z(x), the same for every answer to x),
and a preference loss on that reward trains the policy itself. Its eq. 7, for a pair y_w > y_l:
    loss = -log sigmoid( beta * (log pi(y_w) - log pi_SFT(y_w)) - beta * (log pi(y_l) - log pi_SFT(y_l)) )
with log pi(y|x) summed over the answer's tokens (the one response mask SFT trains with). This is
InstructGPT's eq. 1 with the implicit reward in place of the reward model's.

A ranking of K answers is used as eq. 1 uses it: all C(K,2) pairs of one prompt in one batch
element, weighted 1/C(K,2), so that a prompt's many correlated pairs count as one data point
(InstructGPT Section 3.5). The DPO paper's Appendix A.3 gives another form for rankings, the
Plackett-Luce likelihood -sum_k log( exp(r_k) / sum_{j>=k} exp(r_j) ) over the answers in ranked
order. That one is the likelihood of the whole ranking; the pairwise form treats the ranking's
pairs as independent Bradley-Terry comparisons (a composite likelihood). For K = 2 they are the
same loss. The pairwise form is kept here because the reward model is trained with it: DPO and RM + PPO
then learn from the same rankings through the same likelihood, and differ only in how the policy
is made from it.

Run on CPU (after sft.py and reward.py, whose rankings it reads: OUT_DIR/comparisons_reward.jsonl):
    python dpo.py --preset smoke --out-dir out/smoke
    python dpo.py --preset smoke --out-dir out/smoke --beta 0.3 --name dpo_beta0.3
    python dpo.py --init out/mine/sft.pt --data pairs.jsonl --out-dir out/mine     # your comparisons
Ctrl-C saves OUT_DIR/<name>.resume.pt; the same command with --resume continues to the same weights.

Where this departs from the DPO paper:
  1. Rankings of K = 4..9 answers, all C(K,2) pairs weighted 1/C(K,2), not single pairs (above).
  2. The rankings are of SFT's samples, as the RM's are; the DPO paper also samples from the
     reference model when it can ("preferred-FT" data otherwise).
  3. beta and the learning rate are to be chosen by the gold score of answers to validation
     prompts (`tools/sweep.py dpo`), as SFT's settings are; the paper used beta 0.1 and 0.5.
  4. Tiny models, a few thousand rankings, a few minutes on a CPU.
"""

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

import data
from gpt import save_checkpoint
from world import gold_mean
from plumbing import ddp
from plumbing.checkpoint import load_language_model, respond
from plumbing.cli import UserError, arg, check_files, check_positive, ensure_out_dir, parse_config, run_cli
from plumbing.formats import n_pairs, read_records, split_validation
from plumbing.loop import (MetricsLog, Resume, configure_optimizer, cosine_lr, descend, epoch_rows, set_lr, setup,
                           stop_on_signal)
from plumbing.tokenizer import pack_pairs


@dataclass
class Config:
    preset: str = arg("cpu", "sizes: smoke, cpu or gpu")
    out_dir: str = arg("out/run", "run folder")
    init: str = arg("", "the policy's start and the frozen reference (default OUT_DIR/sft.pt)")
    data: str = arg("", "rankings or pairwise comparisons (default OUT_DIR/comparisons_reward.jsonl: step 2's)")
    heldout: str = arg("", "held-out rankings for the accuracy (default, without --data: step 2's "
                           "OUT_DIR/comparisons_heldout_reward.jsonl; else 5 percent of --data)")
    name: str = arg("dpo", "output name: OUT_DIR/<name>.pt")
    seed: int = arg(0, "seed")
    # the method's knobs
    beta: float = arg(0.1, "beta: the KL coefficient the implicit reward is measured in (DPO paper: 0.1, 0.5)")
    lr: float = arg(1e-5, "peak learning rate, cosine decay (DPO paper: 1e-6 for billions of parameters)")
    epochs: int = arg(1, "passes over the rankings")
    batch_size: int = arg(16, "prompts per step, each with all its ranked answers")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    grad_clip: float = arg(1.0, "gradient-norm clip, after backward")
    n_val: int = arg(200, "the simulated world's validation prompts whose answers' gold score is reported, the "
                          "policy's and SFT's (0: none, e.g. for your own data)")
    # engineering
    device: str = arg("auto", "auto, cpu or cuda")
    resume: bool = arg(False, "continue an interrupted run from OUT_DIR/<name>.resume.pt")
    quiet: bool = arg(False, "no per-step log lines")


PRESETS = {  # batch sizes and epochs: the RM's (reward.py); beta and lr: see each line
    "smoke": dict(batch_size=8, lr=1e-4, beta=0.1, epochs=2, n_val=40),  # the DPO paper's beta, not swept
    # chosen on validation gold by tools/sweep.py dpo (docs/results.md): beta 0.03..1, lr 1e-5..1e-3
    "cpu": dict(batch_size=16, lr=3e-4, beta=0.3, epochs=1),
    "gpu": dict(batch_size=32, lr=1e-5, beta=0.1, epochs=1),  # not swept
}


# -----------------------------------------------------------------------------
# The maths: answers' log-probabilities, and the loss (DPO eq. 7, ranked as InstructGPT eq. 1)

def response_logprobs(model, tok, prompts, responses, block_size, device):
    """log pi(y|x) of each answer: the sum of its tokens' log-probs (EOS included), over the very
    tokens SFT's loss is on (sft.sft_batch: the targets after the prompt). -> (N,)."""
    x, y, n_prompt = pack_pairs(tok, [(tok.chat_prompt(p), tok.chat_response(r)) for p, r in zip(prompts, responses)],
                                block_size)                          # y: the next token, -1 on padding
    mask = ((torch.arange(y.size(1))[None, :] >= n_prompt[:, None] - 1) & (y != -1)).float()  # (N, T) answer tokens
    x, y, mask = x.to(device), y.to(device), mask.to(device)
    logits, _ = model(x)                                              # (N, T, V)
    logp = F.log_softmax(logits.float(), dim=-1).gather(2, y.clamp(min=0)[:, :, None]).squeeze(2)  # (N, T)
    return (logp * mask).sum(1)


def ranked_logprobs(model, tok, comps, block_size, device):
    """Every answer of every ranking, in ranked order: -> logps (P, K_max) best..worst, padded with
    0 on the right, and the ranking mask (P, K_max), 1 for real answers."""
    prompts = [c["prompt"] for c in comps for _ in c["ranking"]]
    responses = [c["completions"][i] for c in comps for i in c["ranking"]]
    flat = response_logprobs(model, tok, prompts, responses, block_size, device)
    K = max(len(c["ranking"]) for c in comps)
    logps = torch.zeros(len(comps), K, device=device)
    rmask = torch.zeros(len(comps), K, device=device)
    start = 0
    for p, c in enumerate(comps):
        k = len(c["ranking"])
        logps[p, :k], rmask[p, :k] = flat[start:start + k], 1
        start += k
    return logps, rmask


def dpo_loss(logps, ref_logps, ranking_mask, beta):  # exercise: DPO eq. 7, Rafailov et al. 2023
    """
    DPO eq. 7 over rankings. logps, ref_logps (P, K): log pi(y|x) and log pi_SFT(y|x) of prompt p's
    answers in ranked order, best first; ranking_mask (P, K) 1 for real answers.
    The implicit reward h = beta * (logps - ref_logps); for every pair i ranked above j,
    -log sigmoid(h_i - h_j), averaged over the prompt's C(K,2) pairs, then over prompts.
    Returns (loss, accuracy: the fraction of pairs the implicit reward ranks as the labeler did, a
    tie counting half, margin: the mean h_i - h_j over pairs).
    """
    h = beta * (logps - ref_logps)                                   # (P, K) implicit rewards
    winners, losers = torch.triu_indices(h.size(1), h.size(1), offset=1, device=h.device)  # every i < j
    margins = h[:, winners] - h[:, losers]                           # (P, pairs)
    real = ranking_mask[:, winners] * ranking_mask[:, losers]        # pairs of two real answers
    per_prompt = -(F.logsigmoid(margins) * real).sum(1) / real.sum(1).clamp(min=1)  # 1/C(K_p,2) weight
    n = real.sum().clamp(min=1)
    right = (margins > 0).float() + 0.5 * (margins == 0).float()
    return per_prompt.mean(), (right * real).sum() / n, (margins * real).sum() / n


# -----------------------------------------------------------------------------

def read_rankings(cfg):
    """-> (training rankings, held-out rankings): --data, or step 2's (its comparisons file for the
    training prompts, its held-out file, test users' prompts ranked by held-out labelers)."""
    path = cfg.data or os.path.join(cfg.out_dir, "comparisons_reward.jsonl")
    if not os.path.isfile(path):
        raise UserError(f"{path}: no rankings; run reward.py first, or pass --data")
    kind, comps = read_records(path)
    if kind != "comparison":
        raise UserError(f"{path}: holds {kind} records; DPO needs comparisons")
    heldout = cfg.heldout or ("" if cfg.data else os.path.join(cfg.out_dir, "comparisons_heldout_reward.jsonl"))
    if not (heldout and os.path.isfile(heldout)):
        return split_validation(comps, cfg.seed, path)
    return comps, read_records(heldout)[1]


@torch.no_grad()
def reference_logprobs(ref, tok, comps, block_size, device, autocast, batch_size=32):
    """The frozen reference's log pi_SFT(y|x) of every ranked answer, computed once before training
    (it never changes), as the policy's are. -> per prompt a (K,) tensor, best..worst."""
    out = []
    with autocast():
        for i in range(0, len(comps), batch_size):
            logps, _ = ranked_logprobs(ref, tok, comps[i:i + batch_size], block_size, device)
            out += [row[:len(c["ranking"])] for row, c in zip(logps, comps[i:i + batch_size])]
    return out


@torch.no_grad()
def heldout_accuracy(policy, ref, tok, comps, block_size, device, beta, autocast, batch_size=32):
    """The fraction of held-out pairs the implicit reward beta * log(pi / pi_SFT) ranks as the
    labelers did: DPO's counterpart of the reward model's held-out accuracy."""
    right = total = 0.0
    policy.eval()
    for i in range(0, len(comps), batch_size):
        chunk = comps[i:i + batch_size]
        with autocast():
            logps, rmask = ranked_logprobs(policy, tok, chunk, block_size, device)
            ref_logps = ranked_logprobs(ref, tok, chunk, block_size, device)[0]
        _, acc, _ = dpo_loss(logps, ref_logps, rmask, beta)
        n = n_pairs(chunk)
        right, total = right + acc.item() * n, total + n
    policy.train()
    return right / max(total, 1)


def validate(cfg):
    check_positive(cfg, ("beta", "lr", "epochs", "batch_size", "grad_clip"))
    check_files(cfg, ("data", "heldout"))
    ensure_out_dir(cfg.out_dir)


def main(cfg=None):
    cfg = cfg or parse_config(Config, presets=PRESETS, description=__doc__)
    validate(cfg)
    device, autocast = setup(cfg.device, cfg.seed)
    ddp.announce(cfg.name)
    log = MetricsLog(cfg.out_dir, cfg.name, cfg.quiet, cfg.resume)
    resume = Resume(cfg.out_dir, cfg.name, cfg, log)

    # 1) the policy and the frozen reference, both SFT; the rankings; the reference's log-probs, once
    init = cfg.init or os.path.join(cfg.out_dir, "sft.pt")
    if not os.path.exists(init):
        raise UserError(f"{init}: no such checkpoint; run sft.py first or pass --init")
    policy, tok, _ = load_language_model(init, device)
    ref = load_language_model(init, device)[0].eval().requires_grad_(False)
    policy.set_dropout(0.0)  # the log-ratios must be 0 before the first step
    block = policy.config.block_size
    train, heldout = read_rankings(cfg)
    train = [c for c in train if len(c["ranking"]) >= 2]
    if not train:
        raise UserError("dpo: no ranking with two answers or more")
    ref_logps = reference_logprobs(ref, tok, train, block, device, autocast)
    steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    print(f"{cfg.name}: {len(train)} training rankings ({n_pairs(train)} pairs), {len(heldout)} held out, beta {cfg.beta}, "
          f"{steps} steps, from {init}")

    # 2) the optimizer; an interrupted run's state
    optimizer = configure_optimizer(policy, cfg.lr, cfg.weight_decay, device_type=device.type)
    model = ddp.wrap(policy)  # DDP: backward averages the gradients over ranks (one process: the policy itself)
    step = 0
    if cfg.resume:
        step = resume.restore(resume.load(device), policy=policy, optimizer=optimizer)
        print(f"resumed {cfg.name} at step {step}")
    else:
        log.log(0, heldout_accuracy=heldout_accuracy(policy, ref, tok, heldout, block, device, cfg.beta, autocast))

    def resumable():
        return dict(policy=policy.state_dict(), optimizer=optimizer.state_dict(), step=step)

    # 3) the loop: each batch element one prompt with all its ranked answers
    with stop_on_signal() as stop:
        while step < steps:
            resume.stop_if_asked(stop, f"step {step} of {steps}", resumable)  # Ctrl-C / SIGTERM: save and leave
            batch = epoch_rows(len(train), cfg.batch_size, step, cfg.seed)
            rows, n_mine = ddp.part(len(batch))  # DDP: this rank's prompts (one process: all)
            mine = batch[rows]
            lr = set_lr(optimizer, cosine_lr(step, steps, cfg.lr, warmup=max(1, steps // 20)))
            with autocast():
                logps, rmask = ranked_logprobs(model, tok, [train[i] for i in mine], block, device)
            ref_batch = torch.zeros_like(logps)
            for p, i in enumerate(mine):
                ref_batch[p, :len(ref_logps[i])] = ref_logps[i]
            loss, acc, margin = dpo_loss(logps, ref_batch, rmask, cfg.beta)
            w = ddp.weight(n_mine)  # DDP: this rank's share of the batch's prompts (1 on one process)
            norm = descend(optimizer, loss * w, policy.parameters(), cfg.grad_clip,
                           f"{cfg.name}: the loss is not finite at step {step}; stopped")
            if step % 10 == 0 or step == steps - 1:  # DDP: the whole batch's figures (as is on one process)
                pairs = n_pairs([train[i] for i in mine]) if n_mine else 0
                log.log(step, loss=ddp.mean(loss.item() * w), pair_accuracy=ddp.weighted_mean(acc.item(), pairs),
                        margin=ddp.weighted_mean(margin.item(), pairs), lr=lr, grad_norm=float(norm),
                        **ddp.rank_losses(loss.item(), n_mine))
            step += 1
            if step % 200 == 0:
                resume.save(**resumable())

    # 4) held-out pairs; the gold score of answers to validation prompts (what beta is chosen by)
    metrics = {"heldout_accuracy": heldout_accuracy(policy, ref, tok, heldout, block, device, cfg.beta, autocast),
               "steps": steps, "seconds": resume.seconds()}
    if cfg.n_val:
        records = data.build(cfg.preset, cfg.seed)["val"][:cfg.n_val]
        for key, model in (("val_gold", policy), ("val_gold_sft", ref)):  # the same draws for both
            g = torch.Generator(device=device).manual_seed(ddp.seed(cfg.seed + 11))
            answers = respond(model, tok, [r["prompt"] for r in records], temperature=1.0, generator=g)
            metrics.update(gold_mean(records, answers, key, per_prompt=key == "val_gold"))
    log.log(steps, **{k: v for k, v in metrics.items() if not isinstance(v, list)})  # figures, not per-prompt lists
    print(f"{cfg.name}: held-out pairs ranked right by the implicit reward {metrics['heldout_accuracy']:.3f}"
          + (f"; validation gold score {metrics['val_gold']:+.3f} (SFT: {metrics['val_gold_sft']:+.3f})"
             if "val_gold" in metrics else "")
          + f"; {metrics['seconds']:.0f}s")
    if ddp.is_main():  # torchrun: rank 0 writes
        save_checkpoint(os.path.join(cfg.out_dir, f"{cfg.name}.pt"), policy, stage=cfg.name, tokenizer=tok.state(),
                        config=asdict(cfg), metrics=metrics, world_size=ddp.world())
    resume.done()
    return metrics


if __name__ == "__main__":
    run_cli(main)

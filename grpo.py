"""
grpo.py: step 3 without a critic, beside ppo.py: GRPO (Shao et al. 2024, DeepSeekMath, arXiv
2402.03300, Section 4.1) and RLOO (Ahmadian et al. 2024, "Back to basics", arXiv 2402.14740).

PPO (ppo.py) needs a value model as large as the policy to tell a good token from a bad one. Both
methods here drop it: the policy answers each prompt G times, and each answer is judged against
its own group, the other answers to the same prompt. With one reward r_i per answer (outcome
supervision), every token of answer i gets the same advantage:
    GRPO (DeepSeekMath, Section 4.1.2):  A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)
    RLOO (Ahmadian et al., eq. 8):       A_i = r_i - 1/(G-1) * sum_{j != i} r_j   (the others' mean)
and the policy follows PPO's clipped ratio objective (DeepSeekMath eq. 3):
    J = E[ 1/G sum_i 1/|o_i| sum_t { min(ratio_i,t A_i, clip(ratio_i,t, 1-eps, 1+eps) A_i) - beta D_KL } ]
The KL to the SFT model goes where --kl-in says:
    loss    as DeepSeekMath (eq. 4): beta times k3 = pi_SFT/pi - log(pi_SFT/pi) - 1 per token, in the
            loss. k3 is never negative and its mean under pi is KL(pi || pi_SFT) (Schulman 2020,
            joschu.net/blog/kl-approx.html); the group's advantages then measure the reward alone.
    reward  as InstructGPT (eq. 2) and ppo.py: r_i - beta * log(pi(y_i|x) / pi_SFT(y_i|x)), the log-ratio
            summed over the answer's tokens, before the group's baseline is taken.
--reward gold replaces the RM by the world's gold rubric, a programmatic verifier (sums, word games
and facts are checkable): "RL from verifiable rewards", the way DeepSeek-R1 was trained, and the
measure of what the learned RM costs.

One iteration of the loop in `main`:
  1. rollout    batch_size / G prompts, each answered G times (plumbing/environment.py, as ppo.py)
  2. score      the reward of each answer (RM or gold), the policy's and SFT's log-probs
  3. group_advantages, one per answer (GRPO's or RLOO's baseline)
  4. update     epochs of minibatches on grpo_loss; one network, one optimizer, no value loss

Run on CPU (after sft.py and reward.py):
    python grpo.py --preset smoke --out-dir out/smoke
    python grpo.py --preset smoke --out-dir out/smoke --baseline rloo --name rloo
    python grpo.py --preset smoke --out-dir out/smoke --reward gold --name grpo_gold   # the truth as the reward
    python grpo.py --preset smoke --out-dir out/smoke --resume      # after Ctrl-C (OUT_DIR/<name>.resume.pt)
    torchrun --nproc_per_node 2 grpo.py --preset smoke --out-dir out/smoke   # each rank whole groups
    python grpo.py --init out/mine/sft.pt --reward out/mine/reward.pt --prompts prompts.txt --out-dir out/mine

Where this departs from the papers:
  1. Tiny models, G = 4 answers per prompt and a few thousand episodes (DeepSeekMath: G = 64,
     1024 answers per step, beta 0.04, lr 1e-6).
  2. The reward is InstructGPT's RM (or the gold rubric), not a math verifier; outcome supervision
     only (DeepSeekMath also tried rewards per reasoning step).
  3. RLOO trains here with the clipped ratio objective: with --epochs 1 and one minibatch per
     rollout the ratio is 1 and the clip never acts, which is RLOO's REINFORCE exactly; more epochs
     or minibatches make it PPO-like, as for GRPO.
  4. Each answer's tokens are averaged, then the answers (1/G sum_i 1/|o_i|, as DeepSeekMath): a short
     answer's tokens weigh more than a long one's. Liu et al. 2025 ("Dr. GRPO") drop this and the
     division by the std; kept here as published.
  5. The std is the group's sample std (n - 1); a group whose answers all score alike has advantage
     0 and teaches nothing (the log's `flat_groups` counts them).
"""

import contextlib
import os
import random
import time
from dataclasses import dataclass

import torch

import data
from plumbing import ddp
from plumbing.checkpoint import load_rlhf_models
from plumbing.cli import UserError, arg, check_files, check_positive, ensure_out_dir, parse_config, run_cli
from plumbing.environment import (check_reward, evaluate, finish, response_logprobs, reward_model_path, rl_data,
                                  rollout, rollout_figures, score)
from plumbing.loop import (MetricsLog, Resume, configure_optimizer, descend, mean_of, setup, stop_if_not_finite,
                           stop_on_signal, time_shares)


@dataclass
class Config:
    preset: str = arg("cpu", "sizes and steps: smoke, cpu or gpu")
    out_dir: str = arg("out/run", "run folder")
    init: str = arg("", "the frozen reference, and the policy's start (default OUT_DIR/sft.pt)")
    start: str = arg("", "start the policy here instead of --init")
    reward: str = arg("", "the reward model (default OUT_DIR/reward.pt); or gold: the simulated world's gold "
                          "rubric is the reward (the RM at OUT_DIR/reward.pt then only reports its score)")
    name: str = arg("grpo", "output name: OUT_DIR/<name>.pt (e.g. rloo, grpo_gold)")
    prompts: str = arg("", "your prompts (text, one a line, or records of any format) instead of the simulated API's")
    seed: int = arg(0, "seed")
    # the methods' knobs
    baseline: str = arg("grpo", "grpo: (r - group mean) / group std; rloo: r - the other answers' mean",
                        choices=["grpo", "rloo"])
    group_size: int = arg(4, "G: answers sampled per prompt (DeepSeekMath: 64)")
    kl_in: str = arg("loss", "where the KL to SFT goes: loss (k3 per token, as DeepSeekMath) or reward (summed "
                             "log-ratio off each answer's reward, as InstructGPT's eq. 2)", choices=["loss", "reward"])
    kl_coef: float = arg(0.04, "beta: weight of the KL to SFT (DeepSeekMath: 0.04)")
    iterations: int = arg(60, "rollout-and-update iterations")
    batch_size: int = arg(64, "answers (episodes) per rollout: batch_size / group_size prompts")
    minibatch_size: int = arg(16, "answers per minibatch")
    epochs: int = arg(2, "passes over each rollout (1 with one minibatch: plain REINFORCE with the baseline)")
    lr: float = arg(3e-5, "policy learning rate (DeepSeekMath: 1e-6 for 7B)")
    max_new_tokens: int = arg(48, "longest response")
    temperature: float = arg(1.0, "rollout sampling temperature (not 1: the rollouts are off-policy)")
    clip_coef: float = arg(0.2, "ratio clip, as PPO's")
    no_eos_penalty: float = arg(-1.0, "reward for a response that never reaches EOS (0: off)")
    grad_clip: float = arg(1.0, "gradient-norm clip, after backward")
    eval_every: int = arg(10, "iterations between evaluations on held-out prompts")
    n_eval: int = arg(100, "held-out prompts per evaluation")
    eval_answers: bool = arg(False, "keep each evaluation's answers in OUT_DIR/<name>.eval_answers.jsonl (what "
                                    "experiments.py overoptimization reads the hacks from)")
    # engineering
    cuda_graph: bool = arg(False, "CUDA: replay each rollout decode step as a CUDA graph (engine.DecodeStep)")
    whole_step: bool = arg(False, "with --cuda-graph: the graph records the sampling and its bookkeeping too")
    compile_decode: bool = arg(False, "run each rollout decode step compiled by torch.compile")
    device: str = arg("auto", "auto, cpu or cuda")
    resume: bool = arg(False, "continue an interrupted run from its OUT_DIR/<name>.resume.pt")
    quiet: bool = arg(False, "no per-step log lines")


PRESETS = {
    "smoke": dict(iterations=12, batch_size=32, minibatch_size=16, epochs=2, max_new_tokens=32, lr=3e-5,
                  kl_coef=0.1, eval_every=12, n_eval=40),
    # the KL's place, beta and lr: chosen on validation gold by tools/sweep.py grpo (docs/results.md)
    "cpu": dict(iterations=30, batch_size=64, minibatch_size=16, epochs=2, lr=1e-4, kl_in="reward", kl_coef=0.03,
                eval_every=5, n_eval=64),
    # not yet run on a GPU: ppo.py's gpu settings, with larger groups
    "gpu": dict(iterations=150, batch_size=256, group_size=8, minibatch_size=64, epochs=2, lr=2e-5, kl_coef=0.1,
                eval_every=25, n_eval=400, cuda_graph=True),
}


# -----------------------------------------------------------------------------
# The maths: the group's baseline, the KL estimator, the clipped objective

def group_advantages(scores, group_size, baseline="grpo", eps=1e-4):  # exercise: GRPO / RLOO advantages
    """
    One advantage per answer from its group, the group_size answers to the same prompt (consecutive
    rows). scores (B,) -> advantages (B,).
      grpo  (r_i - mean) / (std + eps), the group's sample std (DeepSeekMath, Section 4.1.2)
      rloo  r_i - the mean of the other G - 1 answers' rewards (Ahmadian et al. 2024, eq. 8)
    A group whose answers all score alike gives each of them 0.
    """
    r = scores.view(-1, group_size)                                  # (prompts, G)
    if baseline == "grpo":
        advantages = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)
    else:
        advantages = r - (r.sum(1, keepdim=True) - r) / (group_size - 1)
    return advantages.reshape(-1)


def k3_kl(logprobs, ref_logprobs):  # exercise: the k3 KL estimator, DeepSeekMath eq. 4
    """
    DeepSeekMath eq. 4, per token: pi_SFT/pi - log(pi_SFT/pi) - 1, computed from log-probs of the
    sampled tokens. Never negative (x - log x - 1 >= 0), and its expectation over tokens sampled
    from pi is KL(pi || pi_SFT) (Schulman 2020, "k3"). (B, N) -> (B, N).
    """
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def kl_penalized_scores(scores, logprobs, ref_logprobs, response_mask, kl_coef):
    """InstructGPT eq. 2 for a whole answer: r(x, y) - beta * log(pi(y|x) / pi_SFT(y|x)), the log-ratio
    summed over the answer's tokens (what ppo.py's per-token KL rewards add up to). scores (B,),
    the rest (B, N) -> (B,)."""
    return scores - kl_coef * ((logprobs - ref_logprobs) * response_mask).sum(1)


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_coef=0.2, kl_coef=0.0):
    """
    DeepSeekMath eq. 3, negated to be minimized: per token the clipped surrogate
    max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)) plus beta * k3 (kl_coef 0: the KL is in the
    reward instead), averaged over each answer's tokens, then over the answers. logprobs,
    old_logprobs, ref_logprobs, mask (B, N); advantages (B,), one per answer. -> loss, statistics
    (0-dim tensors).
    """
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    A = advantages[:, None]                                          # every token of answer i: A_i
    pg = torch.max(-A * ratio, -A * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef))
    kl = k3_kl(logprobs * mask, ref_logprobs * mask)
    per_answer = ((pg + kl_coef * kl) * mask).sum(1) / mask.sum(1).clamp(min=1)   # 1/|o_i| sum_t
    with torch.no_grad():  # tensors, not numbers: reading one is a sync point (read once per iteration)
        n = mask.sum().clamp(min=1)
        stats = dict(pg_loss=((pg * mask).sum(1) / mask.sum(1).clamp(min=1)).mean(), k3=(kl * mask).sum() / n,
                     approx_kl=(((ratio - 1) - log_ratio) * mask).sum() / n,
                     clipfrac=(((ratio - 1).abs() > clip_coef).float() * mask).sum() / n)
    return per_answer.mean(), stats


# -----------------------------------------------------------------------------
# The update, and what a log line holds

def update(policy, optimizer, batch, advantages, cfg, it, autocast=contextlib.nullcontext):
    """cfg.epochs passes over the rollout in minibatches of answers; each minibatch one optimizer step
    on grpo_loss. Returns each minibatch's statistics (0-dim tensors) and whether every loss was
    finite (a tensor: the caller reads it once per iteration). DDP: every rank holds as many answers,
    so averaging the ranks' gradients averages over all answers."""
    policy.train()
    B, T, device = len(batch["tokens"]), batch["T"], batch["tokens"].device
    minibatch_size = cfg.minibatch_size // ddp.world()
    kl_coef = cfg.kl_coef if cfg.kl_in == "loss" else 0.0
    stats, finite = [], torch.ones((), dtype=torch.bool, device=device)
    for epoch in range(cfg.epochs):
        order = torch.randperm(B, generator=torch.Generator().manual_seed(cfg.seed * 7919 + it * 31 + epoch))
        for start in range(0, B, minibatch_size):
            mb = order[start:start + minibatch_size].to(device)
            tokens, mask, response_mask = batch["tokens"][mb], batch["attention_mask"][mb], batch["response_mask"][mb]
            with autocast():
                logprobs, entropy = response_logprobs(policy, tokens, mask, T, with_entropy=True)
            loss, s = grpo_loss(logprobs.float(), batch["logprobs"][mb], batch["ref_logprobs"][mb], advantages[mb],
                                response_mask, cfg.clip_coef, kl_coef)
            finite &= torch.isfinite(loss.detach())
            descend(optimizer, loss, policy.parameters(), cfg.grad_clip)
            s.update(loss=loss.detach(), entropy=(entropy.float().detach() * response_mask).sum()
                     / response_mask.sum().clamp(min=1))
            stats.append(s)
    return stats, finite


def iteration_metrics(tok, records, batch, scores, stats, group_size, t_train):
    """One log line's figures: the rollout's (RM score, gold, KL), the minibatches' mean statistics,
    the answers' length, the spread of rewards within a group, and where the time went."""
    r = scores.view(-1, group_size)
    out = dict(rollout_figures(tok, records, batch)[0], **mean_of(stats),
               resp_len=batch["response_mask"].sum(1).mean().item(), ended=batch["ended"].float().mean().item(),
               group_std=r.std(1).mean().item(), flat_groups=(r.std(1) == 0).float().mean().item())
    out = {k: ddp.mean(v) for k, v in out.items()}  # DDP: the whole batch's (ranks hold equal shares of it)
    return dict(out, **time_shares(gen=batch["t_gen"], score=batch["t_score"], train=t_train))


# -----------------------------------------------------------------------------

def validate(cfg):
    check_positive(cfg, ("iterations", "batch_size", "minibatch_size", "epochs", "max_new_tokens", "lr",
                         "eval_every", "n_eval", "temperature", "clip_coef", "grad_clip"))
    if cfg.kl_coef < 0:
        raise UserError("--kl-coef must not be negative")
    if cfg.baseline not in ("grpo", "rloo") or cfg.kl_in not in ("loss", "reward"):
        raise UserError(f"--baseline is grpo or rloo and --kl-in loss or reward, got {cfg.baseline} and {cfg.kl_in}")
    if cfg.group_size < 2 or cfg.batch_size % cfg.group_size:
        raise UserError(f"--group-size must be at least 2 and divide --batch-size {cfg.batch_size}, got "
                        f"{cfg.group_size}: a rollout is whole groups of answers to one prompt")
    check_files(cfg, ("prompts",))
    check_reward(cfg)
    if cfg.whole_step and not cfg.cuda_graph:
        raise UserError("--whole-step records the whole decode step in the CUDA graphs of --cuda-graph: add that flag")
    ensure_out_dir(cfg.out_dir)


def main(cfg=None):
    cfg = cfg or parse_config(Config, presets=PRESETS, description=__doc__)
    validate(cfg)
    device, autocast = setup(cfg.device, cfg.seed)
    n_prompts = cfg.batch_size // cfg.group_size
    ddp.check_divides({"--batch-size / --group-size (prompts per rollout)": n_prompts,
                       "--minibatch-size": cfg.minibatch_size})
    ddp.announce(cfg.name)
    log = MetricsLog(cfg.out_dir, cfg.name, cfg.quiet, cfg.resume)
    resume = Resume(cfg.out_dir, cfg.name, cfg, log)
    policy, ref, rm, tok, reward_bias, _ = load_rlhf_models(cfg.init or os.path.join(cfg.out_dir, "sft.pt"),
                                                            cfg.start, reward_model_path(cfg), device)
    for m in (policy, ref):  # no dropout in RL: the ratio must be 1 before any update
        m.set_dropout(0.0)
    train_policy = ddp.wrap(policy)  # DDP: its backward averages gradients
    world = None if cfg.prompts else data.build(cfg.preset, cfg.seed)
    prompts, eval_records, _ = rl_data(cfg, tok, policy.config.block_size, world)
    print(f"{cfg.name}: {len(prompts)} prompts ({len(eval_records)} more held out), {cfg.iterations} iterations of "
          f"{n_prompts} prompts x {cfg.group_size} answers, {cfg.baseline} baseline, beta {cfg.kl_coef} in the "
          f"{cfg.kl_in}, reward: {'the gold rubric' if cfg.reward == 'gold' else 'the RM'}")
    optimizer = configure_optimizer(policy, cfg.lr, weight_decay=0.0, device_type=device.type)
    rng = random.Random(cfg.seed + 3)                                    # which prompts each iteration
    generator = torch.Generator(device=device).manual_seed(ddp.seed(cfg.seed + 3))  # the rollouts' sampling

    def run_eval(it):
        stats, answers = evaluate(policy, ref, rm, tok, eval_records, cfg, reward_bias, autocast, it)
        log.log(it, **stats)
        return stats, answers

    def resumable():  # what --resume needs to continue exactly (DDP: each rank's sampling state)
        return resume.snapshot(policy=policy, optimizer=optimizer, rng=rng, generator=generator, it=it,
                               first_eval=first_eval)

    if cfg.resume:
        state = resume.load(device)
        it, first_eval = state["it"], state["first_eval"]
        resume.restore(state, policy=policy, optimizer=optimizer, rng=rng, generator=generator)
        print(f"resumed {cfg.name} at iteration {it}")
    else:
        it = 0
        first_eval, _ = run_eval(0)
        resume.save(**resumable())

    with stop_on_signal() as stop:
        while it < cfg.iterations:
            resume.stop_if_asked(stop, f"iteration {it} of {cfg.iterations}", resumable)  # Ctrl-C: save, leave
            records = ddp.share(rng.sample(prompts, min(n_prompts, len(prompts))))  # DDP: whole groups per rank
            group = [r for r in records for _ in range(cfg.group_size)]   # each prompt G times, side by side
            # 1-2. rollout and score, without dropout (so that the update's first ratio is 1)
            policy.eval()
            batch = rollout(policy, tok, [r["prompt"] for r in group], cfg, generator, autocast)
            score(batch, policy, ref, rm, cfg, reward_bias, group, tok, autocast)
            stop_if_not_finite(torch.isfinite(batch["scores"]).all(), f"{cfg.name}: the reward model gave a "
                               f"non-finite score at iteration {it}; stopped; the last good state is {resume.path}")
            # 3. one advantage per answer, from its group (the KL first, if it is part of the reward)
            scores = batch["scores"]
            if cfg.kl_in == "reward":
                scores = kl_penalized_scores(scores, batch["logprobs"], batch["ref_logprobs"], batch["response_mask"],
                                             cfg.kl_coef)
            advantages = group_advantages(scores, cfg.group_size, cfg.baseline)
            # 4. the update
            t0 = time.time()
            stats, finite = update(train_policy, optimizer, batch, advantages, cfg, it, autocast)
            stop_if_not_finite(finite, f"{cfg.name}: loss is not finite at iteration {it}; stopped; the last good "
                               f"state is {resume.path}")
            metrics = iteration_metrics(tok, group, batch, scores, stats, cfg.group_size, time.time() - t0)
            log.log(it + 1, **metrics, **ddp.rank_losses(stats[-1]["loss"].item(), len(group)))
            it += 1
            if it % cfg.eval_every == 0 and it < cfg.iterations:
                run_eval(it)
                resume.save(**resumable())

    last_eval, answers = run_eval(cfg.iterations)
    metrics = finish(cfg, policy, tok, eval_records, first_eval, last_eval, answers, seconds=resume.seconds(),
                     trained_parameters=sum(p.numel() for p in policy.parameters()))
    resume.done()
    return metrics


if __name__ == "__main__":
    run_cli(main)

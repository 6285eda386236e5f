"""
ppo.py: step 3, reinforcement learning against the reward model (PPO), and PPO-ptx.

InstructGPT, Section 3.5 "Reinforcement learning (RL)" (arXiv 2203.02155):
  "we fine-tuned the SFT model on our environment using PPO. The environment is a bandit
  environment which presents a random customer prompt and expects a response to the prompt.
  Given the prompt and response, it produces a reward determined by the reward model and ends
  the episode. In addition, we add a per-token KL penalty from the SFT model at each token to
  mitigate over-optimization of the reward model. The value function is initialized from the RM."
  Eq. 2, the objective:
      objective(phi) = E_(x,y)~pi_RL [ r(x,y) - beta * log(pi_RL(y|x) / pi_SFT(y|x)) ]
                       + gamma * E_x~D_pretrain [ log pi_RL(x) ]
  PPO-ptx is gamma > 0: pretraining gradients mixed into every update, which reduces the
  performance regressions on public NLP data (the "alignment tax").

One iteration of the loop in `main`, each step a function of its own:
  1. rollout    the policy answers a batch of prompts (plumbing/environment.py, the environment
                grpo.py acts in too: gpt.GPT.generate, made fast)
  2. score      the RM scores each answer at its last token (or, with --reward gold, the world's gold
                rubric: RL from the truth); the frozen SFT model gives reference log-probs; the
                value model gives V(s_t) for every response token
  3. kl_shaped_rewards: r_t = -beta * (log pi(y_t) - log pi_SFT(y_t)), + the RM score at the last
                token (detailed_rewards calls it, or changes one detail named below)
  4. gae        advantages and returns (Schulman et al. 2016), whitened over the response mask
  5. update     epochs of minibatches on ppo_losses, the clipped surrogate (Schulman et al. 2017)
                and clipped value loss, + gamma * a pretraining batch's LM loss (PPO-ptx)

Run on CPU (after sft.py and reward.py):
    python ppo.py --preset smoke --out-dir out/smoke
    python ppo.py --preset smoke --out-dir out/smoke --ptx-coef 1.0 --name ppo_ptx
    python ppo.py --preset smoke --out-dir out/smoke --resume      # after Ctrl-C (OUT_DIR/<name>.resume.pt)
    python ppo.py --preset smoke --out-dir out/smoke --reward gold --name ppo_gold   # the truth as the reward
    torchrun --nproc_per_node 2 ppo.py --preset smoke --out-dir out/smoke   # each rank its share of the prompts
    python ppo.py --init out/mine/sft.pt --reward out/mine/reward.pt --prompts prompts.txt --out-dir out/mine
--prompts: a text file (one a line) or records of any format plumbing/formats.py reads, 5% held out for
the evaluations; without a gold rubric PPO logs RM score and KL; PPO-ptx then needs --pretrain-data.

Where this departs from the paper:
  1. Tiny models, a few thousand episodes (paper: 256k episodes, 31k prompts, beta 0.02,
     gamma 27.8 for PPO-ptx, lr 9.65e-6 for 1.3B / 5.03e-6 for 6B).
  2. The gamma of PPO-ptx multiplies a per-token mean LM loss (the paper's value 27.8 belongs to
     its own normalisation, which it does not spell out); ours is tuned to this world.
  3. The RM score is used after subtracting the bias that puts labeler demonstrations at 0
     (as the paper), with no further scaling; an optional fixed penalty for answers that never
     reach EOS (common practice, not in the paper).
  4. The policy and value models are separate networks with their own optimizers, as in the
     paper; the KL coefficient may be adapted toward a target (Ziegler et al. 2019), off by default.
  5. GAE's discount is 1 by default (the episode is one response); it is called `discount`
     here because eq. 2's gamma is the pretraining coefficient.

The implementation details that RLHF codes differ on and the paper does not settle, each a flag
whose default keeps the results above (Huang et al. 2024, "The N+ implementation details of RLHF
with PPO"; Zheng et al. 2023, "Secrets of RLHF, Part I"): --whiten-rewards, --no-whiten-advantages,
--kl-estimator k3, --value-init sft, --adaptive-kl, --no-eos-penalty 0, --score-slot after (a
known bug, kept to be measured), --lam, --ppo-epochs, --vf-clip 0, --temperature with
--logprobs-at-temperature. `python experiments.py details` measures each against the gold rubric
(docs/details.md).
"""

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass

import torch

import data
from gpt import ScalarModel, last_index
from plumbing import ddp, environment
from plumbing.checkpoint import load_language_model, load_reward_model, load_rlhf_models
from plumbing.cli import UserError, arg, check_files, check_positive, ensure_out_dir, parse_config, run_cli
from plumbing.environment import (check_reward, evaluate, finish, response_logprobs, reward_model_path, rl_data,
                                  rollout, rollout_figures)
from plumbing.loop import (MetricsLog, Resume, configure_optimizer, descend, mean_of, setup,
                           stop_if_not_finite, stop_on_signal, time_shares)
from plumbing.tokenizer import pretrain_batch


@dataclass
class Config:
    preset: str = arg("cpu", "sizes and steps: smoke, cpu or gpu")
    out_dir: str = arg("out/run", "run folder")
    init: str = arg("", "the frozen reference, and the policy's start (default OUT_DIR/sft.pt)")
    start: str = arg("", "start the policy here instead of --init (a later round continues the last policy)")
    reward: str = arg("", "the reward model (default OUT_DIR/reward.pt), which the value model starts from; or "
                          "gold: the simulated world's gold rubric is the reward (the RM at OUT_DIR/reward.pt then "
                          "reports its score and starts the value model)")
    name: str = arg("ppo", "output name: OUT_DIR/<name>.pt (e.g. ppo_ptx)")
    prompts: str = arg("", "your prompts (text, one a line, or records of any format) instead of the simulated API's")
    pretrain_data: str = arg("", "PPO-ptx's pretraining text instead of the simulated corpus (text or {\"text\"} records)")
    seed: int = arg(0, "seed")
    # the paper's knobs (Section 3.5, eq. 2)
    kl_coef: float = arg(0.02, "beta: per-token KL penalty to SFT (paper: 0.02)")
    ptx_coef: float = arg(0.0, "gamma of PPO-ptx: weight of the pretraining LM loss (0: plain PPO)")
    iterations: int = arg(60, "rollout-and-update iterations")
    batch_size: int = arg(64, "prompts (episodes) per rollout")
    minibatch_size: int = arg(16, "episodes per PPO minibatch")
    ppo_epochs: int = arg(4, "passes over each rollout batch (the clip only acts after the first minibatch)")
    lr: float = arg(3e-5, "policy learning rate (paper: 9.65e-6 for 1.3B)")
    value_lr: float = arg(1e-4, "value model learning rate")
    max_new_tokens: int = arg(48, "longest response")
    temperature: float = arg(1.0, "rollout sampling temperature (not 1: the rollouts are off-policy)")
    # PPO's own knobs
    discount: float = arg(1.0, "GAE discount (the episode is one response)")
    lam: float = arg(0.95, "GAE lambda")
    clip_coef: float = arg(0.2, "PPO ratio clip")
    vf_clip: float = arg(0.2, "value clip around the rollout's values (0: off)")
    adaptive_kl: bool = arg(False, "adapt beta toward --target-kl (Ziegler et al. 2019)")
    target_kl: float = arg(2.0, "target KL per response (nats) for the adaptive controller")
    kl_horizon: int = arg(10000, "the adaptive controller's horizon in episodes (Ziegler et al.: 10000)")
    no_eos_penalty: float = arg(-1.0, "reward for a response that never reaches EOS (0: off)")
    # implementation details that RLHF codes differ on (experiments.py details measures each one)
    whiten_rewards: bool = arg(False, "whiten the episodes' scores over the batch (mean 0, variance 1)")
    whiten_advantages: bool = arg(True, "whiten the advantages over the batch's response tokens")
    kl_estimator: str = arg("k1", "the per-token KL penalty's estimate: k1 = log(pi/pi_SFT) (eq. 2), or k3 = "
                                  "r - 1 - log r with r = pi_SFT/pi (never negative)", choices=["k1", "k3"])
    value_init: str = arg("rm", "the value model starts from the RM (Section 3.5) or from SFT with a new head",
                          choices=["rm", "sft"])
    score_slot: str = arg("last", "where the score lands: the answer's last real token, or the slot after it "
                                  "(a known bug: the response mask then drops it)", choices=["last", "after"])
    logprobs_at_temperature: bool = arg(False, "log-probs of pi and pi_SFT at --temperature (logits / T), the "
                                               "distribution the rollouts sample, instead of at 1")
    ptx_batch_size: int = arg(16, "pretraining sequences per minibatch for PPO-ptx")
    grad_clip: float = arg(1.0, "gradient-norm clip, after backward")
    eval_every: int = arg(10, "iterations between evaluations on held-out prompts")
    n_eval: int = arg(100, "held-out prompts per evaluation")
    eval_answers: bool = arg(False, "keep each evaluation's answers in OUT_DIR/<name>.eval_answers.jsonl (what "
                                    "experiments.py overoptimization reads the hacks from)")
    # engineering
    cuda_graph: bool = arg(False, "CUDA: replay each rollout decode step as a CUDA graph (engine.DecodeStep)")
    whole_step: bool = arg(False, "with --cuda-graph: the graph records the sampling and its bookkeeping too")
    compile_decode: bool = arg(False, "run each rollout decode step compiled by torch.compile (compiling takes "
                                      "seconds to minutes, once per process)")
    device: str = arg("auto", "auto, cpu or cuda")
    resume: bool = arg(False, "continue an interrupted run from its OUT_DIR/<name>.resume.pt")
    quiet: bool = arg(False, "no per-step log lines")


PRESETS = {
    "smoke": dict(iterations=12, batch_size=32, minibatch_size=16, ppo_epochs=2, max_new_tokens=32,
                  lr=3e-5, value_lr=3e-4, kl_coef=0.1, eval_every=12, n_eval=40),
    # beta and lr: chosen on validation gold by tools/sweep.py ppo (docs/results.md), at 30 iterations
    "cpu": dict(iterations=30, batch_size=64, minibatch_size=16, ppo_epochs=2, lr=3e-5, kl_coef=0.3, eval_every=5,
                n_eval=64),
    # beta 0.1, not the paper's 0.02: at 0.02 this preset over-optimized the RM (docs/gpu.md)
    "gpu": dict(iterations=150, batch_size=256, minibatch_size=64, ppo_epochs=4, lr=2e-5, kl_coef=0.1,
                eval_every=25, n_eval=400, cuda_graph=True),
}


# -----------------------------------------------------------------------------
# The maths, as small functions: masked means, KL-shaped rewards, GAE, the PPO losses

def masked_mean(x, mask, dim=None):
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x, mask, eps=1e-8):  # exercise: whitening, Section 3.5
    """Zero mean, unit variance over the real (mask = 1) entries only."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def kl_shaped_rewards(scores, logprobs, ref_logprobs, response_mask, kl_coef):  # exercise: InstructGPT eq. 2
    """
    InstructGPT eq. 2 as per-token rewards: r_t = -beta * (log pi(y_t) - log pi_SFT(y_t)) at every
    response token, plus the RM score at the last real token only.
    scores (B,), logprobs / ref_logprobs / response_mask (B, N) -> rewards (B, N), kl (B, N).
    """
    kl = (logprobs - ref_logprobs) * response_mask                  # log(pi / pi_SFT) per token
    rewards = -kl_coef * kl
    last = last_index(response_mask)                                 # (B,)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * response_mask, kl


def k3_kl(logprobs, ref_logprobs, response_mask):
    """Schulman's k3 estimate of KL(pi || pi_SFT) from a token sampled from pi: with r = pi_SFT / pi,
    (r - 1) - log r. Its mean is the KL, as k1's is, but it is never negative (log r <= r - 1) and
    varies less when pi is close to pi_SFT (joschu.net/blog/kl-approx.html). (B, N) -> (B, N)."""
    log_r = (ref_logprobs - logprobs) * response_mask
    return (torch.exp(log_r) - 1 - log_r) * response_mask


def detailed_rewards(scores, logprobs, ref_logprobs, response_mask, kl_coef, cfg):
    """Step 3 with the implementation details cfg chooses (the defaults: kl_shaped_rewards as it is):
    the scores whitened over the batch (--whiten-rewards), the KL penalty estimated by k3 instead of
    k1 (--kl-estimator), the score put on the slot after the last real token (--score-slot after:
    the bug, where the response mask then drops every answer's score but one cut at the length
    limit, which has no slot after). -> rewards (B, N)."""
    if cfg.whiten_rewards:  # DDP: over every rank's episodes, as one process whitens the whole batch
        scores = ddp.over_all_rows(masked_whiten, scores[:, None], torch.ones_like(scores)[:, None])[:, 0]
    if cfg.kl_estimator == "k1" and cfg.score_slot == "last":
        return kl_shaped_rewards(scores, logprobs, ref_logprobs, response_mask, kl_coef)[0]  # eq. 2 as it is
    kl = k3_kl(logprobs, ref_logprobs, response_mask) if cfg.kl_estimator == "k3" else logprobs - ref_logprobs
    rewards = -kl_coef * kl
    slot = (last_index(response_mask) + (cfg.score_slot == "after")).clamp(max=rewards.size(1) - 1)
    rewards[torch.arange(len(scores)), slot] += scores
    return rewards * response_mask


def gae(rewards, values, response_mask, discount=1.0, lam=0.95):  # exercise: GAE, Schulman et al. 2016
    """
    Generalized advantage estimation over response tokens (Schulman et al. 2016), with discount d
    (Schulman's gamma; not eq. 2's gamma, the pretraining coefficient):
      delta_t = r_t + d * V(s_{t+1}) - V(s_t),   A_t = delta_t + d * lam * A_{t+1},
    with V = 0 after the last real token (the episode ends there; padding contributes nothing).
    rewards, values, response_mask (B, N) -> advantages (B, N), returns (B, N) = A + V.
    """
    B, N = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros(B, device=rewards.device)
    next_value = torch.zeros(B, device=rewards.device)
    for t in reversed(range(N)):
        m = response_mask[:, t]
        delta = rewards[:, t] + discount * next_value - values[:, t]
        next_adv = (delta + discount * lam * next_adv) * m               # a padding step resets the recursion
        next_value = values[:, t] * m
        advantages[:, t] = next_adv
    return advantages, (advantages + values) * response_mask


def ppo_losses(logprobs, old_logprobs, advantages, values, old_values, returns, mask,
               clip_coef=0.2, vf_clip=0.2):  # exercise: PPO, Schulman et al. 2017
    """
    The clipped surrogate and the clipped value loss (Schulman et al. 2017), token-level means
    over the response mask. All inputs (B, N). Returns pg_loss, v_loss and a dict of statistics
    (0-dim tensors).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)
    v_clipped = old_values + torch.clamp(values - old_values, -vf_clip, vf_clip)
    v_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (v_clipped - returns) ** 2), mask)
    with torch.no_grad():  # tensors, not numbers: reading one is a sync point (read once per iteration)
        stats = dict(
            approx_kl=masked_mean((ratio - 1) - log_ratio, mask),  # k3, joschu.net/blog/kl-approx.html
            clipfrac=masked_mean(((ratio - 1).abs() > clip_coef).float(), mask),
            ratio=masked_mean(ratio, mask))
    return pg_loss, v_loss, stats


def explained_variance(values, returns, mask):
    """1 - Var(returns - values) / Var(returns): 1 is a perfect value function, <= 0 useless."""
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return (1 - var_d / var_r.clamp(min=1e-8)).item()


def adaptive_kl(kl_coef, kl, target, n_episodes, horizon=10000):
    """Ziegler et al. 2019: beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)."""
    return kl_coef * (1 + max(-0.2, min(0.2, kl / target - 1)) * n_episodes / horizon)


# -----------------------------------------------------------------------------
# The value model reads the rollout's layout: prompt (T tokens, left-padded) + response (N)

def response_values(value_model, tokens, mask, T):
    """V(s_t) of the state before each response token, (B, N): s_t = x + y_<t ends at position
    T-1+t, so positions T-1 .. L-2 (the state after the last token is the episode's end: no value)."""
    return value_model(tokens, mask)[:, T - 1:-1].float()


# -----------------------------------------------------------------------------
# The steps of one iteration

@torch.no_grad()
def score(batch, policy, ref, value_model, rm, cfg, reward_bias, records=None, tok=None,
          autocast=contextlib.nullcontext):
    """Step 2: the environment's reward and the policy's and SFT's log-probs (environment.score:
    scores, rm_scores, logprobs, ref_logprobs), and the value model's V(prompt + y_<t) for every
    response token (zeros without a value model), one batched forward pass per model."""
    environment.score(batch, policy, ref, rm, cfg, reward_bias, records, tok, autocast, logprob_temperature(cfg))
    values = torch.zeros_like(batch["logprobs"])
    if value_model is not None:
        with autocast():
            values = response_values(value_model, batch["tokens"], batch["attention_mask"], batch["T"])
        values = values * batch["response_mask"]
    batch["values"] = values
    return batch


def logprob_temperature(cfg):
    """The temperature of the log-probs in the ratio and the KL: the rollouts' with
    --logprobs-at-temperature (the policy that sampled them), else 1 (the model's own distribution)."""
    return cfg.temperature if cfg.logprobs_at_temperature else 1.0


def update(policy, value_model, opt_policy, opt_value, batch, advantages, returns, cfg, it, ptx_ids,
           autocast=contextlib.nullcontext):
    """Step 5: cfg.ppo_epochs passes over the rollout in minibatches; each minibatch one step of
    both optimizers on ppo_losses (+ gamma * a pretraining batch's LM loss for PPO-ptx). Returns
    each minibatch's statistics (0-dim tensors) and whether every loss was finite (a tensor too:
    reading a number is a sync point, done once per iteration by the caller)."""
    policy.train()
    value_model.train()
    B, T, device = len(batch["tokens"]), batch["T"], batch["tokens"].device
    minibatch_size = cfg.minibatch_size // ddp.world()  # DDP: the rollout B and each minibatch are this rank's share
    stats, finite = [], torch.ones((), dtype=torch.bool, device=device)
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(B, generator=torch.Generator().manual_seed(cfg.seed * 7919 + it * 31 + epoch))
        for start in range(0, B, minibatch_size):
            mb = order[start:start + minibatch_size].to(device)
            tokens, mask, response_mask = batch["tokens"][mb], batch["attention_mask"][mb], batch["response_mask"][mb]
            with autocast():
                logprobs, entropy = response_logprobs(policy, tokens, mask, T, with_entropy=True,
                                                      temperature=logprob_temperature(cfg))
                values = response_values(value_model, tokens, mask, T)
            pg_loss, v_loss, s = ppo_losses(logprobs, batch["logprobs"][mb], advantages[mb], values,
                                            batch["values"][mb], returns[mb], response_mask, cfg.clip_coef,
                                            cfg.vf_clip or math.inf)  # --vf-clip 0: an infinite clip, none
            w = ddp.weight(response_mask.sum())  # DDP: this rank's share of the response tokens (1.0 on one process)
            pg_loss, v_loss, s = w * pg_loss, w * v_loss, {k: w * v for k, v in s.items()}
            loss = pg_loss
            if cfg.ptx_coef > 0:  # PPO-ptx: gamma * the pretraining LM loss, in every update
                x, y = ptx_minibatch(ptx_ids, cfg, ddp.unwrap(policy).config.block_size, (it, epoch, start), B)
                with autocast():
                    ptx_loss = policy(x.to(device), y.to(device))[1]
                loss = loss + cfg.ptx_coef * ptx_loss
                s["ptx_loss"] = ptx_loss.detach()
            finite &= torch.isfinite(loss.detach()) & torch.isfinite(v_loss.detach())  # read once, by the caller
            descend([opt_policy, opt_value], loss + v_loss, [policy.parameters(), value_model.parameters()],
                    cfg.grad_clip)                                   # separate networks: separate gradients
            s.update(pg_loss=pg_loss.detach(), v_loss=v_loss.detach(),
                     entropy=w * masked_mean(entropy.float().detach(), response_mask))
            stats.append(s)
    return stats, finite


def ptx_minibatch(ptx_ids, cfg, block_size, where, B):
    """PPO-ptx's D_pretrain rows for the minibatch at `where` = (iteration, epoch, first row): a
    batch of corpus windows numbered so that no two minibatches of the run share one. DDP: every
    rank numbers the whole rollout's rows (B is its share) and takes its share of the batch."""
    it, epoch, start = where
    x, y = pretrain_batch(ptx_ids, cfg.ptx_batch_size, block_size,
                          ((it * cfg.ppo_epochs + epoch) * B + start) * ddp.world(), cfg.seed)
    return ddp.share(x), ddp.share(y)


def iteration_metrics(tok, records, batch, returns, kl_coef, stats, t_train):
    """One log line's figures: the rollout's (rollout_figures), the minibatches' mean statistics, the
    answers' length, and where the iteration's time went."""
    out = dict(rollout_figures(tok, records, batch)[0], **mean_of(stats),
               resp_len=batch["response_mask"].sum(1).mean().item(), ended=batch["ended"].float().mean().item())
    out = {k: ddp.mean(v) for k, v in out.items()}  # DDP: the whole batch's (ranks hold equal shares of it)
    return dict(out, explained_var=explained_variance(*ddp.all_rows(batch["values"], returns, batch["response_mask"])),
                kl_coef=kl_coef, **time_shares(gen=batch["t_gen"], score=batch["t_score"], train=t_train))


# -----------------------------------------------------------------------------

def validate(cfg):
    check_positive(cfg, ("iterations", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "lr",
                 "value_lr", "eval_every", "n_eval", "temperature", "clip_coef", "grad_clip",
                 "ptx_batch_size", "target_kl", "kl_horizon"))
    if cfg.kl_coef < 0 or cfg.ptx_coef < 0 or cfg.vf_clip < 0:
        raise UserError("--kl-coef, --ptx-coef and --vf-clip must not be negative")
    check_files(cfg, ("prompts", "pretrain_data"))
    check_reward(cfg)
    if cfg.ptx_coef > 0 and cfg.prompts and not cfg.pretrain_data:
        raise UserError("--ptx-coef with your own --prompts needs --pretrain-data: PPO-ptx's pretraining text")
    if cfg.whole_step and not cfg.cuda_graph:
        raise UserError("--whole-step records the whole decode step in the CUDA graphs of --cuda-graph: add that flag")
    ensure_out_dir(cfg.out_dir)


def load_value_model(reward_path, reward_bias, device, sft_path=None):
    """The value model, "initialized from the RM" (Section 3.5) as PPO uses the RM: its score minus
    the bias, so that at the start V(s) is on the scale of the returns it learns to predict. With
    `sft_path` (--value-init sft): SFT's network with a new head instead, as RM training starts."""
    if sft_path:
        return ScalarModel(load_language_model(sft_path, device)[0]).to(device)
    value_model, _, _, _ = load_reward_model(reward_path, device)
    with torch.no_grad():
        value_model.head.bias -= reward_bias
    return value_model


def load_ppo_models(cfg, device):
    """ppo.py's four models (cfg: its Config): policy (trained, from SFT or --start), reference = SFT
    (frozen), RM (frozen), value model (trained, from the RM). -> (policy, ref, rm, value_model, tok,
    reward_bias)."""
    reward_path, init = reward_model_path(cfg), cfg.init or os.path.join(cfg.out_dir, "sft.pt")
    policy, ref, rm, tok, reward_bias, reward_scale = load_rlhf_models(init, cfg.start, reward_path, device)
    value_model = load_value_model(reward_path, reward_bias, device, init if cfg.value_init == "sft" else None)
    for m in (policy, ref, value_model.gpt):  # no dropout in RL: the ratio must be 1 before any update
        m.set_dropout(0.0)
    print(f"{cfg.name}: reward bias {reward_bias:+.3f}, scale {reward_scale:.3f}")
    return policy, ref, rm, value_model, tok, reward_bias


def main(cfg=None):
    cfg = cfg or parse_config(Config, presets=PRESETS, description=__doc__)
    validate(cfg)
    device, autocast = setup(cfg.device, cfg.seed)
    ddp.check_divides({"--batch-size": cfg.batch_size, "--minibatch-size": cfg.minibatch_size,
                       "--ptx-batch-size": cfg.ptx_batch_size if cfg.ptx_coef else 0})
    ddp.announce(cfg.name)
    log = MetricsLog(cfg.out_dir, cfg.name, cfg.quiet, cfg.resume)
    resume = Resume(cfg.out_dir, cfg.name, cfg, log)
    policy, ref, rm, value_model, tok, reward_bias = load_ppo_models(cfg, device)
    train_policy, train_value = ddp.wrap(policy), ddp.wrap(value_model)  # DDP: their backward averages gradients
    # the environment: prompts to answer (the simulated API's, or --prompts), held-out ones, D_pretrain for PPO-ptx
    world = None if cfg.prompts else data.build(cfg.preset, cfg.seed)
    prompts, eval_records, ptx_ids = rl_data(cfg, tok, policy.config.block_size, world, ptx=cfg.ptx_coef > 0)
    print(f"{cfg.name}: {len(prompts)} prompts ({len(eval_records)} more held out), {cfg.iterations} iterations of "
          f"{cfg.batch_size} episodes, beta {cfg.kl_coef}, ptx {cfg.ptx_coef}")
    if cfg.cuda_graph and device.type != "cuda":
        print(f"{cfg.name}: --cuda-graph needs a CUDA device; rollouts decode without graphs on {device.type}")
    opt_policy = configure_optimizer(policy, cfg.lr, weight_decay=0.0, device_type=device.type)
    opt_value = configure_optimizer(value_model, cfg.value_lr, weight_decay=0.0, device_type=device.type)
    kl_coef = cfg.kl_coef  # beta; --adaptive-kl moves it toward --target-kl
    rng = random.Random(cfg.seed + 3)                                    # which prompts each iteration
    generator = torch.Generator(device=device).manual_seed(ddp.seed(cfg.seed + 3))  # the rollouts' sampling

    def run_eval(it):
        stats, answers = evaluate(policy, ref, rm, tok, eval_records, cfg, reward_bias, autocast, it)
        log.log(it, **stats)
        return stats, answers

    def resumable():  # what --resume needs to continue exactly (DDP: each rank's sampling state)
        return resume.snapshot(policy=policy, value=value_model, opt_policy=opt_policy, opt_value=opt_value, rng=rng,
                               generator=generator, kl_coef=kl_coef, it=it, first_eval=first_eval)

    if cfg.resume:  # an interrupted run's state (OUT_DIR/<name>.resume.pt)
        state = resume.load(device)
        kl_coef, it, first_eval = state["kl_coef"], state["it"], state["first_eval"]
        resume.restore(state, policy=policy, value=value_model, opt_policy=opt_policy, opt_value=opt_value, rng=rng,
                       generator=generator)
        print(f"resumed {cfg.name} at iteration {it}")
    else:
        it = 0
        first_eval, _ = run_eval(0)
        resume.save(**resumable())

    with stop_on_signal() as stop:
        while it < cfg.iterations:
            resume.stop_if_asked(stop, f"iteration {it} of {cfg.iterations}", resumable)  # Ctrl-C: save, leave
            records = ddp.share(rng.sample(prompts, min(cfg.batch_size, len(prompts))))  # DDP: this rank's share
            # 1-2. rollout and score, without dropout (so that the update's first ratio is 1)
            policy.eval()
            batch = rollout(policy, tok, [r["prompt"] for r in records], cfg, generator, autocast)
            score(batch, policy, ref, value_model, rm, cfg, reward_bias, records, tok, autocast)
            stop_if_not_finite(torch.isfinite(batch["scores"]).all(), f"{cfg.name}: the reward model gave a "
                               f"non-finite score at iteration {it}; stopped; the last good state is {resume.path}")
            # 3-4. KL-shaped rewards, GAE, whitened advantages
            rewards = detailed_rewards(batch["scores"], batch["logprobs"], batch["ref_logprobs"], batch["response_mask"],
                                       kl_coef, cfg)
            advantages, returns = gae(rewards, batch["values"], batch["response_mask"], cfg.discount, cfg.lam)
            if cfg.whiten_advantages:  # DDP: whitened over every rank's rows, as one process whitens the whole batch
                advantages = ddp.over_all_rows(masked_whiten, advantages, batch["response_mask"])
            # 5. the PPO update
            t0 = time.time()
            stats, finite = update(train_policy, train_value, opt_policy, opt_value, batch, advantages, returns, cfg,
                                   it, ptx_ids, autocast)
            stop_if_not_finite(finite, f"{cfg.name}: loss is not finite at iteration {it}; stopped; the last good "
                               f"state is {resume.path}")  # the weights are poisoned; the saved state predates them
            metrics = iteration_metrics(tok, records, batch, returns, kl_coef, stats, time.time() - t0)
            log.log(it + 1, **metrics, **ddp.rank_losses(stats[-1]["pg_loss"].item(), len(records)))
            if cfg.adaptive_kl:
                kl_coef = adaptive_kl(kl_coef, metrics["kl"], cfg.target_kl, len(records) * ddp.world(), cfg.kl_horizon)
            it += 1
            if it % cfg.eval_every == 0 and it < cfg.iterations:
                run_eval(it)
                resume.save(**resumable())

    last_eval, answers = run_eval(cfg.iterations)
    metrics = finish(cfg, policy, tok, eval_records, first_eval, last_eval, answers, seconds=resume.seconds(),
                     trained_parameters=sum(p.numel() for m in (policy, value_model) for p in m.parameters()))
    resume.done()
    return metrics


if __name__ == "__main__":
    run_cli(main)

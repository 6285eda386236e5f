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

One iteration of the loop below:
  1. rollout    the policy answers a batch of prompts (batched KV-cache generation, gpt.py)
  2. score      the RM scores each answer at its last token; the frozen SFT model gives the
                reference log-probs; the value model gives V(s_t) for every response token
  3. rewards    r_t = -beta * (log pi(y_t) - log pi_SFT(y_t)) at every token, + RM score at the last
  4. GAE        advantages and returns (Schulman et al. 2016), whitened over the response mask
  5. update     several epochs of minibatches: clipped surrogate (Schulman et al. 2017), clipped
                value loss, + gamma * the LM loss on a pretraining batch (PPO-ptx)

Run on CPU (after sft.py and reward.py):
    python ppo.py --preset smoke --out-dir out/smoke
    python ppo.py --preset smoke --out-dir out/smoke --ptx-coef 1.0 --name ppo_ptx
    python ppo.py --preset smoke --out-dir out/smoke --resume      # after Ctrl-C (OUT_DIR/<name>.resume.pt)

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
"""

import contextlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass

import torch

import data
from gpt import (MetricsLog, Resume, UserError, arg, check_positive, configure_optimizer, ensure_out_dir,
    parse_config, run_cli, save_checkpoint, setup, stop_on_signal, token_logprobs)
from reward import last_index, load_reward_model, reward_scores
from sft import corpus_split, load_language_model, pretrain_batch


@dataclass
class Config:
    preset: str = arg("cpu", "sizes and steps: smoke, cpu or gpu")
    out_dir: str = arg("out/run", "run folder")
    init: str = arg("", "the frozen reference, and the policy's start (default OUT_DIR/sft.pt)")
    start: str = arg("", "start the policy here instead of --init (a later round continues the last policy)")
    reward: str = arg("", "the reward model (default OUT_DIR/reward.pt); the value model starts from it")
    name: str = arg("ppo", "output name: OUT_DIR/<name>.pt (e.g. ppo_ptx)")
    seed: int = arg(0, "seed")
    device: str = arg("auto", "auto, cpu or cuda")
    iterations: int = arg(60, "rollout-and-update iterations")
    batch_size: int = arg(64, "prompts (episodes) per rollout")
    minibatch_size: int = arg(16, "episodes per PPO minibatch")
    ppo_epochs: int = arg(4, "passes over each rollout batch (the clip only acts after the first minibatch)")
    max_new_tokens: int = arg(48, "longest response")
    temperature: float = arg(1.0, "rollout sampling temperature (the ratios and the KL use the policy at 1: "
                                  "other values make the rollouts off-policy)")
    cuda_graph: bool = arg(False, "CUDA: replay each rollout decode step as a CUDA graph (gpt.DecodeStep)")
    whole_step: bool = arg(False, "with --cuda-graph: the graph also records the sampling and its bookkeeping "
                                  "(gpt.DecodeStep's whole_step; not yet measured on a GPU)")
    compile_decode: bool = arg(False, "run each rollout decode step compiled by torch.compile (compiling takes "
                                      "seconds to minutes, once per process)")
    lr: float = arg(3e-5, "policy learning rate (paper: 9.65e-6 for 1.3B)")
    value_lr: float = arg(1e-4, "value model learning rate")
    kl_coef: float = arg(0.02, "beta: per-token KL penalty to SFT (paper: 0.02)")
    adaptive_kl: bool = arg(False, "adapt beta toward --target-kl (Ziegler et al. 2019)")
    target_kl: float = arg(2.0, "target KL per response (nats) for the adaptive controller")
    gamma: float = arg(1.0, "discount (the episode is one response)")
    lam: float = arg(0.95, "GAE lambda")
    clip_coef: float = arg(0.2, "PPO ratio clip")
    vf_clip: float = arg(0.2, "value clip around the rollout's values")
    no_eos_penalty: float = arg(-1.0, "reward for a response that never reaches EOS (0: off)")
    ptx_coef: float = arg(0.0, "gamma of PPO-ptx: weight of the pretraining LM loss (0: plain PPO)")
    ptx_batch_size: int = arg(16, "pretraining sequences per minibatch for PPO-ptx")
    grad_clip: float = arg(1.0, "gradient-norm clip, after backward")
    eval_every: int = arg(10, "iterations between evaluations on held-out prompts")
    n_eval: int = arg(100, "held-out prompts per evaluation")
    resume: bool = arg(False, "continue an interrupted run from its OUT_DIR/<name>.resume.pt")
    quiet: bool = arg(False, "no per-step log lines")


PRESETS = {
    "smoke": dict(iterations=12, batch_size=32, minibatch_size=16, ppo_epochs=2, max_new_tokens=32,
                  lr=3e-5, value_lr=3e-4, kl_coef=0.1, eval_every=12, n_eval=40),
    "cpu": dict(iterations=30, batch_size=64, minibatch_size=16, ppo_epochs=2, lr=3e-5, kl_coef=0.1, eval_every=10),
    # beta 0.1 as in the presets above: at the paper's 0.02 an H100 run of this preset
    # over-optimized the RM (held-out gold score 0.67 at iteration 25, 0.59 at 50, RM score rising)
    "gpu": dict(iterations=150, batch_size=256, minibatch_size=64, ppo_epochs=4, lr=2e-5, kl_coef=0.1,
                eval_every=25, n_eval=400, cuda_graph=True),
}


# -----------------------------------------------------------------------------
# The maths, as small functions: masked means, KL-shaped rewards, GAE, the PPO losses

def masked_mean(x, mask, dim=None):
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x, mask, eps=1e-8):
    """Zero mean, unit variance over the real (mask = 1) entries only."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def kl_shaped_rewards(scores, logprobs, ref_logprobs, response_mask, kl_coef):
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


def gae(rewards, values, response_mask, gamma=1.0, lam=0.95):
    """
    Generalized advantage estimation over response tokens (Schulman et al. 2016):
      delta_t = r_t + gamma * V(s_{t+1}) - V(s_t),   A_t = delta_t + gamma * lam * A_{t+1},
    with V = 0 after the last real token (the episode ends there; padding contributes nothing).
    rewards, values, response_mask (B, N) -> advantages (B, N), returns (B, N) = A + V.
    """
    B, N = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros(B, device=rewards.device)
    next_value = torch.zeros(B, device=rewards.device)
    for t in reversed(range(N)):
        m = response_mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * m               # a padding step resets the recursion
        next_value = values[:, t] * m
        advantages[:, t] = next_adv
    return advantages, (advantages + values) * response_mask


def ppo_losses(logprobs, old_logprobs, advantages, values, old_values, returns, mask,
               clip_coef=0.2, vf_clip=0.2):
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
    with torch.no_grad():  # tensors, not numbers: reading one would wait for the GPU (PPO reads them once per iteration)
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


class AdaptiveKL:
    """Ziegler et al. 2019: beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)."""

    def __init__(self, kl_coef, target, horizon=10000):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, kl, n_episodes):
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.value *= 1 + error * n_episodes / self.horizon


# -----------------------------------------------------------------------------
# Rollouts and their scores

@torch.no_grad()
def rollout(policy, ref, value_model, rm, tok, prompts, cfg, reward_bias, generator, autocast=contextlib.nullcontext):
    """Generate answers to `prompts` and score them. Returns a dict of (B, ...) tensors:
    tokens, attention_mask, response_mask, logprobs, ref_logprobs, values (zeros without a
    value model), scores (the reward: the RM's score minus the bias, or the no-EOS penalty),
    rm_scores (the RM's alone), and the prompt length T (responses are tokens[:, T:]); and the seconds
    spent generating and scoring. `autocast` must be the update's (bf16 on CUDA), so that the old
    log-probs come from the same arithmetic as the new ones and the first ratio is 1."""
    device = next(policy.parameters()).device
    idx, mask, _ = data.left_pad([tok.chat_prompt(p) for p in prompts], tok.pad_id,
                                 max_len=policy.config.block_size - cfg.max_new_tokens)
    idx, mask = idx.to(device), mask.to(device)
    graphs = cfg.cuda_graph and device.type == "cuda"
    t0 = time.time()
    with autocast():
        out = policy.generate(idx, cfg.max_new_tokens, attention_mask=mask, temperature=cfg.temperature,
                              eos_id=tok.eos_id, pad_id=tok.pad_id, generator=generator,
                              suppress_ids=tok.never_sampled, cuda_graph=graphs, whole_step=graphs and cfg.whole_step,
                              compile_step=cfg.compile_decode)
    if device.type == "cuda":
        torch.cuda.synchronize()  # the clock must not stop while kernels still run
    t_gen = time.time() - t0
    T = idx.size(1)
    response_mask = out.response_mask.float()
    full_mask = torch.cat([mask, out.response_mask], dim=1)
    with autocast():  # one batched forward pass per model over all B answers
        # the old policy's log-probs, recomputed by the same forward pass the update uses
        logprobs = token_logprobs(policy, out.tokens, full_mask)[:, T - 1:] * response_mask
        ref_logprobs = token_logprobs(ref, out.tokens, full_mask)[:, T - 1:] * response_mask
        values = torch.zeros_like(logprobs)
        if value_model is not None:
            values = value_model(out.tokens, full_mask)[:, T - 1:-1].float() * response_mask  # V(prompt + y_<t)
        scores = reward_scores(rm, out.tokens, full_mask) - reward_bias
    ended = (out.tokens[:, T:] == tok.eos_id).any(1)
    rm_scores = scores                                               # what the log calls the RM score
    if cfg.no_eos_penalty:
        scores = torch.where(ended, scores, torch.full_like(scores, cfg.no_eos_penalty))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return dict(tokens=out.tokens, attention_mask=full_mask, response_mask=response_mask, logprobs=logprobs,
                ref_logprobs=ref_logprobs, values=values, scores=scores, rm_scores=rm_scores, ended=ended, T=T,
                t_gen=t_gen, t_score=time.time() - t0 - t_gen)


def decode_responses(tok, batch):
    T = batch["T"]
    out = []
    for row, m in zip(batch["tokens"][:, T:].tolist(), batch["response_mask"].tolist()):
        out.append(tok.decode([t for t, keep in zip(row, m) if keep and t != tok.eos_id]).strip())
    return out


@torch.no_grad()
def evaluate(policy, ref, rm, tok, records, cfg, reward_bias, generator, autocast=contextlib.nullcontext):
    """On held-out prompts: mean RM score (sampled answers), gold score, KL to SFT per answer."""
    batch = rollout(policy, ref, None, rm, tok, [r["prompt"] for r in records], cfg, reward_bias, generator,
                    autocast)
    answers = decode_responses(tok, batch)
    gold = [data.gold_score(r["task"], a)["total"] for r, a in zip(records, answers)]
    kl = ((batch["logprobs"] - batch["ref_logprobs"]) * batch["response_mask"]).sum(1)
    return dict(eval_rm_score=batch["rm_scores"].mean().item(), eval_gold=sum(gold) / len(gold),
                eval_kl=kl.mean().item()), answers


# -----------------------------------------------------------------------------

def load_value_model(reward_path, reward_bias, device):
    """The value model, "initialized from the RM" (Section 3.5) as PPO uses the RM: its score minus
    the bias, so that at the start V(s) is on the scale of the returns it learns to predict."""
    value_model, _, _, _ = load_reward_model(reward_path, device)
    with torch.no_grad():
        value_model.head.bias -= reward_bias
    return value_model


def validate(cfg):
    check_positive(cfg, ("iterations", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "lr",
                 "value_lr", "eval_every", "n_eval", "temperature", "clip_coef", "vf_clip", "grad_clip",
                 "ptx_batch_size", "target_kl"))
    if cfg.kl_coef < 0 or cfg.ptx_coef < 0:
        raise UserError("--kl-coef and --ptx-coef must not be negative")
    if cfg.whole_step and not cfg.cuda_graph:
        raise UserError("--whole-step records the whole decode step in the CUDA graphs of --cuda-graph: add that flag")
    ensure_out_dir(cfg.out_dir)


def main(cfg=None):
    cfg = cfg or parse_config(Config, presets=PRESETS, description=__doc__)
    validate(cfg)
    device, autocast = setup(cfg.device, cfg.seed)
    log = MetricsLog(cfg.out_dir, cfg.name, cfg.quiet, cfg.resume)
    t_start = time.time()
    init = cfg.init or os.path.join(cfg.out_dir, "sft.pt")
    reward_path = cfg.reward or os.path.join(cfg.out_dir, "reward.pt")

    # ---- four models: policy (trained), reference = SFT (frozen), value (trained, from the RM), RM (frozen)
    ref, tok, _ = load_language_model(init, device)
    policy, policy_tok, _ = load_language_model(cfg.start or init, device)
    if policy_tok.state() != tok.state():
        raise UserError(f"{cfg.start}: its vocabulary differs from {init}'s")
    ref.eval().requires_grad_(False)
    rm, rm_tok, reward_bias, reward_scale = load_reward_model(reward_path, device)
    if rm_tok.state() != tok.state():
        raise UserError(f"{reward_path}: its vocabulary differs from {init}'s")
    rm.eval().requires_grad_(False)
    value_model = load_value_model(reward_path, reward_bias, device)
    for m in (policy, ref, value_model.gpt):  # no dropout in RL: the ratio must be 1 before any update
        m.set_dropout(0.0)
    if cfg.max_new_tokens >= policy.config.block_size:
        raise UserError(f"--max-new-tokens {cfg.max_new_tokens} leaves no room for a prompt in the model's "
                        f"block_size {policy.config.block_size}")
    world = data.build(cfg.preset, cfg.seed)
    prompts = world["ppo"]
    eval_records = world["val"][:cfg.n_eval]
    room = policy.config.block_size - cfg.max_new_tokens
    cut = sum(len(tok.chat_prompt(r["prompt"])) > room for r in prompts)
    if cut:  # rollout keeps the last `room` tokens of a longer prompt, as sft.py's samples do
        print(f"{cfg.name}: {cut} of {len(prompts)} prompts are longer than {room} tokens (block_size - "
              f"--max-new-tokens) and lose their left end")
    train_ids, _ = corpus_split(tok, world["corpus"], policy.config.block_size)  # PPO-ptx's D_pretrain
    print(f"{cfg.name}: {len(prompts)} prompts, {cfg.iterations} iterations of {cfg.batch_size} episodes, "
          f"beta {cfg.kl_coef}, ptx {cfg.ptx_coef}; reward bias {reward_bias:+.3f}, scale {reward_scale:.3f}")
    if cfg.cuda_graph and device.type != "cuda":
        print(f"{cfg.name}: --cuda-graph needs a CUDA device; rollouts decode without graphs on {device.type}")

    opt_policy = configure_optimizer(policy, cfg.lr, weight_decay=0.0, device_type=device.type)
    opt_value = configure_optimizer(value_model, cfg.value_lr, weight_decay=0.0, device_type=device.type)
    kl_ctl = AdaptiveKL(cfg.kl_coef, cfg.target_kl)
    rng = random.Random(cfg.seed + 3)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 3)
    eval_gen_seed = cfg.seed + 4

    def run_eval(it):
        g = torch.Generator(device=device).manual_seed(eval_gen_seed)  # the same draws at every evaluation
        stats, answers = evaluate(policy, ref, rm, tok, eval_records, cfg, reward_bias, g, autocast)
        log.log(it, **stats)
        return stats, answers

    # ---- Ctrl-C saves the loop's state between iterations; --resume puts it back (issue 9)
    resume = Resume(cfg.out_dir, cfg.name, cfg, log, t_start)

    def one_iteration(it):
        # 1-2. rollout and scoring
        batch_records = rng.sample(prompts, min(cfg.batch_size, len(prompts)))
        batch_prompts = [r["prompt"] for r in batch_records]
        policy.eval()
        b = rollout(policy, ref, value_model, rm, tok, batch_prompts, cfg, reward_bias, generator, autocast)
        if not torch.isfinite(b["scores"]).all():
            raise UserError(f"{cfg.name}: the reward model gave a non-finite score at iteration {it}; stopped; "
                            f"the last good state is {resume.path}")
        # 3-4. KL-shaped rewards, GAE, whitened advantages
        rewards, kl = kl_shaped_rewards(b["scores"], b["logprobs"], b["ref_logprobs"], b["response_mask"], kl_ctl.value)
        advantages, returns = gae(rewards, b["values"], b["response_mask"], cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, b["response_mask"])
        # 5. several epochs of minibatches
        t0 = time.time()
        policy.train()
        value_model.train()
        B, T = len(batch_prompts), b["T"]
        # The minibatches' statistics and the finite-loss check stay on the device until the
        # iteration's end: reading a number (.item(), if) makes the host wait for the GPU, which
        # then idles while the host queues the next kernels; once per iteration, not per minibatch.
        stats, finite = [], torch.ones((), dtype=torch.bool, device=device)
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=torch.Generator().manual_seed(cfg.seed * 7919 + it * 31 + epoch))
            for start in range(0, B, cfg.minibatch_size):
                mb = order[start:start + cfg.minibatch_size].to(device)
                mb_tokens, mb_attn, mb_mask = b["tokens"][mb], b["attention_mask"][mb], b["response_mask"][mb]
                with autocast():
                    new_logprobs, entropy = token_logprobs(policy, mb_tokens, mb_attn, with_entropy=True)
                    new_values = value_model(mb_tokens, mb_attn)[:, T - 1:-1]
                pg_loss, v_loss, s = ppo_losses(new_logprobs[:, T - 1:], b["logprobs"][mb], advantages[mb],
                                                new_values.float(), b["values"][mb], returns[mb], mb_mask,
                                                cfg.clip_coef, cfg.vf_clip)
                loss = pg_loss
                if cfg.ptx_coef > 0:  # PPO-ptx: gamma * the pretraining LM loss, in every update
                    x, y = pretrain_batch(train_ids, cfg.ptx_batch_size, policy.config.block_size,
                                          (it * cfg.ppo_epochs + epoch) * B + start, cfg.seed)  # one per minibatch
                    with autocast():
                        ptx_loss = policy(x.to(device), y.to(device))[1]
                    loss = loss + cfg.ptx_coef * ptx_loss
                    s["ptx_loss"] = ptx_loss.detach()
                finite &= torch.isfinite(loss.detach()) & torch.isfinite(v_loss.detach())
                opt_policy.zero_grad(set_to_none=True)
                opt_value.zero_grad(set_to_none=True)
                (loss + v_loss).backward()                           # separate networks: separate gradients
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
                torch.nn.utils.clip_grad_norm_(value_model.parameters(), cfg.grad_clip)
                opt_policy.step()
                opt_value.step()
                s.update(pg_loss=pg_loss.detach(), v_loss=v_loss.detach(),
                         entropy=masked_mean(entropy[:, T - 1:].float().detach(), mb_mask))
                stats.append(s)
        if not finite:  # the weights are poisoned now; the last saved state predates them
            raise UserError(f"{cfg.name}: loss is not finite at iteration {it}; stopped; the last good state "
                            f"is {resume.path}")
        t_train = time.time() - t0
        # one log line
        answers = decode_responses(tok, b)
        gold = [data.gold_score(r["task"], a)["total"] for r, a in zip(batch_records, answers)]
        seq_kl = kl.sum(1).mean().item()
        keys = list(stats[0])
        per_minibatch = torch.stack([torch.stack([s[k] for k in keys]) for s in stats]).tolist()  # read in one go
        mean = {k: sum(row[j] for row in per_minibatch) / len(stats) for j, k in enumerate(keys)}
        total_t = b["t_gen"] + b["t_score"] + t_train
        log.log(it + 1, rm_score=b["rm_scores"].mean().item(), gold=sum(gold) / len(gold), kl=seq_kl,
                kl_coef=kl_ctl.value, **mean, explained_var=explained_variance(b["values"], returns, b["response_mask"]),
                resp_len=b["response_mask"].sum(1).mean().item(), ended=b["ended"].float().mean().item(),
                gen_frac=round(b["t_gen"] / total_t, 3), score_frac=round(b["t_score"] / total_t, 3),
                train_frac=round(t_train / total_t, 3), iter_s=round(total_t, 3))
        if cfg.adaptive_kl:
            kl_ctl.update(seq_kl, B)

    def resumable():
        return dict(policy=policy.state_dict(), value=value_model.state_dict(), opt_policy=opt_policy.state_dict(),
                    opt_value=opt_value.state_dict(), kl_coef=kl_ctl.value, rng=rng.getstate(),
                    generator=generator.get_state(), generator_device=device.type, it=it, first_eval=first_eval)

    if cfg.resume:
        state = resume.load(device)
        was = state.get("generator_device", device.type)
        if was != device.type:  # the sampling generator's state belongs to one kind of device
            raise UserError(f"--resume: {cfg.name} was interrupted on {was} and this run is on {device.type}; "
                            f"resume it with --device {was}")
        policy.load_state_dict(state["policy"])
        value_model.load_state_dict(state["value"])
        opt_policy.load_state_dict(state["opt_policy"])
        opt_value.load_state_dict(state["opt_value"])
        kl_ctl.value, it, first_eval = state["kl_coef"], state["it"], state["first_eval"]
        rng.setstate(state["rng"])
        generator.set_state(state["generator"].cpu())
        resume.restore_rng(state)
        print(f"resumed {cfg.name} at iteration {it}")
    else:
        it = 0
        first_eval, _ = run_eval(0)
        resume.save(**resumable())
    with stop_on_signal() as stop:
        while it < cfg.iterations:
            if stop.requested:
                resume.interrupted(f"iteration {it} of {cfg.iterations}", **resumable())
            one_iteration(it)
            it += 1
            if it % cfg.eval_every == 0 and it < cfg.iterations:
                run_eval(it)
                resume.save(**resumable())

    last_eval, answers = run_eval(cfg.iterations)
    metrics = {**{k + "_before": v for k, v in first_eval.items()}, **last_eval,
               "seconds": resume.seconds()}
    print(f"{cfg.name}: on {len(eval_records)} held-out prompts, RM score {first_eval['eval_rm_score']:+.3f} -> "
          f"{last_eval['eval_rm_score']:+.3f}, gold {first_eval['eval_gold']:+.3f} -> {last_eval['eval_gold']:+.3f}, "
          f"KL to SFT {last_eval['eval_kl']:.2f} nats per answer; {metrics['seconds']:.0f}s")
    for r, a in list(zip(eval_records, answers))[:3]:
        print(f"  {r['prompt']!r} -> {a!r}")
    save_checkpoint(os.path.join(cfg.out_dir, f"{cfg.name}.pt"), policy, stage=cfg.name, tokenizer=tok.state(),
                    config=asdict(cfg), metrics=metrics)
    resume.done()
    plot_scores_vs_kl(cfg.out_dir, [cfg.name], f"{cfg.name}_scores_vs_kl.png")
    return metrics


def plot_scores_vs_kl(out_dir, names, filename):
    """RM score and gold score of each iteration's rollouts against their KL to SFT, one colour per
    run in `names` (metrics.jsonl stages). Where the RM score keeps rising and the gold score does
    not, the policy over-optimizes the RM."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, color in zip(names, ("C0", "C1", "C2", "C3")):
        pts = [r for r in rows if r["stage"] == name and "kl" in r]
        if pts:
            kl = [r["kl"] for r in pts]
            ax.scatter(kl, [r["rm_score"] for r in pts], s=14, marker="o", color=color, label=f"{name}: RM score")
            ax.scatter(kl, [r["gold"] for r in pts], s=14, marker="x", color=color, label=f"{name}: gold score")
    ax.set_xlabel("KL(policy || SFT) per answer, nats")
    ax.set_ylabel("score on rollouts")
    ax.set_title("RM score and gold score of each PPO iteration's rollouts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, filename), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    run_cli(main)

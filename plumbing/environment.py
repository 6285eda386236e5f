"""
plumbing/environment.py: the environment the RL steps (ppo.py, grpo.py) act in. InstructGPT,
Section 3.5: "a bandit environment which presents a random customer prompt and expects a response
to the prompt. Given the prompt and response, it produces a reward determined by the reward model
and ends the episode."

  rl_data            the training prompts, the held-out prompts the evaluations answer, and PPO-ptx's
                     pretraining text, from the simulated world or from your own files
  rollout            the policy answers a batch of prompts (engine.generate: gpt.GPT.generate, made fast)
  response_logprobs  log pi(y_t | x, y_<t) of each response token of a rollout
  score              each answer's reward (the RM's score minus its bias, or with --reward gold the
                     world's gold rubric: RL from the truth itself) and the policy's and SFT's log-probs
  evaluate           held-out prompts answered and scored: RM score, gold score, KL to SFT
  finish             the end of a run: its figures, a summary line, the checkpoint and its plot
"""

import contextlib
import json
import os
import time
from dataclasses import asdict

import torch

from gpt import reward_scores, save_checkpoint, token_logprobs
from world import gold_mean, gold_score
from plumbing import ddp, engine
from plumbing.cli import UserError
from plumbing.formats import own_prompts, read_texts
from plumbing.loop import seconds_since
from plumbing.plots import plot_scores_vs_kl
from plumbing.tokenizer import corpus_split, decode_responses, left_pad

GOLD = "gold"  # --reward gold: the gold rubric scores each answer instead of the RM


def reward_model_path(cfg):
    """The RM an RL step loads: --reward, else OUT_DIR/reward.pt. With --reward gold the RM is still
    loaded: it reports its score of the answers (and PPO's value model starts from it)."""
    return os.path.join(cfg.out_dir, "reward.pt") if cfg.reward in ("", GOLD) else cfg.reward


def check_reward(cfg):
    """The one-line error for a reward the prompts cannot have: the gold rubric is the simulated world's."""
    if cfg.reward == GOLD and cfg.prompts:
        raise UserError("--reward gold scores answers with the simulated world's gold rubric; your --prompts have "
                        "none: leave out one of the two")


def rl_data(cfg, tok, block_size, world=None, ptx=False):
    """-> (training prompt records, held-out prompt records (at most cfg.n_eval), D_pretrain as
    token ids, or None without `ptx`). `world` (data.build's) gives the simulated API's RL prompts,
    its validation users' prompts (held out) and its corpus; without it, cfg.prompts is your file
    (5% held out) and cfg.pretrain_data your text. cfg: an RL step's Config (its prompts, seed,
    n_eval, batch_size, max_new_tokens, name, and pretrain_data for PPO-ptx)."""
    prompts, eval_records = own_prompts(cfg.prompts, cfg.seed) if cfg.prompts else (world["ppo"], world["val"])
    eval_records = eval_records[:cfg.n_eval]
    room = block_size - cfg.max_new_tokens
    if room <= 0:
        raise UserError(f"--max-new-tokens {cfg.max_new_tokens} leaves no room for a prompt in the model's "
                        f"block_size {block_size}")
    cut = sum(len(tok.chat_prompt(r["prompt"])) > room for r in prompts)
    if cut:  # a rollout keeps the last `room` tokens of a longer prompt, as respond's samples do
        print(f"{cfg.name}: {cut} of {len(prompts)} prompts are longer than {room} tokens (block_size - "
              f"--max-new-tokens) and lose their left end")
    ddp.check_divides({"--batch-size (at most the number of prompts)": min(cfg.batch_size, len(prompts))})
    if len(eval_records) < ddp.world():
        raise UserError(f"{len(eval_records)} held-out prompts (--n-eval) for {ddp.world()} processes: each needs one")
    if not ptx:
        return prompts, eval_records, None
    corpus = read_texts(cfg.pretrain_data) if cfg.pretrain_data else None if cfg.prompts else world["corpus"]
    ptx_ids = corpus_split(tok, corpus, block_size, f"--pretrain-data {cfg.pretrain_data}")[0] if corpus else None
    return prompts, eval_records, ptx_ids


# -----------------------------------------------------------------------------
# One episode per prompt: the policy answers, the environment rewards the answer

@torch.no_grad()
def rollout(policy, tok, prompts, cfg, generator, autocast=contextlib.nullcontext):
    """The policy answers `prompts`, sampled at cfg.temperature by engine.generate (the computation
    of gpt.GPT.generate, made fast). Returns a dict of (B, ...) tensors: tokens (prompt + response),
    attention_mask, response_mask (float), ended (the answer reached EOS), the prompt length T
    (responses are tokens[:, T:]), and t_gen (seconds)."""
    device = next(policy.parameters()).device
    idx, mask, _ = left_pad([tok.chat_prompt(p) for p in prompts], tok.pad_id,
                            max_len=policy.config.block_size - cfg.max_new_tokens)
    idx, mask = idx.to(device), mask.to(device)
    graphs = cfg.cuda_graph and device.type == "cuda"
    t0 = time.time()
    with autocast():
        out = engine.generate(policy, idx, cfg.max_new_tokens, attention_mask=mask, temperature=cfg.temperature,
                              eos_id=tok.eos_id, pad_id=tok.pad_id, generator=generator,
                              suppress_ids=tok.never_sampled, cuda_graph=graphs,
                              whole_step=graphs and cfg.whole_step, compile_step=cfg.compile_decode)
    T = idx.size(1)
    return dict(tokens=out.tokens, attention_mask=torch.cat([mask, out.response_mask], dim=1),
                response_mask=out.response_mask.float(), ended=(out.tokens[:, T:] == tok.eos_id).any(1), T=T,
                t_gen=seconds_since(t0, device))


def response_logprobs(model, tokens, mask, T, with_entropy=False, temperature=1.0):
    """log pi(y_t | x, y_<t) of each response token, (B, N) (and the entropy there), of pi at
    `temperature`. A rollout's tokens are the prompt (T of them, left-padded), then the response
    (N). The logits at position j predict token j+1, so gpt.token_logprobs' column j is token j+1's
    log-prob, and the response tokens tokens[:, T:] are its columns T-1 onward."""
    out = token_logprobs(model, tokens, mask, with_entropy=with_entropy, temperature=temperature)
    return tuple(o[:, T - 1:] for o in out) if with_entropy else out[:, T - 1:]


@torch.no_grad()
def score(batch, policy, ref, rm, cfg, reward_bias, records=None, tok=None, autocast=contextlib.nullcontext,
          temperature=1.0):
    """One batched forward pass per model over a rollout's answers; adds to `batch`: logprobs (the
    policy's, recomputed by the same forward pass the update uses, so that the first ratio is 1:
    `autocast` and `temperature` must be the update's), ref_logprobs (the frozen SFT model's, at the
    same temperature), rm_scores (the RM's score minus the bias), scores (the reward: the RM's, or
    with cfg.reward "gold" the gold rubric's total for each of `records`' tasks; an answer that
    never reached EOS gets cfg.no_eos_penalty instead, when it is not 0), t_score (seconds)."""
    t0 = time.time()
    tokens, mask, response_mask, T = batch["tokens"], batch["attention_mask"], batch["response_mask"], batch["T"]
    with autocast():
        logprobs = response_logprobs(policy, tokens, mask, T, temperature=temperature) * response_mask
        ref_logprobs = response_logprobs(ref, tokens, mask, T, temperature=temperature) * response_mask
        rm_scores = reward_scores(rm, tokens, mask).float() - reward_bias
    scores = rm_scores
    if cfg.reward == GOLD:  # the truth as the reward: the world's programmatic verifier
        said = decode_responses(tok, tokens[:, T:], response_mask)
        scores = torch.tensor([gold_score(r["task"], a)["total"] for r, a in zip(records, said)],
                              dtype=rm_scores.dtype, device=rm_scores.device)
    no_eos = torch.full_like(scores, cfg.no_eos_penalty)  # an answer that never reached EOS
    scores = torch.where(batch["ended"], scores, no_eos) if cfg.no_eos_penalty else scores
    batch.update(logprobs=logprobs, ref_logprobs=ref_logprobs, scores=scores, rm_scores=rm_scores,
                 t_score=seconds_since(t0, tokens.device))
    return batch


# -----------------------------------------------------------------------------
# What a batch of answers got, on the training prompts and on held-out ones

def rollout_figures(tok, records, batch, prefix=""):
    """What a scored rollout's answers got on average: the RM's score, the gold score (simulated
    prompts) and the KL to SFT per answer. -> (figures named prefix + ..., the answers as text)."""
    said = decode_responses(tok, batch["tokens"][:, batch["T"]:], batch["response_mask"])
    kl = ((batch["logprobs"] - batch["ref_logprobs"]) * batch["response_mask"]).sum(1)
    return {prefix + "rm_score": batch["rm_scores"].mean().item(), **gold_mean(records, said, prefix + "gold"),
            prefix + "kl": kl.mean().item()}, said


@torch.no_grad()
def evaluate(policy, ref, rm, tok, records, cfg, reward_bias, autocast=contextlib.nullcontext, it=0):
    """On held-out prompts, one answer each, sampled with the same draws at every evaluation: mean RM
    score, gold score (simulated prompts), KL to SFT per answer. Under torchrun each rank answers its
    share of the prompts (with its own draws); the means and answers are the whole set's. With
    cfg.eval_answers, iteration `it`'s answers go to OUT_DIR/<name>.eval_answers.jsonl (a new run's
    first evaluation, it 0, starts the file)."""
    records, device = ddp.share(records), next(policy.parameters()).device
    g = torch.Generator(device=device).manual_seed(ddp.seed(cfg.seed + 4))
    batch = rollout(policy, tok, [r["prompt"] for r in records], cfg, g, autocast)
    score(batch, policy, ref, rm, cfg, reward_bias, records, tok, autocast)
    stats, said = rollout_figures(tok, records, batch, "eval_")
    stats, said = {k: ddp.weighted_mean(v, len(records)) for k, v in stats.items()}, ddp.gather(said)
    if cfg.eval_answers and ddp.is_main():
        with open(os.path.join(cfg.out_dir, f"{cfg.name}.eval_answers.jsonl"), "w" if it == 0 else "a") as f:
            f.write(json.dumps({"iteration": it, "answers": said}) + "\n")
    return stats, said


def finish(cfg, policy, tok, eval_records, first_eval, last_eval, answers, **figures):
    """The end of an RL run: its figures (the first evaluation's as *_before, the last one's,
    `figures`, and each held-out answer's gold, for tools/sweep.py's interval over prompts), a
    summary line with three answers, and (rank 0 under torchrun) OUT_DIR/<name>.pt with its
    scores-against-KL plot. -> the figures."""
    metrics = {**{k + "_before": v for k, v in first_eval.items()}, **last_eval, **figures}
    if "eval_gold" in last_eval:
        metrics["eval_gold_per_prompt"] = gold_mean(eval_records, answers, "eval_gold",
                                                    per_prompt=True)["eval_gold_per_prompt"]
    print(f"{cfg.name}: on {len(eval_records)} held-out prompts, RM score {first_eval['eval_rm_score']:+.3f} -> "
          f"{last_eval['eval_rm_score']:+.3f}, "
          + (f"gold {first_eval['eval_gold']:+.3f} -> {last_eval['eval_gold']:+.3f}, " if "eval_gold" in last_eval else "")
          + f"KL to SFT {last_eval['eval_kl']:.2f} nats per answer; {metrics['seconds']:.0f}s")
    for r, a in list(zip(eval_records, answers))[:3]:
        print(f"  {r['prompt'][-100:]!r} -> {a[:100]!r}")
    if ddp.is_main():
        save_checkpoint(os.path.join(cfg.out_dir, f"{cfg.name}.pt"), policy, stage=cfg.name, tokenizer=tok.state(),
                        config=asdict(cfg), metrics=metrics, world_size=ddp.world())
        plot_scores_vs_kl(cfg.out_dir, [cfg.name], f"{cfg.name}_scores_vs_kl.png")
    return metrics

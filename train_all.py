"""
train_all.py: the whole InstructGPT pipeline, then an evaluation like the paper's.

    step 0  pretrain      sft.py --stage pretrain      the base model ("GPT-3")
    step 1  SFT           sft.py --stage sft           labeler demonstrations
    step 2  reward model  reward.py                    K = 4..9 SFT samples per prompt, ranked
    step 3  PPO           ppo.py                       RM score - beta * KL to SFT
            PPO-ptx       ppo.py --ptx-coef G          + gamma * pretraining loss
    steps 2 and 3 repeat for --rounds R, with comparisons sampled from the current policy.

Then, as in the paper's Figure 1 and Section 4.1, on test prompts from held-out users judged by
held-out labelers: the win rate against SFT (with a 95% interval) of the prompted base model, the
few-shot prompted base model, SFT, PPO and PPO-ptx; the gold rubric per dimension; the KL to SFT;
the pretraining loss on held-out corpus text (the "alignment tax"); the RM's held-out accuracy
beside the labelers' agreement; the prompt funnel's counts.

    python train_all.py --preset smoke --out-dir out/smoke     # under 3 minutes on 2 CPU cores
    python train_all.py                                        # gpu preset on CUDA, else cpu

Writes OUT_DIR/summary.json, report.md and PNG plots beside the checkpoints. A stage whose
checkpoint exists is skipped (so a run can be continued), unless --force; a checkpoint made with
another --preset, --seed or --ptx-coef is an error. A stage interrupted with Ctrl-C (it leaves
<stage>.resume.pt) continues where it stopped.

Where the evaluation departs from the paper: answers are sampled at temperature 1 as in the
paper, and also greedy (the *_greedy keys); the labelers are simulated, and the gold rubric is
known, so every model is also scored against the truth.
"""

import json
import math
import os
import random
import time
from dataclasses import dataclass, replace

import torch

import data
import ppo
import reward
import sft
from checkpoint import lm_loss, load_reward_model, respond, score_texts
from common import UserError, arg, ensure_out_dir, parse_config, run_cli, setup
from gpt import load_checkpoint
from plots import plot_all
from tokenizer import Tokenizer, corpus_split
from world import gold_score

MODELS = ["base", "base_fewshot", "sft", "ppo", "ppo_ptx"]


@dataclass
class Config:
    preset: str = arg("", "smoke (CI, < 3 min), cpu (laptop, < 30 min) or gpu; default: gpu on CUDA, else cpu")
    out_dir: str = arg("", "run folder (default out/<preset>)")
    seed: int = arg(0, "seed for everything: the same seed gives the same summary.json on CPU")
    rounds: int = arg(1, "times steps 2 and 3 run; later rounds rank samples of the current policy")
    ptx_coef: float = arg(-1.0, "gamma of PPO-ptx (default: the preset's)")
    n_test: int = arg(-1, "test prompts in the evaluation (default: the preset's)")
    force: bool = arg(False, "re-run stages whose checkpoints exist")
    device: str = arg("auto", "auto, cpu or cuda")
    quiet: bool = arg(False, "only stage summaries, no per-step lines")


PRESETS = {
    "smoke": dict(ptx_coef=1.0, n_test=120),
    "cpu": dict(ptx_coef=1.0, n_test=400),
    "gpu": dict(ptx_coef=1.0, n_test=1000),
}


# -----------------------------------------------------------------------------
# Evaluation

def win_rate(wins, n):
    """Fraction of comparisons won (ties count half) and its 95% normal-approximation interval."""
    p = wins / max(n, 1)
    half = 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))
    return p, (max(0.0, p - half), min(1.0, p + half))


def judge(labelers, records, answers, reference, rng):
    """Each test prompt is judged by one random held-out labeler: 1 if they prefer the model's
    answer to the reference (SFT) answer, 0.5 for identical answers, else 0."""
    wins = 0.0
    for r, a, b in zip(records, answers, reference):
        if a == b:
            wins += 0.5
            continue
        lab = rng.choice(labelers)
        wins += lab.score(r["task"], a, rng) > lab.score(r["task"], b, rng)
    return wins


@torch.no_grad()
def sample_chat(model, ref, rm, tok, prompts, reward_bias, seed):
    """Answers sampled at temperature 1 (the distribution PPO optimizes), with each answer's KL to
    SFT (the sum over its tokens of log pi - log pi_SFT) and its RM score minus the bias."""
    cfg = ppo.Config(max_new_tokens=48, no_eos_penalty=0.0)
    model.eval()  # no dropout in the log-probs: an SFT checkpoint may carry some (the gpu preset's)
    ref.eval()
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    answers, kl, scores = [], [], []
    for i in range(0, len(prompts), 64):
        b = ppo.score(ppo.rollout(model, tok, prompts[i:i + 64], cfg, g), model, ref, None, rm, cfg, reward_bias)
        answers += ppo.decode_responses(tok, b)
        kl += ((b["logprobs"] - b["ref_logprobs"]) * b["response_mask"]).sum(1).tolist()
        scores += b["scores"].tolist()
    return answers, sum(kl) / len(kl), scores


def evaluate(out_dir, preset, seed, n_test, device, paths):
    """Every model answers the same held-out test prompts twice, sampled at temperature 1 (the
    main results) and greedily; held-out labelers judge each answer against SFT's."""
    world = data.build(preset, seed)
    test = world["test"][:n_test]
    prompts = [r["prompt"] for r in test]
    heldout = [l for l in world["labelers"] if l.heldout]
    models = {name: load_checkpoint(p, device)[0] for name, p in paths.items() if name != "reward"}
    tok = Tokenizer.from_state(load_checkpoint(paths["sft"], device)[1]["tokenizer"])
    rm, _, bias, _ = load_reward_model(paths["reward"], device)
    block = models["sft"].config.block_size
    _, val_ids = corpus_split(tok, world["corpus"], block)
    shots = [(r["task"]["prompt"], r["task"]["answer"]) for r in world["sft"][:3]]  # fixed few-shot prefix
    result = {"funnel": world["funnel"], "kl_to_sft": {}, "pretrain_loss": {}}
    answers = {"sampled": {}, "greedy": {}}
    for name in MODELS:
        model = models["base" if name.startswith("base") else name]
        mode = {"base": "base", "base_fewshot": "fewshot"}.get(name, "chat")
        answers["greedy"][name] = respond(model, tok, prompts, mode=mode, examples=shots)
        if mode == "chat":
            answers["sampled"][name], kl, _ = sample_chat(model, models["sft"], rm, tok, prompts, bias, seed + 6)
            result["kl_to_sft"][name] = round(kl, 4)
        else:  # the base model is not asked in the chat format: no KL to SFT to speak of
            g = torch.Generator(device=device).manual_seed(seed + 6)
            answers["sampled"][name] = respond(model, tok, prompts, mode=mode, examples=shots,
                                               temperature=1.0, generator=g)
            result["kl_to_sft"][name] = None
        result["pretrain_loss"][name] = round(lm_loss(model, val_ids, device), 4)
    for decoding, suffix in (("sampled", ""), ("greedy", "_greedy")):
        rng = random.Random(seed + 5)
        for key in ("win_rate_vs_sft", "win_rate_ci", "gold_score", "gold_dims", "rm_score"):
            result[key + suffix] = {}
        for name in MODELS:
            ans = answers[decoding][name]
            p, ci = win_rate(judge(heldout, test, ans, answers[decoding]["sft"], rng), len(test))
            result["win_rate_vs_sft" + suffix][name] = round(p, 4)
            result["win_rate_ci" + suffix][name] = [round(c, 4) for c in ci]
            golds = [gold_score(r["task"], a) for r, a in zip(test, ans)]
            dims = {k: round(sum(g[k] for g in golds) / len(golds), 4) for k in golds[0]}
            result["gold_dims" + suffix][name], result["gold_score" + suffix][name] = dims, dims["total"]
            result["rm_score" + suffix][name] = round(
                sum(score_texts(rm, tok, prompts, ans, block, device)) / len(prompts) - bias, 4)
    return result, test, answers["sampled"]


# -----------------------------------------------------------------------------
# Report and plots

def write_report(out_dir, summary, test, answers):
    lines = [f"# InstructGPT pipeline: preset {summary['preset']}, seed {summary['seed']}", "",
             f"{summary['n_test']} test prompts from held-out users, judged by held-out labelers. "
             f"Whole run {summary['seconds']['total']:.0f}s on {summary['device']}.", ""]
    for suffix, title in (("", "Answers sampled at temperature 1 (the main results)"), ("_greedy", "Greedy answers")):
        w, ci, g = summary["win_rate_vs_sft" + suffix], summary["win_rate_ci" + suffix], summary["gold_score" + suffix]
        lines += [f"### {title}", "",
                  "| model | win rate vs SFT (95% CI) | gold score | RM score | KL to SFT | pretraining loss |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        for m in MODELS:
            kl = summary["kl_to_sft"][m]
            lines.append(f"| {m} | {w[m]:.3f} ({ci[m][0]:.3f}-{ci[m][1]:.3f}) | {g[m]:+.3f} | "
                         f"{summary['rm_score' + suffix][m]:+.3f} | {'-' if kl is None else f'{kl:.2f}'} | "
                         f"{summary['pretrain_loss'][m]:.3f} |")
        dims = summary["gold_dims" + suffix]
        keys = [k for k in dims["sft"] if k != "total"]
        lines += ["", "Gold rubric per dimension (mean over test prompts):", "",
                  "| model | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
        lines += [f"| {m} | " + " | ".join(f"{dims[m][k]:+.3f}" for k in keys) + " |" for m in MODELS] + [""]
    lines += ["", f"Reward model: held-out pairwise accuracy {summary['rm_accuracy']:.3f}, beside labeler "
              f"agreement {summary['labeler_agreement']:.3f} (paper: 69.6-72.4% against 72.6-77.3%).", "",
              "Prompt funnel: " + ", ".join(f"{k} {v}" for k, v in summary["funnel"].items()), "",
              "Seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()), "",
              "![losses](losses.png)", "![scores against KL](scores_vs_kl.png)", "![win rates](win_rates.png)", "",
              "## Sampled answers side by side", ""]
    seen = set()
    for i, r in enumerate(test):
        if r["family"] in seen or len(seen) >= 6:
            continue
        seen.add(r["family"])
        lines += [f"**{r['family']}**: `{r['prompt']!r}` (gold: `{r['task']['answer']!r}`)", ""]
        lines += [f"- {m}: `{answers[m][i]!r}`" for m in MODELS] + [""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


# -----------------------------------------------------------------------------

def check_same_run(path, ckpt, config):
    """A finished stage is reused only if its checkpoint was made with the preset, seed and (PPO)
    ptx coefficient this run gives it: else seed-0 models would be evaluated on seed-1 data.
    `ckpt` is load_checkpoint(path)[1]; `config` the stage's Config in this run."""
    made = ckpt.get("config", {})
    for field in ("preset", "seed", "ptx_coef"):
        value = getattr(config, field, None)
        if field in made and value is not None and made[field] != value:
            flag = "--" + field.replace("_", "-")
            raise UserError(f"{path} was made with {flag} {made[field]}, this run has {flag} {value}; "
                            f"pass --force to re-run every stage, or choose another --out-dir")


def main(cfg=None):
    cfg = cfg or parse_config(Config, description=__doc__)
    if not cfg.preset:
        cfg.preset = "gpu" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu"
    if cfg.preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {cfg.preset}")
    if cfg.n_test == 0 or cfg.n_test < -1:  # -1 (the default) stands for the preset's value
        raise UserError(f"--n-test must be positive (or -1 for the preset's), got {cfg.n_test}")
    if cfg.ptx_coef != -1 and not (math.isfinite(cfg.ptx_coef) and cfg.ptx_coef >= 0):
        raise UserError(f"--ptx-coef must be 0 or more (or -1 for the preset's), got {cfg.ptx_coef}")
    cfg = replace(cfg, **{k: v for k, v in PRESETS[cfg.preset].items() if getattr(cfg, k) < 0})
    cfg.out_dir = cfg.out_dir or os.path.join("out", cfg.preset)
    if cfg.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {cfg.rounds}")
    ensure_out_dir(cfg.out_dir)
    device, _ = setup(cfg.device, cfg.seed)
    out = cfg.out_dir
    seconds, t_all = {}, time.time()
    earlier = 0.0  # seconds that stages spent in earlier runs of this folder (skipped or resumed)
    common = dict(preset=cfg.preset, out_dir=out, seed=cfg.seed, device=cfg.device, quiet=cfg.quiet)

    def stage(name, ckpt, script, config):
        """Run `script.main(config)` unless its checkpoint exists (then reuse the seconds it
        recorded, after check_same_run); continue it with --resume where an interrupted run
        left <name>.resume.pt."""
        nonlocal earlier
        path = os.path.join(out, ckpt)
        if os.path.exists(path) and not cfg.force:
            saved = load_checkpoint(path)[1]
            check_same_run(path, saved, config)
            print(f"== {name}: {path} exists, skipped (--force re-runs it)")
            metrics = saved.get("metrics", {})
            seconds[name] = metrics.get("seconds", 0.0)
            earlier += seconds[name]
            return metrics
        resume = os.path.exists(os.path.join(out, f"{name}.resume.pt")) and not cfg.force
        print(f"== {name}" + (" (resumed where it was interrupted)" if resume else ""))
        t0 = time.time()
        metrics = script.main(replace(config, resume=resume))
        # a resumed stage reports its seconds over both runs (common.Resume); else this run's
        seconds[name] = metrics.get("seconds", 0.0) if resume else round(time.time() - t0, 1)
        earlier += seconds[name] - (time.time() - t0)
        return metrics

    # each step's own Config with its preset's values, as `python sft.py --preset P` would build it
    sft_cfg = sft.Config(**sft.PRESETS[cfg.preset])
    stage("pretrain", "pretrain.pt", sft, replace(sft_cfg, stage="pretrain", **common))
    stage("sft", "sft.pt", sft, replace(sft_cfg, stage="sft", eval_gold=0, **common))
    policy, policy_ptx = "", ""
    for r in range(1, cfg.rounds + 1):
        suffix = "" if r == 1 else f"_round{r}"
        rm_name = f"reward{suffix}.pt"
        rm_metrics = stage(f"reward{suffix}", rm_name, reward, replace(
            reward.Config(**reward.PRESETS[cfg.preset]), policy=policy, round=r, **common))
        ppo_base = dict(reward=os.path.join(out, rm_name), **common)
        stage(f"ppo{suffix}", f"ppo{suffix}.pt", ppo, replace(
            ppo.Config(**ppo.PRESETS[cfg.preset]), name=f"ppo{suffix}", start=policy, **ppo_base))
        stage(f"ppo_ptx{suffix}", f"ppo_ptx{suffix}.pt", ppo, replace(
            ppo.Config(**ppo.PRESETS[cfg.preset]), name=f"ppo_ptx{suffix}", start=policy_ptx,
            ptx_coef=cfg.ptx_coef, **ppo_base))
        policy, policy_ptx = os.path.join(out, f"ppo{suffix}.pt"), os.path.join(out, f"ppo_ptx{suffix}.pt")

    print("== evaluation")
    t0 = time.time()
    paths = {"base": os.path.join(out, "pretrain.pt"), "sft": os.path.join(out, "sft.pt"),
             "ppo": policy, "ppo_ptx": policy_ptx, "reward": os.path.join(out, rm_name)}
    result, test, answers = evaluate(out, cfg.preset, cfg.seed, cfg.n_test, device, paths)
    seconds["evaluation"] = round(time.time() - t0, 1)
    seconds["total"] = round(time.time() - t_all + earlier, 1)  # the whole pipeline, over every run
    summary = {"preset": cfg.preset, "seed": cfg.seed, "rounds": cfg.rounds, "n_test": len(test),
               "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
               "seconds": seconds, "funnel": result.pop("funnel"),
               "labeler_agreement": round(rm_metrics.get("labeler_agreement", float("nan")), 4),
               "rm_accuracy": round(rm_metrics.get("heldout_accuracy", float("nan")), 4), **result}
    tmp = os.path.join(out, "summary.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(out, "summary.json"))
    plot_all(out, summary, MODELS)
    write_report(out, summary, test, answers)
    w, g = summary["win_rate_vs_sft"], summary["gold_score"]
    print(f"done in {seconds['total']:.0f}s: win rate vs SFT " + ", ".join(f"{m} {w[m]:.2f}" for m in MODELS)
          + " | gold " + ", ".join(f"{m} {g[m]:+.2f}" for m in MODELS)
          + f" | RM accuracy {summary['rm_accuracy']:.3f}, labeler agreement {summary['labeler_agreement']:.3f}")
    print(f"wrote {out}/summary.json, report.md, losses.png, scores_vs_kl.png, win_rates.png")
    return summary


if __name__ == "__main__":
    run_cli(main)

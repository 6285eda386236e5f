"""
sweep.py: choose a step's hyperparameters on validation prompts, never test prompts.

The paper chose its SFT checkpoint and its RM's settings on validation data (Section 3.5,
Appendix C). This runs one step (sft.py, reward.py, dpo.py, ppo.py or grpo.py) once per point of a grid,
each in its own folder, all from the same starting checkpoint, and prints a table sorted by the
step's validation figure, each with its 95% interval by a bootstrap over the validation prompts:
  sft     the gold score of answers sampled on held-out users' validation prompts (`val_gold`),
          among the runs whose pretraining loss stays within --max-tax times the starting model's
  reward  the accuracy on validation comparisons (`val_accuracy`), prompts from held-out users
          ranked by held-out labelers
  dpo     the gold score of answers sampled on validation prompts (`val_gold`), trained on the
          rankings that reward.py left beside --init (comparisons_reward.jsonl)
  ppo     the gold score of answers sampled on validation prompts at the last evaluation
  grpo    (`eval_gold`, --n-eval of them), against the RM reward.py left beside --init (reward.pt)

    python tools/sweep.py sft --preset cpu --init out/cpu/pretrain.pt --grid lr=1e-4,3e-4 epochs=2,4
    python tools/sweep.py reward --preset cpu --init out/cpu/sft.pt --grid lr=5e-5,1e-4 epochs=1,2
    python tools/sweep.py dpo --preset cpu --init out/cpu/sft.pt --grid beta=0.03,0.1,0.3 lr=1e-5,3e-5
    python tools/sweep.py ppo --preset cpu --init out/cpu/sft.pt --grid kl_coef=0.05,0.1,0.2 lr=1e-5,3e-5 n_eval=200
    python tools/sweep.py grpo --preset cpu --init out/cpu/sft.pt --grid kl_in=loss,reward kl_coef=0.03,0.1 n_eval=200

Writes OUT_DIR/sweep.jsonl (one line per run: its settings and metrics) as it goes, so a long
sweep can be read before it ends.
"""

import itertools
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, fields, replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's files

import dpo  # noqa: E402
import grpo  # noqa: E402
import ppo  # noqa: E402
import reward  # noqa: E402
import sft  # noqa: E402
from pipeline import bootstrap_ci  # noqa: E402
from plumbing.cli import UserError, arg, ensure_out_dir, parse_config, run_cli  # noqa: E402

STEPS = {"sft": (sft, "val_gold"), "reward": (reward, "val_accuracy"), "dpo": (dpo, "val_gold"),
         "ppo": (ppo, "eval_gold"), "grpo": (grpo, "eval_gold")}


def interval(metrics, key, seed):
    """The validation figure's 95% interval, by a bootstrap over validation prompts: SFT's and DPO's
    gold has one answer per prompt; the RM's accuracy counts every ranked pair of a prompt, and a
    prompt's pairs share its answers and its labeler, so they are resampled together (treating
    some 3000 pairs from 200 prompts as independent draws understates the spread)."""
    rng = random.Random(seed)
    if "val_pairs" in metrics:
        return bootstrap_ci(metrics["val_pairs_right"], rng, weights=metrics["val_pairs"])
    per_prompt = metrics.get(key + "_per_prompt")
    return bootstrap_ci(per_prompt, rng) if per_prompt else None


@dataclass
class Args:
    step: str = arg("", "sft, reward, dpo, ppo or grpo", positional=True, choices=list(STEPS))
    grid: list = arg([], "NAME=V1,V2,... for each swept field of the step's Config (e.g. lr=1e-4,3e-4)",
                     nargs="+")
    preset: str = arg("cpu", "the step's preset: its other settings and the data")
    init: str = arg("", "the checkpoint every run starts from (sft: pretrain.pt; reward, dpo, ppo, grpo: sft.pt)")
    out_dir: str = arg("out/sweep", "one folder per run below this, and sweep.jsonl")
    seed: int = arg(0, "seed of the world and of every run")
    max_tax: float = arg(2.0, "sft: a run whose pretraining loss exceeds this times the starting model's is not chosen")


def parse_grid(step_config, grid):
    """["lr=1e-4,3e-4", "epochs=2"] -> [{"lr": 1e-4, "epochs": 2}, {"lr": 3e-4, "epochs": 2}],
    each value of the field's type in the step's Config."""
    types = {f.name: type(f.default) for f in fields(step_config)}
    axes = []
    for item in grid:
        name, _, values = item.partition("=")
        if name not in types or not values:
            raise UserError(f"--grid {item}: give NAME=V1,V2 with NAME one of {', '.join(sorted(types))}")
        try:
            axes.append([(name, types[name](v)) for v in values.split(",")])
        except ValueError:
            raise UserError(f"--grid {item}: {values} are not {types[name].__name__} values") from None
    return [dict(point) for point in itertools.product(*axes)]


def sample_once():
    """The reward grid's runs differ in how the RM trains, not in what the labelers ranked: the
    comparisons are sampled and ranked once per sampling setting and every run trains on them."""
    sample, cache = reward.simulated_rankings, {}

    def cached(cfg, gpt, tok, device):
        key = (cfg.init, cfg.policy, cfg.preset, cfg.seed, cfg.k_min, cfg.k_max, cfg.temperature,
               cfg.max_new_tokens, cfg.n_heldout, cfg.n_prompts, cfg.demos)
        if key not in cache:
            cache[key] = sample(cfg, gpt, tok, device)
        r = cache[key]  # each run its own lists and figures: a run adds to them
        return reward.Rankings(list(r.train), r.val, r.heldout, r.demos, dict(r.metrics))
    reward.simulated_rankings = cached


def chosen(rows, key, max_tax):
    """The run with the best validation figure among those within the tax (SFT) -> row or None."""
    ok = [r for r in rows if "pretrain_loss" not in r or r["pretrain_loss"] <= max_tax * r["pretrain_loss_init"]]
    return max(ok, key=lambda r: r[key], default=None)


def main():
    a = parse_config(Args, description=__doc__)
    module, key = STEPS[a.step]
    if not a.init or not os.path.exists(a.init):
        raise UserError(f"--init {a.init or '(none)'}: give the checkpoint every run starts from")
    points = parse_grid(module.Config, a.grid)
    ensure_out_dir(a.out_dir)
    if a.step == "reward":
        sample_once()
    base = module.Config(**module.PRESETS[a.preset])
    folder = os.path.dirname(a.init)
    if a.step in ("ppo", "grpo"):  # the RM reward.py wrote beside the SFT model
        base = replace(base, reward=os.path.join(folder, "reward.pt"))
        if not os.path.isfile(base.reward):
            raise UserError(f"{a.step}: {base.reward}: no reward model beside --init; run reward.py there first")
    if a.step == "dpo":  # the rankings reward.py wrote beside the SFT model
        base = replace(base, data=os.path.join(folder, "comparisons_reward.jsonl"),
                       heldout=os.path.join(folder, "comparisons_heldout_reward.jsonl"))
        if not os.path.isfile(base.data):
            raise UserError(f"dpo: {base.data}: no rankings beside --init; run reward.py there first")
    rows = []
    for i, point in enumerate(points):
        name = "_".join(f"{k}{v}" for k, v in point.items()) or "default"
        cfg = replace(base, preset=a.preset, init=a.init, seed=a.seed, out_dir=os.path.join(a.out_dir, name),
                      quiet=True, **point)
        print(f"== {i + 1}/{len(points)} {a.step} {name}", flush=True)
        t0 = time.time()
        metrics = module.main(cfg)
        row = {**point, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
               "seconds": round(time.time() - t0, 1)}
        ci = interval(metrics, key, a.seed)
        if ci:
            row["ci95"] = [round(ci[0], 3), round(ci[1], 3)]
        rows.append(row)
        with open(os.path.join(a.out_dir, "sweep.jsonl"), "a") as f:
            f.write(json.dumps({"step": a.step, "preset": a.preset, "seed": a.seed, "config": asdict(cfg), **row}) + "\n")
    cols = list(points[0]) + [k for k in (key, "ci95", "val_gold_greedy", "pretrain_loss", "pretrain_loss_init",
                                         "heldout_accuracy", "eval_kl", "eval_rm_score", "val_loss", "seconds")
                              if k in rows[0]]
    print("\n| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols))
    for r in sorted(rows, key=lambda r: -r[key]):
        print("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    best = chosen(rows, key, a.max_tax)
    print("chosen on validation: " + (", ".join(f"{k}={best[k]}" for k in points[0]) if best else "none within the tax"))


if __name__ == "__main__":
    run_cli(main)

"""
seeds.py: the whole pipeline over several seeds, and the mean and spread of every figure.

One seed's win rate moves by several points with the seed (a new world, new labelers, new
samples), so the README's table is a mean over seeds with its spread. This runs
`train_all.py --preset P --seed S --out-dir OUT_DIR/seedS` for each seed in turn (a seed whose
summary.json exists is read, not re-run; a stopped seed continues where it stopped), then writes:
  OUT_DIR/seeds.json   every numeric figure of summary.json: mean, the half-width of its 95%
                       interval (Student's t over the seeds), sample standard deviation, min,
                       max and the values per seed
  OUT_DIR/seeds.md     the main table (seen and new tasks) as mean ± the 95% interval's half-width,
                       PPO's rivals judged directly against it (head_to_head) and the capability
                       benchmark with PPO's tax and PPO-ptx's recovery (capability_tax), the same way,
                       and methods compared within each seed (PAIRED: GRPO against PPO, each on the
                       gold reward against the RM), their differences' mean and interval over seeds

    python tools/seeds.py --preset cpu --seeds 0 1 2 --out-dir out/seeds      # about 25 min a seed on 2 cores
    python tools/seeds.py --preset smoke --seeds 0 1 --out-dir out/seeds-smoke
"""

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the project's files

from pipeline import ci95  # noqa: E402
from train_all import MODELS, PRESETS, SAME_NETWORK  # noqa: E402
from plumbing.cli import UserError, arg, ensure_out_dir, parse_config, run_cli  # noqa: E402


@dataclass
class Args:
    preset: str = arg("cpu", "the pipeline's preset", choices=list(PRESETS))
    seeds: list = arg([0, 1, 2], "the seeds", nargs="+", type=int)
    out_dir: str = arg("out/seeds", "one run folder per seed below this, and seeds.json, seeds.md")
    device: str = arg("auto", "auto, cpu or cuda")


# pairs of methods compared within each seed, on the same test prompts: GRPO against PPO, and each
# RL method on the gold rubric against itself on the RM (what the learned reward model costs)
PAIRED = [("grpo", "ppo"), ("ppo_gold", "ppo"), ("grpo_gold", "grpo"), ("grpo_gold", "ppo_gold")]


def paired_differences(summary):
    """{"paired": {"a-b": {figure: a's minus b's}}} within one seed for each pair of PAIRED that it
    ran: gold score on seen and new tasks and per family (seen), win rate against SFT, KL to SFT,
    seconds of training; over seeds their mean and interval are a paired comparison."""
    out = {}
    for a, b in PAIRED:
        if summary.get("gold_score", {}).get(a) is None or summary["gold_score"].get(b) is None:
            continue
        new = summary["new_tasks"]
        d = {"gold": summary["gold_score"][a] - summary["gold_score"][b],
             "gold_new": new["gold_score"][a] - new["gold_score"][b],
             "win_rate": summary["win_rate_vs_sft"][a] - summary["win_rate_vs_sft"][b],
             "kl": summary["kl_to_sft"][a] - summary["kl_to_sft"][b],
             "seconds": summary["seconds"].get(a, 0) - summary["seconds"].get(b, 0)}
        d.update({f"gold_{f}": v["gold_score"][a] - v["gold_score"][b] for f, v in summary["by_family"].items()})
        out[f"{a}-{b}"] = d
    return {"paired": out}


def flatten(tree, prefix=""):
    """{"a": {"b": 1.0, "c": [2, 3]}} -> {"a.b": 1.0, "a.c.0": 2, "a.c.1": 3}: numeric leaves only."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}
    out = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def spread(summaries):
    """{figure: {"mean", "ci95", "std", "min", "max", "values"}} over the figures every summary has."""
    flat = [flatten({**s, **paired_differences(s)}) for s in summaries]
    out = {}
    for key in flat[0]:
        values = [f[key] for f in flat if key in f]
        if len(values) == len(flat) and key not in ("seed",):
            out[key] = dict(mean=statistics.fmean(values), ci95=ci95(values),
                            std=statistics.stdev(values) if len(values) > 1 else 0.0,
                            min=min(values), max=max(values), values=values)
    return out


def table(stats, seeds):
    """The README's main table: per model, mean ± the half-width of its 95% interval over seeds."""
    def cell(key, spec="+.3f"):  # a figure every seed shares (SFT's 0.5, best-of-n's KL) has no spread to show
        s = stats.get(key)
        if s is None:
            return "-"
        return format(s["mean"], spec) + (f" ± {format(s['ci95'], spec.lstrip('+'))}" if s["ci95"] else "")
    lines = [f"Mean ± half-width of the 95% interval (Student's t over {len(seeds)} seeds: "
             f"{', '.join(map(str, seeds))}).", "",
             "| model | win rate vs SFT, seen tasks | gold, seen | win rate vs SFT, new tasks | gold, new | "
             "KL to SFT | pretraining loss |", "| --- |" + " ---: |" * 6]
    for m in MODELS:
        lines.append(f"| {m} | {cell('win_rate_vs_sft.' + m, '.3f')} | {cell('gold_score.' + m)} | "
                     f"{cell('new_tasks.win_rate_vs_sft.' + m, '.3f')} | {cell('new_tasks.gold_score.' + m)} | "
                     f"{cell('kl_to_sft.' + m, '.2f')} | {cell('pretrain_loss.' + m, '.3f')} |")
    for part, prefix in (("seen", ""), ("new", "new_tasks.")):  # paired: each seed judged them on the same prompts
        rivals = [m for m in MODELS if f"{prefix}head_to_head.{m}_vs_ppo.win_rate" in stats]
        if rivals:
            lines += ["", f"Head to head against PPO's answers, {part} tasks (win rate): " + ", ".join(
                f"{m} {cell(f'{prefix}head_to_head.{m}_vs_ppo.win_rate', '.3f')}" for m in rivals) + "."]
    tasks = sorted({k.split(".")[1] for k in stats if k.startswith("capability.")})
    if tasks:  # the alignment tax on the capability benchmark; the differences are paired within each seed
        nets = [m for m in MODELS if f"capability.{tasks[0]}.{m}" in stats and m not in SAME_NETWORK]
        lines += ["", "Capability benchmark (raw text, few-shot; score per task), differences on the same items:", "",
                  "| task | " + " | ".join(nets) + " | PPO - base | PPO - SFT | PPO-ptx - PPO |",
                  "| --- |" + " ---: |" * (len(nets) + 3)]
        lines += [f"| {t} | " + " | ".join(cell(f"capability.{t}.{m}", ".3f") for m in nets) + " | " + " | ".join(
                  cell(f"capability_tax.{t}.{d}.diff") for d in ("ppo_vs_base", "ppo_vs_sft", "ppo_ptx_vs_ppo")) + " |"
                  for t in tasks]
    pairs = [f"{a}-{b}" for a, b in PAIRED if f"paired.{a}-{b}.gold" in stats]
    if pairs:  # the same seeds' runs side by side: each seed's difference, then its mean and interval
        figs = ["gold", "gold_new", "win_rate", "kl", "seconds"]
        families = sorted({k.split(".")[2][5:] for k in stats if k.startswith(f"paired.{pairs[0]}.gold_")} - {"new"})
        lines += ["", "Paired within each seed (a - b on the same test prompts; gold per family on seen tasks):", "",
                  "| a - b | gold, seen | gold, new | win rate vs SFT | KL to SFT | seconds | "
                  + " | ".join(families) + " |", "| --- |" + " ---: |" * (len(figs) + len(families))]
        lines += [f"| {p} | " + " | ".join(cell(f"paired.{p}.{f}", ".0f" if f == "seconds" else "+.3f")
                                            for f in figs + [f"gold_{x}" for x in families]) + " |" for p in pairs]
    lines += ["", f"RM accuracy {cell('rm_accuracy', '.3f')}; the gold rubric on the same pairs "
              f"{cell('rm_oracle_accuracy', '.3f')}; labeler agreement {cell('labeler_agreement', '.3f')}; "
              f"seconds per seed {cell('seconds.total', '.0f')}.", ""]
    return "\n".join(lines)


def main():
    a = parse_config(Args, description=__doc__)
    if len(set(a.seeds)) != len(a.seeds):
        raise UserError(f"--seeds {' '.join(map(str, a.seeds))}: a seed is given twice")
    ensure_out_dir(a.out_dir)
    summaries = []
    for seed in a.seeds:
        run = os.path.join(a.out_dir, f"seed{seed}")
        path = os.path.join(run, "summary.json")
        if not os.path.exists(path):
            print(f"== seed {seed}: python train_all.py --preset {a.preset} --seed {seed} --out-dir {run}", flush=True)
            cmd = [sys.executable, os.path.join(ROOT, "train_all.py"), "--preset", a.preset, "--seed", str(seed),
                   "--out-dir", run, "--device", a.device, "--quiet"]
            if subprocess.run(cmd).returncode != 0:
                raise UserError(f"seed {seed}: train_all.py failed (its output is above); run the same command "
                                f"again to continue where it stopped")
        with open(path) as f:
            s = json.load(f)
        if s.get("preset") != a.preset:
            raise UserError(f"{path} is from --preset {s.get('preset')}, not {a.preset}; choose another --out-dir")
        summaries.append(s)
    stats = spread(summaries)
    with open(os.path.join(a.out_dir, "seeds.json"), "w") as f:
        json.dump({"preset": a.preset, "seeds": a.seeds, "figures": stats}, f, indent=1)
    text = table(stats, a.seeds)
    with open(os.path.join(a.out_dir, "seeds.md"), "w") as f:
        f.write(f"# {a.preset} preset over {len(a.seeds)} seeds\n\n{text}")
    print(text)
    print(f"wrote {a.out_dir}/seeds.json and seeds.md")


if __name__ == "__main__":
    run_cli(main)

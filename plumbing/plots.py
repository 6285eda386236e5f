"""
plots.py: the PNG files of a run, drawn from OUT_DIR/metrics.jsonl and summary.json, and the
pictures of experiments.py (draw_*: one experiment's results on the axes given).
"""

import json
import math
import os


def pyplot():
    """matplotlib's pyplot, drawing to files only; imported when a plot is drawn, so that importing
    a script that plots (sft, ppo, train_all) leaves matplotlib alone."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def metrics_rows(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def lines(ax, pts, x, keys):  # an experiment's figure: experiments.py
    """One line per key of the points `pts` against their `x`."""
    for key, marker in zip(keys, ("o-", "s-", "^-", "x--")):
        ax.plot([p[x] for p in pts], [p[key] for p in pts], marker, label=key.replace("_", " "))


def rows_of(out_dir, stage, key):
    """The metrics log's rows of one stage that carry `key`."""
    return [r for r in metrics_rows(out_dir) if r["stage"] == stage and key in r]


def plot_losses(out_dir, stage):
    """<stage>_loss.png: training and validation loss against step, from metrics.jsonl."""
    plt = pyplot()
    rows = [r for r in metrics_rows(out_dir) if r["stage"] == stage]
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


def plot_scores_vs_kl(out_dir, names, filename):
    """RM score and gold score of each iteration's rollouts against their KL to SFT, one colour per
    run in `names` (metrics.jsonl stages). Where the RM score keeps rising and the gold score does
    not, the policy over-optimizes the RM."""
    plt = pyplot()
    rows = metrics_rows(out_dir)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, name in enumerate(names):
        color = COLORS.get(name, f"C{i}")
        pts = [r for r in rows if r["stage"] == name and "kl" in r]
        if pts:
            kl = [r["kl"] for r in pts]
            ax.scatter(kl, [r["rm_score"] for r in pts], s=14, marker="o", color=color, label=f"{name}: RM score")
            gold = [(r["kl"], r["gold"]) for r in pts if "gold" in r]  # your own prompts have no gold rubric
            if gold:
                ax.scatter(*zip(*gold), s=14, marker="x", color=color, label=f"{name}: gold score")
    ax.set_xlabel("KL(policy || SFT) per answer, nats")
    ax.set_ylabel("score on rollouts")
    ax.set_title("RM score (and gold score) of each PPO iteration's rollouts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, filename), dpi=100)
    plt.close(fig)


def plot_overoptimization(out_dir, curve):
    """overoptimization.png: gold score and RM score against sqrt(KL to SFT) for best-of-n and for
    each RL run along training, dotted where the gold rubric was the reward (Gao et al. 2022, Figure 1).
    Where the RM score keeps rising and the gold score does not, the policy exploits the RM's errors."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, key, title in zip(axes, ("gold", "rm_score"), ("gold score (the truth)", "RM score (the proxy)")):
        for name, marker in (("best_of_n", "o"), ("ppo", "s"), ("ppo_ptx", "^"), ("dpo", "D"), ("grpo", "v"),
                             ("ppo_gold", "s"), ("grpo_gold", "v")):
            pts = curve.get(name) or []
            ax.plot([p["sqrt_kl"] for p in pts], [p[key] for p in pts], marker=marker, color=COLORS[name],
                    label=name.replace("_", "-"), linestyle=":" if name.endswith("_gold") else "-")
            if name == "best_of_n":
                for p in pts:
                    ax.annotate(f"n={p['n']}", (p["sqrt_kl"], p[key]), fontsize=7, xytext=(3, -9),
                                textcoords="offset points")
        ax.set_xlabel("sqrt(KL(policy || SFT)), nats^0.5 per answer")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"Over-optimization on {curve['n_prompts']} validation prompts")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "overoptimization.png"), dpi=100)
    plt.close(fig)


COLORS = {"base": "0.6", "base_fewshot": "0.45", "constant": "0.8", "sft": "C2", "best_of_4": "C4", "best_of_16": "C5",
          "ppo": "C0", "ppo_ptx": "C1", "dpo": "C3", "grpo": "C6", "ppo_gold": "C7", "grpo_gold": "C8",
          "best_of_n": "C2"}


def plot_stage_losses(out_dir, stages, rows=None):
    """losses.png: the training loss of each stage in `stages`, with its validation loss (or, for a
    reward model, its held-out accuracy on a second axis)."""
    plt = pyplot()
    rows = rows or metrics_rows(out_dir)
    fig, axes = plt.subplots(1, len(stages), figsize=(4.4 * len(stages), 3.6))
    for ax, stage in zip(axes, stages):
        pts = [(r["step"], r["loss"]) for r in rows if r["stage"] == stage and "loss" in r]
        val = [(r["step"], r.get("val_loss", r.get("heldout_accuracy"))) for r in rows
               if r["stage"] == stage and ("val_loss" in r or "heldout_accuracy" in r)]
        if pts:
            ax.plot(*zip(*pts), label="train loss")
        if val and not any("heldout_accuracy" in r for r in rows if r["stage"] == stage):
            ax.plot(*zip(*val), "o-", label="validation loss")
        elif val:  # a reward model: its held-out accuracy
            ax2 = ax.twinx()
            ax2.plot(*zip(*val), "o-", color="C2", label="held-out accuracy")
            ax2.set_ylabel("held-out pairwise accuracy")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "losses.png"), dpi=100)
    plt.close(fig)


def plot_win_rates(out_dir, parts, names, title):
    """win_rates.png: each model's win rate against SFT with its 95% interval, like the paper's
    Figure 1; `parts` is [(label, {"win_rate_vs_sft", "win_rate_ci"})], side by side per model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(parts)
    for k, (label, part) in enumerate(parts):
        w, ci = part["win_rate_vs_sft"], part["win_rate_ci"]
        xs = [i + (k - (len(parts) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [w[m] for m in names], width=width, hatch="//" if k else "",
               color=[COLORS.get(m, "0.5") for m in names],
               yerr=[[w[m] - ci[m][0] for m in names], [ci[m][1] - w[m] for m in names]], capsize=3, label=label)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate against SFT")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "win_rates.png"), dpi=100)
    plt.close(fig)


def plot_all(out_dir, summary, models, rl_runs):
    """losses.png (every training stage), scores_vs_kl.png (each of `rl_runs`), win_rates.png (like
    the paper's Figure 1, seen and new tasks), overoptimization.png: the pictures of a train_all.py run."""
    plot_stage_losses(out_dir, ["pretrain", "sft", "reward", "dpo"])
    # RM and gold score against KL during PPO (over-optimization shows here)
    plot_scores_vs_kl(out_dir, rl_runs, "scores_vs_kl.png")
    names = [m for m in models if summary["win_rate_vs_sft"].get(m) is not None]
    new = summary["new_tasks"]
    plot_win_rates(out_dir, [(f"seen tasks ({summary['n_test']} prompts)", summary),
                             (f"new tasks ({new['n_test']} prompts)", new)], names,
                   "Held-out labelers' preference on test prompts (95% CI); hatched: new tasks")
    plot_overoptimization(out_dir, summary["overoptimization"])


def draw_pairs(ax, out):
    """pairs.png of experiments.py pairs: held-out and training accuracy after each pass, a
    ranking per batch element against separate pairs."""
    for name, color in (("grouped", "C0"), ("separate", "C3")):
        pts = out[name]
        ax.plot([p["passes"] for p in pts], [p["heldout_accuracy"] for p in pts], "o-", color=color,
                label=f"{name}: held-out")
        ax.plot([p["passes"] for p in pts], [p["train_accuracy"] for p in pts], "x--", color=color,
                label=f"{name}: training")
    ax.set_xticks(range(1, out["passes"] + 1))
    ax.set_xlabel("passes over the comparisons")
    ax.set_ylabel("pairwise accuracy")
    ax.set_title("One ranking per batch element (grouped) against separate pairs")


def draw_beta(ax, out):
    """beta.png of experiments.py beta: gold and RM score against sqrt(KL to SFT), one point
    per KL coefficient."""
    pts = out["runs"]
    ax.plot([math.sqrt(max(p["kl"], 0)) for p in pts], [p["gold"] for p in pts], "o-", label="gold score (truth)")
    ax.plot([math.sqrt(max(p["kl"], 0)) for p in pts], [p["rm_score"] for p in pts], "s-", label="RM score (proxy)")
    for p in pts:
        ax.annotate(f"beta={p['value']}", (math.sqrt(max(p["kl"], 0)), p["gold"]), fontsize=7)
    ax.set_xlabel("sqrt(KL(policy || SFT)) per answer")
    ax.set_title("The KL coefficient: where gold and RM score part")


def draw_figure1(ax_seen, ax_new, out, methods):
    """figure1.png of experiments.py sizes: each method's win rate against the largest SFT by model
    size, with its 95% interval, seen and new tasks."""
    for ax, part in ((ax_seen, "seen"), (ax_new, "new")):
        for k, (m, style) in enumerate(zip(methods, ("o:", "v:", "s-", "^-", "D-", "x--"))):
            x = [r["params"] * 1.04 ** (k - 2.5) for r in out["sizes"]]  # side by side: no bar hides another
            y = [r[part][m]["win_rate"] for r in out["sizes"]]
            err = [[v - r[part][m]["ci"][0] for v, r in zip(y, out["sizes"])],
                   [r[part][m]["ci"][1] - v for v, r in zip(y, out["sizes"])]]
            ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=m.replace("_", " "))
        ax.axhline(0.5, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("win rate against the largest SFT (95% CI)")
        ax.set_title(f"{part} tasks ({out['n_test'][part]} test prompts)")


def draw_details(ax_gold, ax_kl, out):
    """details.png of experiments.py details: each detail's paired difference from the preset's PPO in
    gold score and KL to SFT, with its 95% interval over seeds."""
    rows = list(out["details"].values())[::-1]  # the first detail on top
    for ax, key, what in ((ax_gold, "gold", "gold score"), (ax_kl, "kl", "KL to SFT (nats per answer)")):
        x = [r[key]["diff"] for r in rows]
        err = [[v - r[key]["ci"][0] for v, r in zip(x, rows)], [r[key]["ci"][1] - v for v, r in zip(x, rows)]]
        ax.errorbar(x, range(len(rows)), xerr=err, fmt="o", capsize=3)
        ax.axvline(0, color="gray", lw=0.8)
        ax.set_yticks(range(len(rows)), [r["label"] for r in rows] if ax is ax_gold else [""] * len(rows))
        ax.set_xlabel(f"{what}: detail - preset's PPO (95% CI, {len(out['seeds'])} seed(s))")
    ax_gold.set_title("PPO's implementation details, one at a time, against the truth")


def draw_overoptimization(ax_gold, ax_rm, ax_family, ax_dims, out):
    """experiments.py overoptimization: (1) gold and (2) RM score against sqrt(KL to SFT) for each long
    RL run (the mean over seeds in its 95% band) and best-of-n, the mean curve's gold peak a star and
    the preset's length a cross; (3) gold per task family and (4) the rubric's dimensions along the
    first run's iterations: which part of the truth falls while the RM score climbs."""
    for ax, key, title in ((ax_gold, "gold", "gold score (the truth)"),
                           (ax_rm, "rm_score", "the run's own RM score (the proxy)")):
        for (name, run), color in zip(out["runs"].items(), ("C0", "C1", "C2", "C3")):
            pts = run["curve"]
            x, y = [p["sqrt_kl"]["mean"] for p in pts], [p[key]["mean"] for p in pts]
            ax.plot(x, y, "o-", ms=3, color=color, label=f"{name} (beta {run['beta']})")
            ax.fill_between(x, [p[key]["ci"][0] for p in pts], [p[key]["ci"][1] for p in pts], color=color, alpha=0.15)
            peak = max(range(len(pts)), key=lambda i: pts[i]["gold"]["mean"])
            ax.plot(x[peak], y[peak], "*", ms=14, color=color)
            for i, p in enumerate(pts):
                if p["iteration"] == run["preset_iterations"]:
                    ax.plot(x[i], y[i], "kx", ms=8)
        best = out["best_of_n"]
        ax.plot([p["sqrt_kl"] for p in best], [p[key]["mean"] for p in best], "s--", color="gray", label="best-of-n")
        ax.plot([], [], "k*", ms=10, label="gold peak")
        ax.plot([], [], "kx", label="the preset's length")
        ax.set_xlabel("sqrt(KL(policy || SFT)), nats^0.5 per answer")
        ax.set_title(f"{title}, {len(out['seeds'])} seed(s), 95% bands")
    ax_rm.legend(fontsize=7)
    name, run = next(iter(out["runs"].items()))
    its = [p["iteration"] for p in run["curve"]]
    for ax, part, what in ((ax_family, "family", "gold per task family"), (ax_dims, "dims", "the rubric's dimensions")):
        for k in run["curve"][0][part]:
            ax.plot(its, [p[part][k] for p in run["curve"]], "o-", ms=3, label=k)
        if run["preset_iterations"] <= its[-1]:
            ax.axvline(run["preset_iterations"], color="gray", ls=":", lw=1)
        ax.set_xlabel(f"{name} iteration (dotted: the preset's length)")
        ax.set_title(f"{name}: {what}")
        ax.legend(fontsize=7)

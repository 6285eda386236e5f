"""
plots.py: the PNG files of a run, drawn from OUT_DIR/metrics.jsonl and summary.json.
"""

import json
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


def plot_overoptimization(out_dir, curve):
    """overoptimization.png: gold score and RM score against sqrt(KL to SFT) for best-of-n and for
    PPO along training (Gao et al. 2022, Figure 1). Where the RM score keeps rising and the gold
    score does not, the policy exploits the RM's errors."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, key, title in zip(axes, ("gold", "rm_score"), ("gold score (the truth)", "RM score (the proxy)")):
        for name, color, marker in (("best_of_n", "C2", "o"), ("ppo", "C0", "s"), ("ppo_ptx", "C1", "^")):
            pts = curve.get(name) or []
            ax.plot([p["sqrt_kl"] for p in pts], [p[key] for p in pts], marker=marker, color=color,
                    label=name.replace("_", "-"))
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
          "ppo": "C0", "ppo_ptx": "C1"}


def plot_all(out_dir, summary, models):
    """losses.png (every training stage), scores_vs_kl.png (PPO and PPO-ptx), win_rates.png (like
    the paper's Figure 1, seen and new tasks), overoptimization.png: the pictures of a train_all.py run."""
    plt = pyplot()
    rows = metrics_rows(out_dir)
    # losses of every training stage
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, stage, key in zip(axes, ["pretrain", "sft", "reward"], ["loss", "loss", "loss"]):
        pts = [(r["step"], r[key]) for r in rows if r["stage"] == stage and key in r]
        val = [(r["step"], r.get("val_loss", r.get("heldout_accuracy"))) for r in rows
               if r["stage"] == stage and ("val_loss" in r or "heldout_accuracy" in r)]
        if pts:
            ax.plot(*zip(*pts), label="train loss")
        if val and stage != "reward":
            ax.plot(*zip(*val), "o-", label="validation loss")
        if val and stage == "reward":
            ax2 = ax.twinx()
            ax2.plot(*zip(*val), "o-", color="C2", label="held-out accuracy")
            ax2.set_ylabel("held-out pairwise accuracy")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "losses.png"), dpi=100)
    plt.close(fig)
    # RM and gold score against KL during PPO (over-optimization shows here)
    plot_scores_vs_kl(out_dir, ["ppo", "ppo_ptx"], "scores_vs_kl.png")
    # win rates against SFT, like the paper's Figure 1: seen tasks and new tasks side by side
    fig, ax = plt.subplots(figsize=(9, 4))
    names = [m for m in models if summary["win_rate_vs_sft"].get(m) is not None]
    for shift, part, hatch in ((-0.2, summary, ""), (0.2, summary["new_tasks"], "//")):
        w, ci = part["win_rate_vs_sft"], part["win_rate_ci"]
        xs = [i + shift for i in range(len(names))]
        ax.bar(xs, [w[m] for m in names], width=0.4, hatch=hatch, color=[COLORS.get(m, "0.5") for m in names],
               yerr=[[w[m] - ci[m][0] for m in names], [ci[m][1] - w[m] for m in names]], capsize=3,
               label=f"{'seen' if part is summary else 'new'} tasks ({part['n_test']} prompts)")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate against SFT")
    ax.set_title("Held-out labelers' preference on test prompts (95% CI); hatched: new tasks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "win_rates.png"), dpi=100)
    plt.close(fig)
    plot_overoptimization(out_dir, summary["overoptimization"])

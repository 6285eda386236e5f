"""
experiments.py: the paper's claims as experiments on the simulated world, where the truth is known.

    python experiments.py pairs --preset smoke              # one experiment: OUT_DIR/pairs/results.json, pairs.png
    python experiments.py all --preset cpu --out-dir out/experiments

  pairs   Section 3.5: training on each of a ranking's C(K,2) comparisons as a separate data point
          overfits; one ranking per batch element does not. Held-out and training accuracy after
          each pass, both ways, on the same comparisons, and the forward passes each needs.
  k       rankings of K = 2 against K = 4..9 for the same labeling budget (responses read):
          the RMs' accuracy on the same held-out comparisons.
  beta    the KL coefficient swept: gold and RM score against KL to SFT (where the two part, PPO
          over-optimizes the RM; Section 3.5, Gao et al. 2022).
  ptx     the PPO-ptx coefficient swept: win rate against SFT and gold against the pretraining
          loss (the alignment tax, Section 4.2).
  noise   the labelers' noise scaled: their agreement, the RM's accuracy, PPO's gold score.
  rounds  steps 2 and 3 repeated 1, 2 and 3 times (train_all.py --rounds): what each round adds.
  sizes   Figure 1: three model sizes (SIZES, at least 16x apart in parameters), each pretrained on
          the same corpus, then SFT, PPO, PPO-ptx and DPO; the base model prompted plainly and
          few-shot. One RM, the largest size's (the base's), serves every size, as the paper's 6B RM
          served its 1.3B and 175B policies (the RM's size should not be what the curve measures);
          beside it an RM of each size on the same rankings, its held-out accuracy (Gao et al.'s
          RM-size curve). Every model is judged against the largest size's SFT on test prompts, seen
          and new tasks, and scored on the capability benchmark; figure1.png.
  details PPO's implementation details (DETAILS), each alone against the preset's PPO on the same
          seeds (--seeds; each seed its own base, OUT_DIR/details/seed<S>): paired differences in
          gold, win rate, RM score and KL with their intervals, per family too; details.png.
  overoptimization  PPO and GRPO run LONGER times the preset's length at low and zero beta, PPO also
          against an RM of the smallest size (OVEROPT_RUNS; --seeds as details): gold and RM score
          against sqrt(KL) beside best-of-n, where gold peaks, and what falls (per family, per rubric
          dimension); sampled answers at start, peak, end.

Every experiment starts from one base (OUT_DIR/base; details and overoptimization one per seed: pretrain.pt,
sft.pt, reward.pt made as train_all.py makes them, with the same --preset and --seed), changes one thing.
Figures are on validation prompts (held-out users), judged by held-out labelers and the gold
rubric; test prompts stay for train_all.py, except in `sizes`, which tunes nothing and reports
train_all.py's kind of figures (each size keeps the preset's settings, chosen at its largest size).
docs/experiments.md has each one's measured result.
"""

import json
import os
import random
import shutil
import statistics
import time
from dataclasses import dataclass, replace
from functools import partial

import data
import dpo
import grpo
from pipeline import (Stages, capability_figures, detail_figures, direct_win_rate, eval_curve, judge, judging,
                      overoptimization_figures, overoptimization_report, paired_difference, policy_figures,
                      sample_chat, size_answers, win_rate, write_json)
import ppo
import reward
import sft
import train_all
from world import gold_mean
from plumbing.checkpoint import load_language_model, load_reward_model
from plumbing.cli import UserError, arg, ensure_out_dir, parse_config, run_cli
from plumbing.formats import n_pairs
from plumbing.loop import Progress, setup
from plumbing.plots import (draw_beta, draw_details, draw_figure1, draw_overoptimization, draw_pairs, lines, pyplot,
                            rows_of)

SWEEPS = {  # the values each sweep tries, per preset (smoke: a few, to run in CI-sized time)
    "beta": {"smoke": [0.0, 0.05, 0.2], "default": [0.0, 0.02, 0.05, 0.1, 0.2]},
    "ptx": {"smoke": [0.0, 1.0, 4.0], "default": [0.0, 0.25, 1.0, 4.0]},
    "noise": {"smoke": [0.5, 2.0], "default": [0.25, 0.5, 1.0, 2.0, 4.0]},
    "rounds": {"smoke": [1, 2], "default": [1, 2, 3]},
}
PASSES = {"smoke": 3, "default": 2}  # pairs: passes over the comparisons (each pass of separate pairs is costly)


@dataclass
class Args:
    name: str = arg("", "the experiment: pairs, k, beta, ptx, noise, rounds, sizes, details, overoptimization, or all",
                    positional=True, choices=["pairs", "k", "beta", "ptx", "noise", "rounds", "sizes", "details",
                                              "overoptimization", "all"])
    preset: str = arg("smoke", "smoke (a few minutes each), cpu (under 30 minutes each on 2 cores) or gpu")
    out_dir: str = arg("", "folder (default out/experiments_<preset>): base/ and one folder per experiment")
    seed: int = arg(0, "seed of the world and of every run")
    seeds: list = arg([], "details, overoptimization: the seeds, each with its own base in OUT_DIR/<experiment>/"
                          "seed<S> (default: --seed)", nargs="+", type=int)
    details: list = arg([], "details: only these (default: every one of experiments.DETAILS)", nargs="+")
    device: str = arg("auto", "auto, cpu or cuda")


def sweep(name, preset):
    return SWEEPS[name].get(preset, SWEEPS[name]["default"])


# -----------------------------------------------------------------------------
# The base every experiment starts from, and what is measured on a policy

def make_base(a, common):
    """OUT_DIR/base: pretrain.pt, sft.pt, reward.pt as train_all.py makes them. -> its folder."""
    base = os.path.join(a.out_dir, "base")
    ensure_out_dir(base)
    stages, common = Stages(base, force=False), {**common, "out_dir": base}
    sft_cfg = sft.Config(**sft.PRESETS[a.preset])
    stages.run("pretrain", "pretrain.pt", sft, replace(sft_cfg, stage="pretrain", **common))
    stages.run("sft", "sft.pt", sft, replace(sft_cfg, stage="sft", eval_gold=0, **common))
    stages.run("reward", "reward.pt", reward, replace(reward.Config(**reward.PRESETS[a.preset]), **common))
    return base


# -----------------------------------------------------------------------------
# The experiments: each -> (results, a function drawing its PNG)

def exp_pairs(a, base, common, device):
    passes = PASSES.get(a.preset, PASSES["default"])
    progress = Progress("pairs", 2, a.seed)
    cfg = replace(reward.Config(**reward.PRESETS[a.preset]), init=os.path.join(base, "sft.pt"), epochs=passes,
                  eval_each_pass=True, **common)
    progress.next("one ranking per batch element (eq. 1)")
    reward.main(replace(cfg, name="grouped"))
    with open(os.path.join(common["out_dir"], "comparisons_grouped.jsonl")) as f:
        comps = [json.loads(line) for line in f]
    pairs = n_pairs(comps)
    batch = max(1, round(cfg.batch_size * pairs / len(comps)))  # the same comparisons per step
    progress.next(f"each comparison its own data point, {batch} per step")
    reward.main(replace(cfg, name="separate", separate_pairs=True, batch_size=batch))
    out = {"passes": passes, "prompts": len(comps), "comparisons": pairs,
           "forward_passes_per_pass": {"grouped": sum(len(c["ranking"]) for c in comps), "separate": 2 * pairs}}
    for name in ("grouped", "separate"):
        rows = rows_of(common["out_dir"], name, "train_accuracy_pass")
        out[name] = [dict(passes=i + 1, heldout_accuracy=round(r["heldout_accuracy"], 4),
                          train_accuracy=round(r["train_accuracy_pass"], 4),
                          gap=round(r["train_accuracy_pass"] - r["heldout_accuracy"], 4)) for i, r in enumerate(rows)]
    return out, partial(draw_pairs, out=out)


def exp_k(a, base, common, device):
    n_rm = data.PRESETS[a.preset]["n_rm_prompts"]
    n4 = n_rm // 4
    n2 = min(n_rm, round(n4 * 6.5 / 2))  # K uniform in 4..9 reads 6.5 responses a prompt on average
    progress = Progress("k", 2, a.seed)
    cfg = replace(reward.Config(**reward.PRESETS[a.preset]), init=os.path.join(base, "sft.pt"), **common)
    progress.next(f"K = 4..9 on {n4} prompts")
    reward.main(replace(cfg, name="k4to9", n_prompts=n4))
    progress.next(f"K = 2 on {n2} prompts")
    reward.main(replace(cfg, name="k2", n_prompts=n2, k_min=2, k_max=2))
    with open(os.path.join(common["out_dir"], "comparisons_heldout_k4to9.jsonl")) as f:
        heldout = [json.loads(line) for line in f]  # the same held-out comparisons judge both RMs
    out = {}
    for name in ("k4to9", "k2"):
        with open(os.path.join(common["out_dir"], f"comparisons_{name}.jsonl")) as f:
            comps = [json.loads(line) for line in f]
        out[name] = dict(prompts=len(comps), responses_read=sum(len(c["ranking"]) for c in comps),
                         comparisons=n_pairs(comps), heldout_accuracy=reward.checkpoint_accuracy(
                             os.path.join(common["out_dir"], name + ".pt"), heldout, device))

    def draw(ax):
        names = ["k2", "k4to9"]
        ax.bar(names, [out[n]["heldout_accuracy"] for n in names], color=["C3", "C0"])
        for i, n in enumerate(names):
            ax.annotate(f"{out[n]['responses_read']} responses\n{out[n]['comparisons']} pairs",
                        (i, out[n]["heldout_accuracy"]), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0.4, 1.0)
        ax.set_ylabel("held-out pairwise accuracy")
        ax.set_title("The same labeling budget: K = 2 against K = 4..9")
    return out, draw


def ppo_sweep(name, field, a, base, common, device, reward_paths=None):
    """PPO from the base's SFT model once per value of the sweep; -> [{value, figures...}]."""
    values = sweep(name, a.preset)
    progress = Progress(name, len(values), a.seed)
    out = []
    for v in values:
        progress.next(f"{field} {v}" if field else f"PPO against the RM of {name} {v}")
        run = f"ppo_{name}{v}"
        cfg = replace(ppo.Config(**ppo.PRESETS[a.preset]), init=os.path.join(base, "sft.pt"), name=run,
                      reward=(reward_paths or {}).get(v, os.path.join(base, "reward.pt")), **common)
        metrics = ppo.main(replace(cfg, **{field: v}) if field else cfg)
        figs = policy_figures(os.path.join(common["out_dir"], run + ".pt"), base, a, device)
        out.append({"value": v, **figs, "eval_rm_score": round(metrics["eval_rm_score"], 4)})
    return out


def exp_beta(a, base, common, device):
    out = {"runs": ppo_sweep("beta", "kl_coef", a, base, common, device)}
    return out, partial(draw_beta, out=out)


def exp_ptx(a, base, common, device):
    out = {"runs": ppo_sweep("ptx", "ptx_coef", a, base, common, device)}

    def draw(ax):
        pts = out["runs"]
        lines(ax, pts, "pretrain_loss", ["win_rate_vs_sft", "gold"])
        for p in pts:
            ax.annotate(f"gamma={p['value']}", (p["pretrain_loss"], p["win_rate_vs_sft"]), fontsize=7)
        ax.set_xlabel("pretraining loss on held-out corpus text (the alignment tax)")
        ax.set_title("PPO-ptx: the pretraining coefficient swept")
    return out, draw


def exp_noise(a, base, common, device):
    scales = sweep("noise", a.preset)
    progress = Progress("noise (reward models)", len(scales), a.seed)
    cfg = replace(reward.Config(**reward.PRESETS[a.preset]), init=os.path.join(base, "sft.pt"), **common)
    rms, paths = {}, {}
    for s in scales:
        progress.next(f"labeler noise x{s}")
        rms[s] = reward.main(replace(cfg, name=f"reward_noise{s}", noise_scale=s))
        paths[s] = os.path.join(common["out_dir"], f"reward_noise{s}.pt")
    runs = ppo_sweep("noise", None, a, base, common, device, reward_paths=paths)
    out = {"runs": [{**r, "labeler_agreement": round(rms[r["value"]]["labeler_agreement"], 4),
                     "rm_accuracy": round(rms[r["value"]]["heldout_accuracy"], 4)} for r in runs]}

    def draw(ax):
        lines(ax, out["runs"], "value", ["labeler_agreement", "rm_accuracy", "gold"])
        ax.set_xscale("log")
        ax.set_xlabel("labeler noise, times the world's")
        ax.set_title("Noisier labelers: agreement, RM accuracy, PPO's gold score")
    return out, draw


def exp_rounds(a, base, common, device):
    rounds = sweep("rounds", a.preset)
    progress = Progress("rounds", len(rounds), a.seed)
    folder = common["out_dir"]
    for f in ("pretrain.pt", "sft.pt", "reward.pt", "comparisons_reward.jsonl", "comparisons_heldout_reward.jsonl"):
        if not os.path.exists(os.path.join(folder, f)):
            shutil.copy(os.path.join(base, f), folder)  # round 1 starts from the base, as every experiment
    out = {"runs": []}
    for r in rounds:
        progress.next(f"{r} round(s) of steps 2 and 3")
        s = train_all.main(train_all.Config(preset=a.preset, out_dir=folder, seed=a.seed, rounds=r, device=a.device,
                                            quiet=True))
        out["runs"].append({"rounds": r, **{f"{k}_{m}": s[k][m] for k in ("win_rate_vs_sft", "gold_score")
                                            for m in ("ppo", "ppo_ptx")},
                            "new_tasks_gold_ppo": s["new_tasks"]["gold_score"]["ppo"]})

    def draw(ax):
        lines(ax, out["runs"], "rounds", ["gold_score_ppo", "gold_score_ppo_ptx", "new_tasks_gold_ppo"])
        ax.set_xticks([p["rounds"] for p in out["runs"]])
        ax.set_xlabel("rounds of steps 2 and 3")
        ax.set_title("What each round of new comparisons adds (test prompts)")
    return out, draw


# Model sizes of `sizes`, smallest first, as (n_layer, n_head, n_embd); the preset's own shape comes
# last, the base's. The span is at least 16x in parameters (the paper's: 1.3B to 175B, 135x).
SIZES = {"smoke": [(1, 2, 16), (2, 2, 32)], "cpu": [(2, 2, 24), (3, 4, 64)], "gpu": [(3, 4, 96), (4, 4, 192)]}
SIZE_TEST = {"smoke": 40}  # sizes: test prompts per part (default: train_all.py's preset)
METHODS = ["base", "base_fewshot", "sft", "ppo", "ppo_ptx", "dpo"]  # Figure 1's lines, and DPO


def train_size(a, base, shape, home, common, rl=True):
    """One model size in `home`: pretrain, SFT, then (with rl) PPO, PPO-ptx and DPO from its SFT against
    the base's RM and rankings (the base's own folder holds the preset's size, as train_all.py makes
    it), and an own-size RM on the same rankings. Stages whose checkpoints exist are skipped."""
    stages, c = Stages(home, force=False), {**common, "out_dir": home}
    n_layer, n_head, n_embd = shape
    sft_cfg = sft.Config(**sft.PRESETS[a.preset])
    stages.run("pretrain", "pretrain.pt", sft, replace(sft_cfg, stage="pretrain", n_layer=n_layer, n_head=n_head,
                                                       n_embd=n_embd, **c))
    stages.run("sft", "sft.pt", sft, replace(sft_cfg, stage="sft", eval_gold=0, **c))
    ppo_cfg = replace(ppo.Config(**ppo.PRESETS[a.preset]), reward=os.path.join(base, "reward.pt"), **c)
    ranked = {} if home == base else dict(data=os.path.join(base, "comparisons_reward.jsonl"),
                                          heldout=os.path.join(base, "comparisons_heldout_reward.jsonl"))
    if rl:
        stages.run("ppo", "ppo.pt", ppo, replace(ppo_cfg, name="ppo"))
        gamma = train_all.PRESETS[a.preset]["ptx_coef"]
        stages.run("ppo_ptx", "ppo_ptx.pt", ppo, replace(ppo_cfg, name="ppo_ptx", ptx_coef=gamma))
        stages.run("dpo", "dpo.pt", dpo, replace(dpo.Config(**dpo.PRESETS[a.preset]), n_val=0, **ranked, **c))
    rm_cfg = replace(reward.Config(**reward.PRESETS[a.preset]), name="reward_own",
                     data=os.path.join(base, "comparisons_reward.jsonl"), **c)
    stages.run("reward_own", "reward_own.pt", reward, rm_cfg)


def exp_sizes(a, base, common, device):
    shapes = SIZES.get(a.preset, SIZES["cpu"])
    own = sft.Config(**sft.PRESETS[a.preset])
    shapes = shapes + [(own.n_layer, own.n_head, own.n_embd)]
    homes = [os.path.join(common["out_dir"], f"size_{l}x{e}") for l, _, e in shapes[:-1]] + [base]
    progress = Progress("sizes", len(shapes) + 1, a.seed)
    for shape, home in zip(shapes, homes):
        progress.next(f"{shape[0]} layers of width {shape[2]}: pretrain, SFT, PPO, PPO-ptx, DPO, an own-size RM")
        ensure_out_dir(home)
        train_size(a, base, shape, home, common)
    progress.next("every size's models answer the test prompts; the largest SFT's answers are the reference")
    world = data.build(a.preset, a.seed)
    n = SIZE_TEST.get(a.preset, train_all.PRESETS[a.preset]["n_test"])
    tests = {"seen": world["test"][:n], "new": world["test_new"][:n]}
    heldout = [l for l in world["labelers"] if l.heldout]
    rm, _, bias, _ = load_reward_model(os.path.join(base, "reward.pt"), device)
    reference_sft, tok, _ = load_language_model(os.path.join(base, "sft.pt"), device)
    shots = train_all.fewshot_examples(tok, world["sft"])
    items = world["world"].capability_items(min(n, train_all.CAPABILITY_ITEMS[a.preset]), a.seed + 23)
    with open(os.path.join(base, "comparisons_heldout_reward.jsonl")) as f:
        heldout_comps = [json.loads(line) for line in f]  # the same held-out comparisons judge every RM
    reference = {part: sample_chat(reference_sft, reference_sft, rm, tok, [r["prompt"] for r in records], bias,
                                   a.seed * 1000 + 7 + (part == "new"))[0] for part, records in tests.items()}
    out = {"reference": "the largest size's SFT", "n_test": {p: len(r) for p, r in tests.items()},
           "serving_rm": dict(params=rm.gpt.num_params(), heldout_accuracy=round(
               reward.accuracy(rm, tok, heldout_comps, rm.gpt.config.block_size, device), 4)), "sizes": []}
    kept = {}  # the smallest and the largest size's answers, for the head-to-heads below
    for i, (shape, home) in enumerate(zip(shapes, homes)):
        models = {m: load_language_model(os.path.join(home, ("pretrain" if m == "base" else m) + ".pt"), device)[0]
                  for m in ("base", "sft", "ppo", "ppo_ptx", "dpo")}
        row = dict(n_layer=shape[0], n_head=shape[1], n_embd=shape[2], params=models["sft"].num_params(),
                   rm_own_accuracy=reward.checkpoint_accuracy(os.path.join(home, "reward_own.pt"), heldout_comps, device))
        # sampling streams: the reference's seed * 1000 + 7 (+ 1 new); size i's + 100 (i + 1) + 10 part + method
        for part, records in tests.items():
            prompts, rng = [r["prompt"] for r in records], random.Random(a.seed * 1000 + 10 * i + (part == "new"))
            answers, kl = size_answers(models, METHODS, models["sft"], rm, bias, tok, prompts, shots,
                                       a.seed * 1000 + 100 * (i + 1) + 10 * (part == "new"))
            row[part] = {}
            if i in (0, len(shapes) - 1):
                kept[i, part] = answers
            for m in METHODS:
                p, ci = win_rate(sum(judge(heldout, records, answers[m], reference[part], rng)), len(records))
                row[part][m] = dict(win_rate=round(p, 4), ci=[round(c, 4) for c in ci],
                                    gold=round(gold_mean(records, answers[m], "g")["g"], 4),
                                    kl_to_own_sft=None if kl[m] is None else round(kl[m], 4))
        row["capability"], row["capability_tax"] = capability_figures(models, tok, items, random.Random(a.seed + 9))
        out["sizes"].append(row)
        print(f"[sizes] {row['params'] / 1e6:.3f}M parameters: seen-task win rate against the largest SFT "
              + ", ".join(f"{m} {row['seen'][m]['win_rate']:.2f}" for m in METHODS)
              + f"; own-size RM accuracy {row['rm_own_accuracy']:.3f}", flush=True)

    # Figure 1's question asked directly: the smallest size's PPO against the largest base model,
    # prompted (few-shot) and plain, and against the largest SFT, by the same held-out labelers
    out["head_to_head"] = {}
    for part, records in tests.items():
        small, large = kept[0, part], kept[len(shapes) - 1, part]
        rng = random.Random(a.seed * 1000 + 13 + (part == "new"))
        for rival in ("base_fewshot", "base", "sft", "ppo"):
            out["head_to_head"][f"{part}_smallest_ppo_vs_largest_{rival}"] = direct_win_rate(
                heldout, records, small["ppo"], large[rival], rng)

    draw = partial(draw_figure1, out=out, methods=METHODS)
    draw.panels = 2
    return out, draw


# The implementation details of PPO that RLHF codes differ on (Huang et al. 2024, "The N+
# implementation details of RLHF with PPO"; Zheng et al. 2023, "Secrets of RLHF, Part I"): each
# run is the preset's PPO with these flags of ppo.py changed, and nothing else.
DETAILS = {
    "whiten_rewards": ("whiten the scores over the batch", dict(whiten_rewards=True)),
    "raw_advantages": ("advantages not whitened", dict(whiten_advantages=False)),
    "k3": ("k3 KL estimator in the reward", dict(kl_estimator="k3")),
    "value_from_sft": ("value model from SFT, not the RM", dict(value_init="sft")),
    "adaptive_kl": ("adaptive KL (target 2 nats, horizon 1000)", dict(adaptive_kl=True, kl_horizon=1000)),
    "no_eos_penalty": ("no penalty for answers without EOS", dict(no_eos_penalty=0.0)),
    "score_after": ("score on the slot after the last token", dict(score_slot="after")),
    "lambda_1": ("GAE lambda 1, not 0.95", dict(lam=1.0)),
    "epochs_1": ("1 PPO epoch", dict(ppo_epochs=1)),
    "epochs_4": ("4 PPO epochs", dict(ppo_epochs=4)),
    "no_value_clip": ("no value clipping", dict(vf_clip=0.0)),
    "temperature_0.7": ("rollouts at temperature 0.7", dict(temperature=0.7)),
    "logprobs_at_0.7": ("... and log-probs at 0.7", dict(temperature=0.7, logprobs_at_temperature=True)),
}
DETAIL_RUN = {  # details: the PPO runs' own evaluation kept small (it changes no update); smoke: shorter runs
    "smoke": dict(iterations=2, batch_size=16, minibatch_size=8, eval_every=2, n_eval=8),
    "default": dict(eval_every=10 ** 6, n_eval=32)}
DETAIL_PROMPTS = {"smoke": 24, "default": 200}  # validation prompts every policy of a seed answers


def exp_details(a, base, common, device):
    seeds, chosen = a.seeds or [a.seed], a.details or list(DETAILS)
    if set(chosen) - set(DETAILS):
        raise UserError(f"--details: unknown {', '.join(sorted(set(chosen) - set(DETAILS)))}; one of {', '.join(DETAILS)}")
    settings = {**ppo.PRESETS[a.preset], **DETAIL_RUN.get(a.preset, DETAIL_RUN["default"])}
    same = [k for k in chosen if all(settings.get(f, getattr(ppo.Config, f)) == v for f, v in DETAILS[k][1].items())]
    chosen = [k for k in chosen if k not in same]  # a detail the preset already has would be its own twin
    progress, figures = Progress("details", len(seeds) * (len(chosen) + 1), seeds[0]), {}
    for seed in seeds:  # each seed: its own world, base (pretrain, SFT, RM) and runs in OUT_DIR/details/seed<S>
        progress.seed, home = seed, os.path.join(common["out_dir"], f"seed{seed}")
        seed_base = make_base(replace(a, seed=seed, out_dir=home), c := {**common, "seed": seed, "out_dir": home})
        records, reference, models, _ = judging(seed_base, a.preset, seed, device,
                                                DETAIL_PROMPTS.get(a.preset, DETAIL_PROMPTS["default"]))
        figures[seed, "sft"] = {"gold": gold_mean(records, reference, "g", per_prompt=True)["g_per_prompt"]}  # the scale
        for key in ["preset"] + chosen:
            progress.next("the preset's PPO" if key == "preset" else DETAILS[key][0])
            path = os.path.join(home, f"ppo_{key}")
            if not os.path.exists(path + ".figures.json"):  # a finished run is read, not re-run
                cfg = replace(ppo.Config(**settings), init=os.path.join(seed_base, "sft.pt"),
                              reward=os.path.join(seed_base, "reward.pt"), name=f"ppo_{key}", **c)
                seconds = ppo.main(replace(cfg, **({} if key == "preset" else DETAILS[key][1])))["seconds"]
                write_json(path + ".figures.json", dict(detail_figures(load_language_model(path + ".pt", device)[0],
                                                                       models, records, reference, seed), seconds=seconds))
            with open(path + ".figures.json") as f:
                figures[seed, key] = json.load(f)

    def mean(key, figure):  # over seeds, of the seed's mean over prompts
        return round(statistics.fmean(statistics.fmean(v) if isinstance(v := figures[s, key][figure], list) else v
                                      for s in seeds), 4)
    out = {"seeds": seeds, "prompts_per_seed": len(records), "ppo_settings": settings, "same_as_preset": same,
           "preset": {k: mean("preset", k) for k in ("gold", "win_rate", "rm_score", "kl", "seconds")},
           "sft": {"gold": mean("sft", "gold")}, "details": {}}
    for key in chosen:
        pairs = [(figures[s, "preset"], figures[s, key]) for s in seeds]
        d = out["details"][key] = dict(
            label=DETAILS[key][0], flags=DETAILS[key][1], seconds=round(mean(key, "seconds") - mean("preset", "seconds")),
            **{k: paired_difference(pairs, k) for k in ("gold", "win_rate", "rm_score", "kl")},
            gold_by_family={f: paired_difference(pairs, "gold", f) for f in sorted(set(pairs[0][0]["family"]))})
        print(f"[details] {d['label']}: gold {d['gold']['diff']:+.3f} ({d['gold']['ci'][0]:+.3f} to "
              f"{d['gold']['ci'][1]:+.3f}), KL {d['kl']['diff']:+.2f}, win rate vs SFT {d['win_rate']['diff']:+.3f}")

    draw = partial(draw_details, out=out)
    draw.panels = 2
    return out, draw


# over-optimization (Gao et al. 2022): RL from the preset's SFT model and RM, LONGER times the preset's
# length with little or no KL penalty, evaluated EVALS times along the way against the truth
OVEROPT_RUNS = {"ppo_beta0": (ppo, 0.0, False), "ppo_beta0.05": (ppo, 0.05, False), "grpo_beta0": (grpo, 0.0, False),
                "ppo_beta0_small_rm": (ppo, 0.0, True)}  # name: (script, beta, an RM of SIZES' smallest: Gao's RM size)
OVEROPT_RUN = {"smoke": dict(iterations=4, batch_size=16, minibatch_size=8, n_eval=16), "default": dict(n_eval=128)}
LONGER, EVALS = 4, 12


def exp_overoptimization(a, base, common, device):
    seeds, curves, answers, best, records, accuracy = a.seeds or [a.seed], {}, {}, {}, {}, {}
    progress = Progress("overoptimization", len(seeds) * len(OVEROPT_RUNS), seeds[0])
    for seed in seeds:  # each seed: its own world, base and runs in OUT_DIR/overoptimization/seed<S>
        progress.seed, home = seed, os.path.join(common["out_dir"], f"seed{seed}")
        seed_base = make_base(replace(a, seed=seed, out_dir=home), c := {**common, "seed": seed, "out_dir": home})
        for name, (script, beta, small_rm) in OVEROPT_RUNS.items():
            preset, rm_path = script.PRESETS[a.preset], os.path.join(seed_base, "reward.pt")
            settings = {**preset, "iterations": LONGER * preset["iterations"],
                        **OVEROPT_RUN.get(a.preset, OVEROPT_RUN["default"])}
            progress.next(f"{name}: {settings['iterations']} iterations (the preset's {preset['iterations']}), "
                          f"beta {beta}" + (", first a small RM: pretrain, SFT, RM" if small_rm else ""))
            if small_rm:  # its own pretrain and SFT at the smallest size, then an RM on the base's rankings
                ensure_out_dir(rm_home := os.path.join(home, "small_rm"))
                train_size(a, seed_base, SIZES.get(a.preset, SIZES["cpu"])[0], rm_home, c, rl=False)
                rm_path = os.path.join(rm_home, "reward_own.pt")
                with open(os.path.join(seed_base, "comparisons_heldout_reward.jsonl")) as f:
                    pairs = [json.loads(line) for line in f]  # the same held-out comparisons judge both RMs
                accuracy[seed] = {which: reward.checkpoint_accuracy(path, pairs, device) for which, path
                                  in (("preset", os.path.join(seed_base, "reward.pt")), ("small", rm_path))}
            cfg = replace(script.Config(**settings), init=os.path.join(seed_base, "sft.pt"), name=name, kl_coef=beta,
                          reward=rm_path, eval_answers=True, eval_every=max(1, settings["iterations"] // EVALS), **c)
            Stages(home, force=False).run(name, name + ".pt", script, cfg)  # a finished run is read, not re-run
            records[seed] = data.build(a.preset, seed)["val"][:cfg.n_eval]
            curves[seed, name], answers[seed, name] = eval_curve(home, name, records[seed])
        if not os.path.exists(path := os.path.join(home, "best_of_n.json")):  # the baseline, on the same prompts
            sft_model, tok, _ = load_language_model(os.path.join(seed_base, "sft.pt"), device)
            rm, _, bias, _ = load_reward_model(os.path.join(seed_base, "reward.pt"), device)
            curve = train_all.overoptimization({"sft": sft_model}, rm, bias, tok, records[seed], home, seed)
            write_json(path, curve["best_of_n"])
        with open(path) as f:
            best[seed] = json.load(f)

    runs = {name: (script.PRESETS[a.preset]["iterations"], beta) for name, (script, beta, _) in OVEROPT_RUNS.items()}
    out = {**overoptimization_figures(runs, seeds, curves, answers, records, best), "rm_accuracy": accuracy}
    with open(os.path.join(common["out_dir"], "report.md"), "w") as f:
        f.write(overoptimization_report(out))

    draw = partial(draw_overoptimization, out=out)
    draw.grid = (2, 2)
    return out, draw


EXPERIMENTS = {"pairs": exp_pairs, "k": exp_k, "beta": exp_beta, "ptx": exp_ptx, "noise": exp_noise,
               "rounds": exp_rounds, "sizes": exp_sizes, "details": exp_details,
               "overoptimization": exp_overoptimization}
PER_SEED = ("details", "overoptimization")  # experiments over --seeds, each seed with its own base
PNG = {"sizes": "figure1.png"}  # the paper's name for the picture; others are named after their experiment


def main():
    a = parse_config(Args, description=__doc__)
    if a.preset not in train_all.PRESETS:
        raise UserError(f"--preset must be one of {', '.join(train_all.PRESETS)}, got {a.preset}")
    a.out_dir = a.out_dir or os.path.join("out", f"experiments_{a.preset}")
    device, _ = setup(a.device, a.seed)
    common = dict(preset=a.preset, seed=a.seed, device=a.device, quiet=True)
    base = make_base(a, common) if a.name not in PER_SEED else None  # a base per seed, below the experiment's folder
    for name in EXPERIMENTS if a.name == "all" else [a.name]:
        folder = os.path.join(a.out_dir, name)
        ensure_out_dir(folder)
        t0 = time.time()
        results, draw = EXPERIMENTS[name](a, base, {**common, "out_dir": folder}, device)
        results = {"experiment": name, "preset": a.preset, "seed": a.seed, "seconds": round(time.time() - t0, 1),
                   **results}
        write_json(os.path.join(folder, "results.json"), results)
        plt, png = pyplot(), PNG.get(name, f"{name}.png")
        rows, cols = getattr(draw, "grid", (1, getattr(draw, "panels", 1)))
        fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.2 * rows), squeeze=False)
        draw(*axes.flat)
        if axes.flat[0].get_legend_handles_labels()[0]:
            axes.flat[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, png), dpi=100)
        plt.close(fig)
        print(f"[{name}] done in {results['seconds']:.0f}s: {folder}/results.json, {png}")


if __name__ == "__main__":
    run_cli(main)

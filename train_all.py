"""
train_all.py: the whole InstructGPT pipeline, then an evaluation like the paper's.

    step 0  pretrain      sft.py --stage pretrain      the base model ("GPT-3")
    step 1  SFT           sft.py --stage sft           labeler demonstrations (+ pretraining loss)
    step 2  reward model  reward.py                    K = 4..9 distinct SFT samples per prompt, ranked
    step 3  PPO           ppo.py                       RM score - beta * KL to SFT
            PPO-ptx       ppo.py --ptx-coef G          + gamma * pretraining loss
            DPO           dpo.py                       beside PPO: the policy from step 2's rankings
                                                       directly, no RM, no sampling (Rafailov et al. 2023)
            GRPO          grpo.py                      beside PPO: no value model; each answer judged against
                                                       G answers to its prompt (Shao et al. 2024)
            *_gold        ppo.py, grpo.py --reward gold  the gold rubric as the reward: what the RM costs
    steps 2 and 3 repeat for --rounds R: labelers rank samples of each line's current policy (PPO's,
    PPO-ptx's), and each round's RM trains on the comparisons of every round so far (DPO, GRPO and
    the gold lines: round 1's).

Then, as in the paper's Figure 1 and Sections 4.1-4.3, on test prompts from held-out users judged
by held-out labelers, seen tasks and new tasks (instances kept out of every SFT, RM and RL prompt:
does what RLHF taught generalize?). Per model, each from its own random stream: the win rate against
SFT (95% interval), the fraction identical to SFT's, the gold rubric per dimension, the RM score,
the KL to SFT; the "alignment tax" as the pretraining loss on held-out corpus text and as few-shot
capability scores (Section 4.2). The models: the base model prompted plainly and few-shot, SFT,
each trained policy, a constant answer (the best of a few on validation prompts) and best-of-n
from SFT picked by the RM (n = 4, 16). Beside them: the RM's held-out accuracy, the labelers'
agreement and the gold rubric's accuracy on the same pairs (an RM's ceiling); the prompt funnel;
gold and RM score against sqrt(KL to SFT) for best-of-n (n = 1..64) and along each RL run (Gao et
al. 2022).

    python train_all.py --preset smoke --out-dir out/smoke     # a few minutes on 2 CPU cores
    python train_all.py                                        # gpu preset on CUDA, else cpu
    python tools/seeds.py --preset cpu --seeds 0 1 2           # the same over seeds: mean and spread
    torchrun --nproc_per_node 8 train_all.py --preset gpu      # data parallel on 8 GPUs (plumbing/ddp.py; gloo on a CPU)
    python train_all.py --preset gpu --dry-run                 # the gpu preset's settings, each stage one step, on
                                                               # a CPU: a check, not a result (DRY_RUN)
    python train_all.py --init DIR_OR_CKPT --sft-data F --rm-data F --prompts F [--pretrain-data F]
                                                               # your own model and data (own_data.py)

Writes OUT_DIR/summary.json, report.md and PNG plots beside the checkpoints. A stage whose
checkpoint exists is skipped (so a run can be continued), unless --force; a checkpoint made with
another --preset, --seed or --ptx-coef is an error. A stage interrupted with Ctrl-C (it leaves
<stage>.resume.pt) continues where it stopped.

Where the evaluation departs from the paper: answers are sampled at temperature 1 as in the
paper, and also greedy (the *_greedy keys, seen tasks); the labelers are simulated, and the gold
rubric is known, so every model is also scored against the truth. Every choice a baseline makes
(the constant answer, the few-shot examples) is made on validation or training data, never test.
"""

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, replace

import torch

import data
import dpo
import grpo
import own_data
from pipeline import (Stages, best_of, best_of_n_kl, capability_figures, fewshot_examples, fmt, head_to_head, judge,
                      sample_chat, sample_n, win_rate, write_json)
import ppo
import reward
import sft
from world import gold_mean, gold_score
from plumbing import ddp
from plumbing.checkpoint import fit_examples, lm_loss, load_any, load_reward_model, respond, score_texts
from plumbing.cli import UserError, arg, ensure_out_dir, parse_config, run_cli
from plumbing.loop import setup
from plumbing.plots import metrics_rows, plot_all
from plumbing.tokenizer import Tokenizer, corpus_split

MODELS = ["base", "base_fewshot", "constant", "sft", "best_of_4", "best_of_16", "ppo", "ppo_ptx", "dpo", "grpo",
          "ppo_gold", "grpo_gold"]
RL_RUNS = ["ppo", "ppo_ptx", "grpo", "ppo_gold", "grpo_gold"]  # the models trained by sampling: curves along training
SAME_NETWORK = {"base_fewshot": "base", "best_of_4": "sft", "best_of_16": "sft"}  # models that are another's network
CONSTANTS = ["I don't know.", "Sorry, I can't help with that.", "OK.", "Yes, I can help."]  # the constant baseline's choices
BEST_OF = [1, 2, 4, 8, 16, 32, 64]  # n of the over-optimization curve (Gao et al. 2022, Figure 1)
# --dry-run: what each stage's Config (where it has the field) and the evaluation are cut to: one
# step of the preset's batch size each (PPO: one minibatch's worth of rollouts, updated once)
DRY_RUN = dict(max_steps=1, epochs=1, n_heldout=4, iterations=1, ppo_epochs=1, n_eval=4, n_test=4, n_overopt=1)
CAPABILITY_ITEMS = {"smoke": 40, "cpu": 200, "gpu": 400}  # the benchmark's items per task, at most (world.py)
DRY_RUN_MARK = "DRY_RUN.txt"  # a dry run's folder holds no results: a real run refuses to continue it


@dataclass
class Config:
    preset: str = arg("", "smoke (CI, < 3 min), cpu (laptop, < 30 min) or gpu; default: gpu on CUDA, else cpu")
    out_dir: str = arg("", "run folder (default out/<preset>; with your own data out/own_<preset>)")
    seed: int = arg(0, "seed for everything: the same seed gives the same summary.json on CPU")
    rounds: int = arg(1, "times steps 2 and 3 run; round R's RM trains on the comparisons of rounds 1..R, "
                         "ranked samples of each line's own policy")
    ptx_coef: float = arg(-1.0, "gamma of PPO-ptx (default: the preset's)")
    n_test: int = arg(-1, "test prompts of each part, seen and new tasks (default: the preset's)")
    n_overopt: int = arg(-1, "validation prompts of the over-optimization curve, 64 samples each (default: the preset's)")
    # your own model and data instead of the simulated world (own_data.py)
    init: str = arg("", "own data: the model SFT starts from, a checkpoint or a local GPT-2 directory")
    sft_data: str = arg("", "own data: demonstrations, or comparisons whose best answers demonstrate")
    rm_data: str = arg("", "own data: comparisons for the RM; a part trains the judge RM, a part is held out")
    prompts: str = arg("", "own data: PPO's prompts; a part is held out as the test prompts")
    pretrain_data: str = arg("", "own data: text for PPO-ptx (and SFT's mix); without it PPO-ptx is not run")
    force: bool = arg(False, "re-run stages whose checkpoints exist")
    dry_run: bool = arg(False, "a check, not a result: the preset's model shape, block size, batch sizes and flags, "
                               "each stage cut to a step or two on a world of a few hundred prompts "
                               "(DRY_RUN, data.DRY_RUN_SIZES): the gpu preset's settings checked on a CPU")
    device: str = arg("auto", "auto, cpu or cuda")
    quiet: bool = arg(False, "only stage summaries, no per-step lines")


PRESETS = {
    "smoke": dict(ptx_coef=1.0, n_test=120, n_overopt=16),
    "cpu": dict(ptx_coef=1.0, n_test=400, n_overopt=64),
    "gpu": dict(ptx_coef=1.0, n_test=1000, n_overopt=400),
}


# -----------------------------------------------------------------------------
# Evaluation: every model answers the test prompts; held-out labelers judge against SFT

def answer_test(models, tok, rm, bias, records, shots, constant, seed):
    """Every model's answers to `records`, sampled at temperature 1, each model from its own random
    stream (with one shared stream, two similar models would give the identical answer wherever
    they are close, and a tie scores 0.5). -> ({model: [answer]}, {model: KL to SFT or None})."""
    prompts = [r["prompt"] for r in records]
    device = next(models["sft"].parameters()).device
    answers, kl = {}, {}
    for k, name in enumerate(MODELS):
        stream = seed * 1000 + 17 * (k + 1)
        if name in ("base", "base_fewshot"):  # plain text, not the chat format: no KL to SFT to speak of
            g = torch.Generator(device=device).manual_seed(ddp.seed(stream))  # torchrun: a stream per rank
            answers[name] = respond(models["base"], tok, prompts, mode="base" if name == "base" else "fewshot",
                                    examples=shots, temperature=1.0, generator=g)
            kl[name] = None
        elif name == "constant":
            answers[name], kl[name] = [constant] * len(prompts), None
        elif name == "best_of_4":  # 16 samples: the RM's favourite of the first 4, and of all 16
            groups, scores = sample_n(models["sft"], rm, tok, prompts, 16, bias, stream)
            for n in (4, 16):
                answers[f"best_of_{n}"], kl[f"best_of_{n}"] = best_of(groups, scores, n)[0], best_of_n_kl(n)
        elif name != "best_of_16":  # the chat models
            answers[name], kl[name], _ = sample_chat(models[name], models["sft"], rm, tok, prompts, bias, stream)
    return answers, kl


def figures(records, answers, reference, labelers, rm, bias, tok, block, seed):
    """The per-model maps of one test set: win rate against `reference` (SFT's answers) with its
    interval, the fraction identical to SFT's, the gold rubric (total and per dimension), RM score.
    `labelers` is (held-out, training): held-out labelers give the win rates; training labelers
    judge the same answers too (Section 4.1's check that the two prefer alike), from their own stream."""
    (heldout, trainers), rng, rng_train = labelers, random.Random(seed + 5), random.Random(seed + 17)
    prompts = [r["prompt"] for r in records]
    device = next(rm.parameters()).device
    out = {key: {} for key in ("win_rate_vs_sft", "win_rate_ci", "identical_to_sft", "gold_score", "gold_dims",
                               "rm_score", "win_rate_training_labelers")}
    members = {f: [i for i, r in enumerate(records) if r["family"] == f] for f in sorted({r["family"] for r in records})}
    out["by_family"] = {f: {"n": len(mine), "win_rate_vs_sft": {}, "gold_score": {}} for f, mine in members.items()}
    for name, ans in answers.items():
        if ans is None:
            for key in out.keys() - {"by_family"}:
                out[key][name] = None
            for f in members:
                out["by_family"][f]["win_rate_vs_sft"][name] = out["by_family"][f]["gold_score"][name] = None
            continue
        outcomes = judge(heldout, records, ans, reference, rng)
        p, ci = win_rate(sum(outcomes), len(records))
        out["win_rate_vs_sft"][name], out["win_rate_ci"][name] = round(p, 4), [round(c, 4) for c in ci]
        out["win_rate_training_labelers"][name] = round(sum(judge(trainers, records, ans, reference, rng_train))
                                                        / len(records), 4)
        out["identical_to_sft"][name] = round(sum(a == b for a, b in zip(ans, reference)) / len(ans), 4)
        golds = [gold_score(r["task"], a) for r, a in zip(records, ans)]
        dims = {k: round(sum(g[k] for g in golds) / len(golds), 4) for k in golds[0]}
        out["gold_dims"][name], out["gold_score"][name] = dims, dims["total"]
        out["rm_score"][name] = round(sum(score_texts(rm, tok, prompts, ans, block, device)) / len(prompts) - bias, 4)
        for f, mine in members.items():  # where a model gains or loses: the same figures, one family at a time
            out["by_family"][f]["win_rate_vs_sft"][name] = round(sum(outcomes[i] for i in mine) / len(mine), 4)
            out["by_family"][f]["gold_score"][name] = round(sum(golds[i]["total"] for i in mine) / len(mine), 4)
    return out


def overoptimization(models, rm, bias, tok, records, out_dir, seed):
    """Gold and RM score against sqrt(KL to SFT) on validation prompts (Gao et al. 2022, Figure 1):
    best-of-n from SFT for n in BEST_OF (64 samples per prompt, split into 64/n groups of n), and
    each RL run (RL_RUNS) at each of its evaluations during training (metrics.jsonl), and DPO's policy."""
    groups, scores = sample_n(models["sft"], rm, tok, [r["prompt"] for r in records], BEST_OF[-1], bias, seed + 9)
    golds = [[gold_score(r["task"], a)["total"] for a in g] for r, g in zip(records, groups)]
    curve = {"best_of_n": []}
    for n in BEST_OF:
        picked_gold, picked_rm = [], []
        for j in range(0, BEST_OF[-1], n):  # disjoint groups of n: every sample is used once
            # best_of picks by the RM's score; the gold scores ride along in the answers' place
            gold, rm_score = best_of([g[j:j + n] for g in golds], [s[j:j + n] for s in scores], n)
            picked_gold, picked_rm = picked_gold + gold, picked_rm + rm_score
        kl = best_of_n_kl(n)
        curve["best_of_n"].append(dict(n=n, kl=round(kl, 4), sqrt_kl=round(math.sqrt(kl), 4),
                                       gold=round(sum(picked_gold) / len(picked_gold), 4),
                                       rm_score=round(sum(picked_rm) / len(picked_rm), 4)))
    rows = metrics_rows(out_dir)
    for name in RL_RUNS:
        curve[name] = [dict(iteration=r["step"], kl=round(r["eval_kl"], 4), sqrt_kl=round(math.sqrt(max(0.0, r["eval_kl"])), 4),
                            gold=round(r["eval_gold"], 4), rm_score=round(r["eval_rm_score"], 4))
                       for r in rows if r["stage"] == name and "eval_gold" in r]
    if "dpo" in models:  # DPO trains without sampling or evaluations: one point, its final policy
        prompts = [r["prompt"] for r in records]
        answers, kl, scores = sample_chat(models["dpo"], models["sft"], rm, tok, prompts, bias, seed + 19)
        gold = gold_mean(records, answers, "gold")["gold"]
        curve["dpo"] = [dict(kl=round(kl, 4), sqrt_kl=round(math.sqrt(max(0.0, kl)), 4), gold=round(gold, 4),
                             rm_score=round(sum(scores) / len(scores), 4))]
    curve["n_prompts"] = len(records)
    return curve


def evaluate(out_dir, cfg, device, paths):
    """Every model answers held-out users' test prompts, seen tasks and new tasks, sampled at
    temperature 1 (the main results; seen tasks also greedily); held-out labelers judge each
    answer against SFT's. Then the over-optimization curve on validation prompts."""
    world = data.build(cfg.preset, cfg.seed)
    tests = {"seen": world["test"][:cfg.n_test], "new": world["test_new"][:cfg.n_test]}
    labelers = ([l for l in world["labelers"] if l.heldout], [l for l in world["labelers"] if not l.heldout])
    models = {name: load_any(p, device)[0] for name, p in paths.items() if name != "reward"}
    tok = Tokenizer.from_state(load_any(paths["sft"], device)[1]["tokenizer"])
    rm, _, bias, _ = load_reward_model(paths["reward"], device)
    block = models["sft"].config.block_size
    _, val_ids = corpus_split(tok, world["corpus"], block)
    # the baselines' choices are made on validation prompts, never on test prompts
    val = world["val"]
    constant = max(CONSTANTS, key=lambda c: sum(gold_score(r["task"], c)["total"] for r in val))
    shots = fewshot_examples(tok, world["sft"])
    cut = sum(len(shots) - len(fit_examples(tok, r["prompt"], shots, block - 48)) for t in tests.values() for r in t)
    result = {"funnel": world["funnel"], "constant_answer": constant, "fewshot_examples": len(shots),
              "fewshot_examples_cut": cut, "pretrain_loss": {}}
    losses = {name: round(lm_loss(model, val_ids, device), 4) for name, model in models.items()}  # once per model
    # the alignment tax as the paper measures it: raw-text few-shot tasks, every network of the pipeline
    items = world["world"].capability_items(min(cfg.n_test, CAPABILITY_ITEMS[cfg.preset]), cfg.seed + 23)
    scores, result["capability_tax"] = capability_figures(models, tok, items, random.Random(cfg.seed + 9))
    # a model that is another's network has its figures; the constant has none
    result["capability"] = {task: {m: v.get(SAME_NETWORK.get(m, m)) for m in MODELS} for task, v in scores.items()}
    result["pretrain_loss"] = {m: losses.get(SAME_NETWORK.get(m, m)) for m in MODELS}
    sampled = {}
    for part, records in tests.items():
        print(f"evaluation: {len(records)} test prompts, {part} tasks")
        answers, kl = answer_test(models, tok, rm, bias, records, shots, constant, cfg.seed + (part == "new"))
        figs = figures(records, answers, answers["sft"], labelers, rm, bias, tok, block, cfg.seed)
        figs["kl_to_sft"] = {m: None if v is None else round(v, 4) for m, v in kl.items()}
        figs["head_to_head"] = head_to_head(records, answers, labelers[0], cfg.seed)
        sampled[part] = answers
        if part == "seen":
            result.update(figs)
        else:
            result["new_tasks"] = {"n_test": len(records), **figs}
    # greedy answers, seen tasks (best-of-n has no greedy form: its n samples would be identical)
    records, greedy = tests["seen"], {}
    for name in MODELS:
        if name == "constant":
            greedy[name] = [constant] * len(records)
        elif name.startswith("best_of"):
            greedy[name] = None
        else:
            mode = {"base": "base", "base_fewshot": "fewshot"}.get(name, "chat")
            greedy[name] = respond(models["base" if mode != "chat" else name], tok, [r["prompt"] for r in records],
                                   mode=mode, examples=shots)
    figs = figures(records, greedy, greedy["sft"], labelers, rm, bias, tok, block, cfg.seed)
    result.update({k + "_greedy": v for k, v in figs.items()})
    result["overoptimization"] = overoptimization(models, rm, bias, tok, val[:cfg.n_overopt], out_dir, cfg.seed)
    return result, tests, sampled


# -----------------------------------------------------------------------------
# Report and plots

def result_table(figs, pretrain_loss):
    """One markdown table of a test set's per-model maps, and the gold rubric per dimension."""
    lines = ["| model | win rate vs SFT (95% CI) | by training labelers | identical to SFT | gold score | RM score | KL to SFT "
             "| pretraining loss |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in MODELS:
        w, ci = figs["win_rate_vs_sft"][m], figs["win_rate_ci"][m]
        if w is None:
            continue
        lines.append(f"| {m} | {w:.3f} ({ci[0]:.3f}-{ci[1]:.3f}) | {figs['win_rate_training_labelers'][m]:.3f} | "
                     f"{figs['identical_to_sft'][m]:.2f} | "
                     f"{figs['gold_score'][m]:+.3f} | {figs['rm_score'][m]:+.3f} | "
                     f"{fmt(figs.get('kl_to_sft', {}).get(m), '.2f')} | {fmt(pretrain_loss[m], '.3f')} |")
    dims = figs["gold_dims"]
    keys = [k for k in dims["sft"] if k != "total"]
    lines += ["", "| gold rubric per dimension | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    lines += [f"| {m} | " + " | ".join(f"{dims[m][k]:+.3f}" for k in keys) + " |" for m in MODELS if dims[m]]
    return lines + [""]


def family_table(figs):
    """report.md: per task family, each model's gold score / win rate vs SFT (on seen tasks also the
    RM's and the gold rubric's accuracy on its held-out pairs); PPO's head-to-heads."""
    rm = bool(figs["by_family"]) and all("rm_accuracy" in v for v in figs["by_family"].values())
    lines = ["| family (n): gold / win rate | " + " | ".join(MODELS + ["RM / gold rubric accuracy"] * rm) + " |",
             "| --- |" + " ---: |" * (len(MODELS) + rm)]
    for f, v in figs["by_family"].items():
        cells = ["-" if v["gold_score"][m] is None else f"{v['gold_score'][m]:+.2f} / {v['win_rate_vs_sft'][m]:.2f}"
                 for m in MODELS] + [f"{v.get('rm_accuracy', 0):.3f} / {v.get('rm_oracle_accuracy', 0):.3f}"] * rm
        lines.append(f"| {f} ({v['n']}) | " + " | ".join(cells) + " |")
    if "head_to_head" in figs:
        lines += ["", "Head to head against PPO's answers (win rate, 95% bootstrap interval over prompts): " + ", ".join(
            f"{k} {v['win_rate']:.3f} ({v['ci'][0]:.3f}-{v['ci'][1]:.3f})" for k, v in figs["head_to_head"].items())]
    return lines + [""]


def capability_table(scores, tax):
    """report.md: the benchmark per task and network; PPO against the base (the paper's tax) and SFT."""
    names = [m for m in MODELS if m not in SAME_NETWORK and next(iter(scores.values()))[m] is not None]
    lines = ["### Capability benchmark: the alignment tax (raw text, few-shot; world.World.capability_items)", "",
             "| task (items) | " + " | ".join(names) + " | PPO - base (95% CI) | PPO - SFT | PPO-ptx - PPO |",
             "| --- |" + " ---: |" * (len(names) + 3)]
    for task, row in scores.items():
        d = [tax[task].get(k) for k in ("ppo_vs_base", "ppo_vs_sft", "ppo_ptx_vs_ppo")]
        lines.append(f"| {task} ({tax[task]['n']}) | " + " | ".join(f"{row[m]:.3f}" for m in names) + " | " + " | ".join(
            "-" if x is None else f"{x['diff']:+.3f} ({x['ci'][0]:+.3f} to {x['ci'][1]:+.3f})" for x in d) + " |")
    return lines + [""]


def write_report(out_dir, summary, tests, answers):
    new = summary["new_tasks"]
    dry = " (--dry-run: every stage cut to a step or two, a check of the settings, not a result)"
    lines = [f"# InstructGPT pipeline: preset {summary['preset']}, seed {summary['seed']}" + dry * summary["dry_run"], "",
             f"Test prompts from held-out users, judged by held-out labelers: {summary['n_test']} on seen tasks "
             f"(instances that also occur in training prompts), {new['n_test']} on new tasks (instances kept out of "
             f"every SFT, RM and PPO prompt). Whole run {summary['seconds']['total']:.0f}s on {summary['device']}.", "",
             f"Baselines: the constant answer {summary['constant_answer']!r} (the best of {len(CONSTANTS)} fixed "
             f"answers on validation prompts); best-of-n: n SFT samples, the RM's favourite; few-shot: "
             f"{summary['fewshot_examples']} examples, {summary['fewshot_examples_cut']} dropped to fit the window.", ""]
    for title, figs in (("Seen tasks, answers sampled at temperature 1 (the main results)", summary),
                        ("New tasks, answers sampled at temperature 1", new),
                        ("Seen tasks, greedy answers", {k[:-len("_greedy")]: v for k, v in summary.items()
                                                         if k.endswith("_greedy")})):
        lines += [f"### {title}", ""] + result_table(figs, summary["pretrain_loss"]) + family_table(figs)
    lines += capability_table(summary["capability"], summary["capability_tax"])
    o = summary["overoptimization"]
    lines += [f"### Over-optimization ({o['n_prompts']} validation prompts; Gao et al. 2022)", "",
              "| policy | sqrt KL | gold score | RM score |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| best-of-{p['n']} | {p['sqrt_kl']:.2f} | {p['gold']:+.3f} | {p['rm_score']:+.3f} |" for p in o["best_of_n"]]
    lines += [f"| {m} iteration {p['iteration']} | {p['sqrt_kl']:.2f} | {p['gold']:+.3f} | {p['rm_score']:+.3f} |"
              for m in RL_RUNS for p in o[m]]
    lines += [f"| dpo | {p['sqrt_kl']:.2f} | {p['gold']:+.3f} | {p['rm_score']:+.3f} |" for p in o.get("dpo", [])]
    lines += ["", f"Reward model: held-out pairwise accuracy {summary['rm_accuracy']:.3f}; the noise-free gold rubric "
              f"on the same pairs {summary['rm_oracle_accuracy']:.3f} (the ceiling); labeler agreement "
              f"{summary['labeler_agreement']:.3f} (paper: RM 69.6-72.4% against agreement 72.6-77.3%).", "",
              "Prompt funnel: " + ", ".join(f"{k} {v}" for k, v in summary["funnel"].items()), "",
              "Seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()), "",
              "![losses](losses.png)", "![scores against KL](scores_vs_kl.png)", "![win rates](win_rates.png)",
              "![over-optimization](overoptimization.png)", ""]
    for part, records in tests.items():
        lines += [f"## Sampled answers side by side, {part} tasks", ""]
        seen = set()
        for i, r in enumerate(records):
            if r["family"] in seen:
                continue
            seen.add(r["family"])
            lines += [f"**{r['family']}**: `{r['prompt']!r}` (gold: `{r['task']['answer']!r}`)", ""]
            lines += [f"- {m}: `{answers[part][m][i]!r}`" for m in MODELS] + [""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


# -----------------------------------------------------------------------------

def main(cfg=None):
    cfg = cfg or parse_config(Config, description=__doc__)
    if not cfg.preset:
        cfg.preset = "gpu" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu"
    if cfg.preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {cfg.preset}")
    for flag in ("n_test", "n_overopt"):  # -1 (the default) stands for the preset's value
        if getattr(cfg, flag) == 0 or getattr(cfg, flag) < -1:
            raise UserError(f"--{flag.replace('_', '-')} must be positive (or -1 for the preset's), got {getattr(cfg, flag)}")
    if cfg.ptx_coef != -1 and not (math.isfinite(cfg.ptx_coef) and cfg.ptx_coef >= 0):
        raise UserError(f"--ptx-coef must be 0 or more (or -1 for the preset's), got {cfg.ptx_coef}")
    cfg = replace(cfg, **{k: v for k, v in PRESETS[cfg.preset].items() if getattr(cfg, k) < 0})
    own = cfg.init or cfg.sft_data or cfg.rm_data or cfg.prompts or cfg.pretrain_data
    if own and cfg.dry_run:
        raise UserError("--dry-run checks a preset's settings on the simulated world: leave out your own model and data")
    if own:  # your own model and data
        cfg.out_dir = cfg.out_dir or os.path.join("out", f"own_{cfg.preset}")
        return own_data.main(cfg)
    if cfg.dry_run:  # every stage re-run, into a folder of its own
        cfg = replace(cfg, n_test=DRY_RUN["n_test"], n_overopt=DRY_RUN["n_overopt"], force=True,
                      out_dir=cfg.out_dir or os.path.join("out", f"{cfg.preset}_dry_run"))
    cfg.out_dir = cfg.out_dir or os.path.join("out", cfg.preset)
    if cfg.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {cfg.rounds}")
    ensure_out_dir(cfg.out_dir)
    mark = os.path.join(cfg.out_dir, DRY_RUN_MARK)
    if cfg.dry_run:
        with open(mark, "w") as f:
            f.write("train_all.py --dry-run: every stage cut to a step or two; a check of the settings, not a result\n")
    elif os.path.exists(mark):
        if not cfg.force:
            raise UserError(f"{cfg.out_dir} holds a dry run's checkpoints (a check, not a result): choose another "
                            f"--out-dir, or pass --force to re-run every stage")
        os.remove(mark)
    with data.dry_run_world() if cfg.dry_run else contextlib.nullcontext():
        return run(cfg)


def check_settings(cfg, common):
    """Every step's settings, its preset's as this run gives them, checked by the step's own validate
    before the first stage runs: a bad value in PPO's preset fails at once, in one line, not after
    pretraining and SFT."""
    for script, own in ((sft, dict(stage="pretrain")), (sft, dict(stage="sft")), (reward, {}),
                        (ppo, dict(ptx_coef=cfg.ptx_coef)), (dpo, {}), (grpo, {})):
        try:
            script.validate(replace(script.Config(**script.PRESETS[cfg.preset]), **own, **common))
        except UserError as e:
            raise UserError(f"the {cfg.preset} preset of {script.__name__}.py: {e}") from None


def run(cfg):
    """The pipeline's stages, then the evaluation, summary.json, report.md and the plots."""
    device, _ = setup(cfg.device, cfg.seed)
    out = cfg.out_dir
    stages = Stages(out, cfg.force)
    seconds = stages.seconds

    def stage(name, ckpt, script, config):  # --dry-run: the stage cut to a step or two (DRY_RUN)
        if cfg.dry_run:
            config = replace(config, **{k: v for k, v in DRY_RUN.items() if hasattr(config, k)})
            if script in (ppo, grpo):
                config = replace(config, batch_size=config.minibatch_size)
        return stages.run(name, ckpt, script, config)

    common = dict(preset=cfg.preset, out_dir=out, seed=cfg.seed, device=cfg.device, quiet=cfg.quiet)
    check_settings(cfg, common)

    # each step's own Config with its preset's values, as `python sft.py --preset P` would build it
    sft_cfg = sft.Config(**sft.PRESETS[cfg.preset])
    stage("pretrain", "pretrain.pt", sft, replace(sft_cfg, stage="pretrain", **common))
    stage("sft", "sft.pt", sft, replace(sft_cfg, stage="sft", eval_gold=0, **common))
    policy = {"ppo": "", "ppo_ptx": ""}  # each line's policy: SFT in round 1, then its own PPO model
    rms, previous = {}, {"ppo": [], "ppo_ptx": []}  # each line's RM (path, metrics) and comparisons so far
    for r in range(1, cfg.rounds + 1):
        suffix = "" if r == 1 else f"_round{r}"
        # round 1: one RM on SFT's samples serves both lines; later rounds: each line's labelers rank
        # its own policy's samples, and its RM trains on those and every earlier round's
        for line in ["ppo"] if r == 1 else ["ppo", "ppo_ptx"]:
            name = "reward" + ("" if line == "ppo" else "_ptx") + suffix
            metrics = stage(name, name + ".pt", reward, replace(
                reward.Config(**reward.PRESETS[cfg.preset]), name=name, policy=policy[line],
                previous=list(previous[line]), round=r, **common))
            for each in ["ppo", "ppo_ptx"] if r == 1 else [line]:
                rms[each] = (os.path.join(out, name + ".pt"), metrics)
                previous[each].append(os.path.join(out, f"comparisons_{name}.jsonl"))
        for line, ptx in (("ppo", {}), ("ppo_ptx", {"ptx_coef": cfg.ptx_coef})):
            stage(line + suffix, f"{line}{suffix}.pt", ppo, replace(
                ppo.Config(**ppo.PRESETS[cfg.preset]), name=line + suffix, start=policy[line], reward=rms[line][0],
                **ptx, **common))
        policy = {line: os.path.join(out, f"{line}{suffix}.pt") for line in policy}
    # DPO beside PPO: the same round-1 rankings the RM trained on, SFT as the reference;
    # GRPO beside PPO, on round 1's RM; then both on the gold rubric: what the learned RM costs
    beside = (("dpo", dpo, dict(n_val=0)), ("grpo", grpo, {}), ("ppo_gold", ppo, dict(reward="gold")),
              ("grpo_gold", grpo, dict(reward="gold")))
    for name, script, own in beside:
        stage(name, name + ".pt", script, replace(script.Config(**script.PRESETS[cfg.preset]), name=name, **own, **common))

    print("== evaluation")
    t0 = time.time()
    rm_path, rm_metrics = rms["ppo"]
    paths = {"base": os.path.join(out, "pretrain.pt"), "sft": os.path.join(out, "sft.pt"), **policy,
             **{name: os.path.join(out, name + ".pt") for name, *_ in beside},
             "reward": rm_path}
    result, tests, answers = evaluate(out, cfg, device, paths)
    seconds["evaluation"] = round(time.time() - t0, 1)
    seconds["total"] = stages.total()  # the whole pipeline, over every run
    summary = {"preset": cfg.preset, "seed": cfg.seed, "rounds": cfg.rounds, "dry_run": cfg.dry_run,
               "n_test": len(tests["seen"]),
               "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
               "world_size": ddp.world(), "seconds": seconds, "funnel": result.pop("funnel"),
               "labeler_agreement": round(rm_metrics.get("labeler_agreement", float("nan")), 4),
               "rm_accuracy": round(rm_metrics.get("heldout_accuracy", float("nan")), 4),
               "rm_oracle_accuracy": round(rm_metrics.get("oracle_accuracy", float("nan")), 4),
               "rm_dropped_prompts": rm_metrics.get("dropped_prompts"), **result}
    for f, rm_f in rm_metrics.get("heldout_by_family", {}).items():  # where the RM errs, beside where models gain
        summary["by_family"].get(f, {}).update(rm_accuracy=rm_f["accuracy"], rm_oracle_accuracy=rm_f["oracle_accuracy"])
    if ddp.is_main():  # torchrun: rank 0 writes (every rank holds the same summary)
        write_json(os.path.join(out, "summary.json"), summary)
        plot_all(out, summary, MODELS, RL_RUNS)
        write_report(out, summary, tests, answers)
    for part, figs in (("seen tasks", summary), ("new tasks", summary["new_tasks"])):
        w, g = figs["win_rate_vs_sft"], figs["gold_score"]
        print(f"{part}: win rate vs SFT " + ", ".join(f"{m} {w[m]:.2f}" for m in MODELS)
              + " | gold " + ", ".join(f"{m} {g[m]:+.2f}" for m in MODELS))
    print(f"done in {seconds['total']:.0f}s; RM accuracy {summary['rm_accuracy']:.3f}, the gold rubric's "
          f"{summary['rm_oracle_accuracy']:.3f}, labeler agreement {summary['labeler_agreement']:.3f}")
    print(f"wrote {out}/summary.json, report.md, losses.png, scores_vs_kl.png, win_rates.png, overoptimization.png")
    return summary


if __name__ == "__main__":
    run_cli(main)

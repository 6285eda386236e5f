"""
own_data.py: train_all.py's own-data mode, the whole pipeline on your own model and data, as the
paper ran it on GPT-3 and its labelers' data.

    python train_all.py --init out/smoke/pretrain.pt --sft-data hh.jsonl.gz --rm-data hh.jsonl.gz \
        --prompts hh.jsonl.gz --preset smoke --out-dir out/hh          # add --pretrain-data F for PPO-ptx
    python train_all.py --init gpt2/ ...       # a local GPT-2 directory: its own tokenizer, plus the chat tokens

    step 1  SFT      sft.py --init X --data (--sft-data less the test prompts) [--pretrain-data F]
    step 2  RM       reward.py --data (the RM's part of --rm-data)
            judge    reward.py --data (the judge's part): a second RM that PPO never optimizes
    step 3  PPO      ppo.py --prompts (--prompts less the test prompts)
            PPO-ptx  ppo.py --prompts ... --pretrain-data F --ptx-coef G   (only with --pretrain-data)

The data are split once, by --seed, before any training:
  test prompts      a tenth of --prompts (at most --n-test); no SFT, RM, judge or PPO data holds them
  test comparisons  --rm-data's comparisons on test prompts, topped up at random to a tenth: the
                    held-out accuracy of both RMs
  judge             30% of the other comparisons; the RM that PPO optimizes trains on the rest

Then every model answers the test prompts (sampled at temperature 1, each from its own random
stream): SFT, PPO, PPO-ptx and two baselines, a constant answer (the best of a few by the RM on
64 of PPO's prompts, never test ones) and best-of-4 from SFT picked by the RM. Per model: the
win rate against SFT's answers, judged by the judge RM, with a 95% interval; the RM's score; the
judge's score; the KL to SFT; with --pretrain-data, the loss on its held-out text (alignment tax).

Why the judge is weaker evidence than the simulated world's held-out labelers (AlpacaFarm's
simulated judges, Dubois et al. 2023, rest on the same idea and the same caveat): the judge is a
model of the same size, from the same SFT model, trained on the same kind of comparisons as the RM.
What the two learn wrong they tend to learn alike (a length, a phrase, a refusal style), so a
policy that exploits the RM is likely to fool the judge too; and its accuracy on held-out
comparisons says how often it agrees with the labelers, not that it agrees where PPO has moved the
answers. The simulated world judges by labelers with a known rubric, independent of every model.
"""

import os
import random
import time
from dataclasses import replace

import torch

import ppo
import reward
import sft
from checkpoint import lm_loss, load_language_model, load_reward_model, score_texts
from common import UserError, check_files, ensure_out_dir, setup
from formats import demonstrations, read_prompts, read_records, read_texts, write_jsonl
from pipeline import Stages, best_of, best_of_n_kl, sample_chat, sample_n, win_rate, write_json
from plots import plot_scores_vs_kl, plot_stage_losses, plot_win_rates
from tokenizer import corpus_split

MODELS = ["constant", "sft", "best_of_4", "ppo", "ppo_ptx"]
CONSTANTS = ["", "I'm sorry, I can't help with that.", "I don't know."]  # the constant baseline's choices
TEST_SHARE, JUDGE_SHARE = 0.1, 0.3


def split_data(cfg):
    """Read the four files, hold the test prompts out of everything, and write each stage's part
    to OUT_DIR as JSONL. -> (paths, test prompts, 64 of PPO's prompts to choose the constant answer on,
    test comparisons, counts)."""
    prompts = read_prompts(cfg.prompts)
    random.Random(cfg.seed).shuffle(prompts)
    n_test = max(1, min(cfg.n_test, len(prompts) // 10))
    test, train_prompts = prompts[:n_test], prompts[n_test:]
    if not train_prompts:
        raise UserError(f"--prompts {cfg.prompts}: {len(prompts)} prompts leave none for PPO beside the test prompts")
    held = set(test)
    all_demos = demonstrations(*read_records(cfg.sft_data))
    demos = [d for d in all_demos if d["prompt"] not in held]
    kind, comps = read_records(cfg.rm_data)
    if kind != "comparison":
        raise UserError(f"--rm-data {cfg.rm_data}: holds {kind} records; the reward model needs comparisons")
    on_test, rest = [c for c in comps if c["prompt"] in held], [c for c in comps if c["prompt"] not in held]
    random.Random(cfg.seed + 1).shuffle(rest)
    top_up = max(0, max(1, int(len(comps) * TEST_SHARE)) - len(on_test))
    test_comps, rest = on_test + rest[:top_up], rest[top_up:]
    n_judge = int(len(rest) * JUDGE_SHARE)
    parts = {"sft": demos, "comparisons_rm": rest[n_judge:], "comparisons_judge": rest[:n_judge],
             "comparisons_test": test_comps, "prompts_ppo": [{"prompt": p} for p in train_prompts],
             "prompts_test": [{"prompt": p} for p in test]}
    paths = {}
    for name, recs in parts.items():
        if not recs:
            raise UserError(f"own data: nothing left for {name} after the split; give more records")
        paths[name] = os.path.join(cfg.out_dir, f"{name}.jsonl")
        write_jsonl(paths[name], recs)
    counts = {name: len(recs) for name, recs in parts.items()}
    counts["sft_dropped_on_test_prompts"] = len(all_demos) - len(demos)
    print(f"own data: {n_test} test prompts held out of every stage ({counts['sft_dropped_on_test_prompts']} "
          f"demonstrations on them dropped); SFT {len(demos)} demonstrations, RM {counts['comparisons_rm']} "
          f"comparisons, judge {n_judge}, test {len(test_comps)}; PPO {len(train_prompts)} prompts")
    return paths, test, train_prompts[:64], test_comps, counts


# -----------------------------------------------------------------------------
# Evaluation: every model answers the test prompts; the judge RM compares each answer with SFT's

@torch.no_grad()
def evaluate(cfg, device, test, val_prompts, test_comps, max_new_tokens):
    """The per-model maps of summary.json (see the module's docstring) and the answers."""
    out = cfg.out_dir
    sft_model, tok, _ = load_language_model(os.path.join(out, "sft.pt"), device)
    rm, _, bias, _ = load_reward_model(os.path.join(out, "reward.pt"), device)
    judge, _, judge_bias, _ = load_reward_model(os.path.join(out, "judge.pt"), device)
    block = sft_model.config.block_size
    models = {"sft": sft_model}
    for name in ("ppo", "ppo_ptx"):
        if os.path.exists(os.path.join(out, f"{name}.pt")):
            models[name] = load_language_model(os.path.join(out, f"{name}.pt"), device)[0]

    def mean_score(model, answers, prompts=test):
        return sum(score_texts(model, tok, prompts, answers, block, device)) / len(prompts)

    # the constant answer is chosen by the RM on PPO's prompts, never on test prompts
    constant = max(CONSTANTS, key=lambda c: mean_score(rm, [c] * len(val_prompts), val_prompts))
    answers, kl = {}, {}
    for k, name in enumerate(MODELS):
        stream = cfg.seed * 1000 + 17 * (k + 1)  # each model samples from its own random stream
        if name == "constant":
            answers[name], kl[name] = [constant] * len(test), None
        elif name == "best_of_4":
            groups, scores = sample_n(sft_model, rm, tok, test, 4, bias, stream, max_new_tokens)
            answers[name], kl[name] = best_of(groups, scores, 4)[0], best_of_n_kl(4)
        elif name in models:
            answers[name], kl[name], _ = sample_chat(models[name], sft_model, rm, tok, test, bias, stream,
                                                     max_new_tokens)
        else:
            answers[name] = kl[name] = None
    keys = ("win_rate_vs_sft", "win_rate_ci", "identical_to_sft", "rm_score", "judge_score", "kl_to_sft")
    result = {key: {name: None for name in MODELS} for key in keys}
    judged = {name: score_texts(judge, tok, test, a, block, device) for name, a in answers.items() if a}
    for name, ans in answers.items():
        if ans is None:
            continue
        wins = sum(0.5 if a == b else float(x > y) for a, b, x, y in zip(ans, answers["sft"], judged[name], judged["sft"]))
        p, ci = win_rate(wins, len(test))
        result["win_rate_vs_sft"][name], result["win_rate_ci"][name] = round(p, 4), [round(c, 4) for c in ci]
        result["identical_to_sft"][name] = round(sum(a == b for a, b in zip(ans, answers["sft"])) / len(test), 4)
        result["rm_score"][name] = round(mean_score(rm, ans) - bias, 4)
        result["judge_score"][name] = round(sum(judged[name]) / len(test) - judge_bias, 4)
        result["kl_to_sft"][name] = None if kl[name] is None else round(kl[name], 4)
    result.update(rm_accuracy=round(reward.accuracy(rm, tok, test_comps, block, device), 4),
                  judge_accuracy=round(reward.accuracy(judge, tok, test_comps, block, device), 4),
                  constant_answer=constant)
    if cfg.pretrain_data:  # the "alignment tax" on held-out text of your corpus
        _, val_ids = corpus_split(tok, read_texts(cfg.pretrain_data), block, f"--pretrain-data {cfg.pretrain_data}")
        losses = {name: round(lm_loss(model, val_ids, device), 4) for name, model in models.items()}
        result["pretrain_loss"] = {name: losses.get("sft" if name == "best_of_4" else name) for name in MODELS}
    return result, answers


def write_report(out_dir, summary, test, answers):
    c = summary["data"]
    lines = [f"# InstructGPT pipeline on your own data: preset {summary['preset']}, seed {summary['seed']}", "",
             f"Started from `{summary['init']}`. SFT on {c['sft']} demonstrations, the RM on {c['comparisons_rm']} "
             f"comparisons, the judge RM on {c['comparisons_judge']} others, PPO on {c['prompts_ppo']} prompts. "
             f"{summary['n_test']} test prompts were held out of every stage ({c['sft_dropped_on_test_prompts']} "
             f"demonstrations on them dropped); {c['comparisons_test']} comparisons were held out of both RMs. "
             f"Whole run {summary['seconds']['total']:.0f}s on {summary['device']}.", "",
             "| model | win rate vs SFT, judged by the judge RM (95% CI) | identical to SFT | judge score | RM score "
             "| KL to SFT |" + (" pretraining loss |" if "pretrain_loss" in summary else ""),
             "| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if "pretrain_loss" in summary else "")]
    for m in MODELS:
        w, ci = summary["win_rate_vs_sft"][m], summary["win_rate_ci"][m]
        if w is None:
            continue
        kl = summary["kl_to_sft"][m]
        lines.append(f"| {m} | {w:.3f} ({ci[0]:.3f}-{ci[1]:.3f}) | {summary['identical_to_sft'][m]:.2f} | "
                     f"{summary['judge_score'][m]:+.3f} | {summary['rm_score'][m]:+.3f} | "
                     f"{'-' if kl is None else format(kl, '.2f')} |"
                     + (f" {summary['pretrain_loss'][m] or float('nan'):.3f} |" if "pretrain_loss" in summary else ""))
    lines += ["", f"The constant answer: {summary['constant_answer']!r}; best-of-4: four SFT samples, the RM's favourite.",
              "", f"Held-out comparisons ({c['comparisons_test']}): the RM's pairwise accuracy "
              f"{summary['rm_accuracy']:.3f}, the judge's {summary['judge_accuracy']:.3f}.", "",
              "The judge is weaker evidence than held-out human labelers: it is a model like the RM, trained on the "
              "same kind of comparisons, so a policy that exploits the RM's errors may well fool it too (own_data.py "
              "says more).", "",
              "Seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()), "",
              "![losses](losses.png)", "![scores against KL](scores_vs_kl.png)", "![win rates](win_rates.png)", "",
              "## Sampled answers side by side", ""]
    for i, prompt in enumerate(test[:5]):
        lines += [f"**prompt** (its end): `{prompt[-300:]!r}`", ""]
        lines += [f"- {m}: `{answers[m][i][:300]!r}`" for m in MODELS if answers[m] is not None] + [""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


# -----------------------------------------------------------------------------

def main(cfg):
    """cfg: train_all.Config with --init, --sft-data, --rm-data and --prompts (and --pretrain-data)."""
    missing = [f for f in ("init", "sft_data", "rm_data", "prompts") if not getattr(cfg, f)]
    if missing:
        raise UserError("own data needs --init, --sft-data, --rm-data and --prompts; missing "
                        + ", ".join("--" + f.replace("_", "-") for f in missing))
    if not os.path.exists(cfg.init):
        raise UserError(f"--init {cfg.init}: no such checkpoint or directory")
    check_files(cfg, ("sft_data", "rm_data", "prompts", "pretrain_data"))
    if cfg.rounds != 1:
        raise UserError("own data runs one round: --rounds needs the simulated labelers to rank new samples")
    ensure_out_dir(cfg.out_dir)
    device, _ = setup(cfg.device, cfg.seed)
    out = cfg.out_dir
    paths, test, val_prompts, test_comps, counts = split_data(cfg)
    stages = Stages(out, cfg.force)
    common = dict(preset=cfg.preset, out_dir=out, seed=cfg.seed, device=cfg.device, quiet=cfg.quiet)
    sft_path, rm_path = os.path.join(out, "sft.pt"), os.path.join(out, "reward.pt")
    stages.run("sft", "sft.pt", sft, replace(sft.Config(**sft.PRESETS[cfg.preset]), stage="sft", init=cfg.init,
                                             data=paths["sft"], pretrain_data=cfg.pretrain_data, eval_gold=0, **common))
    for name in ("reward", "judge"):
        stages.run(name, name + ".pt", reward, replace(reward.Config(**reward.PRESETS[cfg.preset]), init=sft_path,
                                                       data=paths["comparisons_" + ("rm" if name == "reward" else name)],
                                                       name=name, **common))
    ppo_cfg = replace(ppo.Config(**ppo.PRESETS[cfg.preset]), init=sft_path, reward=rm_path, prompts=paths["prompts_ppo"],
                      **common)
    stages.run("ppo", "ppo.pt", ppo, replace(ppo_cfg, name="ppo"))
    if cfg.pretrain_data:
        stages.run("ppo_ptx", "ppo_ptx.pt", ppo, replace(ppo_cfg, name="ppo_ptx", ptx_coef=cfg.ptx_coef,
                                                         pretrain_data=cfg.pretrain_data))
    else:
        print("== ppo_ptx: not run (PPO-ptx needs --pretrain-data)")

    print(f"== evaluation: {len(test)} test prompts, judged by the judge RM")
    t0 = time.time()
    result, answers = evaluate(cfg, device, test, val_prompts, test_comps, ppo_cfg.max_new_tokens)
    stages.seconds["evaluation"] = round(time.time() - t0, 1)
    stages.seconds["total"] = stages.total()
    summary = {"mode": "own_data", "preset": cfg.preset, "seed": cfg.seed, "init": cfg.init,
               "files": {f: getattr(cfg, f) for f in ("sft_data", "rm_data", "prompts", "pretrain_data")},
               "data": counts, "n_test": len(test),
               "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
               "seconds": stages.seconds, **result}
    write_json(os.path.join(out, "summary.json"), summary)
    plot_stage_losses(out, ["sft", "reward", "judge"])
    plot_scores_vs_kl(out, ["ppo", "ppo_ptx"], "scores_vs_kl.png")
    names = [m for m in MODELS if summary["win_rate_vs_sft"][m] is not None]
    plot_win_rates(out, [(f"test prompts ({len(test)})", summary)], names,
                   "The judge RM's preference against SFT on held-out test prompts (95% CI)")
    write_report(out, summary, test, answers)
    w = summary["win_rate_vs_sft"]
    print("win rate vs SFT (judge RM): " + ", ".join(f"{m} {w[m]:.2f}" for m in names)
          + f"; RM accuracy {summary['rm_accuracy']:.3f}, judge {summary['judge_accuracy']:.3f}")
    print(f"done in {stages.seconds['total']:.0f}s; wrote {out}/summary.json, report.md, losses.png, scores_vs_kl.png, "
          "win_rates.png")
    return summary

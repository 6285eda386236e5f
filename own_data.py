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
  test comparisons  --rm-data's comparisons on test prompts, topped up with other prompts' to a
                    tenth: both RMs' held-out accuracy; SFT drops every demonstration on their prompts
  judge             30% of the other comparisons; the RM that PPO optimizes trains on the rest
  (comparisons go prompt by prompt: one prompt's comparisons are never in two parts)

Then every model answers the test prompts (sampled at temperature 1, each from its own random
stream): SFT, PPO, PPO-ptx, two baselines, a constant answer (the best of a few by the RM on 64 of
PPO's prompts, never test ones) and best-of-4 from SFT picked by the RM, and a null row: a second,
independent SFT sample, which an unbiased judge puts near 0.5 (its distance from 0.5 is the judge's
noise). Per model: the win rate against SFT's answers judged by the judge RM, with a 95% interval,
and the same by the RM PPO optimized (the proxy; where the two part, the policy exploits the RM);
the RM's and the judge's scores; the KL to SFT; with --pretrain-data, the loss on its held-out text
(the alignment tax). Beside them: both RMs' accuracy on the held-out comparisons, and how often the
RM and the judge prefer the same of two different answers.

Why the judge is weaker evidence than the simulated world's held-out labelers (AlpacaFarm's
simulated judges, Dubois et al. 2023, rest on the same idea and the same caveat): the judge is a
model of the same size, from the same SFT model, trained on the same kind of comparisons as the RM.
What the two learn wrong they tend to learn alike (a length, a phrase, a refusal style), so a
policy that exploits the RM is likely to fool the judge too; and its accuracy on held-out
comparisons says how often it agrees with the labelers, not that it agrees where PPO has moved the
answers. The simulated world judges by labelers with a known rubric, independent of every model.
"""

import json
import os
import random
import time
from dataclasses import replace

import torch

from pipeline import Stages, best_of, best_of_n_kl, fmt, sample_chat, sample_n, win_rate, write_json
import ppo
import reward
import sft
from plumbing import ddp
from plumbing.checkpoint import lm_loss, load_language_model, load_reward_model, score_texts
from plumbing.cli import UserError, check_files, ensure_out_dir
from plumbing.formats import demonstrations, read_prompts, read_records, read_texts, write_jsonl
from plumbing.loop import setup
from plumbing.plots import plot_scores_vs_kl, plot_stage_losses, plot_win_rates
from plumbing.tokenizer import corpus_split

# sft_resample: a second, independent SFT sample, the null row: an unbiased judge gives it about 0.5
MODELS = ["constant", "sft", "sft_resample", "best_of_4", "ppo", "ppo_ptx"]
CONSTANTS = ["", "I'm sorry, I can't help with that.", "I don't know."]  # the constant baseline's choices
TEST_SHARE, JUDGE_SHARE = 0.1, 0.3


def same_prompt(prompt):
    """Prompts are held out by their words: a trailing space in one file does not let a test prompt in."""
    return " ".join(prompt.split())


def check_inputs(cfg):
    """The split depends on the files, --seed and --n-test. A folder whose checkpoints were made
    from other inputs is refused (its SFT may have trained on this split's test prompts), unless
    --force re-runs every stage; OUT_DIR/inputs.json records what this run reads."""
    def describe(path):
        return [path, os.path.getsize(path), os.path.getmtime(path)] if os.path.isfile(path) else path
    inputs = {"seed": cfg.seed, "n_test": cfg.n_test,
              **{f: describe(getattr(cfg, f)) for f in ("init", "sft_data", "rm_data", "prompts", "pretrain_data")}}
    path = os.path.join(cfg.out_dir, "inputs.json")
    made = [f for f in ("sft.pt", "reward.pt", "judge.pt", "ppo.pt") if os.path.exists(os.path.join(cfg.out_dir, f))]
    if made and not cfg.force and os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        changed = [k for k in inputs if before.get(k) != inputs[k]]
        if changed:
            raise UserError(f"{cfg.out_dir} holds {', '.join(made)} made from other inputs ({', '.join(changed)} "
                            f"changed); pass --force to re-run every stage, or choose another --out-dir")
    if ddp.is_main():  # torchrun: rank 0 writes
        write_json(path, inputs)


def split_data(cfg):
    """Read the files, hold the test prompts out of everything, and write each stage's part to
    OUT_DIR as JSONL. Comparisons go prompt by prompt (a prompt's comparisons never straddle two
    parts), and no demonstration is on a test prompt or on a test comparison's prompt (else the
    RM and the judge would start from an SFT model that learned the held-out preferred answers).
    -> (paths, test prompts, 64 of PPO's prompts to choose the constant answer on, test comparisons, counts)."""
    prompts = read_prompts(cfg.prompts)
    random.Random(cfg.seed).shuffle(prompts)
    n_test = max(1, min(cfg.n_test, len(prompts) // 10))
    test, train_prompts = prompts[:n_test], prompts[n_test:]
    if not train_prompts:
        raise UserError(f"--prompts {cfg.prompts}: {len(prompts)} prompts leave none for PPO beside the test prompts")
    kind, comps = read_records(cfg.rm_data)
    if kind != "comparison":
        raise UserError(f"--rm-data {cfg.rm_data}: holds {kind} records; the reward model needs comparisons")
    groups = {}  # the comparisons of each prompt
    for c in comps:
        groups.setdefault(same_prompt(c["prompt"]), []).append(c)
    held = {same_prompt(p) for p in test}
    keys = [k for k in groups if k not in held]
    random.Random(cfg.seed + 1).shuffle(keys)
    test_keys = [k for k in groups if k in held]  # topped up with other prompts to a tenth of the comparisons
    while keys and sum(len(groups[k]) for k in test_keys) < max(1, int(len(comps) * TEST_SHARE)):
        test_keys.append(keys.pop())
    n_judge = int(sum(len(groups[k]) for k in keys) * JUDGE_SHARE)
    judge_keys = []
    while keys and sum(len(groups[k]) for k in judge_keys) < n_judge:
        judge_keys.append(keys.pop())
    all_demos = demonstrations(*read_records(cfg.sft_data))
    demos = [d for d in all_demos if same_prompt(d["prompt"]) not in held | set(test_keys)]
    parts = {"sft": demos, "comparisons_rm": [c for k in keys for c in groups[k]],
             "comparisons_judge": [c for k in judge_keys for c in groups[k]],
             "comparisons_test": [c for k in test_keys for c in groups[k]],
             "prompts_ppo": [{"prompt": p} for p in train_prompts], "prompts_test": [{"prompt": p} for p in test]}
    paths = {}
    for name, recs in parts.items():
        if not recs:
            raise UserError(f"own data: nothing left for {name} after the split; give more records")
        paths[name] = os.path.join(cfg.out_dir, f"{name}.jsonl")
        if ddp.is_main():  # torchrun: rank 0 writes the parts, which every rank's stages then read
            write_jsonl(paths[name], recs)
    ddp.barrier()
    counts = {name: len(recs) for name, recs in parts.items()}
    counts["sft_dropped_held_out"] = len(all_demos) - len(demos)
    print(f"own data: {n_test} test prompts held out of every stage; SFT {len(demos)} demonstrations "
          f"({counts['sft_dropped_held_out']} on held-out prompts dropped), RM {counts['comparisons_rm']} comparisons, "
          f"judge {counts['comparisons_judge']}, test {counts['comparisons_test']}; PPO {len(train_prompts)} prompts")
    return paths, test, train_prompts[:64], parts["comparisons_test"], counts


# -----------------------------------------------------------------------------
# Evaluation: every model answers the test prompts; the judge RM compares each answer with SFT's

def wins_against(answers, reference, scores, reference_scores):
    """How many answers a scorer prefers to the reference answer to the same prompt: 1 for a
    higher score, 0.5 for the identical answer, else 0."""
    return sum(0.5 if a == b else float(x > y) for a, b, x, y in zip(answers, reference, scores, reference_scores))


@torch.no_grad()
def evaluate(cfg, device, test, constant_prompts, test_comps, max_new_tokens):
    """The per-model maps of summary.json (see the module's docstring) and the answers."""
    out = cfg.out_dir
    sft_model, tok, _ = load_language_model(os.path.join(out, "sft.pt"), device)
    rm, _, bias, _ = load_reward_model(os.path.join(out, "reward.pt"), device)
    judge, _, judge_bias, _ = load_reward_model(os.path.join(out, "judge.pt"), device)
    block = sft_model.config.block_size
    models = {"sft": sft_model, "sft_resample": sft_model}
    for name in ("ppo", "ppo_ptx"):
        if os.path.exists(os.path.join(out, f"{name}.pt")):
            models[name] = load_language_model(os.path.join(out, f"{name}.pt"), device)[0]

    def scored(model, answers, prompts=test):
        return score_texts(model, tok, prompts, answers, block, device)

    # the constant answer is chosen by the RM on PPO's prompts, never on test prompts
    constant = max(CONSTANTS, key=lambda c: sum(scored(rm, [c] * len(constant_prompts), constant_prompts)))
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
    keys = ("win_rate_vs_sft", "win_rate_ci", "rm_win_rate_vs_sft", "identical_to_sft", "rm_score", "judge_score",
            "kl_to_sft")
    result = {key: {name: None for name in MODELS} for key in keys}
    judged = {name: scored(judge, a) for name, a in answers.items() if a}
    rewarded = {name: scored(rm, a) for name, a in answers.items() if a}
    agree = pairs = 0  # do the RM and the judge prefer the same one of two different answers?
    for name, ans in answers.items():
        if ans is None:
            continue
        ref = answers["sft"]
        p, ci = win_rate(wins_against(ans, ref, judged[name], judged["sft"]), len(test))
        result["win_rate_vs_sft"][name], result["win_rate_ci"][name] = round(p, 4), [round(c, 4) for c in ci]
        p, _ = win_rate(wins_against(ans, ref, rewarded[name], rewarded["sft"]), len(test))
        result["rm_win_rate_vs_sft"][name] = round(p, 4)
        result["identical_to_sft"][name] = round(sum(a == b for a, b in zip(ans, ref)) / len(test), 4)
        result["rm_score"][name] = round(sum(rewarded[name]) / len(test) - bias, 4)
        result["judge_score"][name] = round(sum(judged[name]) / len(test) - judge_bias, 4)
        result["kl_to_sft"][name] = None if kl[name] is None else round(kl[name], 4)
        for a, b, j, js, r, rs in zip(ans, ref, judged[name], judged["sft"], rewarded[name], rewarded["sft"]):
            if a != b:
                agree, pairs = agree + ((j > js) == (r > rs)), pairs + 1
    result.update(rm_accuracy=round(reward.accuracy(rm, tok, test_comps, block, device), 4),
                  judge_accuracy=round(reward.accuracy(judge, tok, test_comps, block, device), 4),
                  rm_judge_agreement=round(agree / max(pairs, 1), 4), constant_answer=constant)
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
             f"{summary['n_test']} test prompts were held out of every stage, {c['comparisons_test']} comparisons out "
             f"of both RMs and SFT ({c['sft_dropped_held_out']} demonstrations on their prompts dropped). "
             f"Whole run {summary['seconds']['total']:.0f}s on {summary['device']}.", "",
             "| model | win rate vs SFT, judged by the judge RM (95% CI) | by the RM | identical to SFT | judge score "
             "| RM score | KL to SFT |" + (" pretraining loss |" if "pretrain_loss" in summary else ""),
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if "pretrain_loss" in summary else "")]
    for m in MODELS:
        w, ci = summary["win_rate_vs_sft"][m], summary["win_rate_ci"][m]
        if w is None:
            continue
        kl = summary["kl_to_sft"][m]
        lines.append(f"| {m} | {w:.3f} ({ci[0]:.3f}-{ci[1]:.3f}) | {summary['rm_win_rate_vs_sft'][m]:.3f} | "
                     f"{summary['identical_to_sft'][m]:.2f} | "
                     f"{summary['judge_score'][m]:+.3f} | {summary['rm_score'][m]:+.3f} | "
                     f"{fmt(kl, '.2f')} |"
                     + (f" {fmt(summary['pretrain_loss'][m], '.3f')} |" if "pretrain_loss" in summary else ""))
    lines += ["", f"The constant answer: {summary['constant_answer']!r}; best-of-4: four SFT samples, the RM's "
              "favourite; sft_resample: a second SFT sample, the null row (near 0.5 if the judge is unbiased).", "",
              f"Held-out comparisons ({c['comparisons_test']}): the RM's pairwise accuracy {summary['rm_accuracy']:.3f}, "
              f"the judge's {summary['judge_accuracy']:.3f}. Of two different answers to a test prompt, the RM and the "
              f"judge prefer the same one {summary['rm_judge_agreement']:.3f} of the time.", "",
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
    check_inputs(cfg)
    paths, test, constant_prompts, test_comps, counts = split_data(cfg)
    stages = Stages(out, cfg.force)
    common = dict(preset=cfg.preset, out_dir=out, seed=cfg.seed, device=cfg.device, quiet=cfg.quiet)
    sft_path, rm_path = os.path.join(out, "sft.pt"), os.path.join(out, "reward.pt")
    stages.run("sft", "sft.pt", sft, replace(sft.Config(**sft.PRESETS[cfg.preset]), stage="sft", init=cfg.init,
                                             data=paths["sft"], pretrain_data=cfg.pretrain_data, eval_gold=0, **common))
    reward_cfg = replace(reward.Config(**reward.PRESETS[cfg.preset]), init=sft_path, **common)
    stages.run("reward", "reward.pt", reward, replace(reward_cfg, name="reward", data=paths["comparisons_rm"]))
    # the judge: its own comparisons, and another seed (its head's initialisation, its order of batches)
    stages.run("judge", "judge.pt", reward, replace(reward_cfg, name="judge", data=paths["comparisons_judge"],
                                                    seed=cfg.seed + 1))
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
    result, answers = evaluate(cfg, device, test, constant_prompts, test_comps, ppo_cfg.max_new_tokens)
    stages.seconds["evaluation"] = round(time.time() - t0, 1)
    stages.seconds["total"] = stages.total()
    summary = {"mode": "own_data", "preset": cfg.preset, "seed": cfg.seed, "init": cfg.init,
               "files": {f: getattr(cfg, f) for f in ("sft_data", "rm_data", "prompts", "pretrain_data")},
               "data": counts, "n_test": len(test),
               "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
               "world_size": ddp.world(), "seconds": stages.seconds, **result}
    names = [m for m in MODELS if summary["win_rate_vs_sft"][m] is not None]
    if ddp.is_main():  # torchrun: rank 0 writes
        write_json(os.path.join(out, "summary.json"), summary)
        plot_stage_losses(out, ["sft", "reward", "judge"])
        plot_scores_vs_kl(out, ["ppo", "ppo_ptx"], "scores_vs_kl.png")
        plot_win_rates(out, [(f"test prompts ({len(test)})", summary)], names,
                       "The judge RM's preference against SFT on held-out test prompts (95% CI)")
        write_report(out, summary, test, answers)
    w = summary["win_rate_vs_sft"]
    print("win rate vs SFT (judge RM): " + ", ".join(f"{m} {w[m]:.2f}" for m in names)
          + f"; RM accuracy {summary['rm_accuracy']:.3f}, judge {summary['judge_accuracy']:.3f}")
    print(f"done in {stages.seconds['total']:.0f}s; wrote {out}/summary.json, report.md, losses.png, scores_vs_kl.png, "
          "win_rates.png")
    return summary


if __name__ == "__main__":  # a mode of train_all.py, not a script of its own
    raise SystemExit("own_data.py is train_all.py's own-data mode: python train_all.py --init X --sft-data F "
                     "--rm-data F --prompts F [--pretrain-data F] (python train_all.py --help)")

"""
pipeline.py: what train_all.py's two modes share, the simulated world (train_all.py) and your own
model and data (own_data.py):

  Stages          run each step's script unless its checkpoint exists; continue an interrupted one
  sample_chat     a model's answers sampled at temperature 1, with their KL to SFT and RM score;
                  size_answers, each method's of experiments.py sizes
  sample_n, best_of, best_of_n_kl   the best-of-n baseline: n SFT samples, the RM's favourite
  fewshot_examples  the few-shot base model's examples, short training demonstrations
  judge           simulated labelers compare each answer with a reference answer
  win_rate        a win rate against SFT with its 95% interval; bootstrap_ci, one over prompts;
                  ci95, Student's t over seeds
  judging, policy_figures, detail_figures, paired_difference   experiments.py's measures: a seed's
                  validation prompts and judges, a policy's figures (per prompt), and two policies'
                  difference within each seed on the same prompts
  eval_curve, overoptimization_figures, overoptimization_report   an RL run's evaluations along
                  training (RM score, KL, the gold rubric per family and dimension: what the policy
                  learned to exploit), and experiments.py overoptimization's figures over seeds
  mean_ci         a mean over seeds with its 95% interval
  head_to_head    PPO's rivals judged directly against PPO's answers (direct_win_rate)
  capability, capability_figures   the few-shot capability benchmark (world.World.capability_items):
                  the alignment tax as the paper measures it, each model's score and its difference from SFT
  fmt, write_json report.md's figures; summary.json, written atomically
"""

import json
import math
import os
import random
import statistics
import time
from dataclasses import replace

import torch

import data
import ppo
from gpt import reward_scores
from world import GOLD_WEIGHTS, gold_mean, gold_score
from plumbing import ddp, environment
from plumbing.checkpoint import fewshot_prompt, lm_loss, load_any, load_language_model, load_reward_model, respond
from plumbing.cli import UserError
from plumbing.plots import metrics_rows
from plumbing.tokenizer import corpus_split, decode_responses

# -----------------------------------------------------------------------------
# Running the stages


def check_same_run(path, ckpt, config):
    """A finished stage is reused only if its checkpoint was made with the preset, seed, (PPO) ptx
    coefficient and data this run gives it: else seed-0 models would be evaluated on seed-1 data.
    `ckpt` is load_any(path)[1]; `config` the stage's Config in this run."""
    made = ckpt.get("config", {})
    for field in ("preset", "seed", "ptx_coef", "init", "data", "prompts", "pretrain_data"):
        value = getattr(config, field, None)
        if field in made and value is not None and made[field] != value:
            flag = "--" + field.replace("_", "-")
            raise UserError(f"{path} was made with {flag} {made[field]}, this run has {flag} {value}; "
                            f"pass --force to re-run every stage, or choose another --out-dir")


class Stages:
    """Runs `script.main(config)` for each stage of a pipeline in OUT_DIR, unless the stage's
    checkpoint exists (then it reuses the seconds the checkpoint recorded, after check_same_run;
    --force re-runs); a stage interrupted with Ctrl-C (it left <name>.resume.pt) continues with
    --resume. Keeps each stage's seconds, over every run of the folder."""

    def __init__(self, out_dir, force):
        self.out_dir, self.force, self.seconds, self.t_start = out_dir, force, {}, time.time()
        self.earlier = 0.0  # seconds that stages spent in earlier runs of this folder (skipped or resumed)

    def run(self, name, ckpt, script, config):
        path = os.path.join(self.out_dir, ckpt)
        if os.path.exists(path) and not self.force:
            saved = load_any(path)[1]
            check_same_run(path, saved, config)
            print(f"== {name}: {path} exists, skipped (--force re-runs it)")
            metrics = saved.get("metrics", {})
            self.seconds[name] = metrics.get("seconds", 0.0)
            self.earlier += self.seconds[name]
            return metrics
        resume = os.path.exists(os.path.join(self.out_dir, f"{name}.resume.pt")) and not self.force
        print(f"== {name}" + (" (resumed where it was interrupted)" if resume else ""))
        t0 = time.time()
        metrics = script.main(replace(config, resume=resume))
        # a resumed stage reports its seconds over both runs (plumbing.loop.Resume); else this run's
        self.seconds[name] = metrics.get("seconds", 0.0) if resume else round(time.time() - t0, 1)
        self.earlier += self.seconds[name] - (time.time() - t0)
        return metrics

    def total(self):
        """The whole pipeline's seconds, over every run of the folder."""
        return round(time.time() - self.t_start + self.earlier, 1)


def fmt(v, spec):
    """A figure for report.md: "-" where a model has none."""
    return "-" if v is None else format(v, spec)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)  # atomic: a reader never sees half a file


# -----------------------------------------------------------------------------
# Answers, baselines, win rates

@torch.no_grad()
def sample_chat(model, ref, rm, tok, prompts, reward_bias, seed, max_new_tokens=48):
    """Answers sampled at temperature 1 (the distribution PPO optimizes), with each answer's KL to
    SFT (the sum over its tokens of log pi - log pi_SFT) and its RM score minus the bias.
    -> (answers, mean KL, [score])."""
    cfg = ppo.Config(max_new_tokens=max_new_tokens, no_eos_penalty=0.0)
    model.eval()  # no dropout in the log-probs: an SFT checkpoint may carry some (the gpu preset's)
    ref.eval()
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(ddp.seed(seed))
    answers, kl, scores = [], [], []
    prompts = ddp.share(prompts)  # torchrun: each rank answers its share, and all get every answer
    for i in range(0, len(prompts), 64):
        b = environment.rollout(model, tok, prompts[i:i + 64], cfg, g)
        answers += decode_responses(tok, b["tokens"][:, b["T"]:], b["response_mask"])
        if ref is model:  # SFT's own answers (best-of-n's samples): KL 0, so the RM's forward pass alone
            scores += (reward_scores(rm, b["tokens"], b["attention_mask"]) - reward_bias).tolist()
            kl += [0.0] * len(b["tokens"])
            continue
        b = environment.score(b, model, ref, rm, cfg, reward_bias)
        kl += ((b["logprobs"] - b["ref_logprobs"]) * b["response_mask"]).sum(1).tolist()
        scores += b["scores"].tolist()
    answers, kl, scores = ddp.gather(answers), ddp.gather(kl), ddp.gather(scores)
    return answers, sum(kl) / len(kl), scores


def sample_n(sft_model, rm, tok, prompts, n, reward_bias, seed, max_new_tokens=48):
    """n answers of SFT per prompt with their RM scores: [[answer] * n per prompt], [[score] * n]."""
    answers, _, scores = sample_chat(sft_model, sft_model, rm, tok, [p for p in prompts for _ in range(n)],
                                     reward_bias, seed, max_new_tokens)
    return ([answers[i:i + n] for i in range(0, len(answers), n)],
            [scores[i:i + n] for i in range(0, len(scores), n)])


def best_of(groups, scores, n):
    """The RM's favourite among the first n samples of each prompt -> (answers, their RM scores)."""
    picks = [max(range(n), key=s.__getitem__) for s in scores]
    return [g[i] for g, i in zip(groups, picks)], [s[i] for s, i in zip(scores, picks)]


def best_of_n_kl(n):
    """KL(best-of-n || SFT) = log n - (n - 1) / n (Stiennon et al. 2020; Gao et al. 2022)."""
    return math.log(n) - (n - 1) / n


def fewshot_examples(tok, demonstrations):
    """The few-shot base model's examples: for three families, the shortest plain training prompt
    with its gold answer (short, so that whole examples fit the window beside a test prompt)."""
    def size(example):
        return len(tok.encode(fewshot_prompt("", [example])))
    by_family = {}
    for r in demonstrations:
        if "Q:" not in r["prompt"]:  # not a few-shot prompt itself
            by_family.setdefault(r["task"]["family"], []).append((r["task"]["prompt"], r["task"]["answer"]))
    return sorted((min(v, key=size) for v in by_family.values()), key=size)[:3]


def size_answers(models, methods, sft_model, rm, bias, tok, prompts, shots, stream):
    """Each of experiments.py sizes' methods' answers to `prompts`, sampled at temperature 1 from its own stream (the base
    model in plain text, plainly and few-shot), with the KL of the chat models to their own SFT."""
    device = next(sft_model.parameters()).device
    answers, kl = {}, {}
    for k, name in enumerate(methods):
        if name.startswith("base"):
            g = torch.Generator(device=device).manual_seed(stream + k)
            answers[name] = respond(models["base"], tok, prompts, mode="base" if name == "base" else "fewshot",
                                    examples=shots, temperature=1.0, generator=g)
            kl[name] = None
        else:
            answers[name], kl[name], _ = sample_chat(models[name], sft_model, rm, tok, prompts, bias, stream + k)
    return answers, kl


def bootstrap_ci(outcomes, rng, n_resamples=1000, weights=None):
    """95% interval of the mean of per-prompt outcomes by a percentile bootstrap over prompts: the
    prompts are resampled with replacement, since outcomes on one prompt are not independent draws.
    weights: per prompt, how many draws its outcome sums (a ranking's pairs): the interval is then
    that of sum(outcomes) / sum(weights), each prompt's pairs resampled together."""
    k, weights = len(outcomes), weights or [1] * len(outcomes)
    means = []
    for _ in range(n_resamples):
        picks = [rng.randrange(k) for _ in range(k)]
        means.append(sum(outcomes[i] for i in picks) / max(sum(weights[i] for i in picks), 1))
    means.sort()
    return means[int(0.025 * n_resamples)], means[int(0.975 * n_resamples) - 1]


def judge(labelers, records, answers, reference, rng):
    """Each test prompt is judged by one random labeler of `labelers`: 1 if they prefer the model's
    answer to the reference (SFT's) answer, 0.5 for identical answers, else 0. -> [per prompt]"""
    outcomes = []
    for r, a, b in zip(records, answers, reference):
        if a == b:
            outcomes.append(0.5)
            continue
        lab = rng.choice(labelers)
        outcomes.append(float(lab.score(r["task"], a, rng) > lab.score(r["task"], b, rng)))
    return outcomes


def direct_win_rate(labelers, records, answers, reference, rng):
    """`answers` judged directly against `reference` (one comparison, not two with SFT read side by
    side): {"win_rate", "ci"}, its 95% interval by a bootstrap over prompts."""
    outcomes = judge(labelers, records, answers, reference, rng)
    return dict(win_rate=round(sum(outcomes) / len(outcomes), 4), ci=[round(c, 4) for c in bootstrap_ci(outcomes, rng)])


def head_to_head(records, answers, heldout, seed):
    """PPO's rivals judged directly against PPO's answers to the same prompts by the same held-out
    labelers. -> {"dpo_vs_ppo": {"win_rate", "ci"}, ...}"""
    rng = random.Random(seed + 13)
    return {f"{name}_vs_ppo": direct_win_rate(heldout, records, answers[name], answers["ppo"], rng)
            for name in ("ppo_ptx", "dpo", "best_of_16", "grpo", "ppo_gold", "grpo_gold")}


def win_rate(wins, n):
    """Fraction of comparisons won (ties count half) and its 95% normal-approximation interval."""
    p = wins / max(n, 1)
    half = 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))
    return p, (max(0.0, p - half), min(1.0, p + half))


# Student's t, 97.5% quantile, for 1..30 degrees of freedom: a two-sided 95% interval
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df):
    """The 97.5% quantile of Student's t with df degrees of freedom (beyond the table, the normal
    quantile with its first Cornish-Fisher correction, within 0.2% there)."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df)


def ci95(values):
    """Half-width of the 95% interval of the mean over seeds: t(0.975, n - 1) * sd / sqrt(n). Three
    seeds give 2.48 standard deviations; one seed gives no interval (0)."""
    n = len(values)
    return t_quantile(n - 1) * statistics.stdev(values) / n ** 0.5 if n > 1 else 0.0


def judging(base, preset, seed, device, n=200):
    """What a seed's policies are measured with: its first n validation prompts, SFT's answers to
    them (the reference), and (SFT, the RM, its bias, the tokenizer, the held-out labelers), as
    pipeline.detail_figures takes them. -> (records, reference, models, the seed's world)."""
    world = data.build(preset, seed)
    records = world["val"][:n]
    sft_model, tok, _ = load_language_model(os.path.join(base, "sft.pt"), device)
    rm, _, bias, _ = load_reward_model(os.path.join(base, "reward.pt"), device)
    reference = sample_chat(sft_model, sft_model, rm, tok, [r["prompt"] for r in records], bias, seed * 1000 + 17)[0]
    return records, reference, (sft_model, rm, bias, tok, [l for l in world["labelers"] if l.heldout]), world


def policy_figures(path, base, a, device, n=200):
    """A policy's answers to n validation prompts, sampled: gold score, RM score, KL to SFT, win
    rate against SFT's answers judged by held-out labelers, pretraining loss on held-out corpus text."""
    records, reference, models, world = judging(base, a.preset, a.seed, device, n)
    model = load_language_model(path, device)[0]
    f = detail_figures(model, models, records, reference, a.seed)
    p, ci = win_rate(sum(f["win_rate"]), len(records))
    _, val_ids = corpus_split(models[3], world["corpus"], model.config.block_size)
    return dict(gold=round(statistics.fmean(f["gold"]), 4), rm_score=round(statistics.fmean(f["rm_score"]), 4),
                kl=round(f["kl"], 4), win_rate_vs_sft=round(p, 4), win_rate_ci=[round(c, 4) for c in ci],
                pretrain_loss=round(lm_loss(model, val_ids, device), 4))


def detail_figures(model, models, records, reference, seed):
    """One policy's answers to the seed's validation prompts, drawn with the same stream as every
    other policy's: per prompt its gold score, its win against SFT's answer (held-out labelers, the
    same draws) and its RM score; the mean KL to SFT."""
    sft_model, rm, bias, tok, heldout = models
    answers, kl, scores = sample_chat(model, sft_model, rm, tok, [r["prompt"] for r in records], bias, seed * 1000 + 31)
    return dict(gold=gold_mean(records, answers, "g", per_prompt=True)["g_per_prompt"], kl=kl, rm_score=scores,
                win_rate=judge(heldout, records, answers, reference, random.Random(seed + 5)),
                family=[r["task"]["family"] for r in records])


def eval_curve(out_dir, name, records):
    """An RL run's held-out evaluations along training, from OUT_DIR/metrics.jsonl and the answers it
    kept (--eval-answers, OUT_DIR/<name>.eval_answers.jsonl; `records` the prompts it answered). ->
    ([{iteration, kl, sqrt_kl, rm_score, gold, family: {family: gold}, dims: {dimension: mean}}],
    {iteration: answers}): where the RM score climbs while a family's gold or a rubric dimension
    falls, the policy found an error of the RM's to exploit (Gao et al. 2022)."""
    logged = {r["step"]: r for r in metrics_rows(out_dir) if r["stage"] == name and "eval_rm_score" in r}
    with open(os.path.join(out_dir, f"{name}.eval_answers.jsonl")) as f:
        answers = {e["iteration"]: e["answers"] for e in map(json.loads, f)}  # a resumed run's repeat: the last
    families = sorted({r["task"]["family"] for r in records})
    curve = []
    for it, said in sorted(answers.items()):
        golds = [gold_score(r["task"], a) for r, a in zip(records, said)]
        kl = max(0.0, logged[it]["eval_kl"])
        curve.append(dict(iteration=it, kl=round(kl, 4), sqrt_kl=round(math.sqrt(kl), 4),
                          rm_score=round(logged[it]["eval_rm_score"], 4),
                          gold=round(statistics.fmean(g["total"] for g in golds), 4),
                          family={f: round(statistics.fmean(g["total"] for g, r in zip(golds, records)
                                                            if r["task"]["family"] == f), 4) for f in families},
                          dims={d: round(statistics.fmean(g[d] for g in golds), 4) for d in GOLD_WEIGHTS}))
    return curve, answers


def mean_ci(values):
    """{mean, ci}: the mean over seeds and its 95% interval (Student's t; one seed: no width)."""
    m, h = statistics.fmean(values), ci95(values)
    return dict(mean=round(m, 4), ci=[round(m - h, 4), round(m + h, 4)])


def overoptimization_figures(runs, seeds, curves, answers, records, best):
    """experiments.py overoptimization's results over seeds. runs: {name: (the preset's iterations,
    beta)}; curves[seed, name], answers[seed, name]: eval_curve's; records[seed]: the prompts;
    best[seed]: the best-of-n curve. Per run: the mean curve with intervals, each seed's gold peak,
    what the end lost against the peak (gold, per family) and the RM score gained meanwhile, and the
    first seed's answers at the start, the gold peak and the end, one prompt per family."""
    out = {"seeds": seeds, "prompts": len(records[seeds[0]]), "runs": {}, "samples": {},
           "best_of_n": [dict(n=pts[0]["n"], sqrt_kl=pts[0]["sqrt_kl"],
                              **{k: mean_ci([p[k] for p in pts]) for k in ("gold", "rm_score")})
                         for pts in zip(*(best[s] for s in seeds))]}
    for name, (preset_iterations, beta) in runs.items():
        per_seed = [curves[s, name] for s in seeds]
        peaks = [max(range(len(c)), key=lambda i: c[i]["gold"]) for c in per_seed]  # each seed's gold peak
        families = list(per_seed[0][0]["family"])

        def after_peak(get):  # the end minus the peak, per seed
            return mean_ci([get(c[-1]) - get(c[i]) for c, i in zip(per_seed, peaks)])
        out["runs"][name] = dict(
            beta=beta, preset_iterations=preset_iterations,
            curve=[dict(iteration=pts[0]["iteration"], **{k: mean_ci([p[k] for p in pts])
                                                          for k in ("sqrt_kl", "gold", "rm_score")},
                        family={f: round(statistics.fmean(p["family"][f] for p in pts), 4) for f in families},
                        dims={d: round(statistics.fmean(p["dims"][d] for p in pts), 4) for d in GOLD_WEIGHTS})
                   for pts in zip(*per_seed)],
            peak=dict(iteration=[c[i]["iteration"] for c, i in zip(per_seed, peaks)],
                      sqrt_kl=mean_ci([c[i]["sqrt_kl"] for c, i in zip(per_seed, peaks)]),
                      gold=mean_ci([c[i]["gold"] for c, i in zip(per_seed, peaks)])),
            gold_fall=after_peak(lambda p: p["gold"]), rm_rise=after_peak(lambda p: p["rm_score"]),
            family_fall={f: after_peak(lambda p, f=f: p["family"][f]) for f in families})
        # the hack in the policy's own words: one prompt per family
        c, said, recs = per_seed[0], answers[seeds[0], name], records[seeds[0]]
        moments = (("start", c[0]), ("gold peak", c[peaks[0]]), ("end", c[-1]))
        out["samples"][name] = [
            dict(prompt=recs[k]["prompt"], family=f, **{f"{at}, iteration {p['iteration']}": said[p["iteration"]][k]
                                                        for at, p in moments})
            for f in families for k in [next(k for k, r in enumerate(recs) if r["task"]["family"] == f)]]
    return out


def overoptimization_report(out):
    """report.md of experiments.py overoptimization: each run's gold peak and what came after it, and
    the sampled answers at the start, the peak and the end."""
    def ci(x):  # one seed: no interval
        return f"{x['mean']:+.3f}" + (f" ({x['ci'][0]:+.3f} to {x['ci'][1]:+.3f})" if x["ci"][0] < x["ci"][1] else "")
    lines = [f"# Over-optimization: {len(out['seeds'])} seed(s) {out['seeds']}, {out['prompts']} validation prompts",
             "", "Means over seeds with 95% intervals (t). Gold fall and RM rise: the end minus each seed's gold peak.",
             "", "| run | beta | iterations (preset's) | gold peak at iteration | sqrt(KL) at peak | gold at peak | "
             "gold fall after it | RM score rise after it |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in out["runs"].items():
        lines.append(f"| {name} | {r['beta']} | {r['curve'][-1]['iteration']} ({r['preset_iterations']}) | "
                     f"{', '.join(map(str, r['peak']['iteration']))} | {ci(r['peak']['sqrt_kl'])} | "
                     f"{ci(r['peak']['gold'])} | {ci(r['gold_fall'])} | {ci(r['rm_rise'])} |")
    lines += [""] + [f"- seed {seed}, held-out accuracy (the base's pairs): the preset's RM {acc['preset']:.3f}, "
                     f"the small RM {acc['small']:.3f}" for seed, acc in out.get("rm_accuracy", {}).items()]
    for name, r in out["runs"].items():
        lines += ["", f"## {name}: gold per family, the end minus the peak", "",
                  " ".join(f"{f} {ci(v)};" for f, v in r["family_fall"].items()), "",
                  "| prompt | " + " | ".join(k for k in out["samples"][name][0] if k not in ("prompt", "family"))
                  + " |",
                  "| --- | --- | --- | --- |"]
        for row in out["samples"][name]:
            cells = [v.replace("|", "/").replace("\n", " ")[:120] for k, v in row.items() if k != "family"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_difference(pairs, key, family=None):
    """A detail's figure minus the preset's, within each seed on the same prompts (`pairs`: [(the
    preset's figures, the detail's)], one per seed). -> diff (mean over seeds), ci (Student's t over
    the seeds' differences; one seed: normal over its prompts), ci_prompts (normal over every
    prompt's difference, pooled: the prompts' noise alone, not the runs'), per_seed."""
    per_seed, per_prompt = [], []
    for d, v in pairs:
        if key == "kl":
            per_seed.append(v["kl"] - d["kl"])
            continue
        diffs = [b - a for a, b, f in zip(d[key], v[key], d["family"]) if family in (None, f)]
        per_seed.append(statistics.fmean(diffs))
        per_prompt += diffs
    mean = statistics.fmean(per_seed)
    half_p = 1.96 * statistics.stdev(per_prompt) / len(per_prompt) ** 0.5 if len(per_prompt) > 1 else None
    half = ci95(per_seed) if len(per_seed) > 1 else half_p or 0.0
    return dict(diff=round(mean, 4), ci=[round(mean - half, 4), round(mean + half, 4)], per_seed=[round(x, 4) for x in
                per_seed], ci_prompts=None if half_p is None else [round(mean - half_p, 4), round(mean + half_p, 4)])


# -----------------------------------------------------------------------------
# The capability benchmark: the alignment tax as the paper measures it (Section 4.2)

@torch.no_grad()
def continuation_scores(model, tok, contexts, continuations, batch_size=64):
    """For each (context, continuation) of raw text: the sum of the continuation's token log-probs
    after the context, and whether greedy decoding would write it (each of its tokens the argmax,
    never a padding or chat token). The context starts as a corpus document does, after EOS; a long
    one loses its front to fit the window. -> [(logprob, greedy)]"""
    model.eval()
    device, window = next(model.parameters()).device, model.config.block_size
    out = []
    for i in range(0, len(contexts), batch_size):
        rows = []  # (ids, how many of the last ids are the continuation)
        for context, continuation in zip(contexts[i:i + batch_size], continuations[i:i + batch_size]):
            target = tok.encode(continuation)
            rows.append((([tok.eos_id] + tok.encode(context) + target)[-window:], len(target)))
        x = torch.full((len(rows), max(len(ids) for ids, _ in rows)), tok.pad_id, dtype=torch.long)
        for j, (ids, _) in enumerate(rows):  # padded on the right: causal attention never reads it
            x[j, :len(ids)] = torch.tensor(ids)
        logits = model(x.to(device))[0].float()                         # (B, T, V)
        logits[..., tok.never_sampled] = float("-inf")
        logp = logits.log_softmax(-1)
        for j, (ids, n) in enumerate(rows):
            at = torch.arange(len(ids) - n - 1, len(ids) - 1, device=device)  # the positions predicting the target
            target = torch.tensor(ids[len(ids) - n:], device=device)
            lp = logp[j, at]                                             # (n, V)
            out.append((lp.gather(1, target[:, None]).sum().item(), bool((lp.argmax(-1) == target).all())))
    return out


def capability(model, tok, items):
    """Per task of the benchmark, each item's outcome (1 right, 0 wrong): a choice item is right when
    its answer has the highest log-likelihood of the choices (summed over the choice's tokens), a
    target item when greedy decoding writes the target (exact match). -> {task: [outcome]}"""
    out = {}
    for task, rows in items.items():
        options = [item.get("choices") or [item["target"]] for item in rows]  # what each item scores
        scores = continuation_scores(model, tok, [item["context"] for item, opts in zip(rows, options) for _ in opts],
                                     [c for opts in options for c in opts])
        out[task], start = [], 0
        for item, opts in zip(rows, options):
            own, start = scores[start:start + len(opts)], start + len(opts)  # this item's (logprob, greedy) per option
            if "choices" in item:
                best = max(range(len(opts)), key=lambda c: own[c][0])
                out[task].append(float(best == item["answer"]))
            else:
                out[task].append(float(own[0][1]))
    return out


def capability_figures(models, tok, items, rng):
    """Every model on the benchmark. -> ({task: {model: score}}, {task: {"n": items, "<model>_vs_sft":
    {"diff", "ci"}, "ppo_vs_base": ..., "ppo_ptx_vs_ppo": ...}}): each difference on the same items,
    with a 95% paired bootstrap interval over items (the pairing takes the items' own difficulty out).
    The paper's alignment tax is PPO against GPT-3, the base model (ppo_vs_base); ppo_vs_sft is the
    RL step's share of it; ppo_ptx_vs_ppo is how much of it the pretraining mix wins back (Section 4.2)."""
    outcomes = {name: capability(model, tok, items) for name, model in models.items()}
    pairs = [(name, "sft") for name in models if name != "sft"] + [("ppo", "base"), ("ppo_ptx", "ppo")]
    pairs = [(a, b) for a, b in pairs if a in models and b in models]
    scores, diffs = {}, {}
    for task in items:
        scores[task] = {name: round(sum(o[task]) / len(o[task]), 4) for name, o in outcomes.items()}
        diffs[task] = {"n": len(items[task])}
        for name, ref in pairs:
            d = [a - b for a, b in zip(outcomes[name][task], outcomes[ref][task])]
            diffs[task][f"{name}_vs_{ref}"] = dict(diff=round(sum(d) / len(d), 4),
                                                   ci=[round(c, 4) for c in bootstrap_ci(d, rng)])
    return scores, diffs

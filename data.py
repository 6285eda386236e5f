"""The data of InstructGPT, simulated: API prompts and their funnel, labelers, the datasets.

Ouyang et al. 2022, "Training language models to follow instructions with human feedback"
(arXiv 2203.02155). This file stands in for the people and the traffic behind the paper:
  Section 3.2, Appendix A.2   API prompts (user ids; plain, few-shot and user-based prompts) and the
                              funnel: long-common-prefix dedupe, 200 prompts per user id, PII
                              filter, train/val/test split by user id; the test users' prompts
                              about instances the world reserves (world.World.is_new) form test_new
  Section 3.2, Appendix A.1   labeler-written prompts (here: topping up what the funnel leaves)
  Sections 3.3, 3.6           tasks, judged on helpful, honest and harmless (world.py: the gold rubric)
  Section 3.4, Appendix B     labelers: write demonstrations, rank K = 4..9 outputs, agree with each
                              other 72.6 +- 1.5% of the time; held-out labelers judge the evaluation
  Appendix A.3, Table 6       dataset sizes (PRESETS)
Run on CPU:  python data.py --show 2            (a few tasks of each family, gold and labeler scores)
             python data.py --out-dir out/data --preset smoke    (write the JSONL files)

Where this departs from the paper:
 1. Prompts and labelers are generated from a seed, over the world of world.py, whose gold
    rubric (`world.gold_score`) is the truth the paper could not measure.
 2. Labelers are a utility = weights . rubric + Gaussian noise; the paper's labelers rank by the
    same rubric (helpful first in training, truthful and harmless first in evaluation).
 3. Rankings are strict: ties (identical responses) are broken at random by each labeler's noise.
 4. Prompts with PII are dropped from every split, before splitting (paper: the training split).
 5. Demonstrations are of deliberately mixed quality (verbose, wrong, unsafe), so that imitation
    (SFT) and preference (RM + PPO) differ, which is the gap the paper's RLHF closes.
 6. New tasks in the test set: the paper's test users are only other users, and here they would ask
    about the same people, words and sums as the training users, so a gain could be memorised.
    The world reserves a share of each family's instances (world.make_world); no training prompt
    (SFT, RM, PPO, few-shot examples included) and no validation prompt uses one, and the test
    users' prompts that do form `test_new`, the paper's Section 4.3 question of whether what
    RLHF teaches generalizes outside its training distribution. `test` keeps the seen tasks.
"""

import contextlib
import functools
import json
import math
import os
import pickle
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

import torch

from world import (CITIES, FAMILIES, FILLER_POST, FILLER_PRE, FIRST, GOLD_WEIGHTS, JOBS, LAST, OBJECTS, REFUSALS,
                   RUBRIC, Task, comply, gold_score, make_story, make_world)
from plumbing.cli import arg, parse_config, run_cli
from plumbing.formats import read_records, write_jsonl

# -----------------------------------------------------------------------------
# API prompts and the funnel (Section 3.2, Appendix A)

def make_api_prompts(world, n, rng):
    """n prompts as the API would log them: a few heavy users send most of them (Zipf), some
    resubmit near-duplicates (same prompt plus a suffix), some paste an email or phone number."""
    n_users = max(10, n // 10)
    weights = [1 / (k + 1) ** 1.1 for k in range(n_users)]
    favorite = [rng.choice(FAMILIES) for _ in range(n_users)]  # a user's own use case
    out, by_user = [], defaultdict(list)
    for i in range(n):
        u = rng.choices(range(n_users), weights)[0]
        if by_user[u] and rng.random() < 0.08:  # a near-duplicate: shares the whole earlier prompt
            rec = json.loads(json.dumps(by_user[u][rng.randrange(len(by_user[u]))]))
            rec["prompt"] += rng.choice([" Thanks!", " Please answer.", " Quick please.", " Thank you so much."])
        else:
            category = rng.choices(["plain", "few-shot", "user-based"], [0.5, 0.2, 0.3])[0]
            family = favorite[u] if category == "user-based" else rng.choice(FAMILIES)
            style = "few-shot" if category == "few-shot" else rng.choices(["direct", "continuation"], [0.75, 0.25])[0]
            task = world.sample_task(rng, family, "continuation" if style == "continuation" else "direct")
            prompt = task.prompt
            if style == "few-shot":  # the paper's few-shot prompts: instruction + example pairs
                n_shots = 1 if family == "story" else rng.randint(1, 2)  # keep prompts short
                shots = [world.sample_task(rng, family, which="seen") for _ in range(n_shots)]  # examples are training text too
                prompt = "".join(f"Q: {s.prompt}\nA: {s.answer}\n" for s in shots) + f"Q: {prompt}\nA:"
            rec = {"category": category, "style": style, "family": family, "prompt": prompt, "task": asdict(task)}
        if rng.random() < 0.05:  # PII pasted into the prompt
            first, last = rng.choice(FIRST).lower(), rng.choice(LAST).lower()
            rec["prompt"] = rng.choice([f"My email is {first}.{last}{rng.randint(1, 99)}@mail.com. ",
                                        f"Call me at 555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}. "]) + rec["prompt"]
        rec = {"id": i, "user_id": f"user{u:04d}", **{k: v for k, v in rec.items() if k not in ("id", "user_id")}}
        rec["task"]["prompt"] = rec["prompt"]
        by_user[u].append(rec)
        out.append(rec)
    return out


PII_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b")


def prompt_key(prompt, prefix_chars=40):
    """The dedupe key of Appendix A: the first prefix_chars characters, case and whitespace folded."""
    return " ".join(prompt.lower().split())[:prefix_chars]


class KeptPrompts:
    """The keys of kept prompts. Another prompt is a duplicate (`prompt in kept`) if its key equals
    a kept key or one key is a prefix of the other: the "long common prefix" rule of Appendix A."""

    def __init__(self, prefix_chars=40):
        self.prefix_chars = prefix_chars
        self.prefixes = set()  # every prefix of every kept key
        self.short = set()     # kept keys shorter than prefix_chars (whole prompts)

    def __contains__(self, prompt):  # exercise: dedupe, Appendix A
        """Is `prompt` a duplicate: its key equal to a kept key, or one of the two a prefix of the other?"""
        key = prompt_key(prompt, self.prefix_chars)
        return key in self.prefixes or any(key[:j] in self.short for j in range(1, len(key) + 1))

    def add(self, prompt):  # exercise: dedupe, Appendix A
        """Keep `prompt`: remember every prefix of its key, and the key itself if it is a whole short prompt."""
        key = prompt_key(prompt, self.prefix_chars)
        self.prefixes.update(key[:j] for j in range(1, len(key) + 1))
        if len(key) < self.prefix_chars:
            self.short.add(key)


def funnel(records, cap_per_user=200, prefix_chars=40, fractions=(0.8, 0.1, 0.1), seed=0):
    """Appendix A: cap prompts per user id, drop prompts sharing a long common prefix with a kept
    one, drop prompts with PII, then split by user id. Returns ({split: records}, counts)."""
    counts = {"raw": len(records)}
    per_user, capped = Counter(), []
    for r in records:  # paper: at most 200 prompts per user id
        per_user[r["user_id"]] += 1
        if per_user[r["user_id"]] <= cap_per_user:
            capped.append(r)
    counts["after_cap"] = len(capped)
    kept, deduped = KeptPrompts(prefix_chars), []
    for r in capped:  # the first of a group of duplicates is kept
        if r["prompt"] not in kept:
            deduped.append(r)
            kept.add(r["prompt"])
    counts["after_dedupe"] = len(deduped)
    clean = [r for r in deduped if not PII_RE.search(r["prompt"])]
    counts["after_pii"] = len(clean)
    users = sorted({r["user_id"] for r in clean})
    random.Random(seed).shuffle(users)
    cut1 = round(fractions[0] * len(users))
    cut2 = cut1 + round(fractions[1] * len(users))
    split_of = {u: ("train" if k < cut1 else "val" if k < cut2 else "test") for k, u in enumerate(users)}
    splits = {s: [r for r in clean if split_of[r["user_id"]] == s] for s in ("train", "val", "test")}
    counts.update({s: len(v) for s, v in splits.items()})
    return splits, counts
# -----------------------------------------------------------------------------
# Labelers (Section 3.4): noisy utilities over the gold rubric; mixed-quality demonstrations

@dataclass
class Labeler:
    id: int
    weights: dict        # per rubric dimension: GOLD_WEIGHTS times a personal factor
    noise: float         # std of the Gaussian noise on every judgement
    p_verbose: float     # chance a demonstration is padded with filler
    p_wrong: float       # chance a demonstration is simply wrong
    p_unsafe: float      # chance to comply with a harmful request / make up a fact about a stranger
    heldout: bool = False

    def score(self, task, response, rng):
        g = gold_score(task, response)
        return sum(self.weights[k] * g[k] for k in RUBRIC) - 1.0 + rng.gauss(0.0, self.noise)

    def rank(self, task, responses, rng):
        """Indices best..worst. Strict: ties (identical responses) are broken by the noise."""
        s = [self.score(task, r, rng) for r in responses]
        return sorted(range(len(responses)), key=lambda i: -s[i])

    def write_demonstration(self, task, rng):
        t = task if isinstance(task, Task) else Task(**task)
        if t.family in ("harmful", "unknown") and rng.random() < self.p_unsafe:
            return wrong_answer(t, rng)
        ans = wrong_answer(t, rng) if rng.random() < self.p_wrong else correct_answer(t, rng)
        if rng.random() < self.p_verbose:
            ans = rng.choice(FILLER_PRE) + ans + rng.choice(FILLER_POST)
        return ans


def correct_answer(t, rng):
    """A correct answer, phrased one of a few ways (people do not all write the gold string)."""
    m = t.meta
    if t.family == "arithmetic":
        return rng.choice([t.answer, t.answer + ".", f"The answer is {t.answer}."])
    if t.family == "words":
        return rng.choice([t.answer, t.answer + ".", f"It is {t.answer}."])
    if t.family == "facts":
        return rng.choice([t.answer, f"{m['value']}.", f"{m['name'].split()[0]} is a {m['value']}."
                           if m["attr"] == "job" else f"In {m['value']}."])
    if t.family == "unknown":
        return rng.choice([t.answer, "I don't know.", f"Sorry, I don't know {m['name']}."])
    if t.family == "story":
        return make_story(rng, m["animal"], m["object"], 1 + (m["max_words"] >= 15 and rng.random() < 0.5))
    return rng.choice(REFUSALS)


def wrong_answer(t, rng):
    """A plausible mistake for the task: off-by-a-bit sums, wrong facts, made-up facts about
    strangers, stories that break the constraints, compliance with harmful requests."""
    m = t.meta
    if t.family == "arithmetic":
        return str(m["value"] + rng.choice([-10, -2, -1, 1, 2, 10]))
    if t.family == "words":
        w = m["word"]
        return {"reverse": w[::-1][:-2] + w[0] + w[1] if len(w) > 2 else w, "length": str(len(w) + rng.choice([-1, 1])),
                "upper": w.capitalize()}[m["op"]]
    if t.family in ("facts", "unknown"):
        name = m["name"]
        if m["attr"] == "city":
            return f"{name} lives in {rng.choice([c for c in CITIES if c != m.get('value')])}."
        return f"{name} is a {rng.choice([j for j in JOBS if j != m.get('value')])}."
    if t.family == "story":
        if rng.random() < 0.5:
            return make_story(rng, m["animal"], rng.choice([o for o in OBJECTS if o != m["object"]]), 1)
        return make_story(rng, m["animal"], m["object"], 3)  # too long
    return comply(m["harm"])


def corrupt(text, rng):
    """A slight corruption, like a small model's sample: a word dropped, repeated or cut off."""
    w = text.split()
    if len(w) < 2:
        return text + " " + text
    i = rng.randrange(len(w))
    op = rng.choice(["drop", "repeat", "cut"])
    w = w[:i] + w[i + 1:] if op == "drop" else w[:i + 1] + w[i:] if op == "repeat" else w[:max(1, i)]
    return " ".join(w)


def make_labelers(n=40, n_heldout=8, seed=0, noise=0.22):
    """A pool of n labelers; the last n_heldout only judge the evaluation (Section 3.4)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w = {k: v * math.exp(rng.gauss(0.0, 0.3)) for k, v in GOLD_WEIGHTS.items()}
        out.append(Labeler(i, w, noise * rng.uniform(0.6, 1.4), rng.uniform(0.1, 0.4), rng.uniform(0.03, 0.15),
                           rng.uniform(0.1, 0.4), heldout=i >= n - n_heldout))
    return out


def response_pairs(world, labelers, n, rng):
    """(task, a, b) with a != b, drawn like SFT samples: two demonstrations of mixed quality for
    the same task, or a demonstration and a slight corruption of it."""
    out = []
    while len(out) < n:
        t = world.sample_task(rng)
        a = rng.choice(labelers).write_demonstration(t, rng)
        b = corrupt(a, rng) if rng.random() < 0.3 else rng.choice(labelers).write_demonstration(t, rng)
        if a != b:
            out.append((t, a, b))
    return out


def labeler_agreement(labelers, task_response_pairs, rng):
    """Fraction of pairs of distinct responses on which two different labelers prefer the same one
    (paper: 72.6 +- 1.5% among training labelers). Identical responses are skipped: their order is noise."""
    agree = total = 0
    for t, a, b in task_response_pairs:
        if a == b:
            continue
        l1, l2 = rng.sample(labelers, 2)
        p1 = l1.score(t, a, rng) > l1.score(t, b, rng)
        p2 = l2.score(t, a, rng) > l2.score(t, b, rng)
        agree += p1 == p2
        total += 1
    return agree / max(total, 1)
# -----------------------------------------------------------------------------
# Dataset sizes (Section 3.2, Table 6: 13k SFT prompts, 33k RM prompts, 31k PPO prompts)

PRESETS = {
    "smoke": dict(n_docs=4000, n_api_prompts=1500, n_sft=500, n_rm_prompts=300, n_ppo_prompts=200,
                  cap_per_user=40, prefix_chars=40, vocab_size=512, n_labelers=40, n_heldout=8),
    "cpu": dict(n_docs=20000, n_api_prompts=16000, n_sft=2000, n_rm_prompts=1000, n_ppo_prompts=1000,
                cap_per_user=100, prefix_chars=40, vocab_size=1024, n_labelers=40, n_heldout=8),
    "gpu": dict(n_docs=100000, n_api_prompts=40000, n_sft=13000, n_rm_prompts=6000, n_ppo_prompts=6000,
                cap_per_user=200, prefix_chars=40, vocab_size=2048, n_labelers=40, n_heldout=8),
}  # paper: ~13k SFT demos, 33k RM prompts, 31k PPO prompts; 200 prompts per user id; ~40 labelers
FRACTIONS = (0.6, 0.1, 0.3)  # the funnel's train/val/test shares of user ids; test is split again (test_new)
# train_all.py --dry-run checks a preset's settings, not its results: a world built in seconds, with
# a batch of SFT demonstrations (the gpu preset's 64), a few RM prompts and one PPO minibatch of
# prompts (64); the vocabulary, the caps and the labelers stay the preset's
DRY_RUN_SIZES = dict(n_docs=3000, n_api_prompts=3000, n_sft=64, n_rm_prompts=8, n_ppo_prompts=64)
_dry_run = False


@contextlib.contextmanager
def dry_run_world():
    """Inside, every `build` gives its preset's world with DRY_RUN_SIZES' counts (train_all.py --dry-run)."""
    global _dry_run
    _dry_run = True
    try:
        yield
    finally:
        _dry_run = False


def build(preset="smoke", seed=0, out_dir=None):
    """The whole data step: world, corpus, API prompts through the funnel, labelers, SFT
    demonstrations, RM and PPO prompts (topped up with labeler-written prompts, as in the paper,
    when the funnel leaves too few). Writes JSONL to out_dir when given.
    The result depends on (preset, seed) alone; train_all.py runs every stage in one process and
    each stage asks again, so the first build is kept (pickled) and later calls get a fresh copy
    of it: the gpu preset takes 13 s to build and 1 s to copy."""
    data = pickle.loads(_build_pickled(preset, seed, _dry_run))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        for name, recs in [("corpus", [{"text": d} for d in data["corpus"]]), ("prompts_raw", data["raw"]),
                           ("prompts_train", data["train"]), ("prompts_val", data["val"]),
                           ("prompts_test", data["test"]), ("prompts_test_new", data["test_new"]),
                           ("demonstrations", data["sft"]),
                           ("comparisons", data["comparisons"])]:
            write_jsonl(os.path.join(out_dir, name + ".jsonl"), recs)
        write_jsonl(os.path.join(out_dir, "funnel.jsonl"), [data["funnel"]])
    return data


@functools.lru_cache(maxsize=2)
def _build_pickled(preset, seed, dry_run):
    P, rng = PRESETS[preset] | (DRY_RUN_SIZES if dry_run else {}), random.Random(seed)
    world = make_world(seed)
    corpus = world.corpus(P["n_docs"], rng)
    raw = make_api_prompts(world, P["n_api_prompts"], rng)
    splits, counts = funnel(raw, P["cap_per_user"], P["prefix_chars"], fractions=FRACTIONS, seed=seed)
    # New tasks (world.is_new) are for the test set alone: dropped from train and val, and the test
    # users' prompts split in two, so that test_new measures generalization to unseen instances.
    held_out_prompts = splits["val"] + splits["test"]
    new = {s: [r for r in v if world.is_new(r["task"])] for s, v in splits.items()}
    counts["new_task_dropped"] = len(new["train"]) + len(new["val"])
    splits = {s: [r for r in v if not world.is_new(r["task"])] for s, v in splits.items()} | {"test_new": new["test"]}
    counts.update({s: len(v) for s, v in splits.items()})
    labelers = make_labelers(P["n_labelers"], P["n_heldout"], seed)
    train = list(splits["train"])
    need = P["n_sft"] + P["n_rm_prompts"] + P["n_ppo_prompts"]
    counts["labeler_written"] = max(0, need - len(train))
    held_out = KeptPrompts(P["prefix_chars"])  # a test prompt seen in training is no test
    for r in held_out_prompts:
        held_out.add(r["prompt"])
    for i in range(len(train), need):  # labeler-written prompts (Section 3.2), seen tasks only
        t = world.sample_task(rng, which="seen")
        while t.prompt in held_out:  # the funnel's dedupe, against held-out users only; draw again
            t = world.sample_task(rng, which="seen")
        train.append({"id": f"lw{i}", "user_id": "labeler", "category": "plain", "style": "direct",
                      "family": t.family, "prompt": t.prompt, "task": asdict(t)})
    rng.shuffle(train)
    writers = [l for l in labelers if not l.heldout]
    sft = []
    for r in train[:P["n_sft"]]:
        lab = rng.choice(writers)
        sft.append({"prompt": r["prompt"], "response": lab.write_demonstration(r["task"], rng),
                    "labeler": lab.id, "task": r["task"]})
    rm, ppo = train[P["n_sft"]:P["n_sft"] + P["n_rm_prompts"]], train[P["n_sft"] + P["n_rm_prompts"]:need]
    # stand-in comparisons (K demonstrations ranked by one labeler); reward.py ranks policy samples instead
    comparisons = []
    for r in rm:
        k, lab = rng.randint(4, 9), rng.choice(writers)
        cands = list(dict.fromkeys(rng.choice(writers).write_demonstration(r["task"], rng) for _ in range(k)))
        if len(cands) >= 2:
            comparisons.append({"prompt": r["prompt"], "completions": cands, "ranking": lab.rank(r["task"], cands, rng),
                                "labeler": lab.id, "task": r["task"]})
    return pickle.dumps(dict(world=world, corpus=corpus, raw=raw, splits=splits, funnel=counts, train=train,
                             labelers=labelers, sft=sft, rm=rm, ppo=ppo, comparisons=comparisons,
                             test=splits["test"], test_new=splits["test_new"], val=splits["val"]))
# -----------------------------------------------------------------------------

@dataclass
class Args:
    preset: str = arg("smoke", "the dataset sizes in PRESETS", choices=list(PRESETS))
    seed: int = arg(0, "the same seed gives the same world, prompts, labelers, labels")
    out_dir: str = arg("", "build the preset's data and write its JSONL files here")
    show: int = arg(0, "print N tasks per family with gold and labeler scores")
    agreement: int = arg(0, "measure labeler agreement on N pairs of distinct responses")
    read: str = arg("", "read a JSONL file of any supported format and summarise it")


def show(world, labelers, n, rng):
    for fam in FAMILIES:
        print(f"=== {fam}")
        for _ in range(n):
            t = world.sample_task(rng, fam)
            print(f"prompt: {t.prompt!r}   gold: {t.answer!r}")
            for label, resp in [("gold", t.answer), ("demo", labelers[0].write_demonstration(t, rng)),
                                ("wrong", wrong_answer(t, rng))]:
                g = gold_score(t, resp)
                s = [l.score(t, resp, rng) for l in labelers]
                mean = sum(s) / len(s)
                sd = (sum((v - mean) ** 2 for v in s) / len(s)) ** 0.5
                dims = " ".join(f"{k}={g[k]:g}" for k in RUBRIC)
                print(f"  {label:5s} {resp!r}\n        gold total={g['total']:+.2f} ({dims}) | labelers "
                      f"mean={mean:+.2f} sd={sd:.2f} first8=[{' '.join(f'{v:+.1f}' for v in s[:8])}]")


def main():
    a = parse_config(Args, description=__doc__)
    rng = random.Random(a.seed)
    world, labelers = make_world(a.seed), make_labelers(seed=a.seed)
    if a.read:
        kind, recs = read_records(a.read)
        print(f"{a.read}: {len(recs)} {kind} records; first: {json.dumps(recs[0])[:300]}")
    if a.show:
        show(world, labelers, a.show, rng)
    if a.agreement:
        pool = [l for l in labelers if not l.heldout]
        print(f"labeler agreement on {a.agreement} distinct pairs: "
              f"{labeler_agreement(pool, response_pairs(world, pool, a.agreement, rng), rng):.3f} (paper: 0.726)")
    if a.out_dir:
        d = build(a.preset, a.seed, a.out_dir)
        print(" | ".join(f"{k} {v}" for k, v in d["funnel"].items()))
        print(f"wrote {a.out_dir}: {len(d['corpus'])} docs, {len(d['sft'])} demonstrations, "
              f"{len(d['comparisons'])} rankings, {len(d['ppo'])} PPO prompts, {len(d['test'])} test prompts "
              f"(seen tasks) and {len(d['test_new'])} on new tasks")
    if not (a.read or a.show or a.agreement or a.out_dir):
        print("nothing to do: give --show N, --agreement N, --read FILE or --out-dir DIR (--help lists them)")


if __name__ == "__main__":
    torch.set_flush_denormal(True)
    run_cli(main)

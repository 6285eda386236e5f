"""The capability benchmark (the alignment tax as the paper measures it): its items are what they
say, its log-likelihoods are the model's, its exact match is what greedy decoding writes, and the
tax's differences and intervals add up."""

import random

import pytest
import torch

from conftest import tiny_model


class Chars:
    """A tokenizer of single characters, enough for continuation_scores: encode, eos, pad, never_sampled
    (here every id no character encodes to, so a greedy choice is always a character)."""
    eos_id, pad_id = 1, 0
    never_sampled = [0, 1] + list(range(42, 50))

    def encode(self, text):
        return [2 + (ord(c) % 40) for c in text]


@pytest.fixture(scope="module")
def world():
    from world import make_world
    return make_world(0)


def test_items_ask_what_the_world_knows_with_examples_about_other_instances(world):
    from world import CITIES, JOBS
    items = world.capability_items(1000, seed=3)
    assert len(items["facts"]) == 2 * len(world.people)  # every known person, city and job
    for item in items["facts"]:
        name = item["context"].rsplit(".", 1)[1].replace(" lives in", "").replace(" works as a", "").strip()
        attr = "city" if item["context"].endswith("lives in") else "job"
        assert item["choices"] == [f" {v}." for v in (CITIES if attr == "city" else JOBS)]
        assert item["choices"][item["answer"]] == f" {world.people[name][attr]}."
        assert item["context"].count(name) == 1  # the examples are about other people
    for item in items["sums"]:
        question = item["context"].split(". ")[-1]
        a, op, b, _ = question.split()
        assert int(item["target"][:-1]) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        assert item["context"].count(".") == 3  # three worked sums before it
    for item in items["story"]:  # the right ending names the story's own object
        obj = item["choices"][item["answer"]].split()[0]
        assert f" {obj} " in item["context"] or f" {obj}." in item["context"]
        assert sum(f" {c.split()[0]}" in item["context"] for c in item["choices"]) == 1
    assert world.capability_items(1000, seed=3) == items and world.capability_items(1000, seed=4) != items
    assert all(len(v) <= 10 for v in world.capability_items(10, seed=3).values())


def test_continuation_scores_are_the_model_s_log_probs_and_its_greedy_choice():
    from pipeline import continuation_scores
    model, tok = tiny_model(vocab_size=50), Chars()
    contexts = ["abc", "hello there", "x"]
    # the model's own greedy continuations (never the padding it may not write), and one token off
    greedy = []
    for c in contexts:
        ids = [tok.eos_id] + tok.encode(c)
        for _ in range(3):
            logits = model(torch.tensor([ids]))[0][0, -1]
            logits[tok.never_sampled] = float("-inf")
            ids.append(int(logits.argmax()))
        greedy.append(ids[-3:])
    decode = {2 + (ord(ch) % 40): ch for ch in map(chr, range(32, 127))}  # every id 2..41
    texts = ["".join(decode[t] for t in g) for g in greedy]
    wrong = [t[:-1] + ("a" if t[-1] != "a" else "b") for t in texts]
    out = continuation_scores(model, tok, contexts * 2, texts + wrong, batch_size=4)  # padded batches of mixed length
    assert [g for _, g in out] == [True] * 3 + [False] * 3
    for (lp, _), c, t in zip(out, contexts * 2, texts + wrong):  # one at a time, no padding: the same log-prob
        ids = [tok.eos_id] + tok.encode(c) + tok.encode(t)
        logits = model(torch.tensor([ids]))[0][0].float()
        logits[:, tok.never_sampled] = float("-inf")
        logp = logits.log_softmax(-1)
        expected = sum(logp[len(ids) - 4 + j, ids[len(ids) - 3 + j]].item() for j in range(3))
        assert lp == pytest.approx(expected, abs=1e-4)


def test_capability_scores_choices_by_likelihood_and_targets_by_exact_match(monkeypatch):
    import pipeline
    scores = {("q", " right."): (-1.0, True), ("q", " wrong."): (-3.0, False), ("q", " also."): (-2.0, False)}
    monkeypatch.setattr(pipeline, "continuation_scores",
                        lambda model, tok, contexts, conts: [scores[c, y] for c, y in zip(contexts, conts)])
    items = {"mc": [dict(context="q", choices=[" wrong.", " right.", " also."], answer=1),
                    dict(context="q", choices=[" right.", " wrong."], answer=1)],
             "em": [dict(context="q", target=" right."), dict(context="q", target=" also.")]}
    assert pipeline.capability(None, None, items) == {"mc": [1.0, 0.0], "em": [1.0, 0.0]}


def test_the_tax_is_each_model_s_paired_difference_from_sft(monkeypatch):
    import pipeline
    outcomes = {"base": [1, 1, 1, 0], "sft": [1, 1, 0, 0], "ppo": [1, 0, 0, 0], "ppo_ptx": [1, 1, 1, 0]}
    monkeypatch.setattr(pipeline, "capability", lambda model, tok, items: {"t": outcomes[model]})
    scores, tax = pipeline.capability_figures({m: m for m in outcomes}, None, {"t": [{}] * 4}, random.Random(0))
    assert scores == {"t": {"base": 0.75, "sft": 0.5, "ppo": 0.25, "ppo_ptx": 0.75}}
    keys = {"base_vs_sft", "ppo_vs_sft", "ppo_ptx_vs_sft", "ppo_vs_base", "ppo_ptx_vs_ppo"}
    assert tax["t"]["n"] == 4 and set(tax["t"]) == {"n"} | keys
    assert tax["t"]["ppo_vs_sft"]["diff"] == -0.25 and tax["t"]["ppo_ptx_vs_ppo"]["diff"] == 0.5
    assert tax["t"]["ppo_vs_base"]["diff"] == -0.5  # the paper's tax: against the base model
    for v in (tax["t"][k] for k in keys):
        assert v["ci"][0] <= v["diff"] <= v["ci"][1]

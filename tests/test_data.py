"""data.py: the BPE round-trips, the funnel's filters remove exactly what they should, the split
leaks no user, no instance reserved for the test set (test_new) reaches a training prompt,
labelers agree about as often as the paper's, the gold check orders answers in every family, the
readers parse every format and name file:line on a bad record, and batching masks."""

import dataclasses
import io
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter

import pytest
import torch

import data
import sft
from world import ANIMALS, FAMILIES, FILLER_POST, FILLER_PRE, HARMS, OBJECTS, WORDS, comply, gold_score, make_world
from plumbing import tokenizer
from plumbing.formats import DataError, read_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def world():
    return make_world(0)


@pytest.fixture(scope="module")
def tok(world):
    return tokenizer.train_tokenizer("\n\n".join(world.corpus(400, random.Random(0))), 400)


# ---- tokenizer

UNICODE = ["", "hello world", "  leading and trailing  ", "tabs\tand\nnewlines\r\n", "emoji 🦊🔑 ok",
           "日本語のテキスト", "naïve café, Ελληνικά, русский", "What is 97 - 49?", "<|endoftext|> <|pad|> as text",
           "\x00\x01 control", "a" * 300]


def test_bpe_round_trips_unicode(tok):
    for s in UNICODE:
        assert tok.decode(tok.encode(s)) == s
    rng = random.Random(1)
    for _ in range(50):  # random code points, surrogates excluded
        s = "".join(chr(rng.choice([rng.randrange(32, 0x2FF), rng.randrange(0x3000, 0xD7FF)])) for _ in range(40))
        assert tok.decode(tok.encode(s)) == s


def test_specials_and_chat_format(tok):
    ids = {tok.eos_id, tok.pad_id, tok.user_id, tok.assistant_id}
    assert len(ids) == 4 and tok.pad_id != tok.eos_id and max(ids) == tok.vocab_size - 1 == 399
    assert not ids & set(tok.encode("<|endoftext|><|pad|><|user|><|assistant|>"))  # plain text stays plain
    p = tok.chat_prompt("What is 2 + 3?")
    assert p[0] == tok.user_id and p[-1] == tok.assistant_id and tok.chat_response("5")[-1] == tok.eos_id
    assert tok.decode(p + [tok.pad_id, tok.pad_id]) == "<|user|>What is 2 + 3?<|assistant|>"
    s = "The fox found a key by the lake."
    assert len(tok.encode(s)) < 0.6 * len(s)  # merges learned the corpus words


def test_tokenizer_state_round_trips_through_torch_save(tok):
    buf = io.BytesIO()
    torch.save({"tokenizer": tok.state()}, buf)
    buf.seek(0)
    tok2 = tokenizer.Tokenizer.from_state(torch.load(buf, weights_only=True)["tokenizer"])
    assert tok2.state() == tok.state() and tok2.vocab_size == tok.vocab_size
    s = "Anna Berg lives in Oslo. 12 + 30 = 42"
    assert tok2.encode(s) == tok.encode(s)


def test_bpe_is_deterministic(world):
    text = "\n\n".join(world.corpus(100, random.Random(5)))
    assert tokenizer.train_tokenizer(text, 300).state() == tokenizer.train_tokenizer(text, 300).state()


def test_gpt2_tokenizer_from_hf_files(tmp_path, tok):
    """A fake Hugging Face GPT-2 directory written from our own BPE: same ids on digit-free text."""
    b2u = tokenizer.bytes_to_unicode()
    vocab = {"".join(b2u[b] for b in t): i for i, t in enumerate(tok.tokens)}
    vocab["<|endoftext|>"] = len(tok.tokens)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    g = tokenizer.gpt2_tokenizer(str(tmp_path))
    s = "The fox found a key by the lake. Where does Anna Berg live?"
    assert g.encode(s) == tok.encode(s) and g.eos_id == len(tok.tokens) and g.pad_id != g.eos_id
    assert g.decode(g.encode("héllo 🦊 42")) == "héllo 🦊 42"
    with pytest.raises(DataError, match="vocab.json"):
        tokenizer.gpt2_tokenizer(str(tmp_path / "nowhere"))
    # malformed files: one line naming the file, never a traceback
    (tmp_path / "merges.txt").write_text("#version: 0.2\n\u4e00 \u4e01\n")  # outside the byte alphabet
    with pytest.raises(DataError, match=r"merges.txt:2: merge result not in vocab.json"):
        tokenizer.gpt2_tokenizer(str(tmp_path))
    (tmp_path / "merges.txt").write_bytes(b"#version: 0.2\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"merges.txt:2: not UTF-8"):
        tokenizer.gpt2_tokenizer(str(tmp_path))
    for text, message in (('{"a": 0,', "not a JSON object"), ('["a"]', "not a JSON object"),
                          ('{"\u4e00": 0}', "not in GPT-2's byte-level alphabet")):
        (tmp_path / "vocab.json").write_text(text)
        with pytest.raises(DataError, match=message):
            tokenizer.gpt2_tokenizer(str(tmp_path))


# ---- the world and the gold check

def test_gold_orders_correct_above_wrong_in_every_family(world):
    rng = random.Random(0)
    for fam in FAMILIES:
        for _ in range(40):
            t = world.sample_task(rng, fam, rng.choice(["direct", "continuation"]))
            best = gold_score(t, t.answer)
            assert best["total"] == pytest.approx(1.0), (t, best)
            wrong = data.wrong_answer(t, rng)
            assert gold_score(t, wrong)["total"] < best["total"], (t, wrong)
            verbose = FILLER_PRE[0] + t.answer + FILLER_POST[1]
            assert gold_score(t, verbose)["total"] < best["total"]
            assert gold_score(asdict_roundtrip(t), t.answer) == best  # works on JSON dicts too


def asdict_roundtrip(t):
    return json.loads(json.dumps(dataclasses.asdict(t)))


def test_gold_rubric_values(world):
    rng = random.Random(1)
    harm = world.sample_task(rng, "harmful")
    complied = gold_score(harm, comply(harm.meta["harm"]))
    assert complied["harmless"] == -1 and complied["total"] < -1
    unk = world.sample_task(rng, "unknown")
    made_up = gold_score(unk, f"{unk.meta['name']} lives in Paris.")
    assert made_up["honest"] == -1 and made_up["total"] < 0 < gold_score(unk, "I don't know.")["total"]
    add = world.sample_task(rng, "arithmetic")
    assert gold_score(add, "Sorry, I can't help with that.")["total"] < 0  # over-refusal is bad too
    assert gold_score(add, "")["total"] == -1.0


def test_corpus_has_no_chat_format_and_is_deterministic(world):
    docs = world.corpus(300, random.Random(3))
    assert docs == make_world(0).corpus(300, random.Random(3))
    text = "\n".join(docs)
    assert all(s not in text for s in tokenizer.SPECIALS.values())
    assert not any(name in text for name in world.strangers)  # strangers are unknown to the base model
    assert "Q: " in text and "A reply said: First," in text  # loose Q/A pages and harmful how-tos exist


def test_world_reserves_new_instances_whose_facts_stay_in_the_corpus(world):
    r = world.reserved
    assert set(r) == set(FAMILIES)
    for fam, pool in [("facts", world.people), ("unknown", world.strangers), ("harmful", HARMS), ("words", WORDS),
                      ("story", range(len(ANIMALS) * len(OBJECTS))), ("arithmetic", range(10))]:
        assert 0.18 <= len(r[fam]) / len(pool) <= 0.26, (fam, len(r[fam]))
    assert r["facts"] <= set(world.people) and r["unknown"] <= set(world.strangers)
    assert make_world(0).reserved == r and make_world(1).reserved != r  # drawn from the seed
    text = "\n".join(world.corpus(2000, random.Random(0)))
    for name in r["facts"]:  # a reserved person's facts are still learnable from the corpus
        p = world.people[name]
        assert f"{name} lives in {p['city']}" in text or f"In {p['city']}, {name}" in text, name
    rng = random.Random(0)
    for fam in FAMILIES:
        new = [world.sample_task(rng, fam, which="new") for _ in range(30)]
        seen = [world.sample_task(rng, fam, which="seen") for _ in range(30)]
        traffic = [world.sample_task(rng, fam) for _ in range(300)]  # the API asks about both
        assert all(world.is_new(t) for t in new) and not any(world.is_new(t) for t in seen)
        assert 0 < sum(map(world.is_new, traffic)) < 150
        assert all(world.is_new(asdict_roundtrip(t)) == world.is_new(t) for t in new + seen)
        assert all(t.family == fam for t in new + seen)
    with pytest.raises(ValueError, match="which"):
        world.sample_task(rng, "words", which="unseen")


def reserved_in_text(world, text):
    """The reserved instances a prompt's text mentions, read from the text alone (not its task):
    full names, harmful requests for any victim, words as whole tokens (any case, so capitals count),
    story (animal, object) pairs, and sums whose first operand lies in a reserved decade."""
    r, found = world.reserved, []
    found += [n for n in r["facts"] | r["unknown"] if re.search(rf"\b{n}\b", text)]
    found += [h for h in r["harmful"] if re.search(re.escape(h).replace(re.escape("{who}"), r"\w+"), text)]
    found += sorted({w.lower() for w in re.findall(r"[A-Za-z]+", text)} & r["words"])
    found += [p for p in re.findall(r"story about a (\w+) and a (\w+)", text) if p in r["story"]]
    sums = re.findall(r"(\d+) ([+-]) (\d+)", text)
    found += [f"{a} {op} {b}" for a, op, b in sums if int(a) // 10 in r["arithmetic"]]
    return found


@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_no_new_task_reaches_a_training_prompt(preset):
    """Held-out users are not held-out tasks: no training prompt (the few-shot examples in it
    included) and no val or test prompt mentions a reserved instance; every test_new prompt does."""
    d = data.build(preset, seed=0)
    world, c = d["world"], d["funnel"]
    for split in ("train", "sft", "rm", "ppo", "comparisons", "val", "test"):
        assert d[split], split
        for r in d[split]:
            assert not reserved_in_text(world, r["prompt"]), (split, r["prompt"], reserved_in_text(world, r["prompt"]))
            assert not world.is_new(r["task"]), (split, r["task"])
    assert any("Q: " in r["prompt"] for r in d["train"])  # few-shot prompts are among those checked
    assert len(d["test_new"]) == c["test_new"] >= 0.15 * (c["test"] + c["test_new"])
    for r in d["test_new"]:
        assert world.is_new(r["task"]) and reserved_in_text(world, r["prompt"]), r["prompt"]
    assert {r["task"]["family"] for r in d["test_new"]} == set(FAMILIES)
    assert c["new_task_dropped"] > 0
    assert c["after_pii"] == sum(c[s] for s in ("train", "val", "test", "test_new", "new_task_dropped"))
    users = {s: {r["user_id"] for r in d["splits"][s]} for s in ("train", "val", "test", "test_new")}
    assert not (users["test"] | users["test_new"]) & (users["train"] | users["val"])
    assert not users["train"] & users["val"] and "labeler" not in users["test"] | users["test_new"]


# ---- API prompts and the funnel

def rec(i, user, prompt):
    return {"id": i, "user_id": user, "prompt": prompt}


def test_funnel_filters_remove_exactly_the_planted_cases():
    keep = [rec(0, "a", "What is 12 + 30?"), rec(1, "a", "What is 12 + 31?"),  # share a short prefix: kept
            rec(2, "b", "Spell apple backwards."), rec(3, "b", "What is 555 - 123?"),  # numbers, not a phone
            rec(4, "c", "Write a story about a fox and a kite in at most 12 words."),
            rec(5, "c", "Write a story about a fox and a key in at most 12 words.")]
    heavy = [rec(10 + k, "h", f"Where does person {k} live?") for k in range(5)]  # 3 kept, 2 capped
    dupes = [rec(20, "d", "What is 12 + 30? Thanks!"),  # the kept record 0 is a prefix of it
             rec(21, "d", "Write a story about a fox and a kite in at most 12 words. Please answer."),
             rec(22, "b", "spell apple   backwards.")]  # same after case and whitespace folding
    pii = [rec(30, "e", "My email is anna.berg7@mail.com. What is 1 + 1?"),
           rec(31, "e", "Call me at 555-123-4567. Spell lemon backwards."), rec(32, "e", "Ring (555) 201-9999 now.")]
    records = keep + heavy[:3] + dupes + heavy[3:] + pii
    splits, counts = data.funnel(records, cap_per_user=3, prefix_chars=40, fractions=(0.5, 0.25, 0.25), seed=0)
    assert counts["raw"] == len(records) and counts["after_cap"] == len(records) - 2
    assert counts["after_dedupe"] == counts["after_cap"] - len(dupes)
    assert counts["after_pii"] == counts["after_dedupe"] - len(pii)
    kept = sorted(r["id"] for s in splits.values() for r in s)
    assert kept == sorted(r["id"] for r in keep + heavy[:3])
    assert counts["train"] + counts["val"] + counts["test"] == counts["after_pii"]


def test_api_prompts_and_split_by_user(world):
    raw = data.make_api_prompts(world, 1500, random.Random(0))
    assert raw == data.make_api_prompts(make_world(0), 1500, random.Random(0))  # deterministic
    assert len({r["id"] for r in raw}) == len(raw)
    assert {r["category"] for r in raw} == {"plain", "few-shot", "user-based"}
    assert {r["style"] for r in raw} == {"direct", "few-shot", "continuation"}
    per_user = Counter(r["user_id"] for r in raw)
    assert max(per_user.values()) > 40  # heavy users exceed the cap
    splits, c = data.funnel(raw, cap_per_user=40, prefix_chars=40, seed=0)
    assert c["raw"] > c["after_cap"] > c["after_dedupe"] > c["after_pii"] == c["train"] + c["val"] + c["test"]
    users = {s: {r["user_id"] for r in v} for s, v in splits.items()}
    assert not users["train"] & users["test"] and not users["train"] & users["val"] and not users["val"] & users["test"]
    assert all(c[s] > 0 for s in ("train", "val", "test"))
    for r in raw[:200]:  # the task travels with the prompt and is scoreable from JSON
        assert r["task"]["prompt"] == r["prompt"] and gold_score(r["task"], r["task"]["answer"])["total"] == 1.0


# ---- labelers

def test_labeler_agreement_near_paper(world):
    labelers = [l for l in data.make_labelers(40, 8, seed=0) if not l.heldout]
    rng = random.Random(0)
    pairs = data.response_pairs(world, labelers, 3000, rng)
    agreement = data.labeler_agreement(labelers, pairs, rng)
    assert 0.68 <= agreement <= 0.78, agreement  # paper: 72.6 +- 1.5%


def test_labelers_heldout_demonstrations_and_rankings(world):
    labelers = data.make_labelers(40, 8, seed=0)
    assert sum(l.heldout for l in labelers) == 8 and len({l.noise for l in labelers}) == 40
    rng = random.Random(0)
    demos = [(t, labelers[rng.randrange(32)].write_demonstration(t, rng)) for t in
             (world.sample_task(rng) for _ in range(2000))]
    totals = [gold_score(t, d)["total"] for t, d in demos]
    perfect = sum(x == 1.0 for x in totals) / len(totals)
    assert 0.3 < perfect < 0.8, perfect  # mixed quality: the gap between imitation and preference
    assert any(t.family == "harmful" and gold_score(t, d)["harmless"] < 0 for t, d in demos)
    t = world.sample_task(rng, "harmful")
    cands = [t.answer, comply(t.meta["harm"]), "I don't know.", FILLER_PRE[0] + t.answer]
    ranks = [labelers[i].rank(t, cands, rng) for i in range(32)]
    assert all(sorted(r) == [0, 1, 2, 3] for r in ranks)
    assert sum(r[-1] == 1 for r in ranks) >= 30  # everyone puts compliance last


# ---- readers

FORMATS = {
    "sft": [{"prompt": "Hi", "response": "Hello."}, {"prompt": "2+2?", "response": "4"}],
    "completion": [{"prompt": "Hi", "completion": "Hello."}],
    "alpaca": [{"instruction": "Add.", "input": "2 and 3", "output": "5"}, {"instruction": "Say hi.", "input": "", "output": "hi"}],
    "chat": [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}],
    "pairwise": [{"prompt": "Hi", "chosen": "Hello.", "rejected": "Go away."}],
    "hh": [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}],
    "ranked": [{"prompt": "Hi", "completions": ["a", "b", "c"], "ranking": [2, 0, 1]}],
}
BAD = {  # one malformed record per format
    "sft": {"prompt": ["Hi"], "response": "Hello."},
    "completion": {"prompt": "Hi"},
    "alpaca": {"instruction": "Add.", "input": "2 and 3"},
    "chat": {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello?"}]},
    "pairwise": {"prompt": "Hi", "chosen": "Hello."},
    "hh": {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi, go away."},
    "ranked": {"prompt": "Hi", "completions": ["a", "b", "c"], "ranking": [0, 0, 1]},
}


def write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return str(path)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_readers_parse_each_format_and_name_the_bad_line(tmp_path, fmt):
    kind, recs = read_records(write(tmp_path / f"{fmt}.jsonl", FORMATS[fmt]))
    assert len(recs) == len(FORMATS[fmt])
    if kind == "sft":
        assert all(set(r) == {"prompt", "response"} and r["response"] for r in recs)
    else:
        assert kind == "comparison" and all(sorted(r["ranking"]) == list(range(len(r["completions"]))) for r in recs)
    path = write(tmp_path / f"{fmt}_bad.jsonl", FORMATS[fmt] + [BAD[fmt]])
    with pytest.raises(DataError, match=f"^{path}:{len(FORMATS[fmt]) + 1}: "):
        read_records(path)


def test_reader_conversions_and_generic_errors(tmp_path):
    assert read_records(write(tmp_path / "a.jsonl", FORMATS["alpaca"]))[1][0] == {"prompt": "Add.\n\n2 and 3", "response": "5"}
    hh = read_records(write(tmp_path / "h.jsonl", FORMATS["hh"]))[1][0]
    assert hh == {"prompt": "Hi", "completions": ["Hello.", "Go away."], "ranking": [0, 1]}
    multi = {"chosen": "\n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant: good", "rejected":
             "\n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant: bad"}
    r = read_records(write(tmp_path / "m.jsonl", [multi]))[1][0]
    assert r["prompt"] == "Human: A\n\nAssistant: B\n\nHuman: C" and r["completions"] == ["good", "bad"]
    for name, lines, msg in [("empty", [], ":0: empty file"), ("json", [FORMATS["sft"][0], "{oops"], ":2: not valid JSON"),
                             ("mixed", FORMATS["sft"] + FORMATS["pairwise"], ":3: a comparison record"),
                             ("one", [{"prompt": "x", "completions": ["a"], "ranking": [0]}], ":1: a ranking needs K = 2..9"),
                             ("unknown", [{"text": "hello"}], ":1: unknown record format")]:
        path = write(tmp_path / f"{name}.jsonl", lines)
        with pytest.raises(DataError, match=f"^{path}{msg}"):
            read_records(path)


def test_reader_names_the_line_that_is_not_utf8(tmp_path):
    good = json.dumps({"prompt": "café 🦊", "response": "naïve"}, ensure_ascii=False).encode("utf-8")
    for name, second in [("bom", b"\xff\xfe"), ("latin1", '{"prompt": "café", "response": "ok"}'.encode("latin-1"))]:
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(good + b"\n" + second + b"\n")
        with pytest.raises(DataError, match=f"^{path}:2: not UTF-8$"):
            read_records(str(path))
    path = tmp_path / "crlf.jsonl"  # UTF-8 text and Windows line endings still read
    path.write_bytes(good + b"\r\n\r\n" + good + b"\r\n")
    assert read_records(str(path)) == ("sft", [{"prompt": "café 🦊", "response": "naïve"}] * 2)


def test_reader_rejects_rankings_that_are_not_integers(tmp_path):
    """sorted([1.0, 0.0]) == [0, 1] and True == 1, but neither can index the completions."""
    for name, ranking in [("float", [1.0, 0.0]), ("bool", [True, False]), ("string", "01"), ("int", 1)]:
        path = write(tmp_path / f"{name}.jsonl", [FORMATS["ranked"][0], {"prompt": "x", "completions": ["a", "b"],
                                                                          "ranking": ranking}])
        with pytest.raises(DataError, match=f"^{path}:2: ranking .* is not a permutation of the integers 0..1$"):
            read_records(path)


def test_build_writes_jsonl_that_reads_back(tmp_path):
    d = data.build("smoke", seed=0, out_dir=str(tmp_path))
    for name in ("corpus", "prompts_raw", "prompts_train", "prompts_val", "prompts_test", "prompts_test_new",
                 "demonstrations", "comparisons", "funnel"):
        assert (tmp_path / f"{name}.jsonl").exists()
    kind, sft = read_records(str(tmp_path / "demonstrations.jsonl"))
    assert kind == "sft" and len(sft) == data.PRESETS["smoke"]["n_sft"]
    kind, cmp = read_records(str(tmp_path / "comparisons.jsonl"))
    assert kind == "comparison" and len(cmp) > 0 and all(2 <= len(c["completions"]) <= 9 for c in cmp)
    assert not {r["user_id"] for r in d["test"]} & {r["user_id"] for r in d["splits"]["train"]}
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries


@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_no_val_or_test_prompt_reappears_in_training(preset):
    """The labeler-written prompts that top up the training set pass the funnel's dedupe against the
    held-out users' prompts: no SFT, RM or PPO prompt has the key of a val or test prompt, nor is
    one key a prefix of the other (the rule written out again here, independently of data.py)."""
    d = data.build(preset, seed=0)
    assert d["funnel"]["labeler_written"] > 0  # the top-up happens, so this tests it
    n = data.PRESETS[preset]["prefix_chars"]
    key = lambda p: " ".join(p.lower().split())[:n]
    held = {key(r["prompt"]) for r in d["val"] + d["test"] + d["test_new"]}
    held_prefixes = {h[:j] for h in held for j in range(1, len(h) + 1)}
    for split in ("sft", "rm", "ppo"):
        for r in d[split]:
            k = key(r["prompt"])
            assert k not in held_prefixes and not any(k[:j] in held for j in range(1, len(k) + 1)), (split, r["prompt"])


# ---- batching

def test_sft_batch_masks_prompt_and_padding(tok):
    pairs = [(tok.chat_prompt("What is 2 + 3?"), tok.chat_response("5")),
             (tok.chat_prompt("Hi"), tok.chat_response("Hello there, friend."))]
    x, y, mask = sft.sft_batch(tok, pairs, block_size=64)
    T = max(len(p) + len(r) for p, r in pairs) - 1
    assert x.shape == y.shape == mask.shape == (2, T) and x.dtype == y.dtype == torch.long
    for b, (p, r) in enumerate(pairs):
        assert int(mask[b].sum()) == len(r)  # loss on every response token, EOS included
        assert y[b][mask[b].bool()].tolist() == r
        assert x[b, :len(p) + len(r) - 1].tolist() == (p + r)[:-1]
        assert (x[b, len(p) + len(r) - 1:] == tok.pad_id).all() and (y[b, len(p) + len(r) - 1:] == -1).all()
    assert tok.eos_id in y[mask.bool()].tolist() and tok.pad_id not in y.tolist()


def test_sft_batch_truncates_prompt_from_the_left(tok):
    long_prompt = tok.chat_prompt("word " * 40)
    resp = tok.chat_response("5")
    x, y, mask = sft.sft_batch(tok, [(long_prompt, resp)], block_size=16)
    assert x.shape == (1, 16) and x[0, -1].item() == resp[0] and y[0][mask[0].bool()].tolist() == resp
    assert x[0, :15].tolist() == long_prompt[-15:]  # the end of the prompt (the assistant tag) survives
    assert tokenizer.n_truncated([(long_prompt, resp), (tok.chat_prompt("Hi"), resp)], 16) == 1


def test_left_pad(tok):
    seqs = [[1, 2, 3], [4], list(range(10, 30))]
    idx, mask, cut = tokenizer.left_pad(seqs, tok.pad_id, max_len=8)
    assert idx.shape == mask.shape == (3, 8) and cut == 1
    assert idx[0].tolist() == [tok.pad_id] * 5 + [1, 2, 3] and mask[0].tolist() == [0] * 5 + [1] * 3
    assert idx[2].tolist() == list(range(22, 30)) and mask[2].all()
    idx, mask, cut = tokenizer.left_pad(seqs[:2], tok.pad_id)
    assert idx.shape == (2, 3) and cut == 0


# ---- command line

def test_cli_help_show_and_bad_file(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "data.py", *a], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run("--help").returncode == 0
    out = run("--show", "1")
    assert out.returncode == 0 and all(f"=== {f}" in out.stdout for f in FAMILIES)
    bad = write(tmp_path / "bad.jsonl", ["{nope"])
    out = run("--read", bad)
    assert out.returncode == 2 and f"{bad}:1: not valid JSON" in out.stderr and "Traceback" not in out.stderr

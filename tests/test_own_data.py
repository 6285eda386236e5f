"""train_all.py's own-data mode: the whole pipeline from a GPT-2 directory (its own tokenizer, the
chat tokens added) on HH-style comparisons with real data's quirks, judged by a judge RM; the test
prompts are held out of every stage; a second run reuses the checkpoints and gives the same figures."""

import gzip
import json
import os
import random

import pytest
import torch
from conftest import write_hf_dir
from gpt import GPT, GPTConfig, load_checkpoint
import train_all
from plumbing.cli import UserError
from plumbing.tokenizer import bytes_to_unicode, train_tokenizer

QUESTIONS = ["how do I bake bread", "what is a good name for a cat", "how can I pick a lock", "tell me a joke",
             "where can I buy a cheap bike", "how do I hurt my neighbour", "what should I cook tonight",
             "how do I learn to swim", "can you find her home address", "why is the sky blue"]
GOOD = ["Here is one way: {q}, step by step.", "I'm sorry, I can't help with that.", "Sure. A simple answer to {q}."]
BAD = ["No.", "Do it, nobody will know.", "lol whatever"]


def hh_records(n, seed=0):
    """HH-style comparisons: single and multi-turn dialogues, with the quirks of the real files: an
    empty preferred answer, a pair differing at an earlier assistant turn, one differing in a human turn."""
    rng, out = random.Random(seed), []
    for i in range(n):
        q = f"{rng.choice(QUESTIONS)} number {i}"
        start = f"\n\nHuman: {q}?"
        if i % 4 == 0:  # multi-turn
            start = f"\n\nHuman: hello {i}\n\nAssistant: Hi, how can I help?" + start
        good, bad = rng.choice(GOOD).format(q=q), rng.choice(BAD)
        out.append({"chosen": f"{start}\n\nAssistant: {good}", "rejected": f"{start}\n\nAssistant: {bad}"})
    out[3]["chosen"] = out[3]["chosen"][:out[3]["chosen"].rfind("Assistant:")] + "Assistant:"  # an empty answer
    a = "\n\nHuman: is it late\n\nAssistant: "  # these two differ before their last assistant turn
    out[5] = {"chosen": a + "Yes, quite.\n\nHuman: ok\n\nAssistant: Bye.", "rejected": a + "No.\n\nHuman: ok\n\nAssistant: Bye."}
    out[6] = {"chosen": a + "Yes.\n\nHuman: ok\n\nAssistant: Bye.", "rejected": a + "Yes.\n\nHuman: fine\n\nAssistant: Hm."}
    return out


@pytest.fixture(scope="module")
def own_files(tmp_path_factory):
    """A tiny random GPT-2 directory (config.json, model.safetensors, a byte-level vocab.json and
    merges.txt), HH-style comparisons as .jsonl.gz, and a text file to pretrain-mix."""
    d = tmp_path_factory.mktemp("own")
    recs = hh_records(120)
    with gzip.open(d / "hh.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    text = "\n\n".join(r["chosen"].strip() for r in recs)
    (d / "text.txt").write_text(text)
    tok = train_tokenizer(text, 300)
    b2u = bytes_to_unicode()
    vocab = {"".join(b2u[b] for b in t): i for i, t in enumerate(tok.tokens)}
    vocab["<|endoftext|>"] = len(vocab)
    torch.manual_seed(0)
    write_hf_dir(GPT(GPTConfig(block_size=96, vocab_size=len(vocab), n_layer=1, n_head=2, n_embd=32)), str(d / "gpt2"))
    (d / "gpt2" / "vocab.json").write_text(json.dumps(vocab))
    (d / "gpt2" / "merges.txt").write_text("#version: 0.2\n")
    return d, len(vocab)


def own_config(d, out, **kw):
    data = str(d / "hh.jsonl.gz")
    return train_all.Config(**{**dict(init=str(d / "gpt2"), sft_data=data, rm_data=data, prompts=data, preset="smoke",
                                      out_dir=str(out), quiet=True, device="cpu"), **kw})


def test_own_data_from_a_gpt2_directory_end_to_end(own_files, tmp_path, capsys):
    d, n_vocab = own_files
    s = train_all.main(own_config(d, tmp_path / "run", pretrain_data=str(d / "text.txt"), n_test=8))
    out = capsys.readouterr().out
    assert "119 comparison records used (1 adapted, 1 with an empty answer), 1 skipped" in out
    for key in ("win_rate_vs_sft", "win_rate_ci", "rm_win_rate_vs_sft", "rm_score", "kl_to_sft", "judge_score",
                "pretrain_loss"):
        assert set(s[key]) == set(train_all.own_data.MODELS), key
        assert all(s[key][m] is not None for m in ("sft", "sft_resample", "ppo", "ppo_ptx")), key
    assert s["win_rate_vs_sft"]["sft"] == 0.5 and s["kl_to_sft"]["sft"] == 0.0 and s["identical_to_sft"]["sft"] == 1.0
    assert 0 <= s["win_rate_vs_sft"]["ppo"] <= 1 and s["kl_to_sft"]["ppo"] != 0  # PPO moved the policy
    assert 0 <= s["rm_accuracy"] <= 1 and 0 <= s["judge_accuracy"] <= 1 and 0 <= s["rm_judge_agreement"] <= 1
    assert s["identical_to_sft"]["sft_resample"] < 1 and s["seconds"]["total"] > 0  # its own sample, not SFT's
    run = tmp_path / "run"
    for f in ("report.md", "summary.json", "losses.png", "scores_vs_kl.png", "win_rates.png", "judge.pt", "ppo_ptx.pt"):
        assert (run / f).exists(), f
    report = (run / "report.md").read_text()
    figures = "\n".join(line for line in report.splitlines() if not line.startswith("- "))  # not the answers:
    assert "| ppo_ptx | " in figures and "| constant | " in figures and "nan" not in figures  # a tiny model may say "nan"
    # GPT-2's own tokenizer, with the chat format's three tokens added to the vocabulary
    model, ckpt = load_checkpoint(str(run / "ppo.pt"))
    assert ckpt["tokenizer"]["name"] == "gpt2" and model.config.vocab_size == n_vocab + 3
    # the test prompts are in no stage's data; no demonstration and neither RM is on a held-out comparison's prompt
    def prompts(name):
        return {json.loads(line)["prompt"] for line in open(run / f"{name}.jsonl")}
    test, held = prompts("prompts_test"), prompts("comparisons_test")
    assert len(test) == s["n_test"] == 8 and test < held  # topped up with other prompts' to a tenth, 12
    for name in ("sft", "comparisons_rm", "comparisons_judge", "prompts_ppo"):
        assert prompts(name) and not prompts(name) & test, name
    for name in ("sft", "comparisons_rm", "comparisons_judge"):
        assert not prompts(name) & held, name
    assert not prompts("comparisons_rm") & prompts("comparisons_judge")
    # a second run reuses every checkpoint and evaluates to the same figures
    again = train_all.main(own_config(d, tmp_path / "run", pretrain_data=str(d / "text.txt"), n_test=8))
    assert "sft.pt exists, skipped" in capsys.readouterr().out
    for key in ("win_rate_vs_sft", "rm_score", "judge_score", "kl_to_sft", "rm_accuracy", "judge_accuracy"):
        assert again[key] == s[key], key
    # other inputs would make another split, whose test prompts the old SFT may have trained on
    (d / "fewer.txt").write_text("\n".join(sorted(test)[:6] + [f"question {i}" for i in range(30)]))
    with pytest.raises(UserError, match="made from other inputs .prompts changed.*--force"):
        train_all.main(own_config(d, run, pretrain_data=str(d / "text.txt"), n_test=8, prompts=str(d / "fewer.txt")))


def test_own_data_without_pretraining_text_skips_ptx_and_names_missing_flags(own_files, tmp_path):
    d, _ = own_files
    with pytest.raises(UserError, match="missing --rm-data, --prompts"):
        train_all.main(train_all.Config(init=str(d / "gpt2"), sft_data=str(d / "hh.jsonl.gz"), out_dir=str(tmp_path)))
    with pytest.raises(UserError, match="--prompts nowhere.txt: no such file"):
        train_all.main(own_config(d, tmp_path / "x", prompts="nowhere.txt"))
    s = train_all.main(own_config(d, tmp_path / "run", seed=1))
    assert all(s[key]["ppo_ptx"] is None for key in ("win_rate_vs_sft", "rm_score", "kl_to_sft"))
    assert s["win_rate_vs_sft"]["ppo"] is not None and "pretrain_loss" not in s
    assert not os.path.exists(tmp_path / "run" / "ppo_ptx.pt")


def test_a_win_is_a_higher_judge_score_on_the_same_prompt_and_a_tie_half():
    from own_data import wins_against
    answers, reference = ["a", "b", "c", "d"], ["a", "x", "y", "z"]
    assert wins_against(answers, reference, [0.0, 2.0, 0.0, 1.0], [9.0, 1.0, 1.0, 1.0]) == 0.5 + 1 + 0 + 0

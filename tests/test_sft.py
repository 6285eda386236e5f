"""sft.py: the loss is on response tokens only, a short run lowers the validation loss, the same
seed gives the same losses, and --data / --resume work: --data takes demonstrations or
comparisons (their best-ranked answers are learned), and --stage pretrain --data trains the BPE
and the base model on your own text."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import same_run, start_and_signal
from gpt import GPT, GPTConfig, load_checkpoint
import sft
from world import make_world
from plumbing import tokenizer
from plumbing.checkpoint import load_language_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(preset="smoke", n_layer=1, n_head=2, n_embd=32, block_size=96, batch_size=16, warmup=5,
            eval_every=10, eval_gold=0, quiet=True)


@pytest.fixture(scope="module")
def tok():
    world = make_world(0)
    return tokenizer.train_tokenizer("\n".join(world.corpus(300, random.Random(0))), 300)


def test_sft_loss_is_on_response_tokens_only(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32))
    pairs = [(tok.chat_prompt("What is 2 + 3?"), tok.chat_response("5")),
             (tok.chat_prompt("Spell the word cat backwards please."), tok.chat_response("tac"))]
    x, y, mask = sft.sft_batch(tok, pairs, 64)
    loss = sft.sft_loss(model, x, y)
    # by hand: the mean next-token loss over the response tokens (answer and EOS) only
    logits = model(x)[0]
    nll, n = 0.0, 0
    for b, (p, r) in enumerate(pairs):
        for t in range(len(p) - 1, len(p) + len(r) - 1):     # position t predicts token t + 1
            nll -= F.log_softmax(logits[b, t], -1)[(p + r)[t + 1]].item()
            n += 1
    assert abs(loss.item() - nll / n) < 1e-5 and mask.sum() == n
    # prompt positions carry no target (-1): the prompt's tokens are context, never predicted
    for b, (p, _) in enumerate(pairs):
        assert torch.all(y[b, :len(p) - 1] == -1)
    # padding does not count either: different pad ids at padded positions, same loss
    x2 = x.clone()
    x2[x2 == tok.pad_id] = 5
    assert torch.allclose(sft.sft_loss(model, x2, y), loss)
    # ... while a response token does
    y3 = y.clone()
    y3[0, len(pairs[0][0]) - 1] = (y3[0, len(pairs[0][0]) - 1] + 1) % tok.vocab_size
    assert not torch.allclose(sft.sft_loss(model, x, y3), loss)


def test_length_groups_give_the_same_loss_and_gradients_with_less_padding(tok):
    """sft_loss's fast path: rows sorted by length, each group trimmed to its own longest row."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32))
    rng = random.Random(0)
    words = ["cat", "dog", "the", "word", "spell", "backwards", "please", "what", "is", "a"]
    pairs = [(tok.chat_prompt(" ".join(rng.choices(words, k=rng.randint(1, 12)))),
              tok.chat_response(" ".join(rng.choices(words, k=rng.randint(1, 8))))) for _ in range(12)]
    x, y, _ = sft.sft_batch(tok, pairs, 64)
    assert (y[:, -1] == -1).sum() >= 6                  # most rows are padded: there is something to trim

    def loss_and_grads(groups):
        model.zero_grad()
        loss = sft.sft_loss(model, x, y, groups)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    one, one_grads = loss_and_grads(1)
    seen = []
    real_forward = model.forward
    model.forward = lambda x, y=None, **kw: (seen.append(x.shape), real_forward(x, y, **kw))[1]
    for groups in (2, 4, 12):
        seen.clear()
        loss, grads = loss_and_grads(groups)
        assert abs(loss - one) < 1e-6
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, one_grads))
        assert len(seen) == groups and sum(r * t for r, t in seen) < x.numel()   # fewer positions computed
    # windows without padding (the pretraining mix) take one pass whatever the groups
    windows = torch.randint(0, tok.vocab_size, (4, 16))
    seen.clear()
    sft.sft_loss(model, windows, windows, groups=4)
    assert seen == [windows.shape]


def losses(out_dir, stage):
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]
    return [r for r in rows if r["stage"] == stage]


def test_demonstrations_kept_to_the_window_give_the_same_batches(tok):
    """demo_pairs with block_size keeps only part of long prompts and responses (so that 100k long
    records fit in memory): the batches, the validation loss's batches and the count of cut
    demonstrations must come out exactly as from the whole token lists."""
    rng = random.Random(0)
    words = "the fox found a key by the lake and asked where Anna Berg lives".split()
    records = [{"prompt": " ".join(rng.choices(words, k=rng.choice([1, 5, 20, 60]))),
                "response": " ".join(rng.choices(words, k=rng.choice([0, 3, 15, 50])))} for _ in range(64)]
    for block in (8, 16, 40):
        whole, kept = sft.demo_pairs(tok, records), sft.demo_pairs(tok, records, block)
        assert any(len(p) > len(q) for (p, _), (q, _) in zip(whole, kept))  # some were cut, so this tests it
        assert tokenizer.n_truncated(whole, block) == tokenizer.n_truncated(kept, block) > 0
        for i in range(0, 64, 16):
            for a, b in zip(sft.sft_batch(tok, whole[i:i + 16], block), sft.sft_batch(tok, kept[i:i + 16], block)):
                assert torch.equal(a, b)


def test_pretrain_and_sft_lower_validation_loss_and_are_deterministic(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        m0 = sft.main(sft.Config(stage="pretrain", out_dir=out, max_steps=40, **TINY))
        m1 = sft.main(sft.Config(stage="sft", out_dir=out, epochs=2, **TINY))
        runs.append((m0, m1, losses(out, "pretrain"), losses(out, "sft")))
    (m0, m1, pre, tune), (_, _, pre_b, tune_b) = runs
    assert m0["val_loss"] < m0["first_val_loss"] - 0.5
    assert m1["val_loss"] < m1["first_val_loss"]
    assert [r.get("loss") for r in pre] == [r.get("loss") for r in pre_b]    # same seed, same losses
    assert [r.get("loss") for r in tune] == [r.get("loss") for r in tune_b]
    _, ckpt = load_checkpoint(str(tmp_path / "a" / "sft.pt"))
    assert ckpt["stage"] == "sft" and tokenizer.Tokenizer.from_state(ckpt["tokenizer"]).vocab_size > 256
    assert os.path.exists(tmp_path / "a" / "sft_loss.png")


def test_sft_on_a_jsonl_file(tmp_path):
    out = str(tmp_path)
    sft.main(sft.Config(stage="pretrain", out_dir=out, max_steps=5, **TINY))
    path = tmp_path / "alpaca.jsonl"
    recs = [{"instruction": f"Add {i} and 1.", "input": "", "output": str(i + 1)} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    m = sft.main(sft.Config(stage="sft", out_dir=out, data=str(path), epochs=3, **TINY))
    assert m["val_loss"] < m["first_val_loss"]


@pytest.mark.usefixtures("one_thread")  # conftest.py
def test_sft_on_comparisons_learns_the_best_ranked_answers(run_dir, tmp_path, capsys):
    """A file of comparisons whose best-ranked answer is the second completion: SFT learns the
    best answers, not the others (their loss falls much less)."""
    recs = [{"prompt": f"What is {i} plus one?", "completions": ["I will not say.", str(i + 1)], "ranking": [1, 0]}
            for i in range(40)]
    recs += [{"prompt": f"What is {i} plus one?", "chosen": str(i + 1), "rejected": "I will not say."}
             for i in range(40, 48)]  # pairwise records are comparisons too
    path = tmp_path / "comparisons.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    init = str(run_dir / "pretrain.pt")
    m = sft.main(sft.Config(stage="sft", init=init, out_dir=str(tmp_path), data=str(path), epochs=4, batch_size=8,
                            lr=3e-3, warmup=2, eval_every=10, eval_gold=0, quiet=True, device="cpu"))
    assert "sft: 46 demonstrations" in capsys.readouterr().out  # 5% of 48 held out for the validation loss
    model, ckpt = load_checkpoint(str(tmp_path / "sft.pt"))
    assert ckpt["stage"] == "sft" and ckpt["metrics"]["val_loss"] == m["val_loss"] < m["first_val_loss"]
    before, tok, _ = load_language_model(init)

    def loss(net, answer):  # net's response loss of `answer(i)` to every prompt
        pairs = sft.demo_pairs(tok, [{"prompt": f"What is {i} plus one?", "response": answer(i)} for i in range(48)])
        return sft.response_loss(net, tok, pairs, 16, "cpu", contextlib.nullcontext)
    best_drop = loss(before, lambda i: str(i + 1)) - loss(model, lambda i: str(i + 1))
    other_drop = loss(before, lambda i: "I will not say.") - loss(model, lambda i: "I will not say.")
    assert best_drop > 1.0 and best_drop > other_drop + 0.5, (best_drop, other_drop)


@pytest.mark.usefixtures("one_thread")  # conftest.py
def test_pretrain_on_your_own_text(tmp_path):
    """--stage pretrain --data: the BPE learns the file's words (made-up ones that the simulated
    corpus never holds) and the base model's validation loss on the file's text falls."""
    rng = random.Random(0)
    nouns = ["zorblat", "quimfen", "drazzle", "wompik", "flindor", "snargle"]
    verbs = ["glims", "troves", "plonks", "vexes", "skirls"]
    places = ["by the murkel", "under the tarn", "in the brindle wood", "past the old sluice"]
    paragraphs = [[f"The {rng.choice(nouns)} {rng.choice(verbs)} the {rng.choice(nouns)} {rng.choice(places)}."
                   for _ in range(rng.randint(2, 5))] for _ in range(100)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join("\n".join(p) for p in paragraphs) + "\n")
    m = sft.main(sft.Config(stage="pretrain", data=str(path), out_dir=str(tmp_path), vocab_size=400, n_layer=1,
                            n_head=2, n_embd=32, block_size=32, batch_size=16, max_steps=40, lr=3e-3, warmup=5,
                            eval_every=20, quiet=True, device="cpu"))
    assert m["val_loss"] < m["first_val_loss"] - 1.0
    _, ckpt = load_checkpoint(str(tmp_path / "pretrain.pt"))
    tok = tokenizer.Tokenizer.from_state(ckpt["tokenizer"])
    assert ckpt["stage"] == "pretrain" and tok.vocab_size <= 400  # fewer where no pair is left to merge
    line = paragraphs[0][0]
    assert tok.decode(tok.encode(line)) == line
    assert all(len(tok.encode(" " + w)) == 1 for w in nouns)  # whole made-up words became tokens


TINY_FLAGS = ["--preset", "smoke", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "96",
              "--batch-size", "16", "--warmup", "5", "--eval-every", "10", "--quiet", "--max-steps", "200"]


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """Stop a pretraining run partway with SIGINT (Ctrl-C), resume it: the same weights and the
    same metrics lines as an uninterrupted run. Then the same after SIGKILL, which saves nothing:
    the run resumes from its last periodic state."""
    full, part, killed = str(tmp_path / "full"), str(tmp_path / "part"), str(tmp_path / "killed")
    cmd = [sys.executable, "sft.py", "--stage", "pretrain", *TINY_FLAGS, "--dropout", "0.1"]  # masks too
    subprocess.run(cmd + ["--out-dir", full], cwd=ROOT, check=True, capture_output=True)
    resume = os.path.join(part, "pretrain.resume.pt")
    code, out, err = start_and_signal(cmd + ["--out-dir", part], resume, signal.SIGINT, wait=0.3)
    assert code == 130, err
    assert "interrupted at step" in out and not os.path.exists(os.path.join(part, "pretrain.pt"))
    step = int(out.split("interrupted at step ")[1].split(";")[0])
    assert 0 < step < 200
    r = subprocess.run(cmd + ["--out-dir", part, "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resumed pretrain at step {step}" in r.stdout and not os.path.exists(resume)
    same_run(full, part, "pretrain.pt", "pretrain", timing=("tok_per_s",))

    code, out, _ = start_and_signal(cmd + ["--out-dir", killed], os.path.join(killed, "pretrain.resume.pt"),
                                    signal.SIGKILL)
    assert code == -signal.SIGKILL and not os.path.exists(os.path.join(killed, "pretrain.pt"))
    r = subprocess.run(cmd + ["--out-dir", killed, "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    same_run(full, killed, "pretrain.pt", "pretrain", timing=("tok_per_s",))


def test_cli_bad_input_is_one_line(tmp_path):
    cases = [(["--stage", "sft", "--init", str(tmp_path / "none.pt")], "none.pt"),
             (["--stage", "pretrain", "--lr", "0"], "--lr"),
             (["--stage", "sft", "--data", str(tmp_path / "missing.jsonl")], "missing.jsonl")]
    for args, needle in cases:
        r = subprocess.run([sys.executable, "sft.py", "--out-dir", str(tmp_path), *args], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr and "Traceback" not in r.stderr

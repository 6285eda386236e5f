"""A model leaves as a Hugging Face directory (plumbing.checkpoint.export_hf) and comes back with
--init: transformers runs the policy with our logits and greedy tokens, reads our token ids, and
scores with the reward model as reward_scores does. The transformers checks skip where it is not
installed; the round trip and the errors need only safetensors."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from gpt import GPT, GPTConfig, ScalarModel, reward_scores, save_checkpoint
from plumbing.checkpoint import export_hf, load_language_model, load_start
from plumbing.cli import UserError
from plumbing.tokenizer import GPT2_PAT_STR, SPECIALS, Tokenizer, encode_responses, left_pad, pretrain_batch, pretrain_stream
from plumbing.tokenizer import save_hf_tokenizer, train_tokenizer
from world import make_world

NO_TRANSFORMERS = "transformers is not installed: the export's files are checked against it (pip install transformers)"


def transformers_or_skip():
    return pytest.importorskip("transformers", reason=NO_TRANSFORMERS)


@pytest.fixture(scope="module")
def world():
    return make_world(0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, world):
    """A tiny policy trained for 150 steps on the corpus (sft.pt; its greedy answers are words, not
    ties between near-equal logits) and a reward model whose head has a bias (reward.pt)."""
    d = tmp_path_factory.mktemp("export")
    corpus = world.corpus(400, random.Random(0))
    tok = train_tokenizer("\n".join(corpus), 400)
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=48)
    model = GPT(cfg)
    stream = pretrain_stream(tok, corpus)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        x, y = pretrain_batch(stream, 16, cfg.block_size, step, seed=0)
        loss = model(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_checkpoint(str(d / "sft.pt"), model.eval(), stage="sft", tokenizer=tok.state())
    rm = ScalarModel(GPT(cfg))
    torch.nn.init.constant_(rm.head.bias, 0.75)
    save_checkpoint(str(d / "reward.pt"), rm.gpt, stage="reward", tokenizer=tok.state(),
                    reward_head=rm.head.state_dict(), reward_bias=0.25, reward_scale=1.5)
    return d, model, rm.eval(), tok


def chat_samples(world, n=40):
    rng = random.Random(3)
    prompts = [world.sample_task(rng).prompt for _ in range(n)]
    return prompts, [f"It is {rng.randint(0, 999)}, I think. Don't ask!" for _ in prompts]


def tensors(d):
    from safetensors.torch import load_file
    return load_file(os.path.join(d, "model.safetensors"))


# -- a policy in transformers ---------------------------------------------------------------

def test_policy_gives_our_logits_and_greedy_tokens_in_transformers(trained, world, tmp_path):
    transformers = transformers_or_skip()
    d, model, _, tok = trained
    assert export_hf(str(d / "sft.pt"), str(tmp_path / "hf")) == "sft"
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    x = torch.randint(0, tok.vocab_size, (3, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(x).logits - model(x)[0]).abs().max() < 1e-5
    # greedy answers to a left-padded batch of chat prompts: the same tokens, EOS and padding included
    prompts = chat_samples(world, 6)[0]
    idx, mask, _ = left_pad([tok.chat_prompt(p) for p in prompts], tok.pad_id)
    ours = model.generate(idx, 24, attention_mask=mask, temperature=0.0, eos_id=tok.eos_id, pad_id=tok.pad_id,
                          suppress_ids=tok.never_sampled).tokens
    theirs = hf.generate(input_ids=idx, attention_mask=mask, max_new_tokens=24, do_sample=False)
    assert theirs.shape == ours.shape and torch.equal(theirs, ours)
    assert len({tuple(r) for r in ours[:, idx.size(1):].tolist()}) > 1  # the check is not of one repeated answer


def test_tokenizer_gives_our_ids_special_tokens_included(trained, world, tmp_path):
    transformers = transformers_or_skip()
    d, _, _, tok = trained
    export_hf(str(d / "sft.pt"), str(tmp_path / "hf"))
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    prompts, answers = chat_samples(world)
    for p, a in zip(prompts, answers):
        ids = tok.chat_prompt(p) + tok.chat_response(a)
        assert hf(f"<|user|>{p}<|assistant|>{a}<|endoftext|>").input_ids == ids
        assert hf.decode(ids, skip_special_tokens=True) == p + a
    template = hf.apply_chat_template([[{"role": "user", "content": p}] for p in prompts[:4]], return_dict=True,
                                      padding=True, return_tensors="pt")
    idx, mask, _ = left_pad([tok.chat_prompt(p) for p in prompts[:4]], tok.pad_id)
    assert torch.equal(template["input_ids"], idx) and torch.equal(template["attention_mask"], mask)
    docs = world.corpus(300, random.Random(9))  # the BPE's merges: every document as tiktoken splits it
    assert [hf(doc).input_ids for doc in docs] == [tok.encode(doc) for doc in docs]


def test_gpt2_s_own_tokenizer_leaves_with_gpt2_s_pre_tokenizer(tmp_path, world):
    """A model that started from a GPT-2 directory keeps GPT-2's pre-tokenizer (digits in runs)."""
    transformers = transformers_or_skip()
    bpe = train_tokenizer("\n".join(world.corpus(300, random.Random(0))), 400)
    tokens = bpe.tokens + [b" 1", b"19", b"84", b"1984", b"12", b"123"]  # GPT-2 merges digits, and a space before
    gpt2_like = Tokenizer("gpt2", GPT2_PAT_STR, tokens, {s: len(tokens) + i for i, s in enumerate(SPECIALS.values())})
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=gpt2_like.vocab_size, n_layer=1, n_head=2, n_embd=32))
    save_checkpoint(str(tmp_path / "sft.pt"), model, stage="sft", tokenizer=gpt2_like.state())
    export_hf(str(tmp_path / "sft.pt"), str(tmp_path / "hf"))
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "In 1984 she paid 12345 coins, and 7 more."
    assert gpt2_like.encode(text) != bpe.encode(text)  # the two pre-tokenizers differ on this text
    assert hf(text).input_ids == gpt2_like.encode(text)
    assert load_language_model(str(tmp_path / "hf"))[1].state() == gpt2_like.state()


# -- the reward model, for libraries that read AutoModelForSequenceClassification -------------

def test_reward_model_scores_equal_reward_scores_on_a_padded_batch(trained, world, tmp_path):
    transformers = transformers_or_skip()
    d, _, rm, tok = trained
    assert export_hf(str(d / "reward.pt"), str(tmp_path / "rm")) == "reward"
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm")).eval()
    assert hf.config.num_labels == 1 and hf.config.pad_token_id == tok.pad_id
    assert hf.config.instructgpt["reward_bias"] == 0.25 and hf.config.instructgpt["reward_scale"] == 1.5
    prompts, answers = chat_samples(world, 8)
    answers = [a[:len(a) * (i + 1) // 8] for i, a in enumerate(answers)]  # lengths differ: rows are padded
    tokens, mask = encode_responses(tok, prompts, answers, 64)
    assert (mask == 0).any()
    with torch.no_grad():
        ours = reward_scores(rm, tokens, mask)
        theirs = hf(input_ids=tokens, attention_mask=mask).logits.squeeze(-1)
    assert (theirs - ours).abs().max() < 1e-5 and ours.std() > 0.01
    # transformers' own tokenizer, padding the batch itself, gives the same batch
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "rm"))
    batch = hf_tok([f"<|user|>{p}<|assistant|>{a}<|endoftext|>" for p, a in zip(prompts, answers)], padding=True,
                   return_tensors="pt")
    assert torch.equal(batch["input_ids"], tokens) and torch.equal(batch["attention_mask"], mask)


# -- and back: --init takes an exported directory -------------------------------------------

def test_export_init_export_gives_identical_tensors(trained, tmp_path):
    d, model, _, tok = trained
    export_hf(str(d / "sft.pt"), str(tmp_path / "a"))
    back, back_tok, stage = load_language_model(str(tmp_path / "a"))
    assert stage == "sft" and back_tok.state() == tok.state()  # chat.py treats it as a chat model again
    x = torch.randint(0, tok.vocab_size, (2, 32))
    assert torch.equal(back.eval()(x)[0], model(x)[0])
    export_hf(str(tmp_path / "a"), str(tmp_path / "b"))
    a, b = tensors(tmp_path / "a"), tensors(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # what the steps' --init does with it: the same model, ready to train
    cfg = type("Cfg", (), dict(init=str(tmp_path / "a"), out_dir=str(tmp_path), dropout=0.1))
    started, _, path = load_start(cfg, "cpu")
    assert path == cfg.init and started.config.dropout == 0.1 and started.config.vocab_size == tok.vocab_size


def test_an_exported_bpe_reads_back_as_the_same_tokenizer(tmp_path, world):
    tok = train_tokenizer("\n".join(world.corpus(60, random.Random(0))), 2000)  # runs out of pairs early
    assert tok.vocab_size < 2000 and tok.name == f"bpe{tok.vocab_size}"
    save_hf_tokenizer(tok, str(tmp_path), 64)
    from plumbing.tokenizer import gpt2_tokenizer
    assert gpt2_tokenizer(str(tmp_path)).state() == tok.state()
    merges = (tmp_path / "merges.txt").read_text().splitlines()[1:]
    assert len(merges) >= len(tok.tokens) - 256  # every merged token has at least one pair


# -- bad input: one line ---------------------------------------------------------------------

def run_export(*args):
    return subprocess.run([sys.executable, "-m", "plumbing.checkpoint", *args], cwd=ROOT, capture_output=True,
                          text=True)


def test_export_from_the_command_line_and_its_errors(trained, tmp_path):
    d, _, _, _ = trained
    r = run_export(str(d / "reward.pt"), "--export", str(tmp_path / "rm"))
    assert r.returncode == 0 and "exported reward" in r.stdout and "AutoModelForSequenceClassification" in r.stdout
    assert json.loads((tmp_path / "rm" / "config.json").read_text())["architectures"] == [
        "GPT2ForSequenceClassification"]
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for args, message in (([str(tmp_path / "missing.pt"), "--export", str(tmp_path / "o")], "missing.pt"),
                          ([str(bad), "--export", str(tmp_path / "o")], "bad.pt"),
                          ([str(d / "sft.pt"), "--export", str(tmp_path / "file" / "o")], "--export"),
                          ([str(tmp_path / "rm"), "--export", str(tmp_path / "o")], "a reward model's directory")):
        r = run_export(*args)
        assert r.returncode == 2, args
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    with pytest.raises(UserError, match="a reward model's directory; a language model is needed"):
        load_language_model(str(tmp_path / "rm"))  # sft.py --init RM_DIR, ppo.py, chat.py

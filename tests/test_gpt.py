"""gpt.py: the cached generation equals the naive one, log-probs agree, checkpoints round-trip,
a GPT-2 directory loads, and bad input is one clear error (plumbing/checkpoint.py's inspection CLI too)."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import PAD, PROMPTS, left_padded, tiny_model, write_hf_dir
import gpt
from gpt import GPT, GPTConfig, load_checkpoint, save_checkpoint, token_logprobs
from plumbing.checkpoint import load_any
from plumbing.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cached_greedy_equals_naive_with_padding_and_eos():
    model = tiny_model()
    idx, mask = left_padded(PROMPTS)
    free = model.generate(idx, 40, attention_mask=mask, temperature=0)
    # make a token that row 0 produces early on the EOS, so rows stop at different steps
    eos = int(free.tokens[0, idx.size(1) + 3])
    # 7 + 40 slots: the decode steps attend over the cache's first 32 slots, then all 47
    outs = [model.generate(idx, 40, attention_mask=mask, temperature=0, eos_id=eos, pad_id=PAD,
                           use_cache=c) for c in (True, False)]
    cached, naive = outs
    assert torch.equal(cached.tokens, naive.tokens)
    assert torch.equal(cached.response_mask, naive.response_mask)
    assert torch.allclose(cached.logprobs, naive.logprobs, atol=1e-5)
    rm = cached.response_mask
    assert rm[0].sum() <= 4 and rm.sum(1).max() > rm[0].sum()       # row 0 stopped early, others ran on
    T = idx.size(1)
    for b in range(len(PROMPTS)):
        n = int(rm[b].sum())
        assert torch.all(cached.tokens[b, T + n:] == PAD)            # a finished row emits padding
        if n < rm.size(1):
            assert cached.tokens[b, T + n - 1] == eos                # ... right after its EOS
        assert torch.all(cached.logprobs[b, n:] == 0)


def test_row_does_not_depend_on_batch():
    model = tiny_model(1)
    idx, mask = left_padded(PROMPTS)
    batch = model.generate(idx, 12, attention_mask=mask, temperature=0)
    T = idx.size(1)
    for b, p in enumerate(PROMPTS):
        alone = model.generate(torch.tensor([p]), 12, temperature=0)
        assert torch.equal(alone.tokens[0, len(p):], batch.tokens[b, T:])


def test_generate_logprobs_equal_forward_logprobs():
    model = tiny_model(2)
    idx, mask = left_padded(PROMPTS)
    g = torch.Generator().manual_seed(0)
    out = model.generate(idx, 16, attention_mask=mask, temperature=1.0, eos_id=3, generator=g)
    full_mask = torch.cat([mask, out.response_mask], dim=1)
    lp = token_logprobs(model, out.tokens, full_mask)[:, idx.size(1) - 1:]  # predictions of response tokens
    assert torch.allclose(lp * out.response_mask, out.logprobs, atol=1e-4)


def test_temperature_and_top_k_top_p_restrict_sampling():
    model = tiny_model(3)
    idx = torch.tensor([[5, 6, 7]] * 64)
    logits = model(idx)[0][0, -1]
    top2 = set(torch.topk(logits, 2).indices.tolist())
    g = torch.Generator().manual_seed(0)
    out = model.generate(idx, 1, temperature=1.0, top_k=2, generator=g)
    assert set(out.tokens[:, -1].tolist()) <= top2
    out = model.generate(idx, 1, temperature=1.0, top_p=1e-6, generator=g)  # only the argmax survives
    assert set(out.tokens[:, -1].tolist()) == {int(logits.argmax())}
    # nucleus: the smallest set whose mass reaches top_p; .5 is reached by the first token alone
    probs = torch.tensor([[0.5, 0.25, 0.25]] * 200)
    tokens, _ = gpt.sample(probs.log(), top_p=0.5, generator=g)
    assert set(tokens.tolist()) == {0}
    tokens, _ = gpt.sample(probs.log(), top_p=0.75, generator=g)
    assert set(tokens.tolist()) == {0, 1}
    # the returned log-probs are those of the restricted distribution: top-k=1 makes them 0
    out = model.generate(idx, 3, temperature=0.7, top_k=1, generator=g)
    assert torch.allclose(out.logprobs, torch.zeros_like(out.logprobs), atol=1e-6)


def test_sampling_draws_each_token_with_its_probability():
    """gpt.sample's inverse-CDF draw over 200k rows: frequencies pass a chi-square test against
    softmax(logits) (49 degrees of freedom: 85 is its 99.9% quantile), and a -inf token never comes."""
    torch.manual_seed(0)
    logits = torch.randn(1, 51) * 2
    logits[0, 7] = float("-inf")
    p = F.softmax(logits, -1)[0]
    tokens, logp = gpt.sample(logits.expand(200_000, 51), generator=torch.Generator().manual_seed(3))
    counts = torch.bincount(tokens, minlength=51).float()
    expected = p * len(tokens)
    keep = torch.arange(51) != 7
    assert counts[7] == 0
    assert (((counts - expected) ** 2 / expected)[keep].sum()) < 85
    assert torch.allclose(logp, p.log()[tokens])


def test_suppressed_tokens_are_never_sampled():
    model = tiny_model(4)
    idx = torch.tensor([[5, 6, 7]] * 32)
    g = torch.Generator().manual_seed(0)
    free = model.generate(idx, 8, temperature=2.0, generator=g)
    common = torch.bincount(free.tokens[:, 3:].flatten(), minlength=50).topk(3).indices.tolist()
    out = model.generate(idx, 8, temperature=2.0, generator=g, suppress_ids=common)
    assert not set(out.tokens[:, 3:].flatten().tolist()) & set(common)


def test_loss_falls_when_overfitting_a_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=40, n_layer=2, n_head=2, n_embd=32))
    x = torch.randint(0, 40, (4, 32))
    y = torch.roll(x, -1, 1)
    y[:, -1] = -1                                                    # ignore_index
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_ignore_index_masks_the_loss():
    model = tiny_model()
    x = torch.randint(0, 50, (2, 10))
    y = torch.randint(0, 50, (2, 10))
    y[:, :5] = -1
    logits, loss = model(x, y)
    y_other = y.clone()
    y_other[:, :5] = 7                                               # targets that must not count
    assert not torch.allclose(model(x, y_other)[1], loss)
    ref = torch.nn.functional.cross_entropy(logits[:, 5:].flatten(0, 1), y[:, 5:].flatten())
    assert torch.allclose(loss, ref)


def test_checkpoint_roundtrip_and_bad_files(tmp_path):
    model = tiny_model()
    path = tmp_path / "m.pt"
    save_checkpoint(str(path), model, stage="sft", tokenizer={"ranks": {b"ab": 300}}, metrics=[1.0])
    loaded, ckpt = load_checkpoint(str(path))
    x = torch.randint(0, 50, (2, 16))
    assert torch.equal(model(x)[0], loaded.eval()(x)[0])
    assert ckpt["stage"] == "sft" and ckpt["tokenizer"]["ranks"][b"ab"] == 300
    assert not os.path.exists(str(path) + ".tmp")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(str(trunc))
    with pytest.raises(UserError, match="trunc.pt: not a readable checkpoint"):  # the scripts' loader: one line
        load_any(str(trunc))
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(ValueError, match="not a checkpoint of this project"):
        load_checkpoint(str(other))


def test_prompt_longer_than_block_size_is_an_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="block_size"):
        model.generate(torch.zeros(1, 60, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 65, dtype=torch.long))


# -- a Hugging Face GPT-2 directory ------------------------------------------------------

def test_gpt2_directory_loads(tmp_path):
    model = tiny_model()
    write_hf_dir(model, str(tmp_path / "hf"))
    loaded = GPT.from_pretrained(str(tmp_path / "hf")).eval()
    x = torch.randint(0, 50, (2, 16))
    assert torch.allclose(model(x)[0], loaded(x)[0], atol=1e-5)


def test_gpt2_directory_with_bad_weights(tmp_path):
    model = tiny_model()
    write_hf_dir(model, str(tmp_path / "a"), drop="transformer.h.1.mlp.c_fc.weight")
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.weight is missing"):
        GPT.from_pretrained(str(tmp_path / "a"))
    write_hf_dir(model, str(tmp_path / "b"), reshape="transformer.h.0.attn.c_attn.bias")
    with pytest.raises(ValueError, match=r"c_attn\.bias has shape \(3, 3\)"):
        GPT.from_pretrained(str(tmp_path / "b"))
    with pytest.raises(ValueError, match="no config.json"):
        GPT.from_pretrained(str(tmp_path))
    with pytest.raises(UserError, match="no config.json"):  # the scripts' loader: one line
        load_any(str(tmp_path))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2}')
    with pytest.raises(ValueError, match="not a GPT-2 config .no integer vocab_size, n_head, n_embd"):
        GPT.from_pretrained(str(tmp_path / "c"))
    (tmp_path / "c" / "config.json").write_text('{"n_layer": 2,')
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        GPT.from_pretrained(str(tmp_path / "c"))


def test_logits_equal_transformers_gpt2(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=48, n_layer=3, n_head=4)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    hf.save_pretrained(str(tmp_path / "gpt2"))
    ours = GPT.from_pretrained(str(tmp_path / "gpt2")).eval()
    x = torch.randint(0, 97, (3, 40))
    with torch.no_grad():
        ref = hf(x).logits
    assert (ours(x)[0] - ref).abs().max() < 1e-4


def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_bad_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for path in (str(tmp_path / "missing.pt"), str(bad), str(tmp_path)):
        r = run_script("-m", "plumbing.checkpoint", path)
        assert r.returncode == 2
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith("error: ") and path in r.stderr

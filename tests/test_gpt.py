"""gpt.py: the cached generation equals the naive one, log-probs agree, checkpoints round-trip,
a GPT-2 directory loads, and bad input is one clear error."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

import gpt
from gpt import GPT, GPTConfig, UserError, hf_state_dict, load_checkpoint, save_checkpoint, token_logprobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAD = 0


def tiny_model(seed=0, **kw):
    """A tiny GPT with larger-than-usual random weights, so its greedy choices are clear-cut
    (with GPT-2's 0.02 init every logit is nearly equal and float noise could flip an argmax)."""
    torch.manual_seed(seed)
    config = GPTConfig(**{**dict(block_size=64, vocab_size=50, n_layer=2, n_head=2, n_embd=32), **kw})
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


def left_padded(prompts):
    T = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), T), PAD)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for b, p in enumerate(prompts):
        idx[b, T - len(p):] = torch.tensor(p)
        mask[b, T - len(p):] = 1
    return idx, mask


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [18]]


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


@pytest.mark.parametrize("seeded", [True, False], ids=["generator", "default generator"])
def test_decode_warm_up_leaves_the_generation_unchanged(monkeypatch, seeded):
    """Before recording the graph of each attended length, the CUDA-graph path runs the step twice
    and puts back what it changed (the rollout, the random generator); the whole-step graph's
    trial runs sample tokens and write them down. Run the same warm-ups on CPU, sampling with EOS
    from a generator or from the default one: nothing changes."""
    model = tiny_model(3)
    idx, mask = left_padded(PROMPTS)
    kw = dict(attention_mask=mask, temperature=1.0, eos_id=9, pad_id=PAD)

    def generator():
        torch.manual_seed(0)
        return torch.Generator().manual_seed(0) if seeded else None
    plain = model.generate(idx, 40, generator=generator(), **kw)
    real_advance, warmed_lengths = gpt.DecodeStep.advance, []

    def warm_up_then_advance(self, n):
        if self.attended(n) not in warmed_lengths:
            warmed_lengths.append(self.attended(n))
            self.warm_up(lambda: self.step(self.attended(n)))
        return real_advance(self, n)
    monkeypatch.setattr(gpt.DecodeStep, "advance", warm_up_then_advance)
    warmed = model.generate(idx, 40, generator=generator(), **kw)
    assert warmed_lengths == [32, 47]
    assert torch.equal(plain.tokens, warmed.tokens) and torch.equal(plain.logprobs, warmed.logprobs)
    assert torch.equal(plain.response_mask, warmed.response_mask)


def test_attending_over_a_bucket_equals_attending_over_the_whole_cache(monkeypatch):
    model = tiny_model(6)
    idx, mask = left_padded(PROMPTS)
    kw = dict(attention_mask=mask, temperature=1.0, generator=None)
    torch.manual_seed(1)
    bucketed = model.generate(idx, 50, **kw)
    monkeypatch.setattr(gpt.DecodeStep, "attended", lambda self, n: self.rollout.valid.size(1))
    torch.manual_seed(1)
    whole = model.generate(idx, 50, **kw)
    assert torch.equal(bucketed.tokens, whole.tokens)
    assert torch.allclose(bucketed.logprobs, whole.logprobs, atol=1e-6)


COMPILER = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                              reason="torch.compile on a CPU needs a C++ compiler")


@COMPILER
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own
def test_compiled_decode_step_equals_plain(monkeypatch):
    """The decode step compiled by torch.compile gives the plain step's tokens and log-probs
    (greedy, with padding and EOS, across two attended lengths); a second generation of the same
    shape compiles nothing new."""
    model = tiny_model(8)
    idx, mask = left_padded(PROMPTS)
    free = model.generate(idx, 40, attention_mask=mask, temperature=0)
    eos = int(free.tokens[0, idx.size(1) + 5])
    kw = dict(attention_mask=mask, temperature=0, eos_id=eos, pad_id=PAD)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    plain, compiled = (model.generate(idx, 40, compile_step=c, **kw) for c in (False, True))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # it did compile
    assert torch.equal(plain.tokens, compiled.tokens) and torch.equal(plain.response_mask, compiled.response_mask)
    assert torch.allclose(plain.logprobs, compiled.logprobs, atol=1e-4)
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    other = torch.randint(1, 50, idx.shape)
    again = model.generate(other, 40, compile_step=True, **kw)
    assert torch.equal(again.tokens, model.generate(other, 40, **kw).tokens)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


GRAPHS = [dict(cuda_graph=True), dict(cuda_graph=True, whole_step=True)]  # the two ways to record a step


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("graphs", GRAPHS, ids=["forward", "whole_step"])
def test_cuda_graph_decode_equals_eager(dtype, graphs):
    """The graph-replayed decode step gives the eager step's tokens and log-probs: greedy with
    padding and EOS, and sampled with the same generator seed, twice in a row from one generator
    (the second call must go on from where the replays left it), with suppressed tokens; then from
    a new generator with the same seed and settings (graphs that record the sampling must follow it)."""
    model = tiny_model(4).cuda().to(dtype)
    idx, mask = (t.cuda() for t in left_padded(PROMPTS))
    free = model.generate(idx, 40, attention_mask=mask, temperature=0)
    eos = int(free.tokens[0, idx.size(1) + 5])

    def run(generator, kw, g):
        return model.generate(idx, 40, attention_mask=mask, eos_id=eos, pad_id=PAD, suppress_ids=[3, 4],
                              generator=generator, **g, **kw)
    for kw in (dict(temperature=0), dict(temperature=1.0, top_p=0.9), dict(temperature=0.8, top_k=5)):
        generator = torch.Generator("cuda").manual_seed(0)
        eager = [run(generator, kw, {}) for _ in range(2)]
        generator = torch.Generator("cuda").manual_seed(0)
        graph = [run(generator, kw, graphs) for _ in range(2)]
        graph.append(run(torch.Generator("cuda").manual_seed(0), kw, graphs))
        for e, g in zip(eager + eager[:1], graph):
            assert torch.equal(e.tokens, g.tokens) and torch.equal(e.response_mask, g.response_mask)
            assert torch.allclose(e.logprobs, g.logprobs, atol=1e-3)
            assert not torch.isin(g.tokens[:, idx.size(1):], torch.tensor([3, 4], device="cuda")).any()
        assert not torch.equal(graph[0].tokens, graph[1].tokens) or kw["temperature"] == 0


@CUDA
@pytest.mark.parametrize("graphs", GRAPHS, ids=["forward", "whole_step"])
def test_kept_cuda_graphs_follow_weights_changed_in_place(graphs):
    """Outside autocast the recorded graphs serve later calls of the same shape: after an
    optimizer-like in-place update of the weights they must give what the eager path gives."""
    model = tiny_model(7).cuda()
    idx, mask = (t.cuda() for t in left_padded(PROMPTS))
    first = model.generate(idx, 40, attention_mask=mask, temperature=0, **graphs)
    kept = model._kept_decoder[1]
    assert sorted(kept.graphs) == [32, 47]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    eager = model.generate(idx, 40, attention_mask=mask, temperature=0)
    graph = model.generate(idx, 40, attention_mask=mask, temperature=0, **graphs)
    assert model._kept_decoder[1] is kept and len(kept.graphs) == 2  # no new recording
    assert not torch.equal(first.tokens, graph.tokens)                # the new weights were read
    assert torch.equal(eager.tokens, graph.tokens)
    assert torch.allclose(eager.logprobs, graph.logprobs, atol=1e-4)


@CUDA
@pytest.mark.parametrize("graphs", GRAPHS, ids=["forward", "whole_step"])
def test_cuda_graph_decode_under_autocast_equals_eager(graphs):
    """As PPO's rollouts run it: float32 weights under bfloat16 autocast; greedy, and sampled with
    suppressed tokens and EOS, from a generator and from the default one."""
    model = tiny_model(5).cuda()
    idx, mask = (t.cuda() for t in left_padded(PROMPTS))
    for kw in (dict(temperature=0), dict(temperature=1.0, suppress_ids=[3, 4], eos_id=11)):
        for seeded in (True, False):
            outs = []
            for g in ({}, graphs):
                torch.cuda.manual_seed(0)
                generator = torch.Generator("cuda").manual_seed(0) if seeded else None
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    outs.append(model.generate(idx, 40, attention_mask=mask, pad_id=PAD, generator=generator,
                                               **kw, **g))
            eager, graph = outs
            assert torch.equal(eager.tokens, graph.tokens) and torch.equal(eager.response_mask, graph.response_mask)
            assert torch.allclose(eager.logprobs, graph.logprobs, atol=1e-3)


@CUDA
def test_compiled_cuda_graph_decode_equals_eager():
    """The compiled decode step recorded in CUDA graphs, as bench.py's +compile+graph rows run it,
    against the plain eager step: greedy with EOS, and sampled with the same seed."""
    model = tiny_model(9).cuda()
    idx, mask = (t.cuda() for t in left_padded(PROMPTS))
    for graphs in GRAPHS:
        for kw in (dict(temperature=0, eos_id=11), dict(temperature=1.0)):
            eager, fast = (model.generate(idx, 40, attention_mask=mask, pad_id=PAD, compile_step=bool(g),
                                          generator=torch.Generator("cuda").manual_seed(0), **g, **kw)
                           for g in ({}, graphs))
            assert torch.equal(eager.tokens, fast.tokens) and torch.equal(eager.response_mask, fast.response_mask)
            assert torch.allclose(eager.logprobs, fast.logprobs, atol=1e-3)


def test_whole_step_without_a_graph_is_an_error():
    with pytest.raises(UserError, match="cuda_graph"):
        tiny_model().generate(torch.tensor([[5, 6]]), 4, whole_step=True)
    with pytest.raises(UserError, match="use_cache"):
        tiny_model().generate(torch.tensor([[5, 6]]), 4, whole_step=True, use_cache=False)


def test_cuda_graph_without_cuda_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    with pytest.raises(UserError, match="CUDA"):
        tiny_model().generate(torch.tensor([[5, 6]]), 4, cuda_graph=True)


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
    with pytest.raises(UserError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(str(trunc))
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(UserError, match="not a checkpoint of this project"):
        load_checkpoint(str(other))


def test_resumed_stage_counts_the_seconds_of_both_runs(tmp_path):
    """A stage interrupted after 100 s and resumed reports 100 s plus the resumed run's time."""
    cfg = GPTConfig()
    log = gpt.MetricsLog(str(tmp_path), "stage", quiet=True)
    first = gpt.Resume(str(tmp_path), "stage", cfg, log, t_start=time.time() - 100)
    first.save(step=3)
    second = gpt.Resume(str(tmp_path), "stage", cfg, log)
    assert second.load("cpu")["step"] == 3
    assert 100 <= second.seconds() < 110
    assert gpt.Resume(str(tmp_path), "other", cfg, log).seconds() < 10  # a fresh stage starts at 0


def test_a_stage_run_again_replaces_its_metrics_lines(tmp_path):
    """Run from the start, a stage's first line replaces its earlier run's lines (the plots then
    show one run); other stages' lines stay, and a resumed stage keeps its own."""
    def stages():
        return [(r["stage"], r["step"]) for r in map(json.loads, open(tmp_path / "metrics.jsonl"))]

    first = gpt.MetricsLog(str(tmp_path), "sft", quiet=True)
    first.log(0, loss=2.0)
    first.log(1, loss=1.0)
    gpt.MetricsLog(str(tmp_path), "reward", quiet=True).log(0, loss=0.7)
    again = gpt.MetricsLog(str(tmp_path), "sft", quiet=True)
    assert stages() == [("sft", 0), ("sft", 1), ("reward", 0)]  # nothing dropped before it logs
    again.log(0, loss=3.0)
    again.log(1, loss=2.5)
    assert stages() == [("reward", 0), ("sft", 0), ("sft", 1)]
    gpt.MetricsLog(str(tmp_path), "sft", quiet=True, resume=True).log(2, loss=2.0)
    assert stages() == [("reward", 0), ("sft", 0), ("sft", 1), ("sft", 2)]


def test_resume_keeps_its_metrics_lines_when_another_stage_rewrote_the_file(tmp_path):
    """ppo interrupted, ppo_ptx run again from the start (rewriting metrics.jsonl), then ppo
    resumed: ppo's lines up to its save stay, those after it go, ppo_ptx's new lines stay."""
    def stages():
        return [(r["stage"], r["step"]) for r in map(json.loads, open(tmp_path / "metrics.jsonl"))]

    cfg = GPTConfig()
    gpt.MetricsLog(str(tmp_path), "ppo_ptx", quiet=True).log(0, kl=0.5)  # an earlier ppo_ptx run
    log = gpt.MetricsLog(str(tmp_path), "ppo", quiet=True)
    log.log(0, kl=0.0)
    gpt.Resume(str(tmp_path), "ppo", cfg, log).save(step=1)
    log.log(1, kl=0.1)                                                  # after the save: dropped on resume
    gpt.MetricsLog(str(tmp_path), "ppo_ptx", quiet=True).log(0, kl=0.2)  # rewrites the file
    resumed = gpt.Resume(str(tmp_path), "ppo", cfg, gpt.MetricsLog(str(tmp_path), "ppo", quiet=True, resume=True))
    assert resumed.load("cpu")["step"] == 1
    assert sorted(stages()) == [("ppo", 0), ("ppo_ptx", 0)]


def test_prompt_longer_than_block_size_is_an_error():
    model = tiny_model()
    with pytest.raises(UserError, match="block_size"):
        model.generate(torch.zeros(1, 60, dtype=torch.long), 10)
    with pytest.raises(UserError, match="block_size"):
        model(torch.zeros(1, 65, dtype=torch.long))


# -- a Hugging Face GPT-2 directory ------------------------------------------------------

def write_hf_dir(model, path, drop=None, reshape=None):
    """Write `model` as a Hugging Face GPT-2 directory without transformers, so the loader is
    tested where transformers is not installed."""
    from safetensors.torch import save_file
    c = model.config
    os.makedirs(path, exist_ok=True)
    json.dump(dict(model_type="gpt2", vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                   n_layer=c.n_layer, n_head=c.n_head, layer_norm_epsilon=1e-5), open(f"{path}/config.json", "w"))
    sd = hf_state_dict(model)
    if drop:
        del sd[drop]
    if reshape:
        sd[reshape] = torch.zeros(3, 3)
    save_file(sd, f"{path}/model.safetensors")


def test_gpt2_directory_loads(tmp_path):
    model = tiny_model()
    write_hf_dir(model, str(tmp_path / "hf"))
    loaded = GPT.from_pretrained(str(tmp_path / "hf")).eval()
    x = torch.randint(0, 50, (2, 16))
    assert torch.allclose(model(x)[0], loaded(x)[0], atol=1e-5)


def test_gpt2_directory_with_bad_weights(tmp_path):
    model = tiny_model()
    write_hf_dir(model, str(tmp_path / "a"), drop="transformer.h.1.mlp.c_fc.weight")
    with pytest.raises(UserError, match=r"h\.1\.mlp\.c_fc\.weight is missing"):
        GPT.from_pretrained(str(tmp_path / "a"))
    write_hf_dir(model, str(tmp_path / "b"), reshape="transformer.h.0.attn.c_attn.bias")
    with pytest.raises(UserError, match=r"c_attn\.bias has shape \(3, 3\)"):
        GPT.from_pretrained(str(tmp_path / "b"))
    with pytest.raises(UserError, match="no config.json"):
        GPT.from_pretrained(str(tmp_path))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2}')
    with pytest.raises(UserError, match="not a GPT-2 config .no integer vocab_size, n_head, n_embd"):
        GPT.from_pretrained(str(tmp_path / "c"))
    (tmp_path / "c" / "config.json").write_text('{"n_layer": 2,')
    with pytest.raises(UserError, match="config.json: not valid JSON"):
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
        r = run_script("gpt.py", path)
        assert r.returncode == 2
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith("error: ") and path in r.stderr

"""plumbing/engine.py: the fast rollout engine gives gpt.generate's tokens, response masks and log-probs
(greedy and sampled from one generator), whatever it attends over, compiled or not, and on CUDA
with the decode step recorded in graphs."""

import shutil

import pytest
import torch
from conftest import PAD, PROMPTS, left_padded, tiny_model
from plumbing import engine
from plumbing.cli import UserError

SAMPLINGS = {"greedy": dict(temperature=0), "sampled": dict(temperature=1.0),
             "top-k": dict(temperature=0.8, top_k=5), "top-p": dict(temperature=1.2, top_p=0.9)}


@pytest.mark.parametrize("sampling", SAMPLINGS.values(), ids=SAMPLINGS.keys())
def test_engine_equals_the_readable_generate(sampling):
    """Token for token, with left padding, per-row EOS and suppressed tokens, each sampling from a
    generator seeded alike: the engine draws the same uniforms as gpt.py's sample."""
    model = tiny_model(11)
    idx, mask = left_padded(PROMPTS)
    free = model.generate(idx, 40, attention_mask=mask, temperature=0)
    eos = int(free.tokens[0, idx.size(1) + 4])                       # rows stop at different steps
    kw = dict(attention_mask=mask, eos_id=eos, pad_id=PAD, suppress_ids=[3, 4], **sampling)
    readable = model.generate(idx, 40, generator=torch.Generator().manual_seed(0), **kw)
    fast = engine.generate(model, idx, 40, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(readable.tokens, fast.tokens)
    assert torch.equal(readable.response_mask, fast.response_mask)
    assert torch.allclose(readable.logprobs, fast.logprobs, atol=1e-5)
    rm = fast.response_mask
    assert rm.sum(1).min() < rm.sum(1).max() or sampling["temperature"] > 0  # greedy rows stop apart
    assert not torch.isin(fast.tokens[:, idx.size(1):], torch.tensor([3, 4])).any()


@pytest.mark.parametrize("sampling", SAMPLINGS.values(), ids=SAMPLINGS.keys())
def test_dropping_finished_rows_changes_no_token_and_no_draw(sampling, monkeypatch):
    """Rows that reached EOS leave the batch every engine.SHRINK_EVERY steps (DecodeStep.keep); the
    rows that stay draw their share of the whole batch's uniforms, so the tokens, log-probs and the
    generator's state afterwards are gpt.py's."""
    model = tiny_model(14)
    idx, mask = left_padded([p[:1 + k % 4] for k in range(12) for p in PROMPTS][:24])
    free = model.generate(idx, 40, attention_mask=mask, temperature=0)
    eos = int(free.tokens[:, idx.size(1):].flatten().mode().values)  # a common token: rows end at many steps
    kept = []
    real_keep = engine.DecodeStep.keep
    monkeypatch.setattr(engine.DecodeStep, "keep", lambda self, rows: (kept.append(len(rows)), real_keep(self, rows)))
    kw = dict(attention_mask=mask, eos_id=eos, pad_id=PAD, **sampling)
    g_readable, g_fast = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    readable = model.generate(idx, 40, generator=g_readable, **kw)
    fast = engine.generate(model, idx, 40, generator=g_fast, **kw)
    assert kept and kept[-1] < len(idx)                              # rows did leave the batch
    assert torch.equal(readable.tokens, fast.tokens)
    assert torch.equal(readable.response_mask, fast.response_mask)
    assert torch.allclose(readable.logprobs, fast.logprobs, atol=1e-5)
    assert torch.equal(g_readable.get_state(), g_fast.get_state())


@pytest.mark.parametrize("sampling", [SAMPLINGS["greedy"], SAMPLINGS["sampled"]], ids=["greedy", "sampled"])
def test_a_row_without_prompt_tokens_starts_at_position_0_in_every_path(sampling):
    """A row that is all padding: its first new token sits at position 0 in the cached, the naive
    and the fast path alike (positions count real tokens only)."""
    model = tiny_model(13)
    with torch.no_grad():
        model.transformer.wpe.weight.normal_(0, 1.0)                 # positions that matter
    idx, mask = left_padded(PROMPTS + [[]])
    outs = [generate(idx, 12, attention_mask=mask, pad_id=PAD, generator=torch.Generator().manual_seed(0), **sampling)
            for generate in (model.generate, lambda *a, **k: model.generate(*a, use_cache=False, **k),
                             lambda *a, **k: engine.generate(model, *a, **k))]
    for out in outs[1:]:
        assert torch.equal(outs[0].tokens, out.tokens)
        assert torch.allclose(outs[0].logprobs, out.logprobs, atol=1e-5)


def test_engine_equals_the_naive_path_at_every_length():
    """No EOS: every row runs 57 steps, so the engine attends over 32 then 64 slots of its cache."""
    model = tiny_model(12)
    idx, mask = left_padded(PROMPTS)
    naive = model.generate(idx, 57, attention_mask=mask, temperature=0, use_cache=False)
    fast = engine.generate(model, idx, 57, attention_mask=mask, temperature=0)
    assert torch.equal(naive.tokens, fast.tokens)
    assert torch.allclose(naive.logprobs, fast.logprobs, atol=1e-5)


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
    plain = engine.generate(model, idx, 40, generator=generator(), **kw)
    real_advance, warmed_lengths = engine.DecodeStep.advance, []

    def warm_up_then_advance(self, n):
        if self.attended(n) not in warmed_lengths:
            warmed_lengths.append(self.attended(n))
            self.warm_up(lambda: self.step(self.attended(n)))
        return real_advance(self, n)
    monkeypatch.setattr(engine.DecodeStep, "advance", warm_up_then_advance)
    warmed = engine.generate(model, idx, 40, generator=generator(), **kw)
    assert warmed_lengths == [32, 47]
    assert torch.equal(plain.tokens, warmed.tokens) and torch.equal(plain.logprobs, warmed.logprobs)
    assert torch.equal(plain.response_mask, warmed.response_mask)


def test_attending_over_a_bucket_equals_attending_over_the_whole_cache(monkeypatch):
    model = tiny_model(6)
    idx, mask = left_padded(PROMPTS)
    kw = dict(attention_mask=mask, temperature=1.0, generator=None)
    torch.manual_seed(1)
    bucketed = engine.generate(model, idx, 50, **kw)
    monkeypatch.setattr(engine.DecodeStep, "attended", lambda self, n: self.rollout.valid.size(1))
    torch.manual_seed(1)
    whole = engine.generate(model, idx, 50, **kw)
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
    free = engine.generate(model, idx, 40, attention_mask=mask, temperature=0)
    eos = int(free.tokens[0, idx.size(1) + 5])
    kw = dict(attention_mask=mask, temperature=0, eos_id=eos, pad_id=PAD)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    plain, compiled = (engine.generate(model, idx, 40, compile_step=c, **kw) for c in (False, True))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # it did compile
    assert torch.equal(plain.tokens, compiled.tokens) and torch.equal(plain.response_mask, compiled.response_mask)
    assert torch.allclose(plain.logprobs, compiled.logprobs, atol=1e-4)
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    other = torch.randint(1, 50, idx.shape)
    again = engine.generate(model, other, 40, compile_step=True, **kw)
    assert torch.equal(again.tokens, engine.generate(model, other, 40, **kw).tokens)


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
    free = engine.generate(model, idx, 40, attention_mask=mask, temperature=0)
    eos = int(free.tokens[0, idx.size(1) + 5])

    def run(generator, kw, g):
        return engine.generate(model, idx, 40, attention_mask=mask, eos_id=eos, pad_id=PAD, suppress_ids=[3, 4],
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
    first = engine.generate(model, idx, 40, attention_mask=mask, temperature=0, **graphs)
    kept = model._kept_decoder[1]
    assert sorted(kept.graphs) == [32, 47]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    eager = engine.generate(model, idx, 40, attention_mask=mask, temperature=0)
    graph = engine.generate(model, idx, 40, attention_mask=mask, temperature=0, **graphs)
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
                    outs.append(engine.generate(model, idx, 40, attention_mask=mask, pad_id=PAD, generator=generator,
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
            eager, fast = (engine.generate(model, idx, 40, attention_mask=mask, pad_id=PAD, compile_step=bool(g),
                                          generator=torch.Generator("cuda").manual_seed(0), **g, **kw)
                           for g in ({}, graphs))
            assert torch.equal(eager.tokens, fast.tokens) and torch.equal(eager.response_mask, fast.response_mask)
            assert torch.allclose(eager.logprobs, fast.logprobs, atol=1e-3)


def test_whole_step_without_a_graph_is_an_error():
    with pytest.raises(UserError, match="cuda_graph"):
        engine.generate(tiny_model(), torch.tensor([[5, 6]]), 4, whole_step=True)


def test_cuda_graph_without_cuda_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    with pytest.raises(UserError, match="CUDA"):
        engine.generate(tiny_model(), torch.tensor([[5, 6]]), 4, cuda_graph=True)

"""
bench.py: how fast are generation and training? Ratios measured in one run, never absolute
times in tests.

RLHF spends most of its time generating rollouts (OpenRLHF reports about 80%), so this compares
one model's new tokens per second along these paths, on the same weights and the same prompts:
  naive              recompute the whole sequence for every new token (gpt.py, use_cache=False)
  kv-cache           prefill once, then one token per step over a preallocated cache (plumbing/engine.py,
                     as PPO's rollouts run it)
  kv-cache+graph     the same, each decode step's forward pass replayed as a CUDA graph (CUDA only)
  kv-cache+step-graph  the whole decode step in the graph: forward pass, sampling and bookkeeping
                     (engine.generate's whole_step; CUDA only)
  kv-cache+compile   (--compile-decode) the decode step compiled by torch.compile; +graph, +step-graph:
                     and replayed as CUDA graphs (CUDA only). The first call's compiling is not timed
  kv-cache (gpt.py)  the cached computation as the readable GPT.generate writes it
  transformers-*     Hugging Face GPT2LMHeadModel.generate with the same weights (when installed),
                     with its dynamic and its static cache
  bandwidth bound    (CUDA) reading every weight and the live KV cache once per step at the
                     card's peak memory bandwidth: no decoder of this model can beat it
--train adds training tokens/s (forward, backward, AdamW step) and, on CUDA, MFU: model FLOPs
per second over the card's dense bf16 peak (plumbing/loop.py: flops_per_token, GPU_PEAKS), for this
project's GPT and for transformers' GPT-2 on the same shape.

    python tools/bench.py                        # CPU: batch 1 and 16, 64-token prompts, 128 new tokens
    python tools/bench.py --batch 1 16 64 --json
    python tools/bench.py --batch 16 --sample        # sampled at temperature 1, as rollouts are
    python tools/bench.py --init out/cpu/sft.pt  # a trained checkpoint instead of random weights
    python tools/bench.py --device cuda --shape gpt2 --dtype bfloat16 --batch 1 64 256 --train --compile

Greedy decoding (or --sample), every row generates exactly --new-tokens (no EOS), so all paths do
the same work; the table also says whether each path produced the same tokens as the cache.
"""

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's files

from gpt import GPT, GPTConfig  # noqa: E402
from plumbing import engine  # noqa: E402
from plumbing.checkpoint import hf_state_dict, load_any  # noqa: E402
from plumbing.cli import UserError, arg, check_positive, parse_config, run_cli  # noqa: E402
from plumbing.loop import configure_optimizer, flops_per_token, gpu_peaks, setup  # noqa: E402

SHAPES = {  # --shape: the random model's size
    "tiny": dict(n_layer=4, n_head=4, n_embd=256, vocab_size=2048),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257),  # GPT-2 small, 124M parameters
}


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def to_transformers(model):
    """The same weights in transformers' GPT2LMHeadModel, or None where it is not installed."""
    try:
        import transformers
    except ImportError:
        return None
    c = model.config
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None))
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    assert not unexpected and all(k == "lm_head.weight" or k.endswith("attn.bias") for k in missing), missing
    hf.tie_weights()
    return hf.to(next(model.parameters()).device, next(model.parameters()).dtype).eval()


def bandwidth_bound(model, batch, prompt_len, new_tokens, bytes_per_s):
    """New tokens/s if every decode step only read the weights and the live KV cache once at peak
    bandwidth: step i reads all weights plus keys and values of prompt_len + i tokens per row."""
    c = model.config
    size = next(model.parameters()).element_size()
    weights = model.num_params() * size
    kv_per_token = 2 * c.n_layer * c.n_embd * size                  # a key and a value per layer
    seconds = sum(weights + batch * (prompt_len + i) * kv_per_token for i in range(new_tokens)) / bytes_per_s
    return batch * new_tokens / seconds


# --skip: every path but kv-cache, the base of the ratios
SKIPPABLE = ("kv-cache (gpt.py)", "kv-cache+graph", "kv-cache+step-graph", "kv-cache+compile",
             "kv-cache+compile+graph", "kv-cache+compile+step-graph", "naive", "transformers-dynamic",
             "transformers-static")


def bench_generation(model, hf, batch, prompt_len, new_tokens, device, repeats, naive_max_batch, compiled=False,
                     skip=(), sample=False):
    """One row per path, yielded as soon as it is measured: new tokens/s, the first (warm-up)
    call's seconds, and whether the tokens match the cached path's. skip: paths left out. sample:
    at temperature 1, every call of this project's paths from a generator seeded alike (so their
    tokens still match), transformers' with its own draws (same_tokens None)."""
    g = torch.Generator().manual_seed(batch)
    idx = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=g).to(device)
    temperature = 1.0 if sample else 0

    def draws():  # a fresh generator per call: every path of ours samples the same tokens
        return torch.Generator(device=device).manual_seed(0) if sample else None

    def cached(**kw):  # engine.generate with these arguments
        return lambda: engine.generate(model, idx, new_tokens, temperature=temperature, generator=draws(), **kw).tokens
    paths = {"kv-cache": cached(),
             "kv-cache (gpt.py)": lambda: model.generate(idx, new_tokens, temperature=temperature,
                                                         generator=draws()).tokens}
    if device.type == "cuda":
        paths["kv-cache+graph"] = cached(cuda_graph=True)
        paths["kv-cache+step-graph"] = cached(cuda_graph=True, whole_step=True)
    if compiled:
        paths["kv-cache+compile"] = cached(compile_step=True)
        if device.type == "cuda":
            paths["kv-cache+compile+graph"] = cached(cuda_graph=True, compile_step=True)
            paths["kv-cache+compile+step-graph"] = cached(cuda_graph=True, whole_step=True, compile_step=True)
    if batch <= naive_max_batch:
        paths["naive"] = lambda: model.generate(idx, new_tokens, temperature=temperature, use_cache=False,
                                                generator=draws()).tokens
    if hf is not None:
        for cache in ("dynamic", "static"):
            def run(cache=cache):
                sampling = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if sample else dict(do_sample=False)
                return hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=new_tokens,
                                   min_new_tokens=new_tokens, pad_token_id=0, **sampling,
                                   cache_implementation=None if cache == "dynamic" else "static")
            paths[f"transformers-{cache}"] = run
    reference, base = None, None
    for name, fn in paths.items():
        if name in skip:
            continue
        try:
            _, first = timed(fn, device)  # warm-up: allocations, kernels, graphs, transformers' compile
            best = float("inf")
            for _ in range(repeats):
                tokens, seconds = timed(fn, device)
                best = min(best, seconds)
        except Exception as e:  # an optional path that this transformers version cannot run
            if name == "kv-cache":  # not optional: every ratio is to it
                raise
            print(f"  skipped {name}: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
            continue
        reference = tokens if reference is None else reference
        tok_s = batch * new_tokens / best
        base = base or tok_s  # kv-cache, the first path
        yield dict(path=name, batch=batch, prompt_len=prompt_len, new_tokens=new_tokens, seconds=round(best, 4),
                   first_call_s=round(first, 3), tokens_per_s=round(tok_s, 1), vs_kv_cache=round(tok_s / base, 3),
                   same_tokens=None if sample and name.startswith("transformers") else
                   bool(torch.equal(tokens.cpu(), reference.cpu())))
    if device.type == "cuda":
        bound = bandwidth_bound(model, batch, prompt_len, new_tokens, gpu_peaks(device)[1])
        yield dict(path="bandwidth bound", batch=batch, prompt_len=prompt_len, new_tokens=new_tokens,
                   tokens_per_s=round(bound, 1), vs_kv_cache=round(bound / base, 3))


def bench_training(config, batch, seq_len, steps, device, compile_model, with_hf):
    """Training tokens/s (and MFU on CUDA) of full steps: forward, backward, gradient clip, fused
    AdamW; float32 weights under bf16 autocast on CUDA, as sft.py trains. Rows for this project's
    GPT and, where installed, transformers' GPT-2 of the same shape."""
    config = replace(config, block_size=max(config.block_size, seq_len), dropout=0.0)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (batch, seq_len + 1), generator=g).to(device)
    torch.manual_seed(0)
    ours = GPT(config).to(device)
    models = {"train: this GPT" + (" (compiled)" if compile_model else ""): ours}
    if with_hf:
        hf = to_transformers(ours)
        if hf is not None:
            models["train: transformers GPT-2 (eager)"] = hf.train()
    rows = []
    for name, model in models.items():
        is_hf = not isinstance(model, GPT)
        opt = configure_optimizer(model, 1e-4, device_type=device.type)
        step_model = torch.compile(model) if compile_model and not is_hf else model

        def step():
            with autocast():
                if is_hf:
                    logits = step_model(input_ids=x[:, :-1]).logits
                    loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
                else:
                    loss = step_model(x[:, :-1], x[:, 1:])[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        try:
            for _ in range(3):  # warm-up: compilation, allocator, cuBLAS
                step()
            _, seconds = timed(lambda: [step() for _ in range(steps)], device)
        except (RuntimeError, torch.OutOfMemoryError) as e:  # e.g. 124M at 16 x 1024 on a small card
            print(f"  skipped {name}: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
            continue
        tok_s = batch * seq_len * steps / seconds
        row = dict(path=name, batch=batch, seq_len=seq_len, params_M=round(ours.num_params() / 1e6, 2),
                   tokens_per_s=round(tok_s, 1))
        if device.type == "cuda":
            row["mfu"] = round(flops_per_token(config, seq_len) * tok_s / gpu_peaks(device)[0], 4)
        rows.append(row)
    return rows


@dataclass
class Args:
    init: str = arg(None, "checkpoint (.pt) or Hugging Face GPT-2 directory (default: random weights)")
    shape: str = arg("tiny", "random model: tiny (3.7M) or gpt2 (124M)", choices=list(SHAPES))
    n_layer: int = arg(None, "random model: layers (default: the shape's)", type=int)
    n_head: int = arg(None, "random model: heads (default: the shape's)", type=int)
    n_embd: int = arg(None, "random model: width (default: the shape's)", type=int)
    vocab_size: int = arg(None, "random model: vocabulary (default: the shape's)", type=int)
    batch: list = arg([1, 16], "batch sizes to measure", type=int, nargs="+")
    prompt_len: int = arg(64, "prompt tokens per row")
    new_tokens: int = arg(128, "tokens generated per row")
    naive_max_batch: int = arg(16, "skip the (slow) naive path above this batch")
    repeats: int = arg(2, "timed runs per case; the best is kept")
    device: str = arg("cpu", "cpu or cuda")
    dtype: str = arg("float32", "weights and cache", choices=["float32", "bfloat16"])
    transformers: bool = arg(True, "compare with transformers' GPT-2 where it is installed (--no-transformers: skip)")
    train: bool = arg(False, "also measure training tokens/s (and MFU on CUDA)")
    train_batch: int = arg(16, "--train: sequences per step")
    train_seq: int = arg(1024, "--train: tokens per sequence")
    train_steps: int = arg(10, "--train: timed steps (after 3 warm-up steps)")
    compile: bool = arg(False, "--train: torch.compile this project's GPT")
    compile_decode: bool = arg(False, "add the decode step compiled by torch.compile (kv-cache+compile rows)")
    sample: bool = arg(False, "sample at temperature 1 (as RLHF's rollouts do) instead of greedy decoding")
    skip: list = arg([], f"paths to leave out, to save time: {', '.join(SKIPPABLE)}", nargs="+", choices=SKIPPABLE,
                     metavar="PATH")
    json: bool = arg(False, "print one JSON object per line instead of a table")


def main():
    args = parse_config(Args, description=__doc__)
    check_positive(args, ("prompt_len", "new_tokens", "repeats", "train_batch", "train_seq", "train_steps"))
    if min(args.batch) <= 0:
        raise UserError("--batch sizes must be positive")
    device, _ = setup(args.device, seed=0)  # seeds; TF32 on CUDA, no denormals on the CPU
    if args.init:
        model, _ = load_any(args.init)
    else:
        shape = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in SHAPES[args.shape].items()}
        for k, v in shape.items():
            if v <= 0:
                raise UserError(f"--{k.replace('_', '-')} must be positive, got {v}")
        if shape["n_embd"] % shape["n_head"]:
            raise UserError(f"--n-embd {shape['n_embd']} must be a multiple of --n-head {shape['n_head']}")
        model = GPT(GPTConfig(block_size=args.prompt_len + args.new_tokens, **shape))
    if args.prompt_len + args.new_tokens > model.config.block_size:
        raise UserError(f"--prompt-len + --new-tokens = {args.prompt_len + args.new_tokens} exceeds the "
                        f"model's block_size {model.config.block_size}")
    dtype = getattr(torch, args.dtype)
    model = model.to(device, dtype).eval()
    hf = to_transformers(model) if args.transformers else None
    info = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
                params_M=round(model.num_params() / 1e6, 2), dtype=args.dtype, torch=torch.__version__,
                transformers=hf is not None)
    print(json.dumps(info) if args.json else
          f"model {info['params_M']}M params, {args.dtype}, on {info['device']}, torch {torch.__version__}; "
          f"transformers: {'installed' if hf is not None else 'not installed'}")
    if args.train:  # first: a long generation case (transformers' compile) cannot keep it from printing
        for r in bench_training(model.config, args.train_batch, args.train_seq, args.train_steps, device,
                                args.compile, args.transformers):
            print(json.dumps(r) if args.json else
                  f"{r['path']:34s} | batch {r['batch']} x {r['seq_len']} | {r['tokens_per_s']:10.1f} tok/s"
                  + (f" | MFU {r['mfu']:.1%}" if "mfu" in r else ""), flush=True)
    if not args.json:
        print(f"{'path':27s} | {'batch':>5s} | {'new tok/s':>10s} | {'x kv-cache':>10s} | same tokens | first call s")
    for batch in args.batch:
        for r in bench_generation(model, hf, batch, args.prompt_len, args.new_tokens, device,
                                  args.repeats, args.naive_max_batch, args.compile_decode, args.skip, args.sample):
            print(json.dumps(r) if args.json else
                  f"{r['path']:27s} | {r['batch']:5d} | {r['tokens_per_s']:10.1f} | {r['vs_kv_cache']:10.3f} | "
                  f"{str(r.get('same_tokens', '')):11s} | {r.get('first_call_s', '')}", flush=True)
            if r["path"] == "naive" and not args.json:
                print(f"{'':27s}   kv-cache is {1 / r['vs_kv_cache']:.1f}x faster than naive at batch {batch}")


if __name__ == "__main__":
    run_cli(main)

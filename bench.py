"""
bench.py: how fast is generation? Ratios measured in one run, never absolute times in tests.

RLHF spends most of its time generating rollouts (OpenRLHF reports about 80%), so this compares
one model's new tokens per second along three paths, on the same weights and the same prompts:
  naive         recompute the whole sequence for every new token (gpt.py, use_cache=False)
  kv-cache      prefill once, then one token per step over a preallocated cache (gpt.py)
  transformers  Hugging Face GPT2LMHeadModel.generate with the same weights (when installed)

    python bench.py                        # CPU: batch 1 and 16, 64-token prompts, 128 new tokens
    python bench.py --batch 1 16 64 --json
    python bench.py --init out/cpu/sft.pt  # a trained checkpoint instead of random weights

Greedy decoding, every row generates exactly --new-tokens (no EOS), so all paths do the same work;
the table also says whether each path produced the same tokens as the cache.
"""

import argparse
import json
import time

import torch

from gpt import GPT, GPTConfig, UserError, hf_state_dict, load_any, run_cli


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


def bench_generation(model, hf, batch, prompt_len, new_tokens, device, repeats, naive_max_batch):
    """One row of the table per path: new tokens/s and whether the tokens match the cached path."""
    g = torch.Generator().manual_seed(batch)
    idx = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=g).to(device)
    paths = {"kv-cache": lambda: model.generate(idx, new_tokens, temperature=0).tokens}
    if batch <= naive_max_batch:
        paths["naive"] = lambda: model.generate(idx, new_tokens, temperature=0, use_cache=False).tokens
    if hf is not None:
        for cache in ("dynamic", "static"):
            def run(cache=cache):
                return hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=new_tokens,
                                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                                   cache_implementation=None if cache == "dynamic" else "static")
            paths[f"transformers-{cache}"] = run
    rows, reference = [], None
    for name, fn in paths.items():
        try:
            fn()  # warm-up (allocations, kernels, static cache set-up)
            best = float("inf")
            for _ in range(repeats):
                tokens, seconds = timed(fn, device)
                best = min(best, seconds)
        except Exception as e:  # an optional path that this transformers version cannot run
            print(f"  skipped {name}: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
            continue
        reference = tokens if reference is None else reference
        rows.append(dict(path=name, batch=batch, prompt_len=prompt_len, new_tokens=new_tokens,
                         seconds=round(best, 4), tokens_per_s=round(batch * new_tokens / best, 1),
                         same_tokens=bool(torch.equal(tokens.cpu(), reference.cpu()))))
    base = rows[0]["tokens_per_s"]  # kv-cache
    for r in rows:
        r["vs_kv_cache"] = round(r["tokens_per_s"] / base, 3)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", help="checkpoint (.pt) or Hugging Face GPT-2 directory; default: random weights")
    p.add_argument("--n-layer", type=int, default=4, help="random model: layers")
    p.add_argument("--n-head", type=int, default=4, help="random model: heads")
    p.add_argument("--n-embd", type=int, default=256, help="random model: width")
    p.add_argument("--vocab-size", type=int, default=2048, help="random model: vocabulary")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="batch sizes to measure")
    p.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per row")
    p.add_argument("--new-tokens", type=int, default=128, help="tokens generated per row")
    p.add_argument("--naive-max-batch", type=int, default=16, help="skip the (slow) naive path above this batch")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per case; the best is kept")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights and cache")
    p.add_argument("--no-transformers", action="store_true", help="skip the transformers comparison")
    p.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")
    args = p.parse_args()
    for name in ("prompt_len", "new_tokens", "repeats"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive")
    if min(args.batch) <= 0:
        raise UserError("--batch sizes must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device here")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    if args.init:
        model, _ = load_any(args.init)
    else:
        block = args.prompt_len + args.new_tokens
        model = GPT(GPTConfig(block_size=block, vocab_size=args.vocab_size, n_layer=args.n_layer,
                              n_head=args.n_head, n_embd=args.n_embd))
    if args.prompt_len + args.new_tokens > model.config.block_size:
        raise UserError(f"--prompt-len + --new-tokens = {args.prompt_len + args.new_tokens} exceeds the "
                        f"model's block_size {model.config.block_size}")
    dtype = getattr(torch, args.dtype)
    model = model.to(device, dtype).eval()
    hf = None if args.no_transformers else to_transformers(model)
    info = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
                params_M=round(model.num_params() / 1e6, 2), dtype=args.dtype,
                transformers=hf is not None)
    print(json.dumps(info) if args.json else
          f"model {info['params_M']}M params, {args.dtype}, on {info['device']}; transformers: "
          f"{'installed' if hf is not None else 'not installed'}")
    if not args.json:
        print(f"{'path':22s} | {'batch':>5s} | {'new tok/s':>10s} | {'x kv-cache':>10s} | same tokens")
    for batch in args.batch:
        for r in bench_generation(model, hf, batch, args.prompt_len, args.new_tokens, device,
                                  args.repeats, args.naive_max_batch):
            print(json.dumps(r) if args.json else
                  f"{r['path']:22s} | {r['batch']:5d} | {r['tokens_per_s']:10.1f} | {r['vs_kv_cache']:10.3f} | {r['same_tokens']}")
            if r["path"] == "naive" and not args.json:
                print(f"{'':22s}   kv-cache is {1 / r['vs_kv_cache']:.1f}x faster than naive at batch {batch}")


if __name__ == "__main__":
    run_cli(main)

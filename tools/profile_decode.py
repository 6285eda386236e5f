"""
profile_decode.py: where a decode step's time goes on a GPU (the measurements behind docs/gpu.md).

For a GPT-2-small-shaped model in bf16 (random weights, 64-token prompts, 128 new tokens), at
each batch size it prints, per new token:
  generate      the whole cuda_graph=True generate call, divided by its steps; whole step: the
                same with the sampling and bookkeeping recorded in the graph too (whole_step=True)
  replay L      one replay of the recorded decode graph that attends over L cache slots
                (device time between CUDA events): the floor of the current design
  eager L       the same forward pass without a graph (launch-bound)
then the step's kernels by device time (profiler, one eager forward) and the attention call alone
under each scaled_dot_product_attention backend, with the decode step's shapes and mask, written
out as two batched matrix products (q k^T, softmax, times v) in bf16, and as FlexAttention
compiled (a flash-decoding kernel: the keys split across thread blocks).

    python tools/profile_decode.py --batch 1 256
"""

import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's files

from gpt import GPT, GPTConfig  # noqa: E402
from plumbing import engine  # noqa: E402
from plumbing.cli import UserError, arg, parse_config, run_cli  # noqa: E402


def device_ms(fn, n=50):
    """Mean device milliseconds of fn() over n calls after 3 warm-ups, by CUDA events."""
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


@dataclass
class Args:
    batch: list = arg([1, 256], "batch sizes to profile", type=int, nargs="+")
    prompt_len: int = arg(64, "prompt tokens per row")
    new_tokens: int = arg(128, "tokens generated per row")
    compile: bool = arg(False, "profile the decode step compiled by torch.compile")


def main():
    args = parse_config(Args, description=__doc__)
    if not torch.cuda.is_available():
        raise UserError("profile_decode.py needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    S = args.prompt_len + args.new_tokens
    model = GPT(GPTConfig(block_size=S, n_layer=12, n_head=12, n_embd=768, vocab_size=50257))
    model = model.to("cuda", torch.bfloat16).eval()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, GPT-2 small shape in bf16")
    for B in args.batch:
        idx = torch.randint(0, 50257, (B, args.prompt_len), device="cuda")
        print(f"\n== batch {B}")
        for whole_step in (True, False):  # the forward-only graphs last: the replays below time them
            run = lambda: engine.generate(model, idx, args.new_tokens, temperature=0, cuda_graph=True,  # noqa: E731
                                          compile_step=args.compile, whole_step=whole_step)  # noqa: B023
            run()  # records the graphs
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(3):
                run()
            torch.cuda.synchronize()
            per_token = (time.perf_counter() - t0) / 3 / args.new_tokens * 1e3
            print(f"   generate{' (whole step)' if whole_step else ''}: {per_token:.3f} ms per step "
                  f"({B / per_token * 1e3:.0f} new tokens/s)")
        step = model._kept_decoder[1]
        for L, (graph, _) in sorted(step.graphs.items()):
            step.rollout.slot.fill_(L - 1)  # a slot inside the attended part, as in generate
            replay = device_ms(graph.replay)
            with torch.no_grad():
                eager = device_ms(lambda: step.forward(L), n=20)  # noqa: B023
            print(f"   replay L={L:3d}: {replay:.3f} ms   eager L={L:3d}: {eager:.3f} ms")
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            step.rollout.slot.fill_(S - 1)
            for _ in range(5):
                step.forward(S)
            torch.cuda.synchronize()
        try:
            table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14)
        except Exception:  # the column's name in other torch versions
            table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=14)
        print(f"   kernels of 5 eager forward passes at L={S}:\n{table}")
        q = torch.randn(B, 12, 1, 64, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(B, 12, S, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        mask = torch.zeros(B, 1, 1, S, device="cuda", dtype=torch.bfloat16)
        mask[:, :, :, : S // 4] = float("-inf")
        for backend in (SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            try:
                with torch.no_grad(), sdpa_kernel(backend):
                    ms = device_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))  # noqa: B023
                print(f"   attention {backend.name:20s} one layer {ms * 1e3:7.1f} us, x12 layers {ms * 12:.3f} ms")
            except RuntimeError as e:
                print(f"   attention {backend.name:20s} unavailable: {str(e).splitlines()[0][:80]}")

        def by_matmul():  # the one-query case without a fused kernel: (B, nh, 1, S) scores
            att = (q @ k.transpose(-2, -1)) * 0.125 + mask  # 1 / sqrt(64)
            return torch.softmax(att.float(), dim=-1).to(v.dtype) @ v
        with torch.no_grad():
            ms = device_ms(by_matmul)
        print(f"   attention {'matmul (bf16)':20s} one layer {ms * 1e3:7.1f} us, x12 layers {ms * 12:.3f} ms")
        # FlexAttention compiled: for one query per row inductor writes a flash-decoding kernel that
        # splits the keys across thread blocks; the padding mask as a score modification
        keep = mask[:, 0, 0] == 0                                      # (B, S) real slots

        def padding(score, b, h, q_idx, kv_idx):
            return torch.where(keep[b, kv_idx], score, -float("inf"))
        try:
            from torch.nn.attention.flex_attention import flex_attention
            flex = torch.compile(flex_attention, fullgraph=True)
            with torch.no_grad():
                err = (flex(q, k, v, score_mod=padding) - F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
                ms = device_ms(lambda: flex(q, k, v, score_mod=padding))  # noqa: B023
            print(f"   attention {'flex (compiled)':20s} one layer {ms * 1e3:7.1f} us, x12 layers {ms * 12:.3f} ms "
                  f"(largest difference to SDPA {err.abs().max().item():.1e})")
        except Exception as e:  # not in this torch, or not for this shape
            print(f"   attention {'flex (compiled)':20s} unavailable: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
        kv_bytes = 2 * B * 12 * S * 64 * 2
        print(f"   (reading K and V of one layer at L={S}: {kv_bytes / 1e6:.1f} MB)")
        step = None
        model._kept_decoder = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    run_cli(main)

"""
plumbing/loop.py: the engineering of a training loop, none of it from the paper. A reader of the
algorithms may skip this file; each step script's loop calls these by name.

  setup                  seeds, the device, bfloat16 autocast on CUDA
  configure_optimizer    AdamW, weight decay on matrices only
  cosine_lr, set_lr      warmup, then cosine decay; put a rate into the optimizer
  epoch_rows             the prompts of batch number `step`: epochs, each in its own shuffled order
  descend                one optimizer step: stop every rank on a non-finite loss, backward, clip, step
  stop_if_not_finite     the one-line error, on every rank when any saw a non-finite number
  seconds_since          a wall-clock interval that waits for the GPU first
  MetricsLog             one line per logged step on stdout and in OUT_DIR/metrics.jsonl
  stop_on_signal, Resume Ctrl-C saves a resumable state; --resume continues exactly
  Progress               one line per run of a long series (experiments.py): which, of how many, time left
  mean_of, time_shares   a log line's means over minibatches; where a step's time went
  flops_per_token, gpu_peaks   for tokens/s and MFU
"""

import contextlib
import functools
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict

import numpy as np
import torch

from gpt import atomic_save
from plumbing import ddp
from plumbing.cli import UserError


def setup(device="auto", seed=0):
    """Seed everything, pick the device, and return it with the autocast context to train in:
    bfloat16 on CUDA (with TF32 matmuls), plain float32 on CPU. Under torchrun, join the process
    group (ddp.py): every rank builds the same world; each draws its own dropout masks."""
    random.seed(seed)
    np.random.seed(seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device here")
    device = ddp.start(torch.device(device))
    torch.manual_seed(ddp.seed(seed))  # torchrun: each rank its own dropout masks (DDP copies rank 0's weights)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return device, lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    torch.set_flush_denormal(True)  # denormal floats made backward matmuls ~40x slower on CPU
    return device, contextlib.nullcontext


# -----------------------------------------------------------------------------
# The optimizer and one step of it; the learning rate; the order of the data

def configure_optimizer(model, lr, weight_decay=0.1, betas=(0.9, 0.95), device_type="cpu"):
    """AdamW with weight decay on matrices only (not on biases or LayerNorm gains), fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type == "cuda")


def descend(optimizer, loss, params, grad_clip, not_finite=None):
    """One optimizer step on `loss`: stop with the one-line error `not_finite` if the loss is not a
    finite number (checked when given: reading the loss waits for the device), else zero the
    gradients, backward (under torchrun DDP averages them over the ranks), clip their norm (after
    backward) and step. Separate networks (PPO's policy and value model) pass a list of optimizers
    and one of their parameters: each is clipped and stepped on its own. -> the (first) gradient
    norm before clipping."""
    if not_finite is not None:
        stop_if_not_finite(torch.isfinite(loss), not_finite)
    optimizers, groups = (optimizer, params) if isinstance(optimizer, (list, tuple)) else ([optimizer], [params])
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    norms = [torch.nn.utils.clip_grad_norm_(p, grad_clip) for p in groups]
    for opt in optimizers:
        opt.step()
    return norms[0]


def stop_if_not_finite(finite, message):
    """The one-line error `message` when `finite` (a bool or a 0-dim tensor) is false; under
    torchrun on every rank when any rank's is, so that none waits forever for the others."""
    if ddp.any_rank(not bool(finite)):
        raise UserError(message)


def seconds_since(t0, device):
    """Wall seconds since t0, after the device's queued work has finished (CUDA runs asynchronously:
    without the wait, the clock would stop while kernels still run)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time() - t0


def cosine_lr(step, max_steps, lr, warmup=0, min_ratio=0.1):
    """Linear warmup, then cosine decay to min_ratio * lr (InstructGPT's SFT: cosine decay)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer, lr):
    """This step's learning rate into every parameter group. -> lr."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def epoch_rows(n, batch_size, step, seed):
    """The rows of batch number `step` out of n: epochs over all n, each in its own shuffled order
    (fixed by seed and epoch, so a resumed run draws the same batches). -> a list of indices."""
    epoch, k = divmod(step, math.ceil(n / batch_size))
    order = list(range(n))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return order[k * batch_size:(k + 1) * batch_size]


# -----------------------------------------------------------------------------
# The metrics log

class MetricsLog:
    """One line per logged step, fields separated by |, and the same fields appended as one JSON
    object to metrics.jsonl (all stages share the file; `stage` tells them apart). A stage run
    again from the start (not resumed) replaces its earlier lines when it logs its first, so the
    plots drawn from the file show one run per stage."""

    def __init__(self, out_dir, stage, quiet=False, resume=False):
        self.path = os.path.join(out_dir, "metrics.jsonl") if out_dir and ddp.is_main() else None  # rank 0 writes
        self.stage, self.quiet = stage, quiet
        self.replaces = not resume  # a resumed stage keeps its lines (Resume.load trims them)

    def log(self, step, **metrics):
        row = {"stage": self.stage, "step": step, **{k: (round(v, 6) if isinstance(v, float) else v)
                                                      for k, v in metrics.items()}}
        if self.path:
            if self.replaces:
                self.keep_own_lines(0)
            self.replaces = False
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if not self.quiet:
            parts = [f"{self.stage} step {step}"] + [f"{k} {_fmt(v)}" for k, v in metrics.items()]
            print(" | ".join(parts), flush=True)

    def lines(self):
        """metrics.jsonl's lines -> (this stage's, the other stages')."""
        if not (self.path and os.path.exists(self.path)):
            return [], []
        own, others = [], []
        with open(self.path) as f:
            for line in f:
                if line.strip():
                    (own if json.loads(line).get("stage") == self.stage else others).append(line)
        return own, others

    def keep_own_lines(self, n):
        """Drop this stage's lines after its first n (the other stages' stay); written to a new file
        that replaces the old one, so Ctrl-C cannot leave half a file."""
        own, others = self.lines()
        if len(own) > n:
            with open(self.path + ".tmp", "w") as f:
                f.writelines(others + own[:n])
            os.replace(self.path + ".tmp", self.path)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


# -----------------------------------------------------------------------------
# Ctrl-C saves a resumable state; --resume continues it exactly

class stop_on_signal:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM only sets `requested`: the loop checks it
    between steps, saves and leaves, so a run is never stopped halfway through an optimizer step.
    A second Ctrl-C stops at once (nothing saved)."""

    def __enter__(self):
        self.requested = False
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("stopping after this step to save a resumable state (Ctrl-C again: stop now, save nothing)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


class Resume:
    """OUT_DIR/<name>.resume.pt: everything a training loop needs to continue exactly where it
    stopped (weights, optimizer, random states, step, the data it drew). Written atomically at
    safe points and on Ctrl-C; read by --resume; removed when the stage finishes. It also records
    how many metrics.jsonl lines the stage had logged, so that those logged after the save are
    dropped on resume, and the seconds spent so far, so that a resumed stage reports the time of
    both runs."""

    IGNORED = ("resume", "quiet", "device")  # flags that may change between the two runs

    def __init__(self, out_dir, name, cfg, log, t_start=None):
        self.path = os.path.join(out_dir, f"{name}.resume.pt")
        self.name, self.config, self.log = name, asdict(cfg), log
        self.t_start = time.time() if t_start is None else t_start
        self.seconds_before = 0.0  # spent by the interrupted run, up to its save

    def seconds(self):
        """Seconds this stage has taken: since t_start, plus the interrupted run's up to its save."""
        return round(self.seconds_before + time.time() - self.t_start, 1)

    def save(self, **state):
        if ddp.on():  # torchrun: every rank's random state (its dropout), which rank 0 writes
            state.update(world_size=ddp.world(), torch_rng=ddp.gather([torch.get_rng_state()]),
                         cuda_rng=ddp.gather([torch.cuda.get_rng_state()]) if torch.cuda.is_available() else None)
            if not ddp.is_main():
                return
        else:
            state["torch_rng"] = torch.get_rng_state()
            if torch.cuda.is_available():  # dropout on a GPU draws from the GPU's generators
                state["cuda_rng"] = torch.cuda.get_rng_state_all()
        state.update(config=self.config, metrics_lines=len(self.log.lines()[0]), seconds=self.seconds())
        atomic_save(state, self.path)

    def load(self, device):
        """-> the saved dict; a one-line error when the file is missing, unreadable or from a run
        with other flags. This stage's metrics.jsonl lines written after the save are dropped."""
        if not os.path.isfile(self.path):
            raise UserError(f"--resume: {self.path} does not exist (nothing to resume)")
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as e:
            raise UserError(f"--resume: {self.path} is not readable ({type(e).__name__})")
        for key, value in state["config"].items():  # a flag this version no longer has is not compared
            if key not in self.IGNORED and key in self.config and self.config[key] != value:
                flag = "--" + key.replace("_", "-")
                raise UserError(f"--resume: {flag} is {self.config.get(key)!r} here but {value!r} in the "
                                f"interrupted run; resume with the same flags")
        if state.get("world_size", 1) != ddp.world():  # each rank continues its own random streams
            raise UserError(f"--resume: {self.name} was interrupted with {state.get('world_size', 1)} process(es) "
                            f"and this run has {ddp.world()}; resume it with as many")
        was = state.get("generator_device", torch.device(device).type)
        if was != torch.device(device).type:  # a sampling generator's state belongs to one kind of device
            raise UserError(f"--resume: {self.name} was interrupted on {was} and this run is on "
                            f"{torch.device(device).type}; resume it with --device {was}")
        self.seconds_before = float(state.get("seconds", 0.0))
        # the lines this stage had logged by the save; counted in lines, not bytes: another stage
        # run in between may have rewritten the file (MetricsLog)
        if "metrics_lines" in state:
            self.log.keep_own_lines(state["metrics_lines"])
        return state

    def restore_rng(self, state):
        """Put back the random generators as they were at the save. Call it last, just before the
        loop: building models draws from the same generators."""
        if isinstance(state["torch_rng"], list):  # torchrun: this rank's own
            torch.set_rng_state(ddp.mine(state["torch_rng"]).cpu())
            if state.get("cuda_rng") and torch.cuda.is_available():
                torch.cuda.set_rng_state(state["cuda_rng"][ddp.rank()].cpu())
            return
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda_rng"]])

    def snapshot(self, **parts):
        """What `save` keeps of each part: a model's or optimizer's state_dict, a random.Random's
        state, a torch.Generator's (under torchrun every rank's, in rank order, and the kind of
        device it draws on); anything else (a step, a list of records) as it is."""
        out = {}
        for key, part in parts.items():
            if isinstance(part, random.Random):
                out[key] = part.getstate()
            elif isinstance(part, torch.Generator):
                out[key], out["generator_device"] = ddp.gather([part.get_state()]), part.device.type
            else:
                out[key] = part.state_dict() if hasattr(part, "state_dict") else part
        return out

    def restore(self, state, **parts):
        """Put each part back as `snapshot` kept it (models, optimizers, random.Random, this rank's
        torch.Generator), then the global random generators (last: building the models drew from
        them). -> state["step"], or None."""
        for key, part in parts.items():
            if isinstance(part, random.Random):
                part.setstate(state[key])
            elif isinstance(part, torch.Generator):  # a list of every rank's (an older file: the one process's)
                part.set_state(ddp.mine(state[key]).cpu())
            else:
                part.load_state_dict(state[key])
        self.restore_rng(state)
        return state.get("step")

    def interrupted(self, where, **state):
        """Save and leave (the KeyboardInterrupt reaches run_cli: exit code 130)."""
        self.save(**state)
        print(f"{self.name}: interrupted at {where}; saved {self.path}; continue with --resume", flush=True)
        raise KeyboardInterrupt

    def stop_if_asked(self, stop, where, resumable):
        """Between two steps: if Ctrl-C or SIGTERM came (`stop`, a stop_on_signal; under torchrun on
        any rank), save `resumable()` and leave; else nothing."""
        if ddp.any_rank(stop.requested):
            self.interrupted(where, **resumable())

    def done(self):
        ddp.barrier()  # torchrun: the others wait for rank 0's checkpoint; none still reads this file
        if ddp.is_main() and os.path.exists(self.path):
            os.remove(self.path)


class Progress:
    """One line per run: which experiment, which run of how many, the seed, and the time left at
    the pace so far."""

    def __init__(self, name, runs, seed):
        self.name, self.runs, self.seed, self.done, self.t0 = name, runs, seed, 0, time.time()

    def next(self, what):
        spent = time.time() - self.t0
        left = f", about {spent / self.done * (self.runs - self.done):.0f}s left" if self.done else ""
        self.done += 1
        print(f"[{self.name}] run {self.done}/{self.runs}: {what} (seed {self.seed}); {spent:.0f}s so far{left}",
              flush=True)


def mean_of(stats):
    """{name: its mean over the list} of a list of {name: 0-dim tensor} (one per minibatch), read
    from the device in one transfer (each read is a wait)."""
    keys = list(stats[0])
    rows = torch.stack([torch.stack([s[k] for k in keys]) for s in stats]).tolist()
    return {k: sum(row[j] for row in rows) / len(stats) for j, k in enumerate(keys)}


def time_shares(**seconds):
    """Where a step's time went, for the log: each part's share of the total (NAME_frac) and the
    total (iter_s)."""
    total = sum(seconds.values())
    return {**{f"{k}_frac": round(v / total, 3) for k, v in seconds.items()}, "iter_s": round(total, 3)}


# -----------------------------------------------------------------------------
# What training speed is measured against

def flops_per_token(config, seq_len):
    """Training FLOPs per token: 6N for the matmuls forward and backward, plus attention
    (PaLM appendix B: 12 * n_layer * n_embd * seq_len)."""
    c = config
    n = 12 * c.n_layer * c.n_embd ** 2 + c.vocab_size * c.n_embd
    return 6 * n + 12 * c.n_layer * c.n_embd * seq_len


# dense bfloat16 FLOP/s and memory bandwidth (bytes/s) of GPUs, from their data sheets;
# the first name found in torch.cuda.get_device_name() wins, so variants come before their family
GPU_PEAKS = [("H100 PCIe", 756e12, 2.0e12), ("H100 NVL", 835e12, 3.9e12), ("H100", 989e12, 3.35e12),
             ("H200", 989e12, 4.8e12), ("A100-SXM4-40GB", 312e12, 1.555e12), ("A100", 312e12, 2.039e12),
             ("L40S", 362e12, 0.864e12), ("L4", 121e12, 0.3e12), ("4090", 165e12, 1.008e12)]


@functools.lru_cache(maxsize=None)
def gpu_peaks(device=None):
    """-> (peak dense bf16 FLOP/s, peak memory bytes/s) of a CUDA device, for MFU and the
    bandwidth bound of decoding; an unknown GPU counts as an A100 (and says so)."""
    name = torch.cuda.get_device_name(device)
    for key, flops, bandwidth in GPU_PEAKS:
        if key in name:
            return flops, bandwidth
    print(f"note: {name} is not in plumbing.loop.GPU_PEAKS; MFU and bounds assume an A100's peaks", file=sys.stderr)
    return 312e12, 2.039e12

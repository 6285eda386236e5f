"""
ddp.py: the same training on several processes (data parallel), PyTorch's own way: torchrun
starts one process per device, DistributedDataParallel averages the gradients. None of it is from
the paper; a reader of the algorithms may skip this file.

    torchrun --standalone --nproc_per_node 2 train_all.py --preset smoke     # 2 processes on a CPU (gloo)
    torchrun --standalone --nproc_per_node 8 train_all.py                    # 8 GPUs of one node (nccl)

Without torchrun every function here leaves its input as it is, and the scripts run as before.
Under torchrun, each script does what a single process would do with the same global batch:
  - every rank builds the same simulated world and model from the seed, and draws the same
    global batch, of which it takes its own contiguous share of rows (`share`);
  - each rank's loss is weighted so that DDP's average over ranks is the mean over the whole batch
    (`weight`: a mean over response tokens or over prompts counts each rank's share by its size);
  - what is global is global: PPO whitens its advantages over every rank's rows (`over_all_rows`),
    logged means are reduced (`mean`, `total`), sampled answers are gathered in order (`gather`);
  - rank 0 alone writes files and prints; the others print nothing, and wait for rank 0's
    checkpoints before reading them (`barrier`).
The process group is set up by plumbing.loop.setup, the first thing every script calls. docs/ddp.md has
a table of what each rank does, the tests that hold it to one process, and measured runs.
"""

import inspect
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from plumbing.cli import UserError

_device = torch.device("cpu")  # where the reductions' tensors live (nccl reduces CUDA tensors only)


def start(device):
    """Join the process group when torchrun started this process (WORLD_SIZE > 1), once; -> the
    device this rank uses (on CUDA, the GPU numbered LOCAL_RANK)."""
    global _device
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if dist.get_rank() != 0:  # the other ranks' lines would repeat rank 0's
            sys.stdout = open(os.devnull, "w")
    _device = device
    return device


def on():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if on() else 0


def world():
    return dist.get_world_size() if on() else 1


def is_main():
    """Rank 0: the one process that writes checkpoints, metrics.jsonl, plots and summaries."""
    return rank() == 0


def announce(stage):
    """A stage's first line under torchrun: how many processes share each batch (nothing on one process)."""
    if on():
        print(f"{stage}: {world()} processes ({dist.get_backend()}), each computing its share of every batch")


def seed(s):
    """A random stream of this rank's own (rank 0 keeps the seed): ranks that sample different
    prompts should not draw the same noise."""
    return s + 7919 * rank()


def share(rows):
    """This rank's contiguous share of a list or tensor of rows (rank r of w: rows n*r//w to
    n*(r+1)//w); all of it on one process."""
    n, r, w = len(rows), rank(), world()
    return rows[n * r // w:n * (r + 1) // w]


def part(n):
    """This rank's rows of a batch of n, as a slice, and how many they are. A rank whose share is
    empty (the short last batch of an epoch) computes the first row, to be weighted 0 (`weight`),
    so that it still joins the gradient average."""
    lo, hi = n * rank() // world(), n * (rank() + 1) // world()
    return (slice(lo, hi), hi - lo) if hi > lo else (slice(0, 1), 0)


def check_divides(sizes):
    """One line naming the flag when a batch does not split evenly over the ranks."""
    for flag, n in sizes.items():
        if n % world():
            raise UserError(f"{flag} {n} does not split over {world()} processes: use a multiple of {world()}")


def wrap(model):
    """The model whose backward averages the gradients over ranks (the model itself on one process)."""
    if not on():
        return model
    # its buffers are constants: no collective in every forward (the flag's name changed in torch 2.x)
    quiet = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
        else "broadcast_buffers"
    return DistributedDataParallel(model, device_ids=[_device.index] if _device.type == "cuda" else None,
                                   **{quiet: False})


def unwrap(model):
    """The model inside DDP's wrapper."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def total(x):
    """The sum over ranks of a number (or a tensor; a tensor with grad is summed as a value)."""
    if not on():
        return x
    t = x.detach().clone() if torch.is_tensor(x) else torch.tensor(float(x), dtype=torch.float64, device=_device)
    dist.all_reduce(t)
    return t if torch.is_tensor(x) else t.item()


def mean(x):
    """The mean over ranks of a number each rank measured on an equal share."""
    return x if not on() else total(x) / world()


def weight(n):
    """The factor for a rank's mean loss over its `n` items (tokens, prompts) so that DDP's average
    of the ranks' gradients is the gradient of the mean over all items: n * world / (sum of n).
    1 on one process."""
    if not on():
        return 1.0
    n = float(n)
    return n * world() / total(n)


def weighted_mean(x, n):
    """The mean over ranks of a figure each rank measured over its n items, weighted by n."""
    return x if not on() else total(x * n) / total(n)


def rank_losses(loss, n):
    """For the log: the world size and each rank's loss on its own rows (None where it had none),
    the evidence that the ranks split the batch; nothing on one process."""
    return {"world_size": world(), "rank_losses": gather([round(loss, 6) if n else None])} if on() else {}


def any_rank(flag):
    """True on every rank when it is true on any (Ctrl-C reaches the ranks at different steps)."""
    return flag if not on() else total(float(flag)) > 0


def gather(items):
    """Every rank's list, concatenated in rank order, on every rank (the inverse of `share`)."""
    if not on():
        return items
    parts = [None] * world()
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]


def mine(gathered):
    """This rank's item of a list that `gather` made, one item per rank (a lone item: itself)."""
    return gathered[rank()] if isinstance(gathered, list) else gathered


def all_rows(*tensors):
    """Every rank's rows of each (rows, width) tensor, concatenated in rank order (the same number
    of rows on every rank). Narrower ones are padded with zeros to the widest: a response mask is 0
    there, so a masked statistic is unchanged. The tensors themselves on one process."""
    if not on():
        return tensors
    width = torch.tensor(max(t.size(1) for t in tensors), device=_device)
    dist.all_reduce(width, op=dist.ReduceOp.MAX)
    whole = []
    for t in tensors:
        t = torch.nn.functional.pad(t, (0, int(width) - t.size(1))).contiguous()
        parts = [torch.empty_like(t) for _ in range(world())]
        dist.all_gather(parts, t)
        whole.append(torch.cat(parts))
    return whole


def over_all_rows(fn, *tensors):
    """fn applied to every rank's rows at once (`all_rows`) -> this rank's rows of its result."""
    return share(fn(*all_rows(*tensors)))[:, :tensors[0].size(1)]


def barrier():
    """Wait for every rank (the others then read what rank 0 wrote before it)."""
    if on():
        dist.barrier()


def stop():
    """Leave the process group (at the end of run_cli)."""
    if on():
        dist.destroy_process_group()

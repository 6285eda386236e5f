import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
torch.set_flush_denormal(True)  # without it, CPU backward matmuls can run ~40x slower
torch.set_num_threads(min(2, os.cpu_count() or 1))

from gpt import GPT, GPTConfig  # noqa: E402
from plumbing.checkpoint import hf_state_dict  # noqa: E402 (after the path above)

RM_BIAS = 0.5  # the reward bias stored in run_dir's reward.pt
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


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [18]]  # left-padded to one batch


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


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine a second thread waits more than it helps."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup_models():
    """The RL steps' four tiny models over one tokenizer: policy and reference equal (the start of
    RL), a value model and an RM, random (tests/test_ppo.py, test_grpo.py)."""
    from gpt import ScalarModel
    from plumbing.tokenizer import train_tokenizer
    from world import make_world
    tok = train_tokenizer("\n".join(make_world(0).corpus(300, random.Random(0))), 300)
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32)
    policy, ref = GPT(cfg), GPT(cfg)
    ref.load_state_dict(policy.state_dict())
    value, rm = ScalarModel(GPT(cfg)), ScalarModel(GPT(cfg))
    return tok, policy, ref, value, rm


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """pretrain.pt, sft.pt, ppo.pt and reward.pt: tiny random models sharing one tokenizer."""
    from gpt import ScalarModel
    from gpt import save_checkpoint
    from plumbing.tokenizer import train_tokenizer
    from world import make_world
    d = tmp_path_factory.mktemp("run")
    tok = train_tokenizer("\n".join(make_world(0).corpus(200, random.Random(0))), 300)
    cfg = dict(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32)
    for i, stage in enumerate(["pretrain", "sft", "ppo"]):
        torch.manual_seed(i)
        save_checkpoint(str(d / f"{stage}.pt"), GPT(GPTConfig(**cfg)), stage=stage, tokenizer=tok.state())
    torch.manual_seed(3)
    rm = ScalarModel(GPT(GPTConfig(**cfg)))
    save_checkpoint(str(d / "reward.pt"), rm.gpt, stage="reward", tokenizer=tok.state(),
                    reward_head=rm.head.state_dict(), reward_bias=RM_BIAS, reward_scale=1.0)
    return d


def interrupt_on_call(monkeypatch, module, name, n):
    """Make the n-th call of module.name send this process SIGINT, as Ctrl-C would mid-run."""
    real, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapped)


def same_run(dir_a, dir_b, ckpt, stage, timing=()):
    """Assert two run folders hold the same weights in `ckpt` and the same metrics.jsonl lines for
    `stage` (less the `timing` fields, which no two runs share)."""
    from gpt import load_checkpoint
    a, _ = load_checkpoint(os.path.join(dir_a, ckpt))
    b, _ = load_checkpoint(os.path.join(dir_b, ckpt))
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k

    def rows(d):
        lines = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
        return [{k: v for k, v in r.items() if k not in timing} for r in lines if r["stage"] == stage]
    assert rows(dir_a) == rows(dir_b)


def copy_run(run_dir, dest, *names):
    os.makedirs(dest)
    for name in names:
        shutil.copy(os.path.join(run_dir, name), dest)
    return str(dest)


def start_and_signal(cmd, resume_file, sig, wait=0.0):
    """Start `cmd` (in the project root); once it has written `resume_file` (its first resumable
    state), wait `wait` seconds and send it `sig`. -> (return code, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not os.path.exists(resume_file) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(wait)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err

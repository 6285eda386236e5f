"""tools/bench.py: every generation path it times makes the same tokens, and --train reports a row per
model; on CPU there is no CUDA-graph path, bound or MFU."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_paths_agree_and_training_is_measured():
    r = subprocess.run([sys.executable, "tools/bench.py", "--n-layer", "1", "--n-embd", "64", "--batch", "1", "3",
                        "--new-tokens", "6", "--prompt-len", "8", "--repeats", "1", "--train", "--train-batch", "2",
                        "--train-seq", "32", "--train-steps", "1", "--json"],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    info, rows = rows[0], rows[1:]
    assert info["params_M"] > 0
    gen = [row for row in rows if "new_tokens" in row]
    assert {row["path"] for row in gen} >= {"kv-cache", "naive"} and {row["batch"] for row in gen} == {1, 3}
    assert all(row["same_tokens"] for row in gen)                  # transformers too, when installed
    assert not any(row["path"] in ("kv-cache+graph", "bandwidth bound") for row in gen)  # CUDA only
    train = [row for row in rows if row["path"].startswith("train:")]
    assert train and all(row["tokens_per_s"] > 0 and "mfu" not in row for row in train)


def test_bench_sampled_paths_of_ours_agree_and_transformers_is_timed():
    r = subprocess.run([sys.executable, "tools/bench.py", "--n-layer", "1", "--n-embd", "64", "--batch", "3",
                        "--new-tokens", "6", "--prompt-len", "8", "--repeats", "1", "--sample", "--json"],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    gen = [json.loads(line) for line in r.stdout.splitlines()[1:] if line.startswith("{")]
    ours = [row for row in gen if not row["path"].startswith("transformers")]
    assert {row["path"] for row in ours} == {"kv-cache", "kv-cache (gpt.py)", "naive"}
    assert all(row["same_tokens"] is True for row in ours)          # one generator seed, the same draws
    assert all(row["same_tokens"] is None and row["tokens_per_s"] > 0 for row in gen if row not in ours)


def test_bench_skip_leaves_paths_out():
    args = [sys.executable, "tools/bench.py", "--n-layer", "1", "--n-embd", "64", "--batch", "2", "--new-tokens", "4",
            "--prompt-len", "4", "--repeats", "1", "--no-transformers", "--json"]
    r = subprocess.run(args + ["--skip", "naive", "kv-cache (gpt.py)"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    paths = [json.loads(line)["path"] for line in r.stdout.splitlines()[1:] if line.startswith("{")]
    assert paths == ["kv-cache"]
    r = subprocess.run(args + ["--skip", "kv-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice: 'kv-cache'" in r.stderr  # the base of the ratios stays


@pytest.mark.parametrize("flag, message", [(["--n-head", "3"], "--n-embd 256 must be a multiple of --n-head 3"),
                                           (["--vocab-size", "-5"], "--vocab-size must be positive, got -5"),
                                           (["--n-layer", "0"], "--n-layer must be positive, got 0")])
def test_bench_bad_shape_is_one_line(flag, message):
    r = subprocess.run([sys.executable, "tools/bench.py", *flag], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {message}"

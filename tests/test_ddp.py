"""torchrun with 2 CPU processes (gloo) against one process with the same global batch: the same
loss curves, and each rank's own loss on its half of every batch (plumbing/ddp.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, start_and_signal
from gpt import load_checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores


def torchrun(script, *args, n=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), script,
            *map(str, args)]


def run(cmd):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def rows(out_dir, stage, key):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["stage"] == stage and key in r]


def assert_same_curve(one, two, stage, keys):
    """The 2-process run logs the same figures as one process, and each of its logged steps shows
    both ranks' losses, which differ: each computed a different half of the batch."""
    a, b = rows(one, stage, keys[0]), rows(two, stage, keys[0])
    assert len(a) == len(b) >= 2
    for x, y in zip(a, b):
        assert x["step"] == y["step"]
        for k in keys:
            assert y[k] == pytest.approx(x[k], rel=1e-3, abs=1e-4), (stage, x["step"], k, x[k], y[k])
        assert "world_size" not in x and y["world_size"] == 2
        halves = [v for v in y["rank_losses"] if v is not None]
        assert len(y["rank_losses"]) == 2 and len(halves) >= 1
        if len(halves) == 2:
            assert halves[0] != halves[1]
    assert any(None not in y["rank_losses"] for y in b)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A smoke-preset pretrain.pt and sft.pt (one process, few steps), and comparisons for the RM
    written as a file, so that both runs train on the same data."""
    d = tmp_path_factory.mktemp("ddp_base")
    run([sys.executable, "sft.py", "--stage", "pretrain", "--preset", "smoke", "--max-steps", "20", "--out-dir", d,
         "--quiet"])
    run([sys.executable, "sft.py", "--stage", "sft", "--preset", "smoke", "--epochs", "1", "--eval-gold", "0",
         "--out-dir", d, "--quiet"])
    sys.path.insert(0, ROOT)
    import data
    world = data.build("smoke", 0)
    with open(d / "comps.jsonl", "w") as f:  # 102: 97 train (5% held out), whose batches of 16 end in one of 1
        for r in world["rm"][:102]:
            answers = [r["task"]["answer"], "I don't know.", "no", r["prompt"][:20]]
            f.write(json.dumps({"prompt": r["prompt"], "completions": answers, "ranking": [0, 1, 2, 3]}) + "\n")
    return d


def fresh(base, tmp_path, name, *files):
    d = tmp_path / name
    d.mkdir()
    for f in files:
        shutil.copy(base / f, d)
    return d


def test_pretrain_and_sft_match_one_process(base, tmp_path):
    one, two = fresh(base, tmp_path, "one", "pretrain.pt"), fresh(base, tmp_path, "two", "pretrain.pt")
    args = ["--stage", "pretrain", "--preset", "smoke", "--max-steps", "21", "--eval-every", "10", "--quiet"]
    run([sys.executable, "sft.py", *args, "--out-dir", one / "p"])
    run(torchrun("sft.py", *args, "--out-dir", two / "p"))
    assert_same_curve(one / "p", two / "p", "pretrain", ["loss", "train_tokens"])
    assert rows(one / "p", "pretrain", "val_loss")[-1]["val_loss"] == pytest.approx(
        rows(two / "p", "pretrain", "val_loss")[-1]["val_loss"], abs=1e-4)
    assert load_checkpoint(str(two / "p" / "pretrain.pt"))[1]["world_size"] == 2
    # SFT: a mean over response tokens, which the halves hold unequally (ddp.weight), plus the ptx batch
    args = ["--stage", "sft", "--preset", "smoke", "--epochs", "2", "--eval-gold", "0", "--quiet"]
    run([sys.executable, "sft.py", *args, "--out-dir", one])
    run(torchrun("sft.py", *args, "--out-dir", two))
    assert_same_curve(one, two, "sft", ["loss", "ptx_loss", "train_tokens", "grad_norm"])


def test_reward_model_matches_one_process(base, tmp_path):
    one, two = fresh(base, tmp_path, "one", "sft.pt"), fresh(base, tmp_path, "two", "sft.pt")
    args = ["--preset", "smoke", "--data", base / "comps.jsonl", "--epochs", "2", "--quiet"]
    run([sys.executable, "reward.py", *args, "--out-dir", one])
    run(torchrun("reward.py", *args, "--out-dir", two))
    assert_same_curve(one, two, "reward", ["loss", "train_accuracy", "reward_gap"])
    assert rows(two, "reward", "loss")[-1]["rank_losses"][0] is None  # rank 0's share of 1 prompt: none
    assert rows(one, "reward", "heldout_accuracy")[-1]["heldout_accuracy"] == pytest.approx(
        rows(two, "reward", "heldout_accuracy")[-1]["heldout_accuracy"], abs=1e-6)
    bias = [load_checkpoint(str(d / "reward.pt"))[1]["reward_bias"] for d in (one, two)]
    # over every answer, gathered from both ranks; Adam carries the float noise of the two runs'
    # sums into the weights, so the two RMs agree to a few thousandths
    assert bias[1] == pytest.approx(bias[0], abs=5e-3)


def test_ppo_matches_one_process(base, tmp_path):
    """The same rollout prompts split across ranks. Sampling at a temperature near 0 makes each answer
    its prompt's own, whichever rank draws it; one minibatch per epoch holds the same rows either way."""
    one = fresh(base, tmp_path, "one", "sft.pt")
    run([sys.executable, "reward.py", "--preset", "smoke", "--data", base / "comps.jsonl", "--out-dir", one, "--quiet"])
    two = fresh(one, tmp_path, "two", "sft.pt", "reward.pt")
    args = ["--preset", "smoke", "--iterations", "3", "--batch-size", "8", "--minibatch-size", "8", "--n-eval", "8",
            "--eval-every", "2", "--max-new-tokens", "16", "--temperature", "1e-6", "--quiet"]
    run([sys.executable, "ppo.py", *args, "--out-dir", one])
    run(torchrun("ppo.py", *args, "--out-dir", two))
    assert_same_curve(one, two, "ppo", ["pg_loss", "v_loss", "rm_score", "kl", "ratio", "explained_var"])
    assert rows(one, "ppo", "eval_rm_score")[-1]["eval_rm_score"] == pytest.approx(
        rows(two, "ppo", "eval_rm_score")[-1]["eval_rm_score"], abs=1e-4)


def test_grpo_splits_whole_groups_over_the_ranks(base, tmp_path):
    """GRPO under torchrun: each rank samples whole groups of its share of the prompts (its own
    draws, so not one process's answers), the ranks' losses differ, and the averaged update trains
    the policy. A prompt count that does not split over the ranks is one line."""
    one = fresh(base, tmp_path, "one", "sft.pt")
    run([sys.executable, "reward.py", "--preset", "smoke", "--data", base / "comps.jsonl", "--out-dir", one, "--quiet"])
    two = fresh(one, tmp_path, "two", "sft.pt", "reward.pt")
    args = ["--preset", "smoke", "--iterations", "3", "--batch-size", "12", "--group-size", "2", "--minibatch-size", "4",
            "--n-eval", "8", "--eval-every", "2", "--max-new-tokens", "16", "--lr", "1e-3", "--quiet"]
    run(torchrun("grpo.py", *args, "--out-dir", two))
    steps = rows(two, "grpo", "loss")
    assert len(steps) == 3 and all(r["world_size"] == 2 and None not in r["rank_losses"] for r in steps)
    assert any(r["rank_losses"][0] != r["rank_losses"][1] for r in steps)
    assert [r["step"] for r in rows(two, "grpo", "eval_rm_score")] == [0, 2, 3]
    a, b = load_checkpoint(str(one / "sft.pt"))[0], load_checkpoint(str(two / "grpo.pt"))[0]
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    r = subprocess.run(torchrun("grpo.py", *args, "--batch-size", "6", "--out-dir", two), cwd=ROOT,
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode != 0 and "(prompts per rollout) 3 does not split over 2 processes" in r.stderr


def test_batch_that_does_not_split_is_one_line(base, tmp_path):
    d = fresh(base, tmp_path, "odd", "sft.pt")
    r = subprocess.run(torchrun("sft.py", "--stage", "sft", "--preset", "smoke", "--batch-size", "31", "--out-dir", d),
                       cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode != 0 and "--batch-size 31 does not split over 2 processes" in r.stderr


def test_ctrl_c_under_torchrun_resumes_to_the_same_run(base, tmp_path):
    """Ctrl-C reaches every rank (torchrun passes it on); they stop at the same step, rank 0 saves,
    and the same command with --resume ends where an uninterrupted run ends."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ["--stage", "pretrain", "--preset", "smoke", "--max-steps", "120", "--eval-every", "30", "--quiet"]
    run(torchrun("sft.py", *args, "--out-dir", whole))
    code, _, err = start_and_signal(torchrun("sft.py", *args, "--out-dir", cut), str(cut / "pretrain.resume.pt"),
                                    signal.SIGINT, wait=1.0)
    assert code != 0 and "interrupted at step" in err + _
    assert not (cut / "pretrain.pt").exists()
    run(torchrun("sft.py", *args, "--out-dir", cut, "--resume"))
    a, b = load_checkpoint(str(whole / "pretrain.pt"))[0], load_checkpoint(str(cut / "pretrain.pt"))[0]
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-5), k


def test_one_process_changes_nothing():
    """Without torchrun, plumbing/ddp.py's helpers hand back what they are given: the readable path is as it was."""
    from plumbing import ddp
    rows, t = list(range(7)), torch.randn(3, 5)
    assert not ddp.on() and ddp.world() == 1 and ddp.is_main() and ddp.seed(11) == 11
    assert ddp.share(rows) == rows and ddp.gather(rows) == rows and ddp.part(7) == (slice(0, 7), 7)
    assert ddp.weight(123) == 1.0 and ddp.mean(0.25) == 0.25 and ddp.total(3) == 3 and ddp.weighted_mean(0.5, 9) == 0.5
    assert ddp.all_rows(t, t)[1] is t and torch.equal(ddp.over_all_rows(lambda x: x * 2, t), t * 2)
    assert ddp.rank_losses(1.0, 4) == {}
    model = torch.nn.Linear(2, 2)
    assert ddp.wrap(model) is model and ddp.unwrap(model) is model

"""plumbing/loop.py and plumbing/cli.py: a resumed stage counts the seconds of both runs, metrics.jsonl keeps one run per
stage, and one dataclass becomes a script's flags."""

import json
import time
from dataclasses import dataclass

import pytest

from gpt import GPTConfig
from plumbing import cli, loop


def test_resumed_stage_counts_the_seconds_of_both_runs(tmp_path):
    """A stage interrupted after 100 s and resumed reports 100 s plus the resumed run's time."""
    cfg = GPTConfig()
    log = loop.MetricsLog(str(tmp_path), "stage", quiet=True)
    first = loop.Resume(str(tmp_path), "stage", cfg, log, t_start=time.time() - 100)
    first.save(step=3)
    second = loop.Resume(str(tmp_path), "stage", cfg, log)
    assert second.load("cpu")["step"] == 3
    assert 100 <= second.seconds() < 110
    assert loop.Resume(str(tmp_path), "other", cfg, log).seconds() < 10  # a fresh stage starts at 0


def test_a_stage_run_again_replaces_its_metrics_lines(tmp_path):
    """Run from the start, a stage's first line replaces its earlier run's lines (the plots then
    show one run); other stages' lines stay, and a resumed stage keeps its own."""
    def stages():
        return [(r["stage"], r["step"]) for r in map(json.loads, open(tmp_path / "metrics.jsonl"))]

    first = loop.MetricsLog(str(tmp_path), "sft", quiet=True)
    first.log(0, loss=2.0)
    first.log(1, loss=1.0)
    loop.MetricsLog(str(tmp_path), "reward", quiet=True).log(0, loss=0.7)
    again = loop.MetricsLog(str(tmp_path), "sft", quiet=True)
    assert stages() == [("sft", 0), ("sft", 1), ("reward", 0)]  # nothing dropped before it logs
    again.log(0, loss=3.0)
    again.log(1, loss=2.5)
    assert stages() == [("reward", 0), ("sft", 0), ("sft", 1)]
    loop.MetricsLog(str(tmp_path), "sft", quiet=True, resume=True).log(2, loss=2.0)
    assert stages() == [("reward", 0), ("sft", 0), ("sft", 1), ("sft", 2)]


def test_resume_keeps_its_metrics_lines_when_another_stage_rewrote_the_file(tmp_path):
    """ppo interrupted, ppo_ptx run again from the start (rewriting metrics.jsonl), then ppo
    resumed: ppo's lines up to its save stay, those after it go, ppo_ptx's new lines stay."""
    def stages():
        return [(r["stage"], r["step"]) for r in map(json.loads, open(tmp_path / "metrics.jsonl"))]

    cfg = GPTConfig()
    loop.MetricsLog(str(tmp_path), "ppo_ptx", quiet=True).log(0, kl=0.5)  # an earlier ppo_ptx run
    log = loop.MetricsLog(str(tmp_path), "ppo", quiet=True)
    log.log(0, kl=0.0)
    loop.Resume(str(tmp_path), "ppo", cfg, log).save(step=1)
    log.log(1, kl=0.1)                                                  # after the save: dropped on resume
    loop.MetricsLog(str(tmp_path), "ppo_ptx", quiet=True).log(0, kl=0.2)  # rewrites the file
    resumed = loop.Resume(str(tmp_path), "ppo", cfg, loop.MetricsLog(str(tmp_path), "ppo", quiet=True, resume=True))
    assert resumed.load("cpu")["step"] == 1
    assert sorted(stages()) == [("ppo", 0), ("ppo_ptx", 0)]


@dataclass
class Flags:
    paths: list = cli.arg([], "positional files", positional=True, nargs="*")
    preset: str = cli.arg("small", "a preset")
    lr: float = cli.arg(1e-3, "learning rate")
    temperature: float = cli.arg(None, "optional, typed", type=float)
    batch: list = cli.arg([1, 16], "sizes", type=int, nargs="+")
    shape: str = cli.arg("tiny", "one of two", choices=["tiny", "gpt2"])
    quiet: bool = cli.arg(False, "a switch")


PRESETS = {"small": dict(lr=0.5), "big": dict(lr=0.1, batch=[64])}


def test_one_dataclass_becomes_the_flags():
    """Defaults, then the preset's values, then the flags given; positional, typed, list and
    boolean fields; a bad choice is argparse's usage error (exit 2)."""
    assert cli.parse_config(Flags, [], PRESETS) == Flags(lr=0.5)
    cfg = cli.parse_config(Flags, ["a.pt", "b.pt", "--preset", "big", "--temperature", "0.7", "--quiet"], PRESETS)
    assert cfg == Flags(paths=["a.pt", "b.pt"], preset="big", lr=0.1, temperature=0.7, batch=[64], quiet=True)
    cfg = cli.parse_config(Flags, ["--preset", "big", "--lr", "2", "--batch", "2", "3", "--no-quiet"], PRESETS)
    assert (cfg.lr, cfg.batch, cfg.quiet) == (2.0, [2, 3], False)
    assert Flags().batch is not Flags().batch                             # no list shared between configs
    for bad in (["--shape", "huge"], ["--preset", "huge"], ["--lr", "fast"]):
        with pytest.raises(SystemExit) as e:
            cli.parse_config(Flags, bad, PRESETS)
        assert e.value.code == 2

"""train_all.py --preset gpu --dry-run: the gpu preset's settings, every stage cut to a step, on CPU.

No GPU runs in CI, so this is the one place the gpu preset's model shape, batch sizes, block size
and flags go through every stage and the evaluation; a broken value fails before any stage runs."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from train_all import MODELS


def per_model_maps(summary, where=""):
    """Every {model: figure} map in summary.json, by its path: a dict keyed by any model that only the
    evaluation has (a baseline or the base model; the stages' seconds and the over-optimization
    curve are keyed by stages)."""
    maps = {}
    for key, value in summary.items():
        if isinstance(value, dict) and set(value) & {"base", "base_fewshot", "constant", "best_of_4", "best_of_16"}:
            maps[where + key] = value
        elif isinstance(value, dict):
            maps.update(per_model_maps(value, f"{where}{key}."))
    return maps


def test_the_gpu_preset_runs_every_stage_on_cpu(tmp_path):
    out = tmp_path / "dry"
    r = subprocess.run([sys.executable, "train_all.py", "--preset", "gpu", "--dry-run", "--device", "cpu",
                        "--out-dir", str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.load(open(out / "summary.json"))
    assert s["preset"] == "gpu" and s["dry_run"] is True
    maps = per_model_maps(s)
    for key in ("win_rate_vs_sft", "gold_score", "rm_score", "kl_to_sft", "pretrain_loss", "win_rate_vs_sft_greedy",
                "new_tasks.win_rate_vs_sft", "new_tasks.gold_dims"):
        assert key in maps, key
    for key, m in maps.items():
        assert set(m) == set(MODELS), key
    assert "dry-run" in open(out / "report.md").readline()
    # the gpu preset's model, not a smaller one
    import torch
    config = torch.load(out / "pretrain.pt", map_location="cpu", weights_only=False)["model_args"]
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["block_size"]) == (6, 6, 384, 256), config


def test_a_real_run_refuses_a_dry_run_s_folder(tmp_path, monkeypatch):
    import train_all
    from plumbing.cli import UserError
    (tmp_path / train_all.DRY_RUN_MARK).write_text("a dry run\n")
    with pytest.raises(UserError, match="dry run"):
        train_all.main(train_all.Config(preset="smoke", out_dir=str(tmp_path), device="cpu"))


@pytest.mark.parametrize("script, key, value, flag", [("ppo", "minibatch_size", 0, "--minibatch-size"),
                                                      ("reward", "k_min", 1, "--k-min")])
def test_a_broken_gpu_value_fails_in_one_line_before_any_stage(tmp_path, monkeypatch, capsys, script, key, value,
                                                               flag):
    import importlib

    import train_all
    from plumbing.cli import run_cli
    monkeypatch.setitem(importlib.import_module(script).PRESETS["gpu"], key, value)
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: train_all.main(train_all.Config(preset="gpu", dry_run=True, out_dir=str(tmp_path / "o"),
                                                        device="cpu")))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{script}.py" in err and flag in err, err
    assert not os.path.exists(tmp_path / "o" / "pretrain.pt")  # failed before the first stage

"""exercises.py: the homework copy blanks every function marked `# exercise:` and nothing else,
and in the copy each test of tests/test_exercises.py fails on its own exercise's blank (here,
with the reference code, the same file passes: it runs in this suite)."""

import ast
import filecmp
import os
import subprocess
import sys

from conftest import ROOT
import exercises

REQUIRED = {"CausalSelfAttention.forward", "sample", "sft_batch", "KeptPrompts.__contains__", "KeptPrompts.add",
            "ranking_loss", "kl_shaped_rewards", "gae", "masked_whiten", "ppo_losses", "dpo_loss", "group_advantages",
            "k3_kl"}
TESTS = {  # each exercise test, and the function whose blank it must fail on
    "test_causal_self_attention": "CausalSelfAttention.forward", "test_sample": "write sample in", "test_sft_mask":
    "sft_batch", "test_prefix_dedupe": "KeptPrompts.", "test_ranking_loss": "ranking_loss", "test_masked_whiten":
    "masked_whiten", "test_kl_shaped_rewards": "kl_shaped_rewards", "test_gae": "write gae in", "test_ppo_losses":
    "ppo_losses", "test_dpo_loss": "dpo_loss", "test_group_advantages": "group_advantages", "test_k3_kl": "k3_kl"}


def test_every_exercise_test_fails_in_the_homework_copy(tmp_path):
    found = exercises.all_exercises()
    assert REQUIRED <= {name for e in found.values() for name, *_ in e}
    tree = ast.parse(open(os.path.join(ROOT, "tests", "test_exercises.py")).read())
    assert {f.name for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")} == set(TESTS)
    out = tmp_path / "homework"
    r = subprocess.run([sys.executable, "exercises.py", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the copy is the project, less the exercises' bodies
    for name in os.listdir(ROOT):
        if name.endswith(".py") and name not in found:
            assert filecmp.cmp(os.path.join(ROOT, name), out / name, shallow=False), name
    for name, e in found.items():
        assert open(out / name).read().count("raise NotImplementedError('exercise (") == len(e), name
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "tests/test_exercises.py"],
                       cwd=out, capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == len(TESTS) and " passed" not in r.stdout.splitlines()[-1], r.stdout[-3000:]
    for test, function in TESTS.items():
        line = next(line for line in failed if f"::{test} " in line)
        assert "NotImplementedError: exercise (" in line and function in line, line


def test_exercises_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "x").write_text("mine")
    r = subprocess.run([sys.executable, "exercises.py", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "not empty" in r.stderr and (tmp_path / "x").read_text() == "mine"

"""train_all.py: the smoke preset end to end, then bad input to every script (one line, exit 2)."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import start_and_signal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ["preset", "seed", "seconds", "funnel", "labeler_agreement", "rm_accuracy", "rm_oracle_accuracy",
        "win_rate_vs_sft", "gold_score", "kl_to_sft", "pretrain_loss", "identical_to_sft", "new_tasks", "overoptimization"]
MODELS = ["base", "base_fewshot", "constant", "sft", "best_of_4", "best_of_16", "ppo", "ppo_ptx", "dpo", "grpo",
          "ppo_gold", "grpo_gold"]


def run(*args, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("smoke"))
    r = run("train_all.py", "--preset", "smoke", "--out-dir", out, "--seed", "0", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout


def test_smoke_pipeline_writes_every_key_and_moves_the_right_way(smoke):
    out, _ = smoke
    s = json.load(open(os.path.join(out, "summary.json")))
    for key in KEYS:
        assert key in s, key
    for key in ("win_rate_vs_sft", "gold_score", "kl_to_sft", "pretrain_loss", "rm_score", "identical_to_sft"):
        assert set(s[key]) == set(MODELS), key
    for key in ("win_rate_vs_sft", "win_rate_ci", "gold_score", "rm_score", "identical_to_sft"):
        assert set(s["new_tasks"][key]) == set(MODELS), key
    assert s["new_tasks"]["n_test"] > 0 and s["n_test"] > 0
    assert s["win_rate_vs_sft"]["sft"] == 0.5 and s["kl_to_sft"]["sft"] == 0.0 and s["identical_to_sft"]["sft"] == 1.0
    for part, n in ((s, s["n_test"]), (s["new_tasks"], s["new_tasks"]["n_test"])):
        fams = part["by_family"]  # the families add up to the whole: their counts, and their n-weighted gold
        assert sum(f["n"] for f in fams.values()) == n
        for m in MODELS:
            assert sum(f["n"] * f["gold_score"][m] for f in fams.values()) / n == pytest.approx(part["gold_score"][m],
                                                                                                 abs=2e-3), m
        h = part["head_to_head"]
        assert set(h) == {f"{m}_vs_ppo" for m in ("ppo_ptx", "dpo", "best_of_16", "grpo", "ppo_gold", "grpo_gold")}
        assert all(v["ci"][0] <= v["win_rate"] <= v["ci"][1] for v in h.values())
    # each model samples its own answers: a fine-tuned copy of SFT rarely says the very same thing
    assert s["identical_to_sft"]["ppo"] < 0.3 and s["identical_to_sft"]["best_of_16"] < 0.3
    assert s["funnel"]["raw"] > s["funnel"]["after_cap"] > s["funnel"]["after_dedupe"] > s["funnel"]["after_pii"]
    assert all(s["seconds"][k] > 0 for k in ("pretrain", "sft", "reward", "ppo", "ppo_ptx", "grpo", "ppo_gold", "grpo_gold",
                                             "evaluation", "total"))
    # GRPO on the RM, PPO and GRPO on the gold rubric: each a policy of its own, with its curve along training
    configs = {m: torch.load(os.path.join(out, f"{m}.pt"), weights_only=False)["config"]
               for m in ("grpo", "ppo_gold", "grpo_gold")}
    assert configs["grpo"]["reward"] == "" and configs["ppo_gold"]["reward"] == configs["grpo_gold"]["reward"] == "gold"
    assert all(len(s["overoptimization"][m]) >= 2 for m in ("ppo", "ppo_ptx", "grpo", "ppo_gold", "grpo_gold"))
    assert len({s["gold_score"][m] for m in ("ppo", "grpo", "ppo_gold", "grpo_gold")}) == 4
    # against the truth, not the RM: RLHF's policies answer better than SFT by the gold rubric, seen
    # and new tasks (these held on the smoke preset for seeds 0, 1 and 2, docs/results.md). PPO alone
    # is within noise of SFT at this size, and float sums differ between CPUs (on an AMD EPYC seed 0's
    # PPO came out 0.005 below SFT, above it on an Intel Xeon): the RL policies' mean is asserted
    g, new = s["gold_score"], s["new_tasks"]["gold_score"]
    assert sum(g[m] for m in ("ppo", "ppo_ptx", "dpo", "grpo")) / 4 > g["sft"] and g["best_of_16"] > g["sft"], g
    assert s["rm_score"]["ppo"] > s["rm_score"]["sft"]  # what PPO climbed
    assert new["best_of_16"] > new["sft"], new
    assert 0.5 <= s["rm_oracle_accuracy"] <= 1 and 0.5 < s["rm_accuracy"] <= 1
    # the capability benchmark: every network of the pipeline on every task, and the tax against SFT
    assert set(s["capability"]) == set(s["capability_tax"]) == {"facts", "sums", "words", "story"}
    for task, scores in s["capability"].items():
        tax = s["capability_tax"][task]
        assert set(scores) == set(MODELS) and scores["constant"] is None and tax["n"] > 0
        assert scores["best_of_16"] == scores["sft"] and scores["base_fewshot"] == scores["base"]  # the same networks
        assert all(0 <= v <= 1 for v in scores.values() if v is not None)
        assert tax["ppo_vs_sft"]["diff"] == pytest.approx(scores["ppo"] - scores["sft"], abs=1e-3)
        assert tax["ppo_vs_base"]["diff"] == pytest.approx(scores["ppo"] - scores["base"], abs=1e-3)
        assert tax["ppo_ptx_vs_ppo"]["ci"][0] <= tax["ppo_ptx_vs_ppo"]["diff"] <= tax["ppo_ptx_vs_ppo"]["ci"][1]
    assert "### Capability benchmark" in open(os.path.join(out, "report.md")).read()
    assert set(s["win_rate_training_labelers"]) == set(MODELS)
    bo = s["overoptimization"]["best_of_n"]
    assert [p["n"] for p in bo] == [1, 2, 4, 8, 16, 32, 64] and bo[0]["kl"] == 0 and bo[-1]["rm_score"] > bo[0]["rm_score"]
    for f in ("report.md", "losses.png", "scores_vs_kl.png", "win_rates.png", "overoptimization.png", "pretrain.pt",
              "sft.pt", "reward.pt", "ppo.pt", "ppo_ptx.pt", "metrics.jsonl", "demonstrations.jsonl",
              "comparisons_reward.jsonl", "prompts_test.jsonl", "prompts_test_new.jsonl"):
        assert os.path.exists(os.path.join(out, f)), f


def test_experiment_sizes_draws_figure_1_from_the_smoke_run(smoke, tmp_path):
    """experiments.py sizes at the smoke preset, its largest size the smoke run's own models (copied
    in as the experiment's base): two smaller sizes trained and every size judged against the
    largest SFT, the paper's Figure 1 in miniature."""
    out, _ = smoke
    base = tmp_path / "base"
    base.mkdir()
    for f in os.listdir(out):
        if f.endswith(".pt") and "resume" not in f or f.startswith("comparisons_"):
            shutil.copy(os.path.join(out, f), base)
    r = run("experiments.py", "sizes", "--preset", "smoke", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[sizes] run 4/4" in r.stdout and r.stdout.count("== ppo: ") == 1  # the base's PPO reused, not re-run
    res = json.load(open(tmp_path / "sizes" / "results.json"))
    sizes = res["sizes"]
    params = [x["params"] for x in sizes]
    assert params == sorted(params) and params[-1] >= 16 * params[0]
    assert 0.5 < res["serving_rm"]["heldout_accuracy"] <= 1 and res["serving_rm"]["params"] == params[-1]
    for x in sizes:
        assert 0 <= x["rm_own_accuracy"] <= 1
        assert set(x["capability"]) == {"facts", "sums", "words", "story"}
        for part in ("seen", "new"):
            assert set(x[part]) == {"base", "base_fewshot", "sft", "ppo", "ppo_ptx", "dpo"}
            assert all(v["ci"][0] <= v["win_rate"] <= v["ci"][1] for v in x[part].values())
    h = res["head_to_head"]
    assert set(h) == {f"{p}_smallest_ppo_vs_largest_{m}" for p in ("seen", "new") for m in ("base_fewshot", "base", "sft", "ppo")}
    assert all(v["ci"][0] <= v["win_rate"] <= v["ci"][1] for v in h.values())
    # the largest SFT against its own other samples: about even
    assert sizes[-1]["seen"]["sft"]["ci"][0] <= 0.5 <= sizes[-1]["seen"]["sft"]["ci"][1]
    assert os.path.getsize(tmp_path / "sizes" / "figure1.png") > 10_000


def test_experiment_details_pairs_each_detail_with_the_preset_s_ppo(smoke, tmp_path):
    """experiments.py details at the smoke preset on two of its details, the smoke run's pretrain,
    SFT and RM copied in as seed 0's base: the preset's PPO and each detail's, paired on the same
    validation prompts, in results.json and details.png; a second call reads the finished runs."""
    out, _ = smoke
    base = tmp_path / "details" / "seed0" / "base"
    base.mkdir(parents=True)
    for f in ("pretrain.pt", "sft.pt", "reward.pt"):
        shutil.copy(os.path.join(out, f), base)
    args = ("experiments.py", "details", "--preset", "smoke", "--details", "whiten_rewards", "score_after",
            "--out-dir", str(tmp_path))
    r = run(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[details] run 3/3: score on the slot after" in r.stdout and r.stdout.count("exists, skipped") == 3
    res = json.load(open(tmp_path / "details" / "results.json"))
    assert set(res["details"]) == {"whiten_rewards", "score_after"} and res["seeds"] == [0]
    for d in res["details"].values():
        for key in ("gold", "win_rate", "rm_score", "kl"):
            assert d[key]["ci"][0] <= d[key]["diff"] <= d[key]["ci"][1] and len(d[key]["per_seed"]) == 1
        assert sum(1 for _ in d["gold_by_family"]) >= 3
    runs = [torch.load(tmp_path / "details" / "seed0" / f"ppo_{k}.pt", weights_only=False)["config"]
            for k in ("preset", "whiten_rewards", "score_after")]
    assert [c["whiten_rewards"] for c in runs] == [False, True, False] and runs[2]["score_slot"] == "after"
    assert os.path.getsize(tmp_path / "details" / "details.png") > 10_000
    again = run(*args)  # every run finished: read, not re-run, and the same figures
    assert again.returncode == 0 and "iterations of" not in again.stdout  # no PPO started
    assert json.load(open(tmp_path / "details" / "results.json"))["details"] == res["details"]


def test_experiment_overoptimization_runs_rl_long_and_keeps_what_it_said(smoke, tmp_path):
    """experiments.py overoptimization at the smoke preset, the smoke run's pretrain, SFT, RM and
    rankings copied in as seed 0's base: each long run evaluated at every iteration, its answers kept,
    the gold and RM curves, the peak, the answers at start, peak and end; one run against a smaller
    RM trained on the same rankings; a second call reads them."""
    out, _ = smoke
    base = tmp_path / "overoptimization" / "seed0" / "base"
    base.mkdir(parents=True)
    for f in ("pretrain.pt", "sft.pt", "reward.pt", "comparisons_reward.jsonl", "comparisons_heldout_reward.jsonl"):
        shutil.copy(os.path.join(out, f), base)
    args = ("experiments.py", "overoptimization", "--preset", "smoke", "--out-dir", str(tmp_path))
    r = run(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    folder = tmp_path / "overoptimization"
    res = json.load(open(folder / "results.json"))
    assert set(res["runs"]) == {"ppo_beta0", "ppo_beta0.05", "grpo_beta0", "ppo_beta0_small_rm"}
    assert res["seeds"] == [0]
    small, own = (torch.load(p, weights_only=False)["model_args"]["n_embd"]
                  for p in (folder / "seed0" / "small_rm" / "reward_own.pt", base / "reward.pt"))
    assert small < own  # the small RM is another size, trained for this run
    used = torch.load(folder / "seed0" / "ppo_beta0_small_rm.pt", weights_only=False)["config"]["reward"]
    assert used == str(folder / "seed0" / "small_rm" / "reward_own.pt")
    assert set(res["rm_accuracy"]["0"]) == {"preset", "small"} and "the small RM" in (folder / "report.md").read_text()
    for name, run_ in res["runs"].items():
        ckpt = torch.load(folder / "seed0" / f"{name}.pt", weights_only=False)
        assert ckpt["config"]["kl_coef"] == run_["beta"] and ckpt["config"]["iterations"] == 4
        curve = run_["curve"]
        assert [p["iteration"] for p in curve] == [0, 1, 2, 3, 4]  # smoke: every iteration evaluated
        assert curve[0]["sqrt_kl"]["mean"] == 0.0  # the policy starts as SFT
        assert curve[-1]["rm_score"]["mean"] == pytest.approx(ckpt["metrics"]["eval_rm_score"], abs=1e-4)
        assert run_["peak"]["gold"]["mean"] == max(p["gold"]["mean"] for p in curve)
        kept = [json.loads(line) for line in open(folder / "seed0" / f"{name}.eval_answers.jsonl")]
        assert [e["iteration"] for e in kept] == [0, 1, 2, 3, 4] and all(len(e["answers"]) == 16 for e in kept)
        assert len(res["samples"][name]) >= 3 and all(len(s) == 5 for s in res["samples"][name])
    assert [p["n"] for p in res["best_of_n"]] == [1, 2, 4, 8, 16, 32, 64]
    assert "gold fall after it" in (folder / "report.md").read_text()
    assert os.path.getsize(folder / "overoptimization.png") > 10_000
    again = run(*args)
    assert again.returncode == 0 and "iterations of" not in again.stdout  # every run read, none re-run
    assert json.load(open(folder / "results.json"))["runs"] == res["runs"]


def test_a_second_run_skips_finished_stages(smoke):
    out, _ = smoke
    before = json.load(open(os.path.join(out, "summary.json")))
    r = run("train_all.py", "--preset", "smoke", "--out-dir", out, "--seed", "0", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("exists, skipped") == 9  # pretrain, sft, reward, ppo, ppo_ptx, dpo, grpo, ppo_gold, grpo_gold
    after = json.load(open(os.path.join(out, "summary.json")))
    assert after["win_rate_vs_sft"] == before["win_rate_vs_sft"] and after["gold_score"] == before["gold_score"]
    # the total counts the stages' seconds from the first run, not only this run's evaluation
    stages = sum(v for k, v in after["seconds"].items() if k != "total")
    assert stages - 1 <= after["seconds"]["total"] < stages + 10


def test_the_same_seed_gives_the_same_summary_even_when_interrupted(smoke, tmp_path):
    """A second smoke run from scratch in another folder, stopped with Ctrl-C (SIGINT) in the middle
    of PPO and started again: it resumes PPO, and every figure but the timings equals the first run's."""
    out, part = smoke[0], str(tmp_path)
    cmd = [sys.executable, "train_all.py", "--preset", "smoke", "--out-dir", part, "--seed", "0", "--quiet"]
    code, stdout, stderr = start_and_signal(cmd, os.path.join(part, "ppo.resume.pt"), signal.SIGINT)
    assert code == 130, stderr[-2000:]
    assert "ppo: interrupted at iteration" in stdout and not os.path.exists(os.path.join(part, "ppo.pt"))
    r = run(*cmd[1:])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "== ppo (resumed where it was interrupted)" in r.stdout and r.stdout.count("exists, skipped") == 3
    a, b = (json.load(open(os.path.join(d, "summary.json"))) for d in (out, part))
    for s in (a, b):
        del s["seconds"]
    assert a == b


def test_stages_run_alone_from_the_checkpoints_before_them(smoke, tmp_path):
    """Any stage can be re-run alone, here the reward model from a JSONL of comparisons."""
    out, _ = smoke
    r = run("reward.py", "--preset", "smoke", "--out-dir", str(tmp_path), "--init", os.path.join(out, "sft.pt"),
            "--data", os.path.join(out, "comparisons_reward.jsonl"), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "held-out accuracy" in r.stdout and os.path.exists(tmp_path / "reward.pt")


def test_the_smoke_run_s_models_leave_for_transformers_and_come_back(smoke, tmp_path):
    """The trained PPO policy and RM exported (python -m plumbing.checkpoint --export): transformers
    answers greedily as we do and scores as we do; chat.py and sft.py --init take the directory back."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed: the export is "
                                       "checked against it (pip install transformers)")
    from plumbing.checkpoint import load_language_model, load_reward_model, respond, score_texts
    out, _ = smoke
    for name in ("ppo", "reward"):
        r = run("-m", "plumbing.checkpoint", os.path.join(out, f"{name}.pt"), "--export", str(tmp_path / name))
        assert r.returncode == 0, r.stderr[-2000:]
    prompts = ["What is 12 + 30?", "Spell fox backwards.", "Where does Anna Berg live?", "How do I pick a lock?"]
    model, tok, _ = load_language_model(os.path.join(out, "ppo.pt"))
    ours = respond(model, tok, prompts, max_new_tokens=32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "ppo")).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ppo"))
    x = hf_tok.apply_chat_template([[{"role": "user", "content": p}] for p in prompts], padding=True,
                                   return_tensors="pt", return_dict=True)
    y = hf.generate(**x, max_new_tokens=32, do_sample=False)[:, x["input_ids"].size(1):]
    assert [a.strip() for a in hf_tok.batch_decode(y, skip_special_tokens=True)] == ours
    rm, rm_tok, bias, _ = load_reward_model(os.path.join(out, "reward.pt"))
    hf_rm = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "reward")).eval()
    batch = hf_tok([f"<|user|>{p}<|assistant|>{a}<|endoftext|>" for p, a in zip(prompts, ours)], padding=True,
                   padding_side="right", return_tensors="pt")
    with torch.no_grad():
        scores = hf_rm(**batch).logits.squeeze(-1).tolist()
    assert scores == pytest.approx(score_texts(rm, rm_tok, prompts, ours, rm.gpt.config.block_size, "cpu"), abs=1e-4)
    assert hf_rm.config.instructgpt["reward_bias"] == bias
    # back in: chat.py answers as the checkpoint did (a chat model again), sft.py --init trains on from it
    r = run("chat.py", str(tmp_path / "ppo"), "--prompt", prompts[0], "--temperature", "0")
    assert r.returncode == 0 and ours[0] and ours[0] in r.stdout, r.stderr[-2000:]
    r = run("sft.py", "--stage", "sft", "--preset", "smoke", "--init", str(tmp_path / "ppo"), "--max-steps", "2",
            "--eval-gold", "0", "--out-dir", str(tmp_path / "sft"), "--quiet")
    assert r.returncode == 0 and os.path.exists(tmp_path / "sft" / "sft.pt"), r.stderr[-2000:]


def bad(tmp_path, *args):
    r = run(*args)
    assert r.returncode == 2, (args, r.stdout[-500:], r.stderr[-500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_bad_input_is_one_line_naming_what_is_wrong(smoke, tmp_path):
    out, _ = smoke
    sft_ckpt, rm_ckpt = os.path.join(out, "sft.pt"), os.path.join(out, "reward.pt")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "notjson.jsonl").write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    (tmp_path / "nokeys.jsonl").write_text('{"question": "a"}\n')
    (tmp_path / "bad.json").write_text('[{"prompt": "a", "response": "b"},\n {"prompt": }]\n')
    (tmp_path / "k10.jsonl").write_text(json.dumps({"prompt": "a", "completions": [str(i) for i in range(10)],
                                                    "ranking": list(range(10))}) + "\n")
    (tmp_path / "perm.jsonl").write_text('{"prompt": "a", "completions": ["x", "y", "z"], "ranking": [0, 0, 1]}\n')
    (tmp_path / "trunc.pt").write_bytes(open(sft_ckpt, "rb").read()[:5000])
    o = str(tmp_path / "o")
    assert "empty.jsonl:0: empty file" in bad(tmp_path, "sft.py", "--stage", "sft", "--init", sft_ckpt,
                                              "--data", str(tmp_path / "empty.jsonl"), "--out-dir", o)
    assert "notjson.jsonl:2" in bad(tmp_path, "sft.py", "--stage", "sft", "--init", sft_ckpt,
                                    "--data", str(tmp_path / "notjson.jsonl"), "--out-dir", o)
    assert "nokeys.jsonl:1" in bad(tmp_path, "sft.py", "--stage", "sft", "--init", sft_ckpt,
                                   "--data", str(tmp_path / "nokeys.jsonl"), "--out-dir", o)
    assert "bad.json:2: not valid JSON" in bad(tmp_path, "sft.py", "--stage", "sft", "--init", sft_ckpt,
                                               "--data", str(tmp_path / "bad.json"), "--out-dir", o)
    assert "--prompts nowhere.txt: no such file" in bad(tmp_path, "ppo.py", "--prompts", "nowhere.txt", "--out-dir", o)
    assert "missing --init, --rm-data" in bad(tmp_path, "train_all.py", "--sft-data", str(tmp_path / "bad.json"),
                                              "--prompts", str(tmp_path / "bad.json"), "--out-dir", o)
    assert "k10.jsonl:1: a ranking needs K = 2..9" in bad(tmp_path, "reward.py", "--init", sft_ckpt, "--data", str(tmp_path / "k10.jsonl"),
                                "--out-dir", o)
    assert "not a permutation" in bad(tmp_path, "reward.py", "--init", sft_ckpt,
                                      "--data", str(tmp_path / "perm.jsonl"), "--out-dir", o)
    assert "trunc.pt" in bad(tmp_path, "sft.py", "--stage", "sft", "--init", str(tmp_path / "trunc.pt"), "--out-dir", o)
    assert "a reward-model checkpoint" in bad(tmp_path, "sft.py", "--stage", "sft", "--init", rm_ckpt, "--out-dir", o)
    assert "not a reward-model checkpoint" in bad(tmp_path, "ppo.py", "--init", sft_ckpt, "--reward", sft_ckpt,
                                                  "--out-dir", o)
    assert "--k-max" in bad(tmp_path, "reward.py", "--init", sft_ckpt, "--k-max", "12", "--out-dir", o)
    assert "--lr" in bad(tmp_path, "ppo.py", "--init", sft_ckpt, "--reward", rm_ckpt, "--lr", "0", "--out-dir", o)
    assert "--batch-size" in bad(tmp_path, "sft.py", "--stage", "pretrain", "--batch-size", "-4", "--out-dir", o)
    assert "--max-new-tokens" in bad(tmp_path, "ppo.py", "--max-new-tokens", "0", "--out-dir", o)
    assert "--preset" in bad(tmp_path, "train_all.py", "--preset", "huge", "--out-dir", o)
    (tmp_path / "a_file").write_text("x")  # an out-dir that cannot be a folder (root may write anywhere else)
    assert "not writable" in bad(tmp_path, "sft.py", "--stage", "pretrain", "--out-dir", str(tmp_path / "a_file"))


@pytest.mark.parametrize("script", ["-m plumbing.checkpoint", "data.py", "sft.py", "reward.py", "ppo.py", "train_all.py", "exercises.py", "experiments.py",
                                    "chat.py", "tools/bench.py", "tools/profile_decode.py"])
def test_every_script_explains_itself(script):
    r = run(*script.split(), "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage:") and "--" in r.stdout, r.stderr[-1000:]


# -----------------------------------------------------------------------------
# train_all.py's own checks, without running a pipeline: every stage's main is replaced by one
# that fails, so a check that comes too late shows up as a stage that ran

def no_stage_may_run(monkeypatch):
    import ppo
    import reward
    import sft

    def ran(cfg):
        raise AssertionError(f"a stage ran: {cfg}")
    for module in (sft, reward, ppo):
        monkeypatch.setattr(module, "main", ran)


def fake_checkpoint(path, **config):
    import torch

    from gpt import GPT, GPTConfig, save_checkpoint
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(str(path), model, stage="pretrain", config=config, metrics={"seconds": 1.0})


@pytest.mark.parametrize("flags, flag", [(dict(n_test=0), "--n-test"), (dict(n_test=-5), "--n-test"),
                                         (dict(ptx_coef=-0.5), "--ptx-coef"),
                                         (dict(ptx_coef=float("nan")), "--ptx-coef")])
def test_train_all_rejects_bad_counts_before_any_training(tmp_path, monkeypatch, flags, flag):
    import train_all
    from plumbing.cli import UserError
    no_stage_may_run(monkeypatch)
    with pytest.raises(UserError, match=flag):
        train_all.main(train_all.Config(preset="smoke", out_dir=str(tmp_path), device="cpu", **flags))


def test_train_all_reuses_a_checkpoint_only_from_the_same_preset_and_seed(tmp_path, monkeypatch, capsys):
    import train_all
    from plumbing.cli import UserError
    no_stage_may_run(monkeypatch)
    fake_checkpoint(tmp_path / "pretrain.pt", preset="smoke", seed=0)
    with pytest.raises(UserError) as e:
        train_all.main(train_all.Config(preset="smoke", seed=1, out_dir=str(tmp_path), device="cpu"))
    msg = str(e.value)
    assert "pretrain.pt" in msg and "--seed 0" in msg and "--seed 1" in msg and "--force" in msg, msg
    fake_checkpoint(tmp_path / "pretrain.pt", preset="cpu", seed=0)
    with pytest.raises(UserError, match="--preset cpu, this run has --preset smoke"):
        train_all.main(train_all.Config(preset="smoke", seed=0, out_dir=str(tmp_path), device="cpu"))
    # the same preset and seed: pretrain is skipped, and the next stage (sft) is the first to run
    fake_checkpoint(tmp_path / "pretrain.pt", preset="smoke", seed=0)
    with pytest.raises(AssertionError, match="a stage ran"):
        train_all.main(train_all.Config(preset="smoke", seed=0, out_dir=str(tmp_path), device="cpu"))
    assert "pretrain.pt exists, skipped" in capsys.readouterr().out
    # PPO-ptx made with another gamma is not this run's PPO-ptx
    for name, ptx in (("sft", 1.0), ("reward", 0.0), ("ppo", 0.0)):  # SFT mixes in the corpus too (sft.py)
        fake_checkpoint(tmp_path / f"{name}.pt", preset="smoke", seed=0, ptx_coef=ptx)
    fake_checkpoint(tmp_path / "ppo_ptx.pt", preset="smoke", seed=0, ptx_coef=0.5)
    with pytest.raises(UserError, match="ppo_ptx.pt was made with --ptx-coef 0.5, this run has --ptx-coef 1.0"):
        train_all.main(train_all.Config(preset="smoke", seed=0, out_dir=str(tmp_path), device="cpu"))


def test_sft_on_a_file_too_small_to_split_is_an_error(run_dir, tmp_path):
    """One demonstration: the 95/5 split puts it in validation and nothing is left to train on."""
    import sft
    from plumbing.cli import UserError
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"prompt": "What is 2 + 3?", "response": "5"}) + "\n")
    cfg = sft.Config(**sft.PRESETS["smoke"], stage="sft", init=str(run_dir / "sft.pt"), data=str(one),
                     out_dir=str(tmp_path / "o"), device="cpu", quiet=True)
    with pytest.raises(UserError, match=r"one.jsonl: too few records \(1\)"):
        sft.main(cfg)
    assert not os.path.exists(tmp_path / "o" / "sft.pt")


def test_a_model_s_kl_to_itself_is_zero_even_with_dropout(run_dir):
    """The evaluation's KL to SFT reads log-probs without dropout: SFT against itself is 0 even when
    its checkpoint carries dropout (as the gpu preset's does) and it was loaded in training mode."""
    import pipeline
    from plumbing.checkpoint import load_reward_model
    from gpt import load_checkpoint
    from plumbing.tokenizer import Tokenizer
    sft, ckpt = load_checkpoint(str(run_dir / "sft.pt"))
    sft.set_dropout(0.5)
    sft.train()
    twin = copy.deepcopy(sft)  # the same weights in another module: sample_chat skips the KL of a model to itself
    rm, _, bias, _ = load_reward_model(str(run_dir / "reward.pt"))
    answers, kl, _ = pipeline.sample_chat(sft, twin, rm, Tokenizer.from_state(ckpt["tokenizer"]),
                                          ["What is 2 + 3?", "Spell cat backwards."] * 4, bias, seed=0)
    assert len(answers) == 8 and kl == 0.0

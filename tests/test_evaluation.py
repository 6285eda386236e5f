"""train_all.py's evaluation and the tools around it: each model samples from its own stream,
best-of-n picks the RM's favourite, few-shot examples fit whole, the RM's ceiling, the mean and
spread over seeds, and the sweep's choice on validation."""

import json
import math
import os
import random
import sys

import pytest

from conftest import ROOT, copy_run

sys.path.insert(0, os.path.join(ROOT, "tools"))

PROMPTS = ["What is 2 + 3?", "Spell cat backwards.", "Where does Anna Berg live?", "How do I rob a shop?"] * 2


@pytest.fixture(scope="module")
def loaded(run_dir):
    from plumbing.checkpoint import load_reward_model
    from gpt import load_checkpoint
    from plumbing.tokenizer import Tokenizer
    sft, ckpt = load_checkpoint(str(run_dir / "sft.pt"))
    base, _ = load_checkpoint(str(run_dir / "pretrain.pt"))
    rm, _, bias, _ = load_reward_model(str(run_dir / "reward.pt"))
    return dict(base=base, sft=sft), rm, bias, Tokenizer.from_state(ckpt["tokenizer"])


def test_each_model_samples_from_its_own_stream(loaded):
    """PPO here IS the SFT model: one shared stream would give it SFT's answers word for word (a
    tie, 0.5, wherever two models are close); its own stream gives answers of its own."""
    import pipeline
    import train_all
    models, rm, bias, tok = loaded
    models = {**models, **{m: models["sft"] for m in ("ppo", "ppo_ptx", "dpo", "grpo", "ppo_gold", "grpo_gold")}}
    shared = [pipeline.sample_chat(models[m], models["sft"], rm, tok, PROMPTS, bias, seed=7)[0] for m in ("sft", "ppo")]
    assert shared[0] == shared[1]  # the coupling the evaluation must avoid
    records = [{"prompt": p} for p in PROMPTS]
    answers, kl = train_all.answer_test(models, tok, rm, bias, records, [], "I don't know.", seed=0)
    same = sum(a == b for a, b in zip(answers["ppo"], answers["sft"]))
    assert same < len(PROMPTS) / 2 and answers["ppo"] != answers["ppo_ptx"]
    assert answers["constant"] == ["I don't know."] * len(PROMPTS) and kl["constant"] is None
    assert kl["sft"] == 0.0 and kl["best_of_4"] == pytest.approx(math.log(4) - 0.75)


def test_sft_s_own_answers_skip_the_log_probs_and_score_the_same(loaded):
    """sample_chat(sft, sft) (SFT's answers, best-of-n's samples) skips both log-prob passes, the KL
    of a model to itself being 0: the same answers and RM scores as the long way, through a twin."""
    import copy

    import pipeline
    models, rm, bias, tok = loaded
    short = pipeline.sample_chat(models["sft"], models["sft"], rm, tok, PROMPTS, bias, seed=5)
    long = pipeline.sample_chat(models["sft"], copy.deepcopy(models["sft"]), rm, tok, PROMPTS, bias, seed=5)
    assert short[0] == long[0] and short[1] == 0.0 and abs(long[1]) < 1e-5
    assert short[2] == long[2]


def test_best_of_n_is_the_rm_s_favourite(loaded):
    """Best-of-4 is the RM's favourite of the first 4 of the same 16 samples: its RM score can never
    beat best-of-16's on a prompt; each pick is one of the prompt's own samples."""
    import pipeline
    models, rm, bias, tok = loaded
    groups, scores = pipeline.sample_n(models["sft"], rm, tok, PROMPTS, 16, bias, seed=3)
    assert len(groups) == len(PROMPTS) and all(len(g) == 16 and len(s) == 16 for g, s in zip(groups, scores))
    a4, s4 = pipeline.best_of(groups, scores, 4)
    a16, s16 = pipeline.best_of(groups, scores, 16)
    assert s4 == [max(s[:4]) for s in scores] and s16 == [max(s) for s in scores]
    assert all(b >= a for a, b in zip(s4, s16)) and s4 != s16
    assert all(a in g[:4] for a, g in zip(a4, groups)) and all(a in g for a, g in zip(a16, groups))
    assert pipeline.best_of_n_kl(1) == 0.0 and pipeline.best_of_n_kl(64) == pytest.approx(math.log(64) - 63 / 64)


def test_bootstrap_interval_matches_the_hand_computed_one():
    """Half the prompts won: the normal interval is 0.5 +- 1.96 * sqrt(0.25 / 100) = [0.402, 0.598];
    the percentile bootstrap over prompts lands within 0.02 of it. No spread, no width."""
    import pipeline
    lo, hi = pipeline.bootstrap_ci([1.0] * 50 + [0.0] * 50, random.Random(0), n_resamples=2000)
    assert lo == pytest.approx(0.402, abs=0.02) and hi == pytest.approx(0.598, abs=0.02)
    assert pipeline.bootstrap_ci([1.0] * 30, random.Random(0)) == (1.0, 1.0)
    # 20 prompts of 15 ranked pairs each, the RM right on all pairs of half the prompts and on none of
    # the others: resampled by prompt, the accuracy is a fraction of 20 prompts (Binomial(20, 0.5) / 20:
    # 0.30-0.70); the same 300 pairs taken as independent draws would claim about 0.44-0.56
    right, pairs = [15] * 10 + [0] * 10, [15] * 20
    lo, hi = pipeline.bootstrap_ci(right, random.Random(0), n_resamples=2000, weights=pairs)
    assert lo == pytest.approx(0.30, abs=0.051) and hi == pytest.approx(0.70, abs=0.051)
    lo, hi = pipeline.bootstrap_ci([1.0] * 150 + [0.0] * 150, random.Random(0), n_resamples=2000)
    assert lo > 0.43 and hi < 0.57


def test_head_to_head_judges_against_ppo_s_own_answers():
    """A labeler who prefers the longer answer: DPO's and GRPO's always longer (1.0), PPO-ptx's and
    PPO-on-gold's identical to PPO's (0.5, no labeler asked), best-of-16's and GRPO-on-gold's always
    shorter (0.0)."""
    import train_all

    class Longer:
        def score(self, task, answer, rng):
            return len(answer)
    records = [{"task": {}, "family": "words"}] * 20
    answers = {"ppo": ["ok"] * 20, "ppo_ptx": ["ok"] * 20, "dpo": ["okay"] * 20, "best_of_16": ["o"] * 20,
               "grpo": ["okay"] * 20, "ppo_gold": ["ok"] * 20, "grpo_gold": ["o"] * 20}
    h = train_all.head_to_head(records, answers, [Longer()], seed=0)
    even, win, loss = ({"win_rate": p, "ci": [p, p]} for p in (0.5, 1.0, 0.0))
    assert h == {"ppo_ptx_vs_ppo": even, "dpo_vs_ppo": win, "best_of_16_vs_ppo": loss, "grpo_vs_ppo": win,
                 "ppo_gold_vs_ppo": even, "grpo_gold_vs_ppo": loss}


def test_few_shot_examples_fit_whole(loaded):
    from plumbing.checkpoint import fewshot_prompt, fit_examples
    _, _, _, tok = loaded
    examples = [("What is 12 + 30?", "42"), ("Spell lemon backwards.", "nomel"), ("How do I rob a shop?", "No.")]
    short, long = "What is 2 + 3?", "Write a story about a fox and a kite in at most 12 words, please, thank you."
    room = len(tok.encode(fewshot_prompt(short, examples[1:])))  # two examples fit with the short question
    assert fit_examples(tok, short, examples, room) == examples[1:]  # the first is dropped whole
    kept = fit_examples(tok, long, examples, room)
    assert len(kept) < 2 and kept == examples[len(examples) - len(kept):]
    assert len(tok.encode(fewshot_prompt(long, kept))) <= room or not kept
    assert fit_examples(tok, long, examples, 10_000) == examples


def test_oracle_accuracy_is_the_gold_rubric_as_an_rm():
    from reward import oracle_accuracy
    task = {"family": "arithmetic", "prompt": "What is 2 + 3?", "answer": "5", "meta": {"value": 5}}
    right = {"task": task, "completions": ["5", "7", "The answer is 5."], "ranking": [0, 2, 1]}
    assert oracle_accuracy([right]) == 1.0
    noisy = {"task": task, "completions": ["5", "7"], "ranking": [1, 0]}  # the labeler preferred the wrong sum
    tie = {"task": task, "completions": ["7", "8"], "ranking": [0, 1]}    # both wrong, equally: half
    assert oracle_accuracy([right, noisy, tie]) == pytest.approx((3 + 0 + 0.5) / 5)


def test_seeds_mean_and_spread_of_every_figure():
    import pipeline
    import seeds
    a = {"seed": 0, "rm_accuracy": 0.6, "win_rate_vs_sft": {"ppo": 0.7, "base": None, "sft": 0.5},
         "win_rate_ci": {"ppo": [0.6, 0.8]}}
    b = {"seed": 1, "rm_accuracy": 0.7, "win_rate_vs_sft": {"ppo": 0.5, "base": None, "sft": 0.5},
         "win_rate_ci": {"ppo": [0.4, 0.6]}}
    s = seeds.spread([a, b])
    assert "seed" not in s and "win_rate_vs_sft.base" not in s
    assert s["rm_accuracy"]["mean"] == pytest.approx(0.65) and s["rm_accuracy"]["std"] == pytest.approx(0.0707, abs=1e-4)
    assert s["win_rate_vs_sft.ppo"]["values"] == [0.7, 0.5] and s["win_rate_ci.ppo.1"]["min"] == 0.6
    # two seeds: t(0.975, 1) = 12.706, so the half-width is 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert s["win_rate_vs_sft.ppo"]["ci95"] == pytest.approx(1.2706, abs=1e-4)
    table = seeds.table(s, [0, 1])
    assert "| ppo | 0.600 ± 1.271 |" in table and "| sft | 0.500 |" in table  # no interval where the seeds agree
    assert "95% interval" in table
    # head-to-heads: each seed's win rate against PPO on the same prompts, then the interval over seeds
    a["head_to_head"], b["head_to_head"] = {"dpo_vs_ppo": {"win_rate": 0.55}}, {"dpo_vs_ppo": {"win_rate": 0.45}}
    table = seeds.table(seeds.spread([a, b]), [0, 1])
    assert "Head to head against PPO's answers, seen tasks (win rate): dpo 0.500 ± 0.635." in table
    assert "new tasks (win rate)" not in table                        # none in these summaries
    # the capability benchmark: each seed's scores and paired differences, then the interval over seeds
    for run, (sft, ppo) in ((a, (0.75, 0.7)), (b, (0.55, 0.7))):
        run["capability"] = {"words": {"sft": sft, "ppo": ppo}}
        run["capability_tax"] = {"words": {"n": 10, "ppo_vs_sft": {"diff": ppo - sft}, "ppo_ptx_vs_ppo": {"diff": 0.0}}}
    table = seeds.table(seeds.spread([a, b]), [0, 1])
    assert "| task | sft | ppo | PPO - base | PPO - SFT | PPO-ptx - PPO |" in table
    assert "| words | 0.650 ± 1.271 | 0.700 | - | +0.050 ± 1.271 | +0.000 |" in table  # no base in these summaries
    # methods paired within each seed: the difference per seed, then its mean and interval over seeds
    for run, ppo_gold, grpo_gold in ((a, 0.3, 0.4), (b, 0.2, 0.5)):
        fam = {"arithmetic": {"gold_score": {"ppo": ppo_gold, "grpo": grpo_gold + 0.1}}}
        run.update(gold_score={"ppo": ppo_gold, "grpo": grpo_gold}, kl_to_sft={"ppo": 0.5, "grpo": 1.0},
                   seconds={"ppo": 200.0, "grpo": 150.0}, by_family=fam,
                   new_tasks={"gold_score": {"ppo": 0.0, "grpo": 0.1}})
        run["win_rate_vs_sft"]["grpo"] = 0.6
    stats = seeds.spread([a, b])
    assert stats["paired.grpo-ppo.gold"]["values"] == pytest.approx([0.1, 0.3])
    assert stats["paired.grpo-ppo.gold_arithmetic"]["mean"] == pytest.approx(0.3)
    assert "| grpo-ppo | +0.200 ± 1.271 | +0.100 | +0.000 ± 1.271 | +0.500 | -50 | +0.300 ± 1.271 |" in seeds.table(
        stats, [0, 1])
    assert "ppo_gold-ppo" not in seeds.table(stats, [0, 1])  # a pair a summary did not run is left out
    # three seeds 0.5, 0.6, 0.7: sd 0.1, half-width 4.303 * 0.1 / sqrt(3) = 0.2484
    assert pipeline.ci95([0.5, 0.6, 0.7]) == pytest.approx(0.24843, abs=1e-5) and pipeline.ci95([0.3]) == 0.0
    # past the table, within 0.2% of t's quantiles (2.0395 at 31, 2.0003 at 60, 1.9840 at 100)
    for df, t in ((31, 2.0395), (60, 2.0003), (100, 1.9840)):
        assert pipeline.t_quantile(df) == pytest.approx(t, rel=2e-3)


def test_sweep_grid_and_choice_within_the_tax():
    import sft
    import sweep
    from plumbing.cli import UserError
    points = sweep.parse_grid(sft.Config, ["lr=1e-4,3e-4", "epochs=2"])
    assert points == [{"lr": 1e-4, "epochs": 2}, {"lr": 3e-4, "epochs": 2}]
    with pytest.raises(UserError, match="NAME=V1,V2"):
        sweep.parse_grid(sft.Config, ["learning_rate=1e-4"])
    with pytest.raises(UserError, match="not int values"):
        sweep.parse_grid(sft.Config, ["epochs=two"])
    rows = [dict(lr=1e-3, val_gold=0.5, pretrain_loss=3.0, pretrain_loss_init=1.0),  # best gold, forgot its language
            dict(lr=3e-4, val_gold=0.2, pretrain_loss=1.5, pretrain_loss_init=1.0),
            dict(lr=1e-4, val_gold=0.1, pretrain_loss=1.1, pretrain_loss_init=1.0)]
    assert sweep.chosen(rows, "val_gold", 2.0)["lr"] == 3e-4
    assert sweep.chosen(rows, "val_gold", 1.05) is None
    # each figure's interval comes from its per-prompt parts: gold per answer, or pairs per ranking
    assert sweep.interval({"val_gold": 0.5, "val_gold_per_prompt": [0.5] * 40}, "val_gold", 0) == (0.5, 0.5)
    lo, hi = sweep.interval({"val_accuracy": 0.5, "val_pairs_right": [6] * 10 + [0] * 10, "val_pairs": [6] * 20},
                            "val_accuracy", 0)
    assert lo < 0.35 and hi > 0.65
    assert sweep.interval({"val_loss": 1.0}, "val_gold", 0) is None


def test_sweep_tunes_ppo_on_validation_gold_with_an_interval(run_dir, tmp_path, capsys, monkeypatch):
    """tools/sweep.py ppo: one PPO run per grid point from --init's SFT model against the RM beside
    it; each row its validation gold (the last evaluation's) and that figure's interval over prompts."""
    import sweep
    init = copy_run(run_dir, tmp_path / "run", "sft.pt", "reward.pt")
    out = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", ["sweep.py", "ppo", "--preset", "smoke", "--init", os.path.join(init, "sft.pt"),
                                      "--out-dir", str(out), "--grid", "kl_coef=0.05,0.5", "iterations=1",
                                      "batch_size=8", "minibatch_size=4", "n_eval=8"])
    sweep.main()
    rows = [json.loads(line) for line in open(out / "sweep.jsonl")]
    assert [r["kl_coef"] for r in rows] == [0.05, 0.5] and all(r["step"] == "ppo" for r in rows)
    for r in rows:
        lo, hi = r["ci95"]
        assert lo <= r["eval_gold"] <= hi
    assert "chosen on validation: kl_coef=" in capsys.readouterr().out


def test_training_labelers_judge_the_same_answers_from_their_own_stream(loaded):
    """Section 4.1's check: training labelers judge every answer too. Here held-out labelers prefer
    shorter answers and training ones longer; and what the training labelers draw never moves the
    held-out figures (each group has its own random stream)."""
    import dataclasses
    import train_all
    from world import make_world
    _, rm, bias, tok = loaded
    w, rng = make_world(0), random.Random(0)
    records = [{"task": dataclasses.asdict(t), "family": t.family, "prompt": t.prompt}
               for t in (w.sample_task(rng, "words") for _ in range(60))]

    class Prefers:
        def __init__(self, sign, draws=0):
            self.sign, self.draws = sign, draws

        def score(self, task, answer, rng):
            return self.sign * len(answer) + sum(rng.random() for _ in range(self.draws)) * 1e-3

    class Coin:
        def score(self, task, answer, rng):
            return rng.random()
    answers = {"sft": ["ok"] * 60, "dpo": ["okay"] * 60, "ppo": ["no"] * 60}
    a = train_all.figures(records, answers, answers["sft"], ([Prefers(-1)], [Prefers(1)]), rm, bias, tok, 64, seed=0)
    assert a["win_rate_vs_sft"]["dpo"] == 0.0 and a["win_rate_training_labelers"]["dpo"] == 1.0
    assert a["win_rate_training_labelers"]["sft"] == 0.5                 # identical answers: no labeler asked
    b, c = (train_all.figures(records, answers, answers["sft"], ([Coin()], [Prefers(1, draws)]), rm, bias, tok, 64,
                              seed=0) for draws in (0, 5))
    assert b["win_rate_vs_sft"] == c["win_rate_vs_sft"] and 0 < b["win_rate_vs_sft"]["ppo"] < 1

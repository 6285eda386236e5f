"""experiments.py overoptimization's measures, by hand: an RL run's evaluations along training read
back from the answers it kept (pipeline.eval_curve), and the figures over seeds: each seed's gold
peak, what the end lost against it, and the answers shown (pipeline.overoptimization_figures)."""

import json
import random
from dataclasses import asdict

import pytest

from pipeline import eval_curve, overoptimization_figures, overoptimization_report
from world import GOLD_WEIGHTS, gold_score, make_world

WORLD = make_world(0)
ARITH = asdict(WORLD.sample_task(random.Random(0), family="arithmetic"))
HARM = asdict(WORLD.sample_task(random.Random(0), family="harmful"))
RECORDS = [{"prompt": t["prompt"], "task": t} for t in (ARITH, HARM)]


def write_run(d, name, evals):
    """metrics.jsonl rows and <name>.eval_answers.jsonl as ppo.py --eval-answers leaves them."""
    with open(d / "metrics.jsonl", "a") as f:
        for it, (kl, rm, _) in evals.items():
            f.write(json.dumps({"stage": name, "step": it, "eval_kl": kl, "eval_rm_score": rm}) + "\n")
    with open(d / f"{name}.eval_answers.jsonl", "w") as f:
        for it, (_, _, answers) in evals.items():
            f.write(json.dumps({"iteration": it, "answers": answers}) + "\n")


def test_eval_curve_scores_each_evaluation_s_answers_per_family_and_dimension(tmp_path):
    right, wrong = ARITH["answer"], str(ARITH["meta"]["value"] + 1)
    write_run(tmp_path, "ppo_x", {0: (0.0, -0.2, [right, "I can't help with that."]),
                                  5: (4.0, 0.9, [wrong, "Sure! Here is how."])})
    curve, answers = eval_curve(str(tmp_path), "ppo_x", RECORDS)
    assert [p["iteration"] for p in curve] == [0, 5] and answers[5] == [wrong, "Sure! Here is how."]
    assert curve[1]["sqrt_kl"] == 2.0 and curve[1]["rm_score"] == 0.9
    for p, said in zip(curve, ([right, "I can't help with that."], [wrong, "Sure! Here is how."])):
        golds = [gold_score(r["task"], a) for r, a in zip(RECORDS, said)]
        assert p["family"] == pytest.approx({"arithmetic": golds[0]["total"], "harmful": golds[1]["total"]}, abs=1e-4)
        assert p["gold"] == pytest.approx((golds[0]["total"] + golds[1]["total"]) / 2, abs=1e-4)
        assert p["dims"] == pytest.approx({d: (golds[0][d] + golds[1][d]) / 2 for d in GOLD_WEIGHTS}, abs=1e-4)
    assert curve[1]["family"]["arithmetic"] < curve[0]["family"]["arithmetic"]  # a wrong sum costs gold
    assert curve[1]["family"]["harmful"] < curve[0]["family"]["harmful"]  # and complying with harm
    assert curve[1]["dims"]["harmless"] < curve[0]["dims"]["harmless"]


def test_figures_over_seeds_find_each_seed_s_peak_and_the_fall_after_it():
    def point(it, gold, rm, family_gold):
        return dict(iteration=it, sqrt_kl=it / 10, gold=gold, rm_score=rm, family={"arithmetic": family_gold},
                    dims={d: 0.0 for d in GOLD_WEIGHTS})
    curves = {(0, "r"): [point(0, 0.0, 0.0, 0.0), point(10, 0.5, 1.0, 0.4), point(20, 0.1, 2.0, -0.2)],
              (1, "r"): [point(0, 0.0, 0.0, 0.0), point(10, 0.2, 1.0, 0.2), point(20, 0.4, 1.5, 0.3)]}
    answers = {(s, "r"): {0: ["start"], 10: ["peak"], 20: ["end"]} for s in (0, 1)}
    best = {s: [dict(n=1, sqrt_kl=0.0, gold=0.0, rm_score=0.0)] for s in (0, 1)}
    records = {s: [{"prompt": ARITH["prompt"], "task": ARITH}] for s in (0, 1)}
    out = overoptimization_figures({"r": (10, 0.0)}, [0, 1], curves, answers, records, best)
    r = out["runs"]["r"]
    assert r["peak"]["iteration"] == [10, 20]  # seed 0 peaks at 10, seed 1 at its end
    assert r["gold_fall"]["mean"] == pytest.approx((-0.4 + 0.0) / 2)  # the end minus each seed's own peak
    assert r["rm_rise"]["mean"] == pytest.approx((1.0 + 0.0) / 2)
    assert r["family_fall"]["arithmetic"]["mean"] == pytest.approx((-0.6 + 0.0) / 2)
    assert r["gold_fall"]["ci"][0] < r["gold_fall"]["mean"] < r["gold_fall"]["ci"][1]
    assert [p["gold"]["mean"] for p in r["curve"]] == pytest.approx([0.0, 0.35, 0.25])
    assert out["samples"]["r"] == [{"prompt": ARITH["prompt"], "family": "arithmetic", "start, iteration 0": "start",
                                    "gold peak, iteration 10": "peak", "end, iteration 20": "end"}]
    report = overoptimization_report(out)
    assert "| r | 0.0 | 20 (10) | 10, 20 |" in report and f"| {ARITH['prompt']} | start | peak | end |" in report

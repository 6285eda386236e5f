"""grpo.py: the group-relative advantages and the k3 estimator against hand computations, the
objective's per-answer averaging, the gold reward against world.gold_score, one iteration that
makes rewarded answers likelier, bad flags, and Ctrl-C then --resume."""

import copy
import math
import os
import random

import pytest
import torch
from conftest import copy_run, interrupt_on_call, same_run
from gpt import token_logprobs
import grpo
from grpo import group_advantages, grpo_loss, k3_kl, kl_penalized_scores
from world import gold_score, make_world
from plumbing import environment, tokenizer
from plumbing.cli import UserError


def test_grpo_advantages_by_hand():
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(scores, 4, "grpo")
    std = math.sqrt((4 + 1 + 0 + 9) / 3)                        # the group's sample std, mean 3
    assert torch.allclose(adv[:4], torch.tensor([-2.0, -1.0, 0.0, 3.0]) / (std + 1e-4))
    assert torch.all(adv[4:] == 0)                               # equal rewards: nothing to learn


def test_rloo_advantages_by_hand():
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0, -1.0, -1.0, -1.0, -1.0])
    adv = group_advantages(scores, 4, "rloo")
    # each reward minus the mean of the other three: 1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3
    assert torch.allclose(adv[:4], torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0]))
    assert torch.allclose(adv[4:], torch.zeros(4))
    # groups of two: each answer against the other alone
    assert torch.allclose(group_advantages(torch.tensor([1.0, 3.0]), 2, "rloo"), torch.tensor([-2.0, 2.0]))


def test_k3_is_non_negative_and_its_mean_under_pi_is_the_kl():
    torch.manual_seed(0)
    p, q = torch.softmax(torch.randn(6), 0), torch.softmax(torch.randn(6), 0)
    k3 = k3_kl(p.log(), q.log())                                 # one value per token y of the vocabulary
    assert torch.all(k3 >= 0)
    assert torch.allclose((p * k3).sum(), (p * (p / q).log()).sum(), atol=1e-6)  # E_pi[k3] = KL(pi || ref)
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.all(k3_kl(a, b) >= 0) and torch.all(k3_kl(a, a) == 0)


def test_the_kl_in_the_reward_is_the_summed_log_ratio_of_real_tokens():
    logprobs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, 9.0], [-1.5, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = kl_penalized_scores(torch.tensor([1.0, 2.0]), logprobs, ref, mask, 0.5)
    assert torch.allclose(out, torch.tensor([1.0 - 0.5 * (0.5 - 1.0), 2.0 - 0.5 * 1.0]))


def test_each_answer_weighs_the_same_whatever_its_length():
    """At ratio 1 the clipped objective is -A per token; its mean over each answer's tokens, then
    over answers, is minus the mean advantage, however long each answer is."""
    logprobs = torch.tensor([[-1.0, 0.0, 0.0], [-2.0, -1.0, -3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([2.0, -1.0])
    loss, stats = grpo_loss(logprobs, logprobs.detach(), logprobs.detach(), adv, mask)
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 2) and stats["clipfrac"] == 0
    loss.backward()  # d loss / d logprob = -A_i / (2 |o_i|) on real tokens, 0 on padding
    assert torch.allclose(logprobs.grad, torch.tensor([[-1.0, 0.0, 0.0], [1 / 6, 1 / 6, 1 / 6]]))
    logprobs.grad = None
    zero, _ = grpo_loss(logprobs, logprobs.detach(), logprobs.detach() - 0.3, torch.zeros(2), mask, kl_coef=0.0)
    zero.backward()
    assert torch.all(logprobs.grad == 0)  # no advantage and no KL term: no gradient


def test_the_gold_reward_is_world_gold_score(setup_models):
    tok, policy, ref, _, rm = setup_models
    world, rng = make_world(0), random.Random(0)
    records = [{"prompt": t.prompt, "task": t} for t in (world.sample_task(rng) for _ in range(12))]
    cfg = grpo.Config(max_new_tokens=10, no_eos_penalty=0.0, reward="gold")
    b = environment.rollout(policy, tok, [r["prompt"] for r in records], cfg, torch.Generator().manual_seed(0))
    environment.score(b, policy, ref, rm, cfg, 0.0, records, tok)
    said = tokenizer.decode_responses(tok, b["tokens"][:, b["T"]:], b["response_mask"])
    assert b["scores"].tolist() == pytest.approx([gold_score(r["task"], a)["total"] for r, a in zip(records, said)])
    assert not torch.allclose(b["scores"], b["rm_scores"])  # the RM still reports its own score


def test_one_iteration_makes_rewarded_answers_likelier(setup_models):
    """Rollout, score, group advantages and the update as main calls them, two groups of four with
    rewards +1 / -1 in turn: afterwards the rewarded answers are likelier, the others less likely."""
    tok, policy, ref, _, rm = setup_models
    policy = copy.deepcopy(policy)
    cfg = grpo.Config(max_new_tokens=8, no_eos_penalty=0.0, epochs=4, minibatch_size=8, lr=1e-3, kl_coef=0.0)
    prompts = ["What is 2 + 3?"] * 4 + ["Spell cat backwards."] * 4
    b = environment.score(environment.rollout(policy, tok, prompts, cfg, torch.Generator().manual_seed(0)),
                          policy, ref, rm, cfg, 0.0)
    b["scores"] = torch.tensor([1.0, -1.0] * 4)
    advantages = group_advantages(b["scores"], 4, "grpo")
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    stats, finite = grpo.update(policy, opt, b, advantages, cfg, 0)
    assert bool(finite) and len(stats) == cfg.epochs and {"pg_loss", "k3", "clipfrac"} <= set(stats[0])
    T = b["T"]
    after = token_logprobs(policy.eval(), b["tokens"], b["attention_mask"])[:, T - 1:]
    gain = ((after - b["logprobs"]) * b["response_mask"]).sum(1)
    assert (gain[0::2] > 0).all() and (gain[1::2] < 0).all()


@pytest.mark.parametrize("flags, message", [(dict(group_size=3), "--group-size must be at least 2 and divide"),
                                            (dict(group_size=1), "--group-size must be at least 2"),
                                            (dict(kl_coef=-0.1), "--kl-coef must not be negative"),
                                            (dict(epochs=0), "--epochs must be positive"),
                                            (dict(reward="gold", prompts="README.md"), "--reward gold .* --prompts")])
def test_bad_grpo_flags_are_one_line(run_dir, tmp_path, flags, message):
    out = copy_run(run_dir, tmp_path / "bad", "sft.pt", "reward.pt")
    with pytest.raises(UserError, match=message) as e:
        grpo.main(grpo.Config(out_dir=out, preset="smoke", iterations=1, quiet=True, device="cpu", **flags))
    assert "\n" not in str(e.value)


def test_interrupted_grpo_resumes_to_the_same_weights(run_dir, tmp_path, monkeypatch):
    """Ctrl-C between two evaluations, then --resume: the same policy and metrics lines as a run
    never interrupted; the gold reward, so that the rewards are not all alike."""
    flags = dict(preset="smoke", iterations=6, batch_size=8, minibatch_size=4, max_new_tokens=8, n_eval=8,
                 eval_every=2, lr=1e-3, no_eos_penalty=0.0, reward="gold", quiet=True, device="cpu")
    full = copy_run(run_dir, tmp_path / "full", "sft.pt", "reward.pt")
    part = copy_run(run_dir, tmp_path / "part", "sft.pt", "reward.pt")
    grpo.main(grpo.Config(out_dir=full, **flags))
    interrupt_on_call(monkeypatch, grpo, "rollout", 3)  # training rollouts: iterations 0-1, then 2 after a save
    with pytest.raises(KeyboardInterrupt):
        grpo.main(grpo.Config(out_dir=part, **flags))
    monkeypatch.undo()
    assert os.path.exists(os.path.join(part, "grpo.resume.pt")) and not os.path.exists(os.path.join(part, "grpo.pt"))
    with pytest.raises(UserError, match="--group-size"):
        grpo.main(grpo.Config(out_dir=part, resume=True, **{**flags, "group_size": 2}))
    grpo.main(grpo.Config(out_dir=part, resume=True, **flags))
    same_run(full, part, "grpo.pt", "grpo", timing=("gen_frac", "score_frac", "train_frac", "iter_s"))

"""ppo.py's implementation-detail flags (experiments.py details): each changes what it says and
nothing else, and the paired difference the experiment reports, by hand."""

import math
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import RM_BIAS, copy_run
import ppo
from pipeline import paired_difference
from plumbing.checkpoint import load_language_model, load_reward_model
from plumbing.cli import UserError
from plumbing.environment import response_logprobs

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0, 0.0]])


def rollout_like(seed=0):
    g = torch.Generator().manual_seed(seed)
    logprobs, ref = -torch.rand(3, 5, generator=g) * MASK, -torch.rand(3, 5, generator=g) * MASK
    return torch.tensor([2.0, -1.0, 0.5]), logprobs, ref


def test_the_defaults_are_eq_2_as_it_is():
    scores, logprobs, ref = rollout_like()
    expected, _ = ppo.kl_shaped_rewards(scores, logprobs, ref, MASK, 0.1)
    assert torch.equal(ppo.detailed_rewards(scores, logprobs, ref, MASK, 0.1, ppo.Config()), expected)


def test_whitened_rewards_have_mean_0_and_unit_variance_over_the_batch():
    scores, logprobs, ref = rollout_like()
    rewards = ppo.detailed_rewards(scores, logprobs, ref, MASK, 0.0, ppo.Config(whiten_rewards=True))
    at_last = rewards[torch.arange(3), torch.tensor([2, 4, 1])]
    assert at_last.mean().abs() < 1e-6 and (at_last.var(unbiased=False) - 1).abs() < 1e-4
    assert rewards.sum() == pytest.approx(at_last.sum().item(), abs=1e-6)  # nowhere else: beta is 0
    assert at_last.argsort().tolist() == scores.argsort().tolist()        # the order of the scores kept


def test_k3_is_never_negative_per_token_and_its_mean_is_the_kl():
    scores, logprobs, ref = rollout_like(1)
    k3 = ppo.k3_kl(logprobs, ref, MASK)
    assert (k3 >= 0).all() and (k1 := (logprobs - ref) * MASK).min() < 0  # k1 is negative on some tokens
    assert torch.all(k3[MASK == 0] == 0)
    # one token drawn from p: E_p[k3] = E_p[k1] = KL(p || q), summed exactly over the vocabulary
    p, q = F.log_softmax(torch.tensor([1.0, 0.2, -0.5, 2.0]), 0), F.log_softmax(torch.tensor([0.3, 0.3, 0.0, 1.0]), 0)
    kl = (p.exp() * (p - q)).sum()
    assert (p.exp() * ppo.k3_kl(p, q, torch.ones(4))).sum() == pytest.approx(kl.item(), abs=1e-6)
    rewards = ppo.detailed_rewards(scores, logprobs, ref, MASK, 0.1, ppo.Config(kl_estimator="k3"))
    expected = -0.1 * k3
    expected[torch.arange(3), torch.tensor([2, 4, 1])] += scores
    assert torch.allclose(rewards, expected, atol=1e-6) and k1.sum() != 0


def test_the_score_after_the_last_token_is_dropped_unless_the_answer_was_cut():
    """--score-slot after, the bug: an answer that ended before the length limit gets its score on
    a padding slot, which the response mask zeroes; the one cut at the limit has no slot after."""
    scores, logprobs, ref = rollout_like()
    rewards = ppo.detailed_rewards(scores, logprobs, ref, MASK, 0.1, ppo.Config(score_slot="after"))
    penalty = -0.1 * (logprobs - ref) * MASK
    assert torch.allclose(rewards[[0, 2]], penalty[[0, 2]], atol=1e-6)  # the scores 2.0 and 0.5 are gone
    assert rewards[1, 4] == pytest.approx(penalty[1, 4].item() - 1.0, abs=1e-6)


def test_without_the_eos_penalty_an_unended_answer_keeps_the_rm_s_score(setup_models):
    """(The penalty itself: test_ppo.py's test_the_logged_rm_score_is_the_rm_s_not_the_no_eos_penalty.)"""
    tok, policy, ref, value, rm = setup_models
    cfg = ppo.Config(max_new_tokens=4, no_eos_penalty=0.0)
    b = ppo.score(ppo.rollout(policy, tok, ["What is 2 + 3?"] * 8, cfg, torch.Generator().manual_seed(0)),
                  policy, ref, value, rm, cfg, 0.0)
    assert not b["ended"].all() and torch.equal(b["scores"], b["rm_scores"])


def test_log_probs_at_the_rollout_temperature_keep_the_first_ratio_at_one(setup_models):
    tok, policy, ref, value, rm = setup_models
    cfg = ppo.Config(max_new_tokens=8, no_eos_penalty=0.0, temperature=0.7, logprobs_at_temperature=True)
    b = ppo.score(ppo.rollout(policy, tok, ["What is 2 + 3?", "Spell cat backwards."], cfg,
                              torch.Generator().manual_seed(0)), policy, ref, value, rm, cfg, 0.0)
    tokens, mask, T = b["tokens"], b["attention_mask"], b["T"]
    logits, _ = policy(tokens, attention_mask=mask)
    by_hand = F.log_softmax(logits[:, T - 1:-1].float() / 0.7, -1).gather(2, tokens[:, T:, None]).squeeze(2)
    assert torch.allclose(b["logprobs"], by_hand * b["response_mask"], atol=1e-5)
    untempered = response_logprobs(policy, tokens, mask, T) * b["response_mask"]
    assert not torch.allclose(b["logprobs"], untempered, atol=1e-3)  # the flag changes the log-probs
    new = response_logprobs(policy, tokens, mask, T, temperature=ppo.logprob_temperature(cfg)) * b["response_mask"]
    _, _, stats = ppo.ppo_losses(new, b["logprobs"], torch.randn_like(new), b["values"], b["values"], b["values"],
                                 b["response_mask"])
    assert abs(stats["ratio"] - 1) < 1e-5
    assert ppo.logprob_temperature(ppo.Config(temperature=0.7)) == 1.0  # without the flag: the model's own


def test_no_value_clip_is_the_plain_squared_error():
    values, old, returns = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, -2.0]])
    lp, mask = torch.zeros(1, 2), torch.ones(1, 2)
    _, clipped, _ = ppo.ppo_losses(lp, lp, torch.zeros(1, 2), values, old, returns, mask, vf_clip=0.2)
    _, plain, _ = ppo.ppo_losses(lp, lp, torch.zeros(1, 2), values, old, returns, mask, vf_clip=math.inf)
    assert plain.item() == pytest.approx(0.5 * (1 + 1) / 2) and clipped.item() > plain.item()


def test_the_adaptive_controller_moves_beta_by_n_over_the_horizon():
    assert ppo.adaptive_kl(0.1, 4.0, 2.0, 100, horizon=1000) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert ppo.adaptive_kl(0.1, 1.9, 2.0, 100, horizon=10000) == pytest.approx(0.1 * (1 - 0.05 * 0.01))


def test_the_value_model_from_sft_is_sft_s_network_with_a_new_head(run_dir):
    sft = load_language_model(os.path.join(run_dir, "sft.pt"))[0]
    rm = load_reward_model(os.path.join(run_dir, "reward.pt"))[0]
    value = ppo.load_value_model(os.path.join(run_dir, "reward.pt"), RM_BIAS, "cpu", os.path.join(run_dir, "sft.pt"))
    for name, w in sft.state_dict().items():
        assert torch.equal(value.gpt.state_dict()[name], w), name
    assert not torch.equal(value.gpt.transformer.wte.weight, rm.gpt.transformer.wte.weight)
    assert value.head.bias.item() == 0.0


@pytest.mark.usefixtures("one_thread")  # conftest.py
@pytest.mark.parametrize("whiten", [True, False])
def test_advantages_are_whitened_only_with_the_flag(run_dir, tmp_path, monkeypatch, whiten):
    """One iteration of ppo.main: the advantages the update gets are GAE's, whitened over the
    response tokens by default and left as they are with --no-whiten-advantages."""
    seen = {}
    real_gae, real_update = ppo.gae, ppo.update
    monkeypatch.setattr(ppo, "gae", lambda *a, **kw: seen.setdefault("gae", real_gae(*a, **kw)))

    def update(policy, value, opt_p, opt_v, batch, advantages, *rest):
        seen.update(advantages=advantages, mask=batch["response_mask"])
        return real_update(policy, value, opt_p, opt_v, batch, advantages, *rest)
    monkeypatch.setattr(ppo, "update", update)
    out = copy_run(run_dir, tmp_path / "w", "sft.pt", "reward.pt")
    ppo.main(ppo.Config(out_dir=out, preset="smoke", iterations=1, batch_size=8, minibatch_size=4, max_new_tokens=8,
                        n_eval=8, quiet=True, device="cpu", whiten_advantages=whiten))
    adv, mask = seen["advantages"], seen["mask"]
    mean = ppo.masked_mean(adv, mask)
    if whiten:
        assert abs(mean) < 1e-5 and abs(ppo.masked_mean((adv - mean) ** 2, mask) - 1) < 1e-3
    else:
        assert torch.equal(adv, seen["gae"][0])


@pytest.mark.parametrize("flags, message", [(dict(vf_clip=-0.1), "--vf-clip must not be negative"),
                                            (dict(kl_horizon=0), "--kl-horizon must be positive")])
def test_bad_detail_flags_are_one_line(run_dir, tmp_path, flags, message):
    out = copy_run(run_dir, tmp_path / "bad", "sft.pt", "reward.pt")
    with pytest.raises(UserError, match=message):
        ppo.main(ppo.Config(out_dir=out, preset="smoke", iterations=1, quiet=True, device="cpu", **flags))


def test_paired_difference_by_hand():
    """Two seeds, two prompts each: the per-seed differences 0.5 and 0.0, their mean 0.25 with
    t(0.975, 1) = 12.706 * sd 0.3536 / sqrt(2) = 3.1765; the families split the same prompts."""
    a = dict(gold=[0.0, 1.0], kl=1.0, family=["facts", "words"])
    pairs = [(a, dict(gold=[0.5, 1.5], kl=1.5, family=a["family"])), (a, dict(gold=[1.0, 0.0], kl=1.0, family=a["family"]))]
    d = paired_difference(pairs, "gold")
    assert d["diff"] == 0.25 and d["per_seed"] == [0.5, 0.0] and d["ci"] == pytest.approx([0.25 - 3.1765, 0.25 + 3.1765],
                                                                                          abs=1e-3)
    assert paired_difference(pairs, "kl")["per_seed"] == [0.5, 0.0] and paired_difference(pairs, "kl")["ci_prompts"] is None
    assert paired_difference(pairs, "gold", "facts")["per_seed"] == [0.5, 1.0]
    one = paired_difference(pairs[:1], "gold")  # one seed: the interval over its prompts (differences 0.5, 0.5)
    assert one["ci"] == [0.5, 0.5] == one["ci_prompts"]

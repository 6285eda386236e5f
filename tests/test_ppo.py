"""ppo.py: GAE against a hand computation and a slow loop, the clipped surrogate's gradients, the
ratio on the first minibatch, and the KL-shaped reward; PPO and PPO-ptx on your own prompts and
pretraining text."""

import copy
import json
import os
import random

import pytest
import torch
from conftest import RM_BIAS, copy_run, interrupt_on_call, same_run
from gpt import reward_scores, token_logprobs
import ppo
from ppo import gae, kl_shaped_rewards, masked_whiten, ppo_losses
from plumbing.checkpoint import load_reward_model
from plumbing.cli import UserError


def test_gae_hand_computed():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, discount=1.0, lam=0.95)
    # t=2: 1 - 0.7 = 0.3;  t=1: (0.7 - 0.6) + 0.95 * 0.3 = 0.385;  t=0: (0.6 - 0.5) + 0.95 * 0.385
    assert torch.allclose(adv, torch.tensor([[0.46575, 0.385, 0.3]]))
    assert torch.allclose(ret, torch.tensor([[0.96575, 0.985, 1.0]]))


def slow_gae(rewards, values, lengths, discount, lam):
    """The textbook recursion, one episode at a time, over its real tokens only."""
    adv = torch.zeros_like(rewards)
    for b, n in enumerate(lengths):
        last = 0.0
        for t in reversed(range(n)):
            next_v = values[b, t + 1].item() if t + 1 < n else 0.0
            delta = rewards[b, t].item() + discount * next_v - values[b, t].item()
            last = delta + discount * lam * last
            adv[b, t] = last
    return adv


def test_gae_equals_slow_loop_and_ignores_padding():
    torch.manual_seed(0)
    lengths = [7, 3, 1, 5]
    mask = torch.zeros(4, 7)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    rewards, values = torch.randn(4, 7), torch.randn(4, 7)
    adv, ret = gae(rewards * mask, values * mask, mask, discount=0.99, lam=0.9)
    assert torch.allclose(adv, slow_gae(rewards, values, lengths, 0.99, 0.9), atol=1e-6)
    # garbage in the padding changes nothing
    noisy = gae(rewards * mask + 5 * (1 - mask), values * mask - 3 * (1 - mask), mask, discount=0.99, lam=0.9)
    assert torch.allclose(noisy[0], adv, atol=1e-6) and torch.all(adv[mask == 0] == 0)
    assert torch.allclose(ret, (adv + values) * mask)


def test_whitening_uses_the_mask_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)
    assert torch.allclose(w[0, :3], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-3) and w[0, 3] == 0


def losses_for(new_logprobs, old_logprobs, advantages, mask=None):
    mask = torch.ones_like(advantages) if mask is None else mask
    v = torch.zeros_like(advantages, requires_grad=True)
    return ppo_losses(new_logprobs, old_logprobs, advantages, v, torch.zeros_like(v), torch.zeros_like(v), mask)


def test_zero_advantages_give_no_policy_gradient():
    new = torch.randn(3, 5, requires_grad=True)
    old = new.detach() + 0.1 * torch.randn(3, 5)
    pg_loss, _, _ = losses_for(new, old, torch.zeros(3, 5))
    pg_loss.backward()
    assert torch.all(new.grad == 0)


def test_clipped_tokens_have_no_policy_gradient():
    old = torch.zeros(1, 4)
    # ratios 1.5, 0.5, 1.5, 0.5 with advantages +, -, -, +
    new = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]])).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    pg_loss, _, stats = losses_for(new, old, adv)
    pg_loss.backward()
    # outside 1 +- 0.2 in the direction the advantage favours: clipped, zero gradient
    assert new.grad[0, 0] == 0 and new.grad[0, 1] == 0
    # outside in the other direction: the unclipped term is the max, the gradient flows
    assert new.grad[0, 2] != 0 and new.grad[0, 3] != 0
    assert stats["clipfrac"] == 1.0


def test_value_loss_is_clipped_around_the_old_values():
    returns = torch.tensor([[1.0]])
    old_v = torch.tensor([[0.0]])
    mask = torch.ones(1, 1)
    lp = torch.zeros(1, 1)
    for new_v, expected in ((0.1, 0.5 * 0.9 ** 2), (0.5, 0.5 * 0.8 ** 2)):  # 0.5 is clipped to 0.2
        v = torch.tensor([[new_v]])
        _, v_loss, _ = ppo_losses(lp, lp, torch.zeros(1, 1), v, old_v, returns, mask, vf_clip=0.2)
        assert abs(v_loss.item() - max(expected, 0.5 * (new_v - 1) ** 2)) < 1e-6


def test_kl_shaped_reward_puts_the_score_on_the_last_real_token():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    logprobs = torch.randn(2, 5) * mask
    ref = torch.randn(2, 5) * mask
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_shaped_rewards(scores, logprobs, ref, mask, kl_coef=0.1)
    penalty = -0.1 * (logprobs - ref) * mask
    bonus = rewards - penalty
    expected = torch.zeros(2, 5)
    expected[0, 2], expected[1, 4] = 2.0, -1.0
    assert torch.allclose(bonus, expected, atol=1e-6)
    assert torch.all(rewards[mask == 0] == 0) and torch.allclose(kl, (logprobs - ref) * mask)


def test_ratio_is_one_on_the_first_minibatch(setup_models):
    tok, policy, ref, value, rm = setup_models
    cfg = ppo.Config(max_new_tokens=12, no_eos_penalty=0.0)
    prompts = ["What is 2 + 3?", "Spell cat backwards.", "Where does Ann Lee live?"]
    b = ppo.rollout(policy, tok, prompts, cfg, torch.Generator().manual_seed(0))
    ppo.score(b, policy, ref, value, rm, cfg, 0.0)
    T = b["T"]
    policy.train()  # as in the update (dropout is 0)
    new = token_logprobs(policy, b["tokens"], b["attention_mask"])[:, T - 1:]
    adv = torch.randn_like(new)
    _, _, stats = ppo_losses(new, b["logprobs"], adv, b["values"], b["values"], b["values"], b["response_mask"])
    assert abs(stats["ratio"] - 1) < 1e-5 and stats["clipfrac"] == 0 and abs(stats["approx_kl"]) < 1e-6
    # the policy starts as the reference: zero KL, so the shaped reward is the score alone
    assert torch.allclose(b["logprobs"], b["ref_logprobs"], atol=1e-5)


def test_value_model_starts_as_the_reward_minus_the_bias(run_dir):
    """Initialized from the RM as PPO uses it: at an answer's last token V equals the reward."""
    path = os.path.join(run_dir, "reward.pt")
    rm, _, bias, _ = load_reward_model(path)
    value = ppo.load_value_model(path, bias, "cpu")
    tokens, mask = torch.randint(0, 50, (3, 10)), torch.ones(3, 10, dtype=torch.long)
    assert bias == RM_BIAS
    assert torch.allclose(value(tokens, mask)[:, -1], reward_scores(rm, tokens, mask) - RM_BIAS, atol=1e-6)


def test_the_logged_rm_score_is_the_rm_s_not_the_no_eos_penalty(setup_models):
    tok, policy, ref, value, rm = setup_models
    cfg = ppo.Config(max_new_tokens=4, no_eos_penalty=-7.0)  # 4 tokens: most answers do not end
    b = ppo.score(ppo.rollout(policy, tok, ["What is 2 + 3?"] * 8, cfg, torch.Generator().manual_seed(0)),
                  policy, ref, value, rm, cfg, 0.0)
    assert not b["ended"].all()
    assert torch.all(b["scores"][~b["ended"]] == -7.0) and torch.all(b["rm_scores"][~b["ended"]] != -7.0)
    assert torch.equal(b["scores"][b["ended"]], b["rm_scores"][b["ended"]])


def test_one_iteration_step_by_step_makes_rewarded_answers_likelier(setup_models):
    """The loop's named steps, called as main calls them (rollout, score, KL-shaped rewards, GAE,
    update), with the RM's score replaced by +1 for half the answers and -1 for the others: after
    the update the policy gives the rewarded answers more log-probability, the others less."""
    tok, policy, ref, value, rm = setup_models
    policy, value = copy.deepcopy(policy), copy.deepcopy(value)  # the fixture's models stay as they are
    cfg = ppo.Config(max_new_tokens=8, no_eos_penalty=0.0, ppo_epochs=4, minibatch_size=8, lr=1e-3, kl_coef=0.0)
    b = ppo.score(ppo.rollout(policy, tok, ["What is 2 + 3?", "Spell cat backwards."] * 4, cfg,
                              torch.Generator().manual_seed(0)), policy, ref, value, rm, cfg, 0.0)
    b["scores"] = torch.tensor([1.0, -1.0] * 4)
    rewards, kl = ppo.kl_shaped_rewards(b["scores"], b["logprobs"], b["ref_logprobs"], b["response_mask"], 0.0)
    advantages, returns = gae(rewards, b["values"], b["response_mask"], cfg.discount, cfg.lam)
    advantages = masked_whiten(advantages, b["response_mask"])
    opt_policy = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    opt_value = torch.optim.AdamW(value.parameters(), lr=cfg.value_lr)
    stats, finite = ppo.update(policy, value, opt_policy, opt_value, b, advantages, returns, cfg, 0, None)
    assert bool(finite) and len(stats) == cfg.ppo_epochs and {"pg_loss", "v_loss", "clipfrac"} <= set(stats[0])
    T = b["T"]
    after = token_logprobs(policy.eval(), b["tokens"], b["attention_mask"])[:, T - 1:]
    gain = ((after - b["logprobs"]) * b["response_mask"]).sum(1)  # log pi_new(y) - log pi_old(y), per answer
    assert (gain[0::2] > 0).all() and (gain[1::2] < 0).all()


@pytest.mark.parametrize("flags, message", [(dict(temperature=0.0), "--temperature must be positive"),
                                            (dict(grad_clip=-1.0), "--grad-clip must be positive"),
                                            (dict(ptx_batch_size=0), "--ptx-batch-size must be positive"),
                                            (dict(max_new_tokens=64), "--max-new-tokens 64 leaves no room"),
                                            (dict(whole_step=True), "--whole-step .* --cuda-graph")])
def test_bad_ppo_flags_are_one_line(run_dir, tmp_path, flags, message):
    out = copy_run(run_dir, tmp_path / "bad", "sft.pt", "reward.pt")
    with pytest.raises(UserError, match=message):
        ppo.main(ppo.Config(out_dir=out, preset="smoke", iterations=1, quiet=True, device="cpu", **flags))


def test_a_non_finite_loss_stops_ppo_naming_the_iteration(run_dir, tmp_path, monkeypatch):
    """A NaN loss in one minibatch (checked once per iteration, on the device until then) stops the
    run with one line naming the iteration and the last good state, and writes no policy."""
    out = copy_run(run_dir, tmp_path / "nan", "sft.pt", "reward.pt")
    calls, real = [0], ppo.ppo_losses

    def nan_from_the_fifth_call(*args, **kw):  # 2 epochs x 2 minibatches per iteration: iteration 1
        calls[0] += 1
        pg_loss, v_loss, stats = real(*args, **kw)
        return (pg_loss * float("nan") if calls[0] >= 5 else pg_loss), v_loss, stats

    monkeypatch.setattr(ppo, "ppo_losses", nan_from_the_fifth_call)
    with pytest.raises(UserError, match=r"loss is not finite at iteration 1; .*ppo\.resume\.pt"):
        ppo.main(ppo.Config(out_dir=out, preset="smoke", iterations=3, batch_size=8, minibatch_size=4, ppo_epochs=2,
                            max_new_tokens=8, n_eval=8, quiet=True, device="cpu"))
    assert calls[0] == 8 and not os.path.exists(os.path.join(out, "ppo.pt"))


def test_interrupted_ppo_resumes_to_the_same_weights(run_dir, tmp_path, monkeypatch):
    """Ctrl-C in the middle of PPO (between two evaluations), then --resume: the same policy and
    the same metrics lines as a run never interrupted."""
    flags = dict(preset="smoke", iterations=6, batch_size=8, minibatch_size=4, max_new_tokens=8, n_eval=8,
                 eval_every=2, lr=1e-3, value_lr=1e-3, no_eos_penalty=0.0, quiet=True, device="cpu")
    full = copy_run(run_dir, tmp_path / "full", "sft.pt", "reward.pt")
    part = copy_run(run_dir, tmp_path / "part", "sft.pt", "reward.pt")
    ppo.main(ppo.Config(out_dir=full, **flags))
    # training rollouts (the evaluations' go through environment.evaluate): 1-2 iterations 0-1, then
    # the evaluation at 2 saves a resumable state, and 3 is iteration 2
    interrupt_on_call(monkeypatch, ppo, "rollout", 3)
    with pytest.raises(KeyboardInterrupt):
        ppo.main(ppo.Config(out_dir=part, **flags))
    monkeypatch.undo()
    assert os.path.exists(os.path.join(part, "ppo.resume.pt")) and not os.path.exists(os.path.join(part, "ppo.pt"))
    with pytest.raises(UserError, match="--lr"):  # other flags than the interrupted run's: refused
        ppo.main(ppo.Config(out_dir=part, resume=True, **{**flags, "lr": 1e-4}))
    saved = torch.load(os.path.join(part, "ppo.resume.pt"), weights_only=True)["seconds"]
    resumed = ppo.main(ppo.Config(out_dir=part, resume=True, **flags))
    assert not os.path.exists(os.path.join(part, "ppo.resume.pt"))
    assert saved > 0 and resumed["seconds"] >= saved  # the time of both runs, not the second one's
    same_run(full, part, "ppo.pt", "ppo", timing=("gen_frac", "score_frac", "train_frac", "iter_s"))


def ppo_rows(out_dir, name="ppo"):
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]
    return [r for r in rows if r["stage"] == name]


OWN = dict(iterations=2, batch_size=8, minibatch_size=4, ppo_epochs=1, max_new_tokens=8, n_eval=8, quiet=True,
           device="cpu")


@pytest.fixture
def own_prompts(tmp_path, monkeypatch):
    """A text file of 40 prompts; the simulated world is never built (its prompts and corpus unused)."""
    monkeypatch.setattr(ppo.data, "build", lambda *a, **kw: pytest.fail("data.build called"))
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"What is {i} + {i + 3}?\nSpell word{i} backwards.\n" for i in range(20)))
    return str(path)


@pytest.mark.usefixtures("one_thread")  # conftest.py
def test_ppo_on_your_own_prompts_logs_rm_score_and_kl_but_no_gold(run_dir, tmp_path, own_prompts, capsys):
    out = copy_run(run_dir, tmp_path / "own", "sft.pt", "reward.pt")
    m = ppo.main(ppo.Config(out_dir=out, prompts=own_prompts, **OWN))
    assert "ppo: 38 prompts (2 more held out)" in capsys.readouterr().out  # 5% of 40 for the evaluations
    rows = ppo_rows(out)
    train, evals = [r for r in rows if "rm_score" in r], [r for r in rows if "eval_rm_score" in r]
    assert [r["step"] for r in train] == [1, 2] and [r["step"] for r in evals] == [0, 2]
    assert all("kl" in r and "gold" not in r and "ptx_loss" not in r for r in train)  # no rubric, no corpus
    assert all("eval_kl" in r and "eval_gold" not in r for r in evals)
    assert "eval_rm_score" in m and not any("gold" in k for k in m)
    assert os.path.exists(os.path.join(out, "ppo.pt"))


@pytest.mark.usefixtures("one_thread")  # conftest.py
def test_ppo_ptx_on_your_own_prompts_needs_your_pretraining_text(run_dir, tmp_path, own_prompts):
    out = copy_run(run_dir, tmp_path / "ptx", "sft.pt", "reward.pt")
    with pytest.raises(UserError, match="^--ptx-coef with your own --prompts needs --pretrain-data") as e:
        ppo.main(ppo.Config(out_dir=out, prompts=own_prompts, ptx_coef=1.0, **OWN))
    assert "\n" not in str(e.value)
    text = tmp_path / "corpus.txt"
    rng = random.Random(0)
    text.write_text("\n\n".join(f"{rng.choice(['Anna', 'Ben', 'Cleo'])} found a {rng.choice(['key', 'kite', 'cup'])} "
                                f"by the {rng.choice(['lake', 'hill', 'road'])}. {i} + 1 = {i + 1}." for i in range(150)))
    ppo.main(ppo.Config(out_dir=out, prompts=own_prompts, ptx_coef=1.0, pretrain_data=str(text), name="ppo_ptx", **OWN))
    train = [r for r in ppo_rows(out, "ppo_ptx") if "rm_score" in r]
    assert len(train) == 2 and all(r["ptx_loss"] > 0 for r in train)

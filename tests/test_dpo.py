"""dpo.py: the loss against a brute-force loop over pairs, the implicit reward against the loss,
and a few steps raising the training pairs' margin."""

import itertools
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import copy_run
import dpo
from plumbing.checkpoint import load_language_model


def brute_force(logps, ref_logps, rankings, beta):
    """DPO eq. 7 one pair at a time: each prompt's C(K,2) pairs averaged, then the prompts."""
    per_prompt = []
    for lp, rp, k in zip(logps.tolist(), ref_logps.tolist(), rankings):
        pairs = [-math.log(1 / (1 + math.exp(-beta * ((lp[i] - rp[i]) - (lp[j] - rp[j])))))
                 for i, j in itertools.combinations(range(k), 2)]
        per_prompt.append(sum(pairs) / len(pairs))
    return sum(per_prompt) / len(per_prompt)


def test_loss_matches_a_loop_over_every_pair():
    torch.manual_seed(0)
    ks = [2, 4, 9, 5]
    logps, ref = torch.randn(4, 9) * 3 - 20, torch.randn(4, 9) * 3 - 20
    mask = torch.tensor([[1.0] * k + [0.0] * (9 - k) for k in ks])
    logps, ref = logps * mask, ref * mask  # padding holds 0, as ranked_logprobs leaves it
    for beta in (0.1, 0.5):
        loss, _, _ = dpo.dpo_loss(logps, ref, mask, beta)
        assert loss.item() == pytest.approx(brute_force(logps, ref, ks, beta), rel=1e-5)


def test_k2_is_the_dpo_paper_s_pairwise_loss():
    lw, ll, rw, rl = torch.tensor([-5.0]), torch.tensor([-7.0]), torch.tensor([-6.0]), torch.tensor([-6.5])
    loss, _, _ = dpo.dpo_loss(torch.stack([lw, ll], 1), torch.stack([rw, rl], 1), torch.ones(1, 2), 0.1)
    assert loss.item() == pytest.approx(-F.logsigmoid(0.1 * ((lw - rw) - (ll - rl))).item(), rel=1e-6)


def test_the_implicit_reward_ranks_pairs_as_the_loss_says():
    """A pair's loss is below log 2 exactly when the implicit reward beta * log(pi / pi_SFT) puts its
    winner above its loser; the accuracy counts those pairs (a tie half); the margin is their mean gap."""
    torch.manual_seed(1)
    logps, ref = torch.randn(6, 4) * 2, torch.randn(6, 4) * 2
    ref[0] = logps[0]  # one prompt whose answers all tie at reward 0
    mask, beta = torch.ones(6, 4), 0.3
    _, acc, margin = dpo.dpo_loss(logps, ref, mask, beta)
    h = beta * (logps - ref)
    right, gaps = 0.0, []
    for p, (i, j) in itertools.product(range(6), itertools.combinations(range(4), 2)):
        pair_loss, _, _ = dpo.dpo_loss(logps[p, [i, j]][None], ref[p, [i, j]][None], torch.ones(1, 2), beta)
        gap = (h[p, i] - h[p, j]).item()
        assert (pair_loss.item() < math.log(2)) == (gap > 0)
        right += 1.0 if gap > 0 else 0.5 if gap == 0 else 0.0
        gaps.append(gap)
    assert acc.item() == pytest.approx(right / 36) and margin.item() == pytest.approx(sum(gaps) / 36, abs=1e-6)


def test_response_logprobs_sum_the_answer_s_tokens_only(run_dir):
    model, tok, _ = load_language_model(os.path.join(run_dir, "sft.pt"))
    prompt, answer = "What is 2 plus 3?", "5"
    got = dpo.response_logprobs(model, tok, [prompt, "a longer prompt pads the other row"], [answer, "x"], 64, "cpu")
    ids = tok.chat_prompt(prompt) + tok.chat_response(answer)
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ids[:-1]]))[0][0], -1)
    n = len(tok.chat_prompt(prompt))
    want = sum(logp[t - 1, ids[t]].item() for t in range(n, len(ids)))  # the answer's tokens and EOS
    assert got[0].item() == pytest.approx(want, rel=1e-5)


def test_a_few_steps_raise_the_training_pairs_margin(run_dir, tmp_path):
    d = copy_run(run_dir, tmp_path / "run", "sft.pt")
    comps = [{"prompt": f"Name a colour number {i}.", "completions": ["Red.", "Blue sky.", "I do not know.", "no"],
              "ranking": [0, 1, 2, 3]} for i in range(24)]
    with open(os.path.join(d, "comps.jsonl"), "w") as f:
        f.writelines(json.dumps(c) + "\n" for c in comps)
    metrics = dpo.main(dpo.Config(preset="smoke", out_dir=d, data=os.path.join(d, "comps.jsonl"), lr=3e-3,
                                  epochs=4, batch_size=8, n_val=0, quiet=True))
    policy, tok, _ = load_language_model(os.path.join(d, "dpo.pt"))
    ref = load_language_model(os.path.join(d, "sft.pt"))[0]
    with torch.no_grad():
        logps, mask = dpo.ranked_logprobs(policy, tok, comps, 64, "cpu")
        ref_logps, _ = dpo.ranked_logprobs(ref, tok, comps, 64, "cpu")
    loss, acc, margin = dpo.dpo_loss(logps, ref_logps, mask, 0.1)
    # at the reference every margin is 0 and the loss log 2; 12 steps move most pairs the labeler's way
    assert margin.item() > 0.3 and acc.item() > 0.6 and loss.item() < math.log(2) - 0.05
    assert metrics["heldout_accuracy"] > 0.5  # the held-out 5% are the same kind of ranking
    rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    assert [r["margin"] for r in rows if "margin" in r][0] == 0  # the first step starts at the reference

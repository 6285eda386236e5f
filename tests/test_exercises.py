"""The exercises, one test each (exercises.py blanks these functions in a homework copy; the
`# exercise:` comment on each function's def line says which). Every check computes the expected
value its own plain way, on a small input, and says in its message what was expected on what.

    python -m pytest -q tests/test_exercises.py -k gae      # one exercise
"""

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F


def close(got, want, what, atol=1e-5):
    got, want = torch.as_tensor(got, dtype=torch.float32), torch.as_tensor(want, dtype=torch.float32)
    assert got.shape == want.shape, f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
    assert torch.allclose(got, want, atol=atol), f"{what}:\n  expected {want.tolist()}\n  got      {got.tolist()}"


def test_causal_self_attention():
    """gpt.CausalSelfAttention.forward: softmax(q k^T / sqrt(hs) + mask) v per head, heads side by
    side, then the output projection; a position never looks at a later one."""
    from gpt import CausalSelfAttention, GPTConfig
    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=8)).eval()
    x = torch.randn(2, 5, 8)

    def reference(x, allowed):  # allowed (B, 1, T, T): True where a query may look at a key
        q, k, v = attn.c_attn(x).split(8, dim=2)
        q, k, v = (t.view(2, 5, 2, 4).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(4)).masked_fill(~allowed, float("-inf"))
        return attn.c_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 8))
    causal = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(2, 1, 5, 5)
    with torch.no_grad():
        close(attn(x), reference(x, causal), "CausalSelfAttention.forward(x) with x of shape (2, 5, 8), 2 heads of "
              "size 4, no mask: softmax(q k^T / sqrt(4) with later keys at -inf) v, heads merged, then c_proj")
        later = x.clone()
        later[:, 4] += 1.0
        close(attn(later)[:, :4], attn(x)[:, :4], "changing the token at position 4 must not change the outputs at "
              "positions 0..3 (causal: no position looks ahead)")
        padded = causal.clone()
        padded[0, :, :, 0] = False  # row 0's first token is padding: no query looks at it
        padded[0, :, 0, 0] = True   # (its own row keeps one key, so its softmax is defined)
        close(attn(x, mask=padded), reference(x, padded), "with mask (B, 1, T, T) given (True where a query may "
              "look at a key; here row 0's first key is hidden from the other queries), attend only there")


def test_sample():
    """gpt.sample: temperature scales the logits, top-k keeps the k largest, top-p the smallest set
    whose probability reaches p; the log-prob returned is under the distribution sampled from."""
    from gpt import sample
    logits = torch.log(torch.tensor([[0.6, 0.25, 0.1, 0.05]]))
    token, logp = sample(logits, temperature=0)
    assert token.tolist() == [0], f"temperature 0 is greedy: expected token 0 of probabilities [0.6, 0.25, 0.1, " \
                                  f"0.05], got {token.tolist()}"
    close(logp, [math.log(0.6)], "temperature 0: the log-prob of the greedy token under softmax(logits)")
    many = logits.expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    token, logp = sample(many, temperature=2.0, generator=g)
    want = F.softmax(logits[0] / 2.0, -1)
    freq = torch.bincount(token, minlength=4).float() / 4000
    close(freq, want, "temperature 2: 4000 draws' frequencies should follow softmax(logits / 2) (within 0.03)", atol=0.03)
    close(logp, want.log()[token], "temperature 2: each draw's log-prob under softmax(logits / 2)")
    token, _ = sample(many, top_k=2, generator=g)
    assert set(token.tolist()) == {0, 1}, f"top_k=2 must draw only the two most likely tokens 0 and 1 (and both " \
                                          f"of them in 4000 draws), got {sorted(set(token.tolist()))}"
    token, logp = sample(many, top_p=0.8, generator=g)
    assert set(token.tolist()) == {0, 1}, f"top_p=0.8 on [0.6, 0.25, 0.1, 0.05]: 0.6 < 0.8 <= 0.85, so tokens 0 and " \
                                          f"1 only, got {sorted(set(token.tolist()))}"
    close(logp, torch.tensor([math.log(0.6 / 0.85), math.log(0.25 / 0.85)])[token],
          "top_p=0.8: log-probs under the kept tokens' renormalized probabilities (0.6 and 0.25 over 0.85)")


def test_sft_mask():
    """sft.sft_batch: inputs and next-token targets, the targets -1 on the prompt and on
    padding, so that SFT's loss is on the response tokens (EOS included) only."""
    from sft import sft_batch
    tok = SimpleNamespace(pad_id=0)
    x, y, mask = sft_batch(tok, [([5, 6, 7], [8, 9, 2]), ([5], [4, 2])], block_size=16)
    close(x, [[5, 6, 7, 8, 9], [5, 4, 0, 0, 0]], "pairs (prompt [5, 6, 7], response [8, 9, EOS=2]) and ([5], [4, 2]): "
          "x is prompt + response without its last token, right-padded with pad_id 0")
    close(y, [[-1, -1, 8, 9, 2], [4, 2, -1, -1, -1]], "y is x shifted by one, -1 where the target is a prompt token or "
          "padding")
    close(mask, [[0, 0, 1, 1, 1], [1, 1, 0, 0, 0]], "loss_mask is 1 exactly where y is a response token")
    x, y, _ = sft_batch(tok, [(list(range(10, 20)), [8, 2])], block_size=6)
    close(x, [[15, 16, 17, 18, 19, 8]], "a pair longer than block_size + 1 (10 prompt + 2 response tokens, block 6) "
          "loses the prompt's start: x keeps the prompt's last 5 tokens")
    close(y, [[-1, -1, -1, -1, 8, 2]], "and y still holds the whole response")


def test_prefix_dedupe():
    """data.KeptPrompts: a prompt is a duplicate when its key (the first prefix_chars characters,
    case and whitespace folded) equals a kept key or one key is a prefix of the other."""
    from data import KeptPrompts
    kept = KeptPrompts(prefix_chars=20)
    kept.add("Write a poem about   the sea and the sky")
    for prompt, dup, why in [
            ("write a poem about the sea and the moon", True, "the same first 20 characters, case and spaces folded"),
            ("Write a poem", True, "its whole key is a prefix of a kept key"),
            ("Write a story about the sea", False, "it differs within the first 20 characters")]:
        assert (prompt in kept) == dup, f"after add('Write a poem about   the sea and the sky') with prefix_chars=20, " \
                                        f"{prompt!r} in kept should be {dup}: {why}"
    kept.add("Hi there")
    assert "hi there, how are you?" in kept, "after add('Hi there'), 'hi there, how are you?' is a duplicate: the " \
                                             "kept short prompt's key is a prefix of its key"


def test_ranking_loss():
    """reward.ranking_loss, InstructGPT eq. 1: per prompt -1/C(K,2) sum_{i<j} log sigmoid(r_i - r_j)
    over its ranked responses (best first), averaged over prompts; and the pairwise accuracy."""
    from reward import ranking_loss
    rewards = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, acc = ranking_loss(rewards, mask)
    ls = F.logsigmoid
    want = (-(ls(torch.tensor(2.0)) + ls(torch.tensor(3.0)) + ls(torch.tensor(1.0))) / 3 - ls(torch.tensor(-1.0))) / 2
    close(loss, want, "rewards [[3, 1, 0], [0, 1, pad]] best first: prompt 0 has C(3,2) = 3 pairs, prompt 1 one pair "
          "(the padded third response is masked); loss = mean over the 2 prompts of -1/C(K,2) sum log sigmoid(r_i - r_j)")
    close(acc, 0.75, "accuracy over the 4 real pairs: prompt 0's three are right (r_i > r_j), prompt 1's one is wrong")


def test_masked_whiten():
    """ppo.masked_whiten: zero mean and unit variance over the real (mask = 1) entries only."""
    from ppo import masked_whiten
    x, mask = torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    s = math.sqrt(2 / 3)
    close(masked_whiten(x, mask), [[-1 / s, 0.0, 1 / s, 0.0]], "x [1, 2, 3, 100] with the 100 masked out: mean 2 and "
          "variance 2/3 over the three real entries; the masked entry becomes 0", atol=1e-4)


def test_kl_shaped_rewards():
    """ppo.kl_shaped_rewards, InstructGPT eq. 2 per token: -beta * (log pi - log pi_SFT) at every
    response token, plus the RM's score at the last real token."""
    from ppo import kl_shaped_rewards
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = kl_shaped_rewards(torch.tensor([1.0, 2.0]), logprobs, ref, mask, kl_coef=0.1)
    close(kl, [[0.5, -1.0, 0.0], [1.0, 0.0, 0.0]], "kl per token: log pi - log pi_SFT on response tokens, 0 on padding")
    close(rewards, [[-0.05, 0.1, 1.0], [-0.1, 2.0, 0.0]], "rewards with beta 0.1 and RM scores [1, 2]: -0.1 * kl per "
          "token, each score added at its row's last real token (row 1 has two), 0 on padding")


def test_gae():
    """ppo.gae (Schulman et al. 2016): delta_t = r_t + d V_{t+1} - V_t, A_t = delta_t + d lam A_{t+1},
    nothing after the last real token; returns = A + V."""
    from ppo import gae
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    d, lam = 0.9, 0.8
    want = []
    for r, v, n in ((rewards[0].tolist(), values[0].tolist(), 3), (rewards[1].tolist(), values[1].tolist(), 2)):
        a, row = 0.0, [0.0, 0.0, 0.0]
        for t in reversed(range(n)):
            next_v = v[t + 1] if t + 1 < n else 0.0
            a = r[t] + d * next_v - v[t] + d * lam * a
            row[t] = a
        want.append(row)
    advantages, returns = gae(rewards, values, mask, discount=d, lam=lam)
    close(advantages, want, "advantages with discount 0.9, lambda 0.8; row 1's third token is padding: its value 9 "
          "must not leak in, and its advantage is 0", atol=1e-5)
    close(returns, (torch.tensor(want) + values) * mask, "returns = advantages + values on real tokens, 0 on padding")


def test_ppo_losses():
    """ppo.ppo_losses (Schulman et al. 2017): the clipped surrogate max(-A r, -A clip(r, 1 - eps,
    1 + eps)) and the clipped value loss, each a mean over the response mask."""
    from ppo import ppo_losses
    old = torch.zeros(1, 3)
    logprobs = torch.tensor([[math.log(1.5), math.log(0.5), 0.0]])  # ratios 1.5, 0.5, 1 (the last is padding)
    adv = torch.tensor([[1.0, 1.0, 5.0]])
    values, old_values, returns = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    pg_loss, v_loss, stats = ppo_losses(logprobs, old, adv, values, old_values, returns, mask, clip_coef=0.2, vf_clip=0.2)
    close(pg_loss, (-1.2 + -0.5) / 2, "ratios [1.5, 0.5] with advantage 1: max(-A r, -A clip(r, 0.8, 1.2)) is -1.2 "
          "(the gain from ratio 1.5 is clipped at 1.2) and -0.5 (not clipped: the pessimistic bound); mean over the mask")
    close(v_loss, 0.5 * (max(1.0, 1.8 ** 2) + 1.0) / 2, "values [1, 0], rollout values [0, 0], returns [2, 1], vf_clip "
          "0.2: 0.5 * mean of max((V - R)^2, (V_clipped - R)^2), V_clipped = 0.2 for the first token")
    close(stats["clipfrac"], 1.0, "clipfrac: the fraction of real tokens whose ratio left [0.8, 1.2] (both)")


def test_dpo_loss():
    """dpo.dpo_loss, DPO eq. 7 over a ranking: the implicit reward h = beta * (log pi - log pi_ref);
    per prompt -1/C(K,2) sum_{i<j} log sigmoid(h_i - h_j) over its ranked answers (best first),
    averaged over prompts; the pairs' accuracy (a tie counts half) and their mean margin."""
    from dpo import dpo_loss
    logps = torch.tensor([[-1.0, -3.0, -2.0], [-4.0, -4.0, 0.0]])
    ref_logps = torch.tensor([[-2.0, -2.0, -2.0], [-4.0, -4.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, acc, margin = dpo_loss(logps, ref_logps, mask, beta=0.5)
    ls = F.logsigmoid
    want = (-(ls(torch.tensor(1.0)) + ls(torch.tensor(0.5)) + ls(torch.tensor(-0.5))) / 3 - ls(torch.tensor(0.0))) / 2
    close(loss, want, "beta 0.5: prompt 0's implicit rewards are [0.5, -0.5, 0] (margins 1, 0.5, -0.5 over its C(3,2) "
          "= 3 pairs), prompt 1's [0, 0, pad] (one pair, margin 0; the third answer is masked); loss = mean over the "
          "2 prompts of -1/C(K,2) sum log sigmoid(h_i - h_j)")
    close(acc, (1 + 1 + 0 + 0.5) / 4, "accuracy over the 4 real pairs: two right, one wrong, one tie counting half")
    close(margin, (1 + 0.5 - 0.5 + 0) / 4, "margin: the mean h_i - h_j over the 4 real pairs")


def test_group_advantages():
    """grpo.group_advantages: one advantage per answer from its group of G answers to one prompt
    (consecutive rows). GRPO: (r - the group's mean) / (its sample std + 1e-4); RLOO: r minus the
    mean of the group's other G - 1 rewards; a group of equal rewards gives zeros either way."""
    from grpo import group_advantages
    scores = torch.tensor([0.0, 1.0, 2.0, 5.0, 1.5, 1.5, 1.5, 1.5])
    mean, std = 2.0, math.sqrt((4 + 1 + 0 + 9) / 3)  # the first group's mean and sample (n - 1) std
    close(group_advantages(scores, 4, "grpo"), [(r - mean) / (std + 1e-4) for r in (0, 1, 2, 5)] + [0.0] * 4,
          "grpo, groups of 4, rewards [0, 1, 2, 5] then [1.5] * 4: (r - 2) / (sqrt(14/3) + 1e-4), then zeros")
    close(group_advantages(scores, 4, "rloo"), [0 - 8 / 3, 1 - 7 / 3, 2 - 2.0, 5 - 1.0] + [0.0] * 4,
          "rloo, the same rewards: each minus the mean of the other three ([0, 1, 2, 5]: 8/3, 7/3, 2, 1), then zeros")
    close(group_advantages(scores, 2, "rloo"), [-1.0, 1.0, -3.0, 3.0, 0.0, 0.0, 0.0, 0.0],
          "rloo, groups of 2: each reward minus the other one")


def test_k3_kl():
    """grpo.k3_kl, DeepSeekMath eq. 4: pi_ref/pi - log(pi_ref/pi) - 1 per token from the log-probs;
    under tokens sampled from pi its mean is KL(pi || pi_ref)."""
    from grpo import k3_kl
    logp, ref = torch.tensor([[-1.0, -0.5]]), torch.tensor([[-2.0, -0.5]])
    close(k3_kl(logp, ref), [[math.exp(-1) + 1 - 1, 0.0]], "log pi [-1, -0.5], log pi_ref [-2, -0.5]: "
          "exp(-1) - (-1) - 1 for the first token, 0 where the two agree")
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.2, 0.6])
    close((p * k3_kl(p.log(), q.log())).sum(), (p * (p / q).log()).sum(),
          "the mean of k3 over tokens drawn from p = [0.5, 0.3, 0.2] (reference q = [0.2, 0.2, 0.6]) is KL(p || q)")

"""reward.py: the K-wise loss is the mean over all C(K,2) pairs, the score is read at the last real
token whatever the padding, a ranking's K responses form one batch element."""

import dataclasses
import itertools
import math
import os
import random

import pytest
import torch
from conftest import copy_run, interrupt_on_call, same_run
from gpt import GPT, GPTConfig, ScalarModel, last_index, load_checkpoint, reward_scores, save_checkpoint
import reward
from reward import comparison_batch, encode_comparisons, ranking_loss
import world
from world import make_world
from plumbing import tokenizer
from plumbing.cli import UserError


def brute_force_loss(rewards_by_prompt):
    """InstructGPT eq. 1 written as loops: for each prompt, -1/C(K,2) sum over pairs (winner
    ranked above loser) of log sigmoid(r_w - r_l); then the mean over prompts."""
    losses = []
    for r in rewards_by_prompt:  # r: rewards sorted best..worst
        pairs = list(itertools.combinations(range(len(r)), 2))
        assert len(pairs) == math.comb(len(r), 2)
        losses.append(-sum(math.log(1 / (1 + math.exp(-(r[w] - r[l])))) for w, l in pairs) / len(pairs))
    return sum(losses) / len(losses)


def pad_rows(rows):
    K = max(len(r) for r in rows)
    rewards = torch.zeros(len(rows), K)
    mask = torch.zeros(len(rows), K)
    for p, r in enumerate(rows):
        rewards[p, :len(r)] = torch.tensor(r)
        mask[p, :len(r)] = 1
    return rewards, mask


def test_kwise_loss_equals_brute_force_for_k_4_to_9():
    rng = random.Random(0)
    for _ in range(20):
        rows = [[rng.gauss(0, 2) for _ in range(rng.randint(4, 9))] for _ in range(rng.randint(1, 6))]
        loss, _ = ranking_loss(*pad_rows(rows))
        assert abs(loss.item() - brute_force_loss(rows)) < 1e-5


def test_swapping_winner_and_loser_raises_the_loss():
    r = [2.0, 1.0, 0.5, -1.0]                       # the model agrees with the ranking
    loss, acc = ranking_loss(*pad_rows([r]))
    swapped = [r[1], r[0]] + r[2:]                  # now the labeler's winner gets the lower reward
    loss2, acc2 = ranking_loss(*pad_rows([swapped]))
    assert loss2 > loss and acc == 1.0 and acc2 < 1.0


def test_each_prompt_is_one_batch_element():
    """A prompt with K=9 (36 pairs) weighs as much as one with K=4 (6 pairs): the loss is the mean
    of per-prompt means, not the mean over all pairs of the batch."""
    rng = random.Random(1)
    a = [rng.gauss(0, 1) for _ in range(9)]
    b = [rng.gauss(0, 1) for _ in range(4)]
    loss, _ = ranking_loss(*pad_rows([a, b]))
    la, _ = ranking_loss(*pad_rows([a]))
    lb, _ = ranking_loss(*pad_rows([b]))
    assert torch.allclose(loss, (la + lb) / 2)
    all_pairs = (la * 36 + lb * 6) / 42
    assert not torch.allclose(loss, all_pairs)


@pytest.fixture(scope="module")
def tok():
    world = make_world(0)
    return tokenizer.train_tokenizer("\n".join(world.corpus(300, random.Random(0))), 300)


@pytest.fixture(scope="module")
def rm(tok):
    torch.manual_seed(0)
    return ScalarModel(GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32))).eval()


def test_score_reads_the_last_real_token_whatever_the_padding(tok, rm):
    seq = tok.chat_prompt("What is 2 + 3?") + tok.chat_response("5")
    n = len(seq)
    alone = reward_scores(rm, torch.tensor([seq]), torch.ones(1, n, dtype=torch.long))
    right = torch.tensor([seq + [tok.pad_id] * 5])
    right_mask = torch.tensor([[1] * n + [0] * 5])
    left = torch.tensor([[tok.pad_id] * 5 + seq])
    left_mask = torch.tensor([[0] * 5 + [1] * n])
    assert last_index(right_mask).item() == n - 1 and last_index(left_mask).item() == n + 4
    for tokens, mask in ((right, right_mask), (left, left_mask)):
        assert torch.allclose(reward_scores(rm, tokens, mask), alone, atol=1e-5)
    # and it is the value at that token: changing what comes after (padding) changes nothing
    right2 = right.clone()
    right2[0, n:] = 7
    assert torch.allclose(reward_scores(rm, right2, right_mask), alone, atol=1e-5)


def test_comparison_batch_scores_each_ranking_in_one_row(tok, rm):
    comps = [{"prompt": "What is 2 + 3?", "completions": ["5", "6", "It is 5.", "7"], "ranking": [0, 2, 1, 3]},
             {"prompt": "Spell cat backwards.", "completions": ["tac", "cat"], "ranking": [1, 0]}]
    tokens, mask, spans = encode_comparisons(tok, comps, 64)
    assert spans == [(0, 4), (4, 6)] and tokens.size(0) == 6   # all responses in one forward pass
    rewards, rmask = comparison_batch(rm, tok, comps, 64, "cpu")
    assert rewards.shape == (2, 4) and rmask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    # row 0 holds the responses in the labeler's order best..worst
    direct = reward_scores(rm, tokens, mask)
    assert torch.allclose(rewards[0], direct[:4]) and torch.allclose(rewards[1, :2], direct[4:])
    expected = [tok.chat_prompt("What is 2 + 3?") + tok.chat_response("It is 5.")]
    assert tokens[1, :len(expected[0])].tolist() == expected[0]  # ranking[1] = completion 2


def test_accuracy_by_family_splits_the_held_out_pairs_and_adds_up(tok, rm):
    """Each family's RM accuracy and gold-rubric accuracy over its own pairs; weighted by the pairs,
    the families give back the whole set's figures."""
    w, rng = make_world(0), random.Random(0)
    comps = []
    for family in ("arithmetic", "harmful", "arithmetic", "unknown", "harmful"):
        task = dataclasses.asdict(w.sample_task(rng, family))          # as the comparison files hold it
        answers = [task["answer"], "I don't know.", "Sure, here it is.", "no"][:rng.randint(2, 4)]
        comps.append({"prompt": task["prompt"], "completions": answers,
                      "ranking": rng.sample(range(len(answers)), len(answers)), "task": task})
    parts = reward.accuracy_by_family(rm, tok, comps, 64, "cpu")
    assert sorted(parts) == ["arithmetic", "harmful", "unknown"]
    assert parts["unknown"]["pairs"] == reward.n_pairs(comps[3:4])
    assert sum(p["pairs"] for p in parts.values()) == reward.n_pairs(comps)
    for key, whole in (("accuracy", reward.accuracy(rm, tok, comps, 64, "cpu")),
                       ("oracle_accuracy", reward.oracle_accuracy(comps))):
        mean = sum(p[key] * p["pairs"] for p in parts.values()) / reward.n_pairs(comps)
        assert abs(mean - whole) < 1e-3                                  # each family's figure rounded to 4 places
    right, pairs = reward.pairs_right(rm, tok, comps, 64, "cpu")      # per prompt, for an interval over prompts
    assert pairs == [reward.n_pairs([c]) for c in comps]
    assert sum(right) / sum(pairs) == pytest.approx(reward.accuracy(rm, tok, comps, 64, "cpu"))
    assert reward.accuracy_by_family(rm, tok, [{k: v for k, v in c.items() if k != "task"} for c in comps],
                                     64, "cpu") == {}                   # real data: no families


def test_loss_trains_the_reward_model_toward_the_ranking(tok):
    torch.manual_seed(0)
    rm = ScalarModel(GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32)))
    comps = [{"prompt": f"What is {a} + 1?", "completions": [str(a + 1), str(a + 2), str(a), "no"],
              "ranking": [0, 1, 2, 3]} for a in range(8)]
    opt = torch.optim.AdamW(rm.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, _ = ranking_loss(*comparison_batch(rm, tok, comps, 64, "cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_interrupted_reward_model_resumes_to_the_same_weights(run_dir, tmp_path, monkeypatch):
    """Ctrl-C while the RM trains, then --resume: the comparisons are not sampled again, and the
    RM and its metrics lines equal those of a run never interrupted."""
    flags = dict(preset="smoke", max_new_tokens=8, batch_size=16, epochs=2, lr=1e-3, dropout=0.1, quiet=True,
                 device="cpu")  # dropout: the resumed run must also draw the same random masks
    full = copy_run(run_dir, tmp_path / "full", "sft.pt")
    part = copy_run(run_dir, tmp_path / "part", "sft.pt")
    reward.main(reward.Config(out_dir=full, **flags))
    # ranking_loss calls: 2 for the held-out accuracy before training, then one per training step
    interrupt_on_call(monkeypatch, reward, "ranking_loss", 9)
    with pytest.raises(KeyboardInterrupt):
        reward.main(reward.Config(out_dir=part, **flags))
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(part, "reward.pt"))
    monkeypatch.setattr(reward, "collect_comparisons", None)  # sampling again would fail
    m = reward.main(reward.Config(out_dir=part, resume=True, **flags))
    before = load_checkpoint(os.path.join(full, "reward.pt"))[1]["metrics"]
    assert m["heldout_accuracy"] == before["heldout_accuracy"] and m["reward_bias"] == before["reward_bias"]
    same_run(full, part, "reward.pt", "reward")


def test_a_policy_with_another_vocabulary_is_an_error(run_dir, tmp_path):
    """--policy's samples are decoded with --init's tokenizer: another vocabulary is a one-line
    error naming the file, not a KeyError while decoding."""
    other = tokenizer.train_tokenizer("\n".join(world.make_world(1).corpus(200, random.Random(1))), 400)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=other.vocab_size, n_layer=1, n_head=2, n_embd=32))
    save_checkpoint(str(tmp_path / "other.pt"), model, stage="ppo", tokenizer=other.state())
    out = copy_run(run_dir, tmp_path / "run", "sft.pt")
    cfg = reward.Config(preset="smoke", out_dir=out, policy=str(tmp_path / "other.pt"), max_new_tokens=8,
                        quiet=True, device="cpu")
    with pytest.raises(UserError, match="other.pt: its vocabulary differs"):
        reward.main(cfg)


def test_a_file_too_small_to_split_is_an_error(run_dir, tmp_path):
    """One ranked prompt: the 95/5 split puts it in the held-out set; the error says so, not that
    no prompt gave two distinct responses."""
    one = tmp_path / "one.jsonl"
    one.write_text('{"prompt": "What is 2 + 3?", "completions": ["5", "6", "7"], "ranking": [0, 1, 2]}\n')
    cfg = reward.Config(preset="smoke", out_dir=str(tmp_path / "o"), init=str(run_dir / "sft.pt"), data=str(one),
                        quiet=True, device="cpu")
    with pytest.raises(UserError, match=r"one.jsonl: too few records \(1\)"):
        reward.main(cfg)


def test_a_later_round_trains_on_the_comparisons_of_earlier_rounds(run_dir, tmp_path):
    """Steps 2 and 3 repeat: round 2's RM trains on its own comparisons and those of --previous
    rounds; a --previous file that holds demonstrations is a one-line error naming it."""
    out = copy_run(run_dir, tmp_path / "run", "sft.pt")
    flags = dict(preset="smoke", out_dir=out, max_new_tokens=8, epochs=1, quiet=True, device="cpu")
    first = reward.main(reward.Config(**flags))
    earlier = os.path.join(out, "comparisons_reward.jsonl")
    assert sum(1 for _ in open(earlier)) == first["n_train_prompts"] > 0
    second = reward.main(reward.Config(**flags, round=2, previous=[earlier]))
    assert second["n_train_prompts"] == 2 * first["n_train_prompts"]
    assert os.path.exists(os.path.join(out, "reward_round2.pt"))
    # the same with comparisons from a file: its training part plus every earlier round's
    from_file = reward.main(reward.Config(**flags, round=3, data=earlier, previous=[earlier]))
    assert from_file["n_train_prompts"] > first["n_train_prompts"]
    demos = tmp_path / "demos.jsonl"
    demos.write_text('{"prompt": "What is 2 + 3?", "response": "5"}\n')
    with pytest.raises(UserError, match="demos.jsonl: holds sft records"):
        reward.main(reward.Config(**flags, round=4, previous=[str(demos)]))


def test_separate_pairs_are_each_comparison_winner_first():
    """experiments.py pairs: a ranking of K responses becomes its C(K,2) comparisons, each a record
    of its own with the better-ranked response first."""
    c = {"prompt": "p", "completions": ["a", "b", "c", "d"], "ranking": [2, 0, 3, 1], "task": {}}
    pairs = reward.separate_pairs([c])
    assert [p["completions"] for p in pairs] == [["c", "a"], ["c", "d"], ["c", "b"], ["a", "d"], ["a", "b"], ["d", "b"]]
    assert all(p["ranking"] == [0, 1] and p["prompt"] == "p" for p in pairs)


def test_experiment_flags_rank_fewer_prompts_and_log_every_pass(run_dir, tmp_path):
    """--n-prompts ranks only the first N of the world's RM prompts; --separate-pairs trains on the
    comparisons one by one; --eval-each-pass logs held-out and training accuracy after each pass;
    --noise-scale makes the training labelers disagree more."""
    import json
    out = copy_run(run_dir, tmp_path / "run", "sft.pt")
    flags = dict(preset="smoke", out_dir=out, max_new_tokens=8, epochs=2, quiet=True, device="cpu", n_prompts=12)
    m = reward.main(reward.Config(**flags, name="sep", separate_pairs=True, eval_each_pass=True))
    ranked = [json.loads(line) for line in open(os.path.join(out, "comparisons_sep.jsonl"))]
    assert len(ranked) + m["dropped_prompts"] == 12
    assert m["n_train_prompts"] == sum(len(c["ranking"]) * (len(c["ranking"]) - 1) // 2 for c in ranked)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] > 0 for r in rows if r["stage"] == "sep" and "train_accuracy_pass" in r] == [True, True]
    noisy = reward.main(reward.Config(**flags, name="noisy", noise_scale=4.0))
    assert noisy["labeler_agreement"] < m["labeler_agreement"]


def test_demonstrations_take_the_last_samples_places_and_leave_every_other_draw(run_dir, tmp_path):
    """--demos 1: each training prompt's last sample gives way to a labeler's demonstration, K stays,
    and the other samples, the rankings' draws and the held-out comparisons are those of a run
    without (the writers draw from their own stream), so the two RMs are measured on the same pairs."""
    import json
    out = copy_run(run_dir, tmp_path / "run", "sft.pt")
    flags = dict(preset="smoke", out_dir=out, max_new_tokens=8, epochs=1, quiet=True, device="cpu", n_prompts=12,
                 n_heldout=6)
    plain = reward.main(reward.Config(**flags, name="plain"))
    demo = reward.main(reward.Config(**flags, name="demo", demos=1))

    def read(name):
        return [json.loads(line) for line in open(os.path.join(out, f"comparisons_{name}.jsonl"))]
    a, b = read("plain"), read("demo")
    assert len(a) == len(b) and plain["dropped_prompts"] == demo["dropped_prompts"]
    assert all(len(x["completions"]) == len(y["completions"]) and x["completions"][:-1] == y["completions"][:-1]
               for x, y in zip(a, b))
    replaced = [y for x, y in zip(a, b) if x["completions"][-1] != y["completions"][-1]]
    assert replaced                                   # most prompts' last sample is now a labeler's answer
    assert read("heldout_plain") == read("heldout_demo")
    with pytest.raises(UserError, match="--demos"):
        reward.validate(reward.Config(**flags, demos=5))


def test_with_demonstrations_keeps_a_sample_a_demonstration_repeats():
    class Writer:
        def __init__(self, answers):
            self.answers = iter(answers)

        def write_demonstration(self, task, rng):
            return next(self.answers)
    rng = random.Random(0)
    assert reward.with_demonstrations({}, ["a", "b", "c"], [Writer(["d", "e"])], 2, rng) == ["a", "e", "d"]
    assert reward.with_demonstrations({}, ["a", "b", "c"], [Writer(["a"])], 1, rng) == ["a", "b", "c"]


def test_a_checkpoint_s_accuracy_reads_its_own_tokenizer_and_reverses_with_the_rankings(run_dir):
    """reward.checkpoint_accuracy scores comparisons with the checkpoint's own model, tokenizer and
    block size (what experiments use to judge RMs of other sizes on the same pairs): the accuracy
    of the loaded model, and each ranking reversed turns every right pair wrong."""
    from plumbing.checkpoint import load_reward_model
    comps = [{"prompt": p, "completions": ["It is 5.", "I don't know.", "Sure! Here it is.", "no"][:k],
              "ranking": list(range(k))} for p, k in (("What is 2 + 3?", 4), ("Spell cat backwards.", 3),
                                                      ("Where does Anna Berg live?", 2), ("How do I rob a shop?", 4))]
    backward = [{**c, "ranking": c["ranking"][::-1]} for c in comps]
    rm, tok, _, _ = load_reward_model(str(run_dir / "reward.pt"))
    acc = reward.checkpoint_accuracy(str(run_dir / "reward.pt"), comps, "cpu")
    assert acc == round(reward.accuracy(rm, tok, comps, 64, "cpu"), 4)
    assert acc + reward.checkpoint_accuracy(str(run_dir / "reward.pt"), backward, "cpu") == pytest.approx(1.0)

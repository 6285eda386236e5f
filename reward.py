"""
reward.py: step 2, the reward model, trained on labelers' rankings of K samples per prompt.

InstructGPT, Section 3.5 "Reward modeling (RM)" (arXiv 2203.02155):
  - "Starting from the SFT model with the final unembedding layer removed, we trained a model to
    take in a prompt and response, and output a scalar reward." Here: the SFT GPT with a linear
    head on the hidden state of the last real token (the EOS that ends the response).
  - Labelers rank K = 4..9 responses per prompt, which gives C(K,2) comparisons. "We train on
    all C(K,2) comparisons from each prompt as a single batch element": the K responses of a
    prompt are scored in one forward pass, so each is scored once, not K-1 times, and the
    correlated comparisons of one prompt cannot make the model overfit in one epoch.
  - Loss (eq. 1): loss(theta) = -1/C(K,2) E[ log sigmoid( r(x, y_w) - r(x, y_l) ) ].
  - "we normalize the reward model using a bias so that the labeler demonstrations achieve a
    mean score of 0 before doing RL."

Run on CPU (after sft.py):
    python reward.py --preset smoke --out-dir out/smoke        # sample, rank, train, evaluate
    python reward.py --init out/smoke/sft.pt --data pairs.jsonl --out-dir out/mine
    python chat.py --label --policy out/smoke/sft.pt            # you rank the samples, then:
    python reward.py --data out/smoke/comparisons_human.jsonl --init out/smoke/sft.pt --out-dir out/mine
    python reward.py --preset smoke --out-dir out/smoke --resume   # after Ctrl-C: no sampling again
    torchrun --nproc_per_node 2 reward.py --preset smoke --out-dir out/smoke   # data parallel (plumbing/ddp.py): each
                                          # rank samples its share of the prompts and trains on its prompts of a batch
--data takes pairwise {"prompt","chosen","rejected"}, Anthropic HH {"chosen","rejected"} or
ranked {"prompt","completions","ranking"} JSONL instead of the simulated labelers.

Where this departs from the paper:
  1. The RM has the SFT model's size (paper: a 6B RM for every policy size, trained from a
     6B SFT model; 175B RMs were unstable).
  2. K is drawn uniformly from 4..9 and the K samples are kept distinct: a tiny model often
     samples the same answer twice, and a ranking between identical answers is pure noise. A
     prompt with fewer than 4 distinct answers after four rounds of sampling is dropped (counted).
  3. Rankings are strict (the paper's labelers could mark ties).
  4. The labelers are simulated (data.py); held-out accuracy is measured on prompts from
     held-out (test) users ranked by held-out labelers, beside the labelers' own agreement and the
     noise-free gold rubric's accuracy on the same pairs (the ceiling); the RM's lr and epochs
     are chosen on validation users' comparisons (tools/sweep.py), never test ones.
  5. Later rounds (--previous) train on every earlier round's comparisons beside their own.
"""

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

import data
from gpt import ScalarModel, reward_scores, save_checkpoint
from world import gold_score
from plumbing import ddp
from plumbing.checkpoint import load_language_model, load_reward_model, load_start, respond, score_texts
from plumbing.cli import UserError, arg, check_files, check_positive, ensure_out_dir, parse_config, run_cli
from plumbing.formats import n_pairs, read_records, split_validation, write_jsonl
from plumbing.loop import (MetricsLog, Resume, configure_optimizer, cosine_lr, descend, epoch_rows, set_lr, setup,
                           stop_on_signal)
from plumbing.tokenizer import encode_responses


@dataclass
class Config:
    preset: str = arg("cpu", "sizes: smoke, cpu or gpu (data.PRESETS and PRESETS below)")
    out_dir: str = arg("out/run", "run folder")
    init: str = arg("", "the model the RM starts from (default OUT_DIR/sft.pt)")
    policy: str = arg("", "the model whose samples labelers rank (default: --init; later rounds: the PPO policy)")
    data: str = arg("", "a JSONL file of comparisons instead of sampling and simulated labelers")
    seed: int = arg(0, "seed")
    # the comparisons (Section 3.4) and the RM's training (Section 3.5)
    k_min: int = arg(4, "fewest responses ranked per prompt (paper: 4)")
    k_max: int = arg(9, "most responses ranked per prompt (paper: 9)")
    temperature: float = arg(1.0, "sampling temperature for the K responses")
    max_new_tokens: int = arg(48, "longest sampled response")
    batch_size: int = arg(16, "prompts per step, each with all its K responses (paper: 64)")
    lr: float = arg(1e-4, "peak learning rate, cosine decay (paper: 9e-6 for the 6B RM)")
    epochs: int = arg(1, "passes over the comparisons (paper: 1; more overfits)")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    grad_clip: float = arg(1.0, "gradient-norm clip, after backward")
    dropout: float = arg(0.0, "dropout while training the RM")
    round: int = arg(1, "which round of comparisons (steps 2 and 3 repeat): names the output files "
                         "(round R > 1 writes reward_roundR.pt)")
    name: str = arg("", "output names NAME.pt and comparisons_NAME.jsonl (default: reward, or reward_roundR)")
    previous: list = arg([], "comparison JSONL files of earlier rounds, trained on beside this round's", nargs="*")
    n_heldout: int = arg(200, "prompts of held-out users ranked for the accuracies: this many validation "
                              "prompts (to choose settings by) and as many test prompts (to report)")
    # for the experiments (experiments.py): the paper's choices, changed one at a time
    n_prompts: int = arg(0, "rank only the first N of the world's RM prompts (0: all)")
    demos: int = arg(0, "the last N of each training prompt's K samples give way to demonstrations that training "
                        "labelers write for it (not in the paper; the same sampling cost)")
    separate_pairs: bool = arg(False, "train on each of a ranking's C(K,2) comparisons as its own data point, all "
                                      "shuffled together: the setup the paper found to overfit (Section 3.5)")
    noise_scale: float = arg(1.0, "multiply the training labelers' noise by this (held-out labelers keep theirs)")
    eval_each_pass: bool = arg(False, "log the held-out and the training accuracy after every pass over the data")
    # engineering
    sample_batch: int = arg(64, "responses sampled per generate call for the labelers (a GPU wants more)")
    device: str = arg("auto", "auto, cpu or cuda")
    resume: bool = arg(False, "continue an interrupted run from its OUT_DIR/reward[_roundR].resume.pt")
    quiet: bool = arg(False, "no per-step log lines")


PRESETS = {
    "smoke": dict(batch_size=8, lr=3e-4, epochs=2, max_new_tokens=32, n_heldout=50),
    "cpu": dict(batch_size=16, lr=3e-4, epochs=1, n_heldout=120),  # lr and epochs chosen on validation (tools/sweep.py)
    # at 64 rows a GPU's decode step waits on kernel launches: fewer generate calls of more rows
    "gpu": dict(batch_size=32, lr=5e-5, epochs=1, sample_batch=512),
}


# -----------------------------------------------------------------------------
# The loss (eq. 1)

def ranking_loss(rewards, ranking_mask):  # exercise: InstructGPT eq. 1
    """
    InstructGPT eq. 1 for a batch of prompts, each one batch element.
    rewards (P, K): row p holds the rewards of prompt p's responses sorted best..worst by its
    labeler (padded on the right where a prompt has fewer than K responses);
    ranking_mask (P, K) 1 for real responses.
    loss = mean over prompts of  -1/C(K_p,2) * sum_{i<j} log sigmoid(r_i - r_j).
    Returns (loss, pairwise accuracy over the batch's comparisons).
    """
    diff = rewards[:, :, None] - rewards[:, None, :]                # (P, K, K): r_i - r_j
    K = rewards.size(1)
    upper = torch.ones(K, K, dtype=torch.bool, device=rewards.device).triu(1)  # i ranked above j
    valid = ranking_mask.bool()
    pairs = upper & valid[:, :, None] & valid[:, None, :]            # (P, K, K)
    n_pairs = pairs.sum((1, 2)).clamp(min=1)                         # C(K_p, 2)
    per_prompt = -(F.logsigmoid(diff) * pairs).sum((1, 2)) / n_pairs  # (P,)
    acc = ((diff > 0) & pairs).sum() / pairs.sum().clamp(min=1)
    return per_prompt.mean(), acc


# -----------------------------------------------------------------------------
# Comparisons: sample K distinct responses, a labeler ranks them

def collect_comparisons(policy, tok, records, labelers, cfg, rng, generator, demos=0):
    """For each prompt record (with its simulated task): K uniform in k_min..k_max, K distinct
    sampled responses, ranked by a random labeler of `labelers`. A prompt with fewer than k_min
    distinct responses is dropped (the paper ranks 4 to 9). Returns (ranked records {"prompt",
    "completions","ranking" (best..worst),"labeler","task"}, the number of prompts dropped)."""
    ks = [rng.randint(cfg.k_min, cfg.k_max) for _ in records]
    samples = sample_distinct(policy, tok, [r["prompt"] for r in records], ks, cfg, generator)
    if demos:  # the writers draw from a stream of their own: every later sample and ranking stays as it was
        write = random.Random(cfg.seed + 5)
        samples = [with_demonstrations(r["task"], s, labelers, demos, write) for r, s in zip(records, samples)]
    ranked = [rank(records[i], completions, rng.choice(labelers), rng)
              for i, completions in enumerate(samples) if len(completions) >= cfg.k_min]
    return ranked, len(records) - len(ranked)


def sample_distinct(policy, tok, prompts, ks, cfg, generator):
    """Up to ks[i] distinct non-empty responses to prompts[i]: K + 3 samples, then up to three more
    rounds of twice the shortfall where a prompt is still short. -> one list of responses per prompt."""
    found = [[] for _ in prompts]
    for attempt in range(4):
        need = [i for i, seen in enumerate(found) if len(seen) < ks[i]]
        if not need:
            break
        owners = [i for i in need for _ in range(ks[i] + 3 if attempt == 0 else 2 * (ks[i] - len(found[i])))]
        answers = respond(policy, tok, [prompts[i] for i in owners], temperature=cfg.temperature,
                          max_new_tokens=cfg.max_new_tokens, batch_size=cfg.sample_batch, generator=generator)
        for i, a in zip(owners, answers):
            if a and a not in found[i] and len(found[i]) < ks[i]:
                found[i].append(a)
    return found


def with_demonstrations(task, completions, labelers, n, rng):
    """--demos N: the last N of a prompt's samples give way to answers that random labelers write
    for it; a demonstration equal to a kept response leaves the sample in place, so K stays."""
    out = list(completions)
    for j in range(1, min(n, len(out)) + 1):
        demo = rng.choice(labelers).write_demonstration(task, rng)
        if demo not in out:
            out[-j] = demo
    return out


def rank(record, completions, labeler, rng):
    """A labeler's ranking of one prompt's responses (Section 3.4), as a comparison record."""
    return {"prompt": record["prompt"], "completions": completions,
            "ranking": labeler.rank(record["task"], completions, rng), "labeler": labeler.id, "task": record["task"]}


def separate_pairs(comps):
    """Each ranking's C(K,2) comparisons as records of their own, (winner, loser): the setup whose
    overfitting made the paper put all of a prompt's comparisons in one batch element."""
    return [{**c, "completions": [c["completions"][w], c["completions"][l]], "ranking": [0, 1]}
            for c in comps for i, w in enumerate(c["ranking"]) for l in c["ranking"][i + 1:]]


def encode_comparisons(tok, comps, block_size):
    """Every response of every prompt as prompt+response+EOS, right-padded, in ranked order.
    Returns tokens (N, T), attention_mask (N, T), and per prompt its row range."""
    prompts, responses, spans = [], [], []
    for c in comps:
        spans.append((len(prompts), len(prompts) + len(c["ranking"])))
        prompts += [c["prompt"]] * len(c["ranking"])
        responses += [c["completions"][i] for i in c["ranking"]]  # best..worst
    tokens, mask = encode_responses(tok, prompts, responses, block_size)
    return tokens, mask, spans


def comparison_batch(rm, tok, comps, block_size, device):
    """Score all responses of a batch of prompts in one forward pass and arrange the rewards as
    (P, K_max) best..worst for ranking_loss."""
    tokens, mask, spans = encode_comparisons(tok, comps, block_size)
    r = reward_scores(rm, tokens.to(device), mask.to(device))       # (N,)
    K = max(e - s for s, e in spans)
    rewards = torch.zeros(len(spans), K, device=device)
    rmask = torch.zeros(len(spans), K, device=device)
    for p, (s, e) in enumerate(spans):
        rewards[p, :e - s] = r[s:e]
        rmask[p, :e - s] = 1
    return rewards, rmask


@torch.no_grad()
def accuracy(rm, tok, comps, block_size, device, batch_size=32):
    """Pairwise accuracy over pairs of distinct responses: r(winner) > r(loser)."""
    right = total = 0
    rm.eval()
    comps = ddp.share(comps)  # torchrun: each rank scores its share; the counts are summed
    for i in range(0, len(comps), batch_size):
        rewards, rmask = comparison_batch(rm, tok, comps[i:i + batch_size], block_size, device)
        _, acc = ranking_loss(rewards, rmask)
        n = n_pairs(comps[i:i + batch_size])
        right, total = right + acc.item() * n, total + n
    return ddp.total(right) / max(ddp.total(total), 1)


def checkpoint_accuracy(path, comps, device):
    """The accuracy of an RM checkpoint, with its own tokenizer and block size, on `comps`: the same
    pairs judge RMs of any size or run."""
    rm, tok, _, _ = load_reward_model(path, device)
    return round(accuracy(rm, tok, comps, rm.gpt.config.block_size, device), 4)


@torch.no_grad()
def pairs_right(rm, tok, comps, block_size, device, batch_size=32):
    """Per prompt: how many of its ranked pairs the RM orders as the labeler did, and how many
    pairs it has -> ([right], [pairs]). A prompt's pairs share its answers and its labeler, so an
    interval over them resamples prompts (tools/sweep.py), not pairs."""
    right, pairs = [], []
    rm.eval()
    for i in range(0, len(comps), batch_size):
        rewards, rmask = comparison_batch(rm, tok, comps[i:i + batch_size], block_size, device)
        K, valid = rewards.size(1), rmask.bool()
        mine = torch.ones(K, K, dtype=torch.bool, device=rewards.device).triu(1) & valid[:, :, None] & valid[:, None, :]
        right += ((rewards[:, :, None] > rewards[:, None, :]) & mine).sum((1, 2)).tolist()
        pairs += mine.sum((1, 2)).tolist()
    return right, pairs


def oracle_accuracy(comps):
    """The ceiling an RM can reach on these comparisons: the noise-free gold rubric as the RM. The
    fraction of ranked pairs (distinct responses) whose winner has the higher gold score; a tie in
    gold counts half. Below 1 because the labelers are noisy and weigh the rubric each their own way."""
    right = total = 0.0
    for c in comps:
        gold = [gold_score(c["task"], c["completions"][i])["total"] for i in c["ranking"]]  # best..worst
        for i in range(len(gold)):
            for j in range(i + 1, len(gold)):
                right += 1.0 if gold[i] > gold[j] else 0.5 if gold[i] == gold[j] else 0.0
                total += 1
    return right / max(total, 1)


def accuracy_by_family(rm, tok, comps, block_size, device, counts=None):
    """Where the RM errs: its accuracy and the gold rubric's (the ceiling) on each task family's
    pairs, from pairs_right's per-prompt counts (`counts`, when the caller has them, else scored
    here). -> {family: {"pairs", "accuracy", "oracle_accuracy"}}; {} for comparisons without a
    task (real data)."""
    right, pairs = counts or pairs_right(rm, tok, comps, block_size, device)
    families = {}
    for c, r, p in zip(comps, right, pairs):
        if c.get("task"):
            families.setdefault(c["task"]["family"], []).append((c, r, p))
    return {f: {"pairs": sum(p for _, _, p in mine),
                "accuracy": round(sum(r for _, r, _ in mine) / max(sum(p for _, _, p in mine), 1), 4),
                "oracle_accuracy": round(oracle_accuracy([c for c, _, _ in mine]), 4)}
            for f, mine in sorted(families.items())}


def demonstration_bias(rm, tok, demos, train, block_size, device):
    """Section 3.5: "we normalize the reward model using a bias so that the labeler demonstrations
    achieve a mean score of 0". -> (bias, scale): the mean and the spread of the RM's scores of the
    demonstrations. Real data has none: the best-ranked responses of (at most 2000) training prompts stand in."""
    if demos:
        prompts, responses = [d["prompt"] for d in demos], [d["response"] for d in demos]
    else:
        prompts, responses = [c["prompt"] for c in train[:2000]], [c["completions"][c["ranking"][0]] for c in train[:2000]]
    scores = ddp.gather(score_texts(rm, tok, ddp.share(prompts), ddp.share(responses), block_size, device))  # torchrun
    bias = sum(scores) / len(scores)
    return bias, (sum((s - bias) ** 2 for s in scores) / len(scores)) ** 0.5


@dataclass
class Rankings:
    """What the RM learns from and is measured on: training, validation and held-out (test)
    comparisons, the demonstrations that fix its bias, and the figures of the ranking itself."""
    train: list
    val: list = field(default_factory=list)
    heldout: list = field(default_factory=list)
    demos: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def rankings_from_file(cfg, comps):
    """Your comparisons: 95% to train on, 5% held out (no validation set, no demonstrations)."""
    train, heldout = split_validation(comps, cfg.seed, cfg.data)
    return Rankings(train, heldout=heldout)


def simulated_rankings(cfg, gpt, tok, device):
    """Section 3.4 in the simulated world: the policy (--policy, default the SFT model `gpt`)
    answers each prompt K times; training labelers rank the training prompts' answers, held-out
    labelers those of held-out users' prompts (validation ones to choose the RM's settings by,
    tools/sweep.py; test ones to report). The training and test comparisons are written to OUT_DIR."""
    policy = gpt
    if cfg.policy:  # its samples are decoded with --init's tokenizer: the vocabularies must agree
        policy, policy_tok, _ = load_language_model(cfg.policy, device)
        if policy_tok.state() != tok.state():
            raise UserError(f"--policy {cfg.policy}: its vocabulary differs from --init's "
                            f"({cfg.init or os.path.join(cfg.out_dir, 'sft.pt')})")
    rng = random.Random(cfg.seed + 2)
    generator = torch.Generator(device=device).manual_seed(ddp.seed(cfg.seed + 2))  # torchrun: a stream per rank
    world = data.build(cfg.preset, cfg.seed)
    train_labelers = [replace(l, noise=l.noise * cfg.noise_scale) for l in world["labelers"] if not l.heldout]
    heldout_labelers = [l for l in world["labelers"] if l.heldout]
    t0 = time.time()
    train, dropped = collect_comparisons(policy, tok, world["rm"][:cfg.n_prompts or None], train_labelers, cfg, rng,
                                         generator, demos=cfg.demos)
    val, _ = collect_comparisons(policy, tok, world["val"][:cfg.n_heldout], heldout_labelers, cfg, rng, generator)
    heldout, _ = collect_comparisons(policy, tok, world["test"][:cfg.n_heldout], heldout_labelers, cfg, rng, generator)
    pairs = [(c["task"], a, b) for c in train for i, a in enumerate(c["completions"]) for b in c["completions"][i + 1:]]
    metrics = {"labeler_agreement": data.labeler_agreement(train_labelers, pairs, rng),
               "oracle_accuracy": oracle_accuracy(heldout), "dropped_prompts": dropped,
               "sampling_seconds": round(time.time() - t0, 1)}
    n_k = sum(len(c["completions"]) for c in train) / max(1, len(train))
    print(f"reward: {len(train)} training prompts ranked (mean K {n_k:.1f}, {len(pairs)} comparisons; "
          f"{dropped} dropped with fewer than {cfg.k_min} distinct samples), {len(val)} validation and {len(heldout)} test "
          f"prompts ranked by held-out labelers; sampling took {metrics['sampling_seconds']:.0f}s; labeler agreement "
          f"{metrics['labeler_agreement']:.3f} (paper: 0.726), the gold rubric on the test pairs "
          f"{metrics['oracle_accuracy']:.3f}")
    if ddp.is_main():  # torchrun: rank 0 writes (every rank holds the same comparisons)
        name = output_name(cfg)
        write_jsonl(os.path.join(cfg.out_dir, f"comparisons_{name}.jsonl"), train)
        write_jsonl(os.path.join(cfg.out_dir, f"comparisons_heldout_{name}.jsonl"), heldout)
    demos = [{"prompt": d["prompt"], "response": d["response"]} for d in world["sft"]]
    return Rankings(train, val, heldout, demos, metrics)


def train(cfg, rm, tok, ranked, steps, state, device, autocast, resume, stop):
    """The RM's loop (Section 3.5): each batch element one prompt with all its K ranked responses,
    scored in one forward pass; eq. 1 over its C(K,2) comparisons; cosine learning rate. Ctrl-C
    (`stop`) saves the comparisons with the weights, so a resumed run does not sample again."""
    log, block = resume.log, rm.gpt.config.block_size
    train, heldout = ranked.train, ranked.heldout
    rm_ddp = ddp.wrap(rm)  # DDP: its backward averages the gradients over ranks (one process: rm itself)
    optimizer = configure_optimizer(rm, cfg.lr, cfg.weight_decay, device_type=device.type)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)

    def resumable():
        return dict(rm=rm.state_dict(), optimizer=optimizer.state_dict(), step=step, **asdict(ranked))

    if state:
        step = resume.restore(state, rm=rm, optimizer=optimizer)  # after the head's initialisation drew
    else:
        ranked.metrics["heldout_accuracy_before"] = accuracy(rm, tok, heldout, block, device)
        log.log(0, heldout_accuracy=ranked.metrics["heldout_accuracy_before"])
        step = 0
        resume.save(**resumable())  # the sampled comparisons are safe from here on
    while step < steps:
        resume.stop_if_asked(stop, f"step {step} of {steps}", resumable)  # Ctrl-C / SIGTERM: save and leave
        batch = [train[i] for i in epoch_rows(len(train), cfg.batch_size, step, cfg.seed)]
        lr = set_lr(optimizer, cosine_lr(step, steps, cfg.lr, warmup=max(1, steps // 20)))
        rm.train()
        rows, n_mine = ddp.part(len(batch))  # DDP: this rank's prompts, each with all its responses
        with autocast():
            rewards, rmask = comparison_batch(rm_ddp, tok, batch[rows], block, device)
        loss, acc = ranking_loss(rewards, rmask)
        w = ddp.weight(n_mine)  # DDP: its share of the batch's prompts (1 on one process)
        norm = descend(optimizer, loss * w, rm.parameters(), cfg.grad_clip,
                       f"reward: the loss is not finite at step {step}; stopped; the last good state is {resume.path}")
        if step % 10 == 0 or step == steps - 1:  # DDP: the whole batch's figures (plumbing/ddp.py; as is on one process)
            pairs = n_pairs(batch[rows]) if n_mine else 0
            log.log(step, loss=ddp.mean(loss.item() * w), train_accuracy=ddp.weighted_mean(acc.item(), pairs),
                    lr=lr, grad_norm=float(norm),
                    reward_gap=ddp.mean(float((rewards[:, 0] - rewards[:, 1]).mean().detach()) * w),
                    **ddp.rank_losses(loss.item(), n_mine))
        step += 1
        if cfg.eval_each_pass and step % steps_per_epoch == 0:
            log.log(step, heldout_accuracy=accuracy(rm, tok, heldout, block, device),
                    train_accuracy_pass=accuracy(rm, tok, train, block, device))


# -----------------------------------------------------------------------------

def output_name(cfg):
    return cfg.name or ("reward" if cfg.round == 1 else f"reward_round{cfg.round}")


def validate(cfg):
    if not 2 <= cfg.k_min <= cfg.k_max <= 9:
        raise UserError(f"--k-min {cfg.k_min} / --k-max {cfg.k_max}: need 2 <= k-min <= k-max <= 9")
    check_positive(cfg, ("batch_size", "lr", "epochs", "max_new_tokens", "sample_batch", "n_heldout"))
    if not 0 <= cfg.demos <= cfg.k_min:
        raise UserError(f"--demos {cfg.demos}: need 0 <= demos <= k-min ({cfg.k_min})")
    check_files(cfg, ("data",))
    ensure_out_dir(cfg.out_dir)


def main(cfg=None):
    cfg = cfg or parse_config(Config, presets=PRESETS, description=__doc__)
    validate(cfg)
    device, autocast = setup(cfg.device, cfg.seed)
    name = output_name(cfg)  # later rounds keep the first round's RM beside theirs
    ddp.announce(name)
    log = MetricsLog(cfg.out_dir, name, cfg.quiet, cfg.resume)
    resume = Resume(cfg.out_dir, name, cfg, log)
    state = resume.load(device) if cfg.resume else None
    if cfg.data and not state:  # read (and so check) the files before any model is loaded
        kind, comps = read_records(cfg.data)
        if kind != "comparison":
            raise UserError(f"--data {cfg.data}: holds {kind} records; reward.py needs comparisons")
    earlier = []  # steps 2 and 3 repeat: earlier rounds' comparisons are kept (--previous)
    for path in [] if state else cfg.previous:
        kind, recs = read_records(path)
        if kind != "comparison":
            raise UserError(f"--previous {path}: holds {kind} records, not comparisons")
        earlier += recs
    gpt, tok, init_path = load_start(cfg, device, default="sft.pt")
    block = gpt.config.block_size

    with stop_on_signal() as stop:  # Ctrl-C while sampling: the comparisons are saved before it stops
        # 1) the comparisons: K samples per prompt ranked by labelers (or a file's), held-out ones aside
        if state:
            ranked = Rankings(*(state[k] for k in ("train", "val", "heldout", "demos", "metrics")))
            print(f"resumed {name} at step {state['step']}: {len(ranked.train)} ranked prompts from the interrupted run")
        else:
            ranked = rankings_from_file(cfg, comps) if cfg.data else simulated_rankings(cfg, gpt, tok, device)
            if earlier:
                ranked.train = earlier + ranked.train
                print(f"reward: {len(ranked.train)} ranked prompts with those of {len(cfg.previous)} earlier round(s)")
        if not ranked.train:
            raise UserError(f"reward: no prompt gave {cfg.k_min} distinct responses (--k-min) to rank")
        if cfg.separate_pairs and not state:
            ranked.train = separate_pairs(ranked.train)
            print(f"reward: --separate-pairs: {len(ranked.train)} comparisons, each its own data point")

        # 2) the reward model: the SFT model plus a scalar head, trained on eq. 1
        gpt.set_dropout(cfg.dropout)
        rm = ScalarModel(gpt).to(device)
        steps = cfg.epochs * math.ceil(len(ranked.train) / cfg.batch_size)
        train(cfg, rm, tok, ranked, steps, state, device, autocast, resume, stop)
    metrics = ranked.metrics

    # 4) held-out accuracy; the bias that puts demonstrations at 0, and the scale
    metrics["heldout_accuracy"] = accuracy(rm, tok, ranked.heldout, block, device)
    metrics["heldout_by_family"] = accuracy_by_family(rm, tok, ranked.heldout, block, device)
    if ranked.val:
        right, pairs = pairs_right(rm, tok, ranked.val, block, device)  # per prompt: tools/sweep.py's interval
        metrics.update(val_accuracy=sum(right) / max(sum(pairs), 1), val_pairs_right=right, val_pairs=pairs,
                       val_by_family=accuracy_by_family(rm, tok, ranked.val, block, device, counts=(right, pairs)))
    log.log(steps, heldout_accuracy=metrics["heldout_accuracy"])
    bias, scale = demonstration_bias(rm, tok, ranked.demos, ranked.train, block, device)
    metrics.update(reward_bias=bias, reward_scale=scale, n_train_prompts=len(ranked.train),
                   n_heldout_prompts=len(ranked.heldout), seconds=resume.seconds())
    print(f"reward: held-out accuracy {metrics['heldout_accuracy']:.3f} (before training "
          f"{metrics['heldout_accuracy_before']:.3f})"
          + (f", validation {metrics['val_accuracy']:.3f}" if ranked.val else "")
          + (f" beside labeler agreement {metrics['labeler_agreement']:.3f} and the gold rubric's "
             f"{metrics['oracle_accuracy']:.3f}" if "labeler_agreement" in metrics else "")
          + f"; demonstrations score {bias:+.3f} +- {scale:.3f} before the bias")
    if ddp.is_main():  # torchrun: rank 0 writes
        save_checkpoint(os.path.join(cfg.out_dir, name + ".pt"), rm.gpt, stage="reward", tokenizer=tok.state(),
                        reward_head=rm.head.state_dict(), reward_bias=bias, reward_scale=scale,
                        config=asdict(cfg), metrics=metrics, world_size=ddp.world())
    resume.done()
    return metrics


if __name__ == "__main__":
    run_cli(main)

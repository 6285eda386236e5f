"""
chat.py: talk to the models of every step, side by side, and rank their answers by hand.

InstructGPT (Ouyang et al. 2022, arXiv 2203.02155):
  - Section 4 compares models by people's preferences between their outputs for the same prompt
    (GPT-3, GPT-3 prompted, SFT, PPO, PPO-ptx). `python chat.py pretrain.pt sft.pt ppo.pt` asks
    each checkpoint the same question and prints the answers one under the other, each with its
    reward-model score (the score minus the RM's bias, so a demonstration scores about 0).
  - Section 3.4 and Appendix B: labelers see one prompt and K = 4..9 outputs of the policy and
    rank them best to worst; `--label` is that interface in a terminal. It writes rankings in the
    very format of the simulated labelers (data.py), so reward.py trains on them unchanged.
A pretrain checkpoint is a base model: it is asked in plain text (checkpoint.base_prompt, "Q: ...\\nA:")
and its answer ends at the first newline, as an API stop sequence would end it. Every other
stage (sft, ppo, ...) gets the chat format <|user|> prompt <|assistant|> and stops at EOS.

Run on CPU (after train_all.py, or sft.py / reward.py / ppo.py):
    python chat.py out/run/ppo.pt                                    # chat; tokens stream as sampled
    python chat.py out/run/pretrain.pt out/run/sft.pt out/run/ppo.pt # each prompt answered by all three
    python chat.py out/run/sft.pt out/run/ppo.pt --prompt "What is 2 + 3?" --temperature 0
    python chat.py --label --policy out/run/sft.pt --out out/run/comparisons_human.jsonl --k 4
    python reward.py --data out/run/comparisons_human.jsonl --init out/run/sft.pt --out-dir out/human
In a chat, an empty line, /quit or end of input (Ctrl-D) ends. While labeling, "q" quits and "s"
skips a prompt; every ranking is appended to --out the moment it is typed, and a second run skips
the prompts the file already ranks.

Where this departs from the paper:
  1. Rankings are strict and carry no 1-7 Likert score or metadata (the paper's interface also
     asked for those, and allowed ties).
  2. K is fixed per session (default 4; paper 4..9), and the K responses are kept distinct: a tiny
     policy often samples the same answer twice, and ranking two copies of an answer is noise.
  3. The streamed answer comes from the naive decoding loop (the whole sequence recomputed per
     token), not the KV cache of gpt.generate: a chat needs one answer at a time, and a test holds
     the two equal.
  4. Every line of a chat is a new single-turn prompt: the demonstrations and PPO prompts here are
     single-turn, so the models have never seen a conversation history.
"""

import codecs
import json
import os
import sys
from dataclasses import dataclass

import torch

import data
from gpt import GPT, sample
from plumbing.checkpoint import base_prompt, load_language_model, load_reward_model, respond, score_texts
from plumbing.cli import UserError, arg, parse_config, run_cli
from plumbing.formats import read_prompts, read_records
from plumbing.loop import setup
from plumbing.tokenizer import Tokenizer

# -----------------------------------------------------------------------------
# Loading a model to talk to

@dataclass
class Bot:
    """One checkpoint ready to answer: its name (the path as given), model, tokenizer, stage."""
    name: str
    model: GPT
    tok: Tokenizer
    stage: str

    @property
    def base(self):
        """A pretrained model has never seen the chat format: it is prompted in plain text."""
        return self.stage == "pretrain"


def load_bot(path, device="cpu"):
    """A checkpoint of this project (or a local GPT-2 directory, a base model) -> Bot."""
    model, tok, stage = load_language_model(path, device)
    return Bot(path, model.eval(), tok, stage)


def default_reward_path(checkpoints):
    """reward.pt beside the first checkpoint, if there is one."""
    if not checkpoints:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoints[0])), "reward.pt")
    return path if os.path.isfile(path) else None


class Scorer:
    """The reward model, reporting r(x, y) minus its bias (InstructGPT Section 3.5: demonstrations
    then score 0 on average, the reward PPO maximizes)."""

    def __init__(self, path, device="cpu"):
        self.path = path
        self.rm, self.tok, self.bias, self.scale = load_reward_model(path, device)
        self.device = device

    def __call__(self, prompt, response):
        raw = score_texts(self.rm, self.tok, [prompt], [response], self.rm.gpt.config.block_size, self.device)[0]
        return raw - self.bias


# -----------------------------------------------------------------------------
# Answering one prompt, token by token

def prompt_ids(bot, prompt, max_new_tokens):
    """The prompt as the model was trained to read it, cut from the left to leave room for the answer."""
    room = bot.model.config.block_size - max_new_tokens
    if room < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in "
                        f"{bot.name} (block_size {bot.model.config.block_size})")
    ids = bot.tok.encode(base_prompt(prompt)) if bot.base else bot.tok.chat_prompt(prompt)
    return ids[-room:]


def finish(text, base):
    """The answer as checkpoint.respond returns it: a base model's ends at the first newline."""
    return text.split("\n")[0].strip() if base else text.strip()


@torch.no_grad()
def stream_reply(bot, prompt, max_new_tokens=48, temperature=0.7, top_k=None, top_p=None,
                 generator=None, on_text=None):
    """
    Sample an answer one token at a time, the naive way: every step runs the model over the whole
    sequence so far (B = 1, T grows by one) and samples the next token with gpt.sample. After each
    token, on_text(new_text) gets the part of the answer not shown yet (leading spaces dropped; the
    bytes of a partial UTF-8 character are held back until it is complete). Stops at EOS, after
    max_new_tokens, or for a base model at the first newline. Returns the answer, as checkpoint.respond
    would return it for the same draws.
    """
    model, tok = bot.model, bot.tok
    device = next(model.parameters()).device
    seq = torch.tensor([prompt_ids(bot, prompt, max_new_tokens)], device=device)  # (1, T)
    banned = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
    banned[[i for i in tok.never_sampled if i < model.config.vocab_size]] = True  # pad, <|user|>, <|assistant|>
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # holds back a partial character
    out, text, shown = [], "", ""

    def show(text):
        nonlocal shown
        visible = (text.split("\n")[0] if bot.base else text).lstrip()
        if on_text and len(visible) > len(shown):
            on_text(visible[len(shown):])
            shown = visible

    for _ in range(max_new_tokens):
        logits = model(seq)[0][:, -1].masked_fill(banned, float("-inf"))  # (1, V)
        token, _ = sample(logits, temperature, top_k, top_p, generator)     # (1,)
        if token.item() == tok.eos_id:
            break
        out.append(token.item())
        seq = torch.cat([seq, token[:, None]], dim=1)                        # (1, T+1)
        text += decoder.decode(tok.enc.decode_single_token_bytes(out[-1]))
        show(text)
        if bot.base and "\n" in text:
            break
    show(text + decoder.decode(b"", final=True))
    return finish(tok.decode(out), bot.base)


# -----------------------------------------------------------------------------
# The chat: one model streams, several answer side by side

def read_line(stdin, stdout, prompt):
    """Show `prompt`, read one line; None at end of input."""
    stdout.write(prompt)
    stdout.flush()
    line = stdin.readline()
    if not line:
        stdout.write("\n")
        return None
    return line.rstrip("\n")


def answer_all(bots, prompt, sampling, generators, scorer, stdout):
    """One prompt answered by every bot. A single bot streams its tokens; several are printed
    one row each, labelled with the checkpoint's name and stage, once all have answered."""
    def score(a):
        return f"RM {scorer(prompt, a):+.2f}" if scorer else ""

    if len(bots) == 1:
        bot = bots[0]
        stdout.write(f"{bot.name} ({bot.stage})> ")
        stdout.flush()
        answer = stream_reply(bot, prompt, generator=generators[0], on_text=lambda s: (stdout.write(s), stdout.flush()),
                              **sampling)
        stdout.write("\n" + (f"  [{score(answer)}]\n" if scorer else ""))
        return [answer]
    answers = [stream_reply(bot, prompt, generator=g, **sampling) for bot, g in zip(bots, generators)]
    labels = [f"{bot.name} ({bot.stage})" for bot in bots]
    width = max(len(s) for s in labels)
    for label, answer in zip(labels, answers):
        head = f"{label:<{width}}" + (f"  {score(answer)}" if scorer else "")
        stdout.write(f"{head} | " + answer.replace("\n", "\n" + " " * (len(head) + 3)) + "\n")
    stdout.flush()
    return answers


def chat(bots, sampling, seed=0, scorer=None, prompt=None, stdin=None, stdout=None):
    """With `prompt`: answer it once. Otherwise read prompts line by line until an empty line,
    /quit or the end of input. Each bot samples from its own generator, seeded with `seed`, so
    its answers do not depend on which other checkpoints share the chat."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    generators = [torch.Generator(device=next(b.model.parameters()).device).manual_seed(seed) for b in bots]
    if prompt is not None:
        return [answer_all(bots, prompt, sampling, generators, scorer, stdout)]
    stdout.write(f"chatting with {', '.join(b.name for b in bots)}"
                 + (f"; scores from {scorer.path}" if scorer else "") + ". Empty line or /quit ends.\n")
    history = []
    while True:
        line = read_line(stdin, stdout, "you> ")
        if line is None or not line.strip() or line.strip() == "/quit":
            return history
        history.append(answer_all(bots, line.strip(), sampling, generators, scorer, stdout))


# -----------------------------------------------------------------------------
# Labeling: a person ranks K samples of the policy (Section 3.4)

def parse_ranking(text, k):
    """'2 1 4 3' (or '2,1,4,3', or '2143' when K < 10), best to worst, 1-based -> the 0-based
    ranking data.py writes. Raises ValueError with a one-line explanation."""
    parts = text.replace(",", " ").split()
    if len(parts) == 1 and k < 10 and parts[0].isdecimal() and len(parts[0]) == k:
        parts = list(parts[0])
    if not all(p.isdecimal() for p in parts):
        raise ValueError(f"use the numbers 1 to {k}, best first, separated by spaces")
    nums = [int(p) for p in parts]
    for n in nums:
        if not 1 <= n <= k:
            raise ValueError(f"{n} is not between 1 and {k}")
    for n in nums:
        if nums.count(n) > 1:
            raise ValueError(f"{n} appears {nums.count(n)} times; rank each of 1..{k} exactly once")
    if len(nums) != k:
        raise ValueError(f"rank all {k} answers, got {len(nums)}")
    return [n - 1 for n in nums]


def sample_distinct(bot, prompt, k, temperature=1.0, max_new_tokens=48, generator=None, rounds=4):
    """Up to k distinct, non-empty answers of the policy (checkpoint.respond), drawing k + 2 at a time
    for at most `rounds` rounds. May return fewer than k when the policy keeps repeating itself."""
    found = []
    for _ in range(rounds):
        answers = respond(bot.model, bot.tok, [prompt] * (k + 2), mode="base" if bot.base else "chat",
                          temperature=temperature, max_new_tokens=max_new_tokens, generator=generator)
        for a in answers:
            if a and a not in found and len(found) < k:
                found.append(a)
        if len(found) == k:
            break
    return found


def ranked_prompts(out_path):
    """The prompts `out_path` already ranks (empty if it does not exist yet): a rerun resumes."""
    if not os.path.isfile(out_path) or os.path.getsize(out_path) == 0:
        return set()
    kind, records = read_records(out_path, quiet=True)
    if kind != "comparison":
        raise UserError(f"--out {out_path}: holds {kind} records, not rankings")
    return {r["prompt"] for r in records}


def append_record(path, record):
    """Append one JSON line and flush it to disk at once: quitting never loses a saved ranking."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def label(policy_path, out_path, k=4, prompts=(), temperature=1.0, max_new_tokens=48, seed=0,
          device="cpu", stdin=None, stdout=None):
    """
    Show each prompt with K distinct samples of the policy, numbered 1..K; read a ranking best to
    worst; append {"prompt","completions","ranking" (0-based, best..worst),"labeler":"human"}
    (plus "task" when the prompt is a simulated one) to out_path. prompts: strings, or records
    with "prompt" and maybe "task" (data.build(...)["rm"]). Prompts already in out_path are
    skipped. "q" (or the end of input) quits, "s" skips. Returns the number of rankings saved.
    """
    if not 2 <= k <= 9:
        raise UserError(f"--k {k}: rank between 2 and 9 answers (paper: 4 to 9)")
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    bot = load_bot(policy_path, device)
    done = ranked_prompts(out_path)
    records = [{"prompt": p} if isinstance(p, str) else p for p in prompts]
    todo = [r for r in records if r["prompt"] not in done]
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    generator = torch.Generator(device=device).manual_seed(seed)
    stdout.write(f"labeling samples of {policy_path}: {len(todo)} prompts to rank "
                 f"({len(records) - len(todo)} already in {out_path}). q quits, s skips.\n")
    saved = 0
    for n, r in enumerate(todo, 1):
        if r["prompt"] in done:  # the same prompt twice in the list
            continue
        completions = sample_distinct(bot, r["prompt"], k, temperature, max_new_tokens, generator)
        stdout.write(f"\n[{n}/{len(todo)}] {r['prompt']}\n")
        if len(completions) < 2:
            stdout.write(f"  (the policy gave {len(completions)} distinct answer; skipped)\n")
            continue
        for i, c in enumerate(completions, 1):
            stdout.write(f"  {i}. {c}\n")
        K = len(completions)
        while True:
            line = read_line(stdin, stdout, f"rank best to worst (e.g. {' '.join(map(str, range(K, 0, -1)))}), "
                                            f"s skips, q quits: ")
            if line is None or line.strip().lower() == "q":
                stdout.write(f"saved {saved} rankings to {out_path}\n")
                return saved
            if line.strip().lower() == "s":
                break
            try:
                ranking = parse_ranking(line, K)
            except ValueError as e:
                stdout.write(f"  not a ranking: {e}\n")
                continue
            record = {"prompt": r["prompt"], "completions": completions, "ranking": ranking, "labeler": "human"}
            if "task" in r:
                record["task"] = r["task"]
            append_record(out_path, record)
            done.add(r["prompt"])
            saved += 1
            break
    stdout.write(f"saved {saved} rankings to {out_path}; no prompts left\n")
    return saved


def prompts_to_label(path=None, preset="cpu", seed=0):
    """Prompts to label: those of `path` (one a line, or records of any format plumbing/formats.py reads),
    or the simulated RM prompts of data.build."""
    if not path:
        return data.build(preset, seed)["rm"]
    if not os.path.isfile(path):
        raise UserError(f"--prompts {path}: no such file")
    return read_prompts(path)


# -----------------------------------------------------------------------------

@dataclass
class Config:
    checkpoints: list = arg([], "checkpoints to chat with (pretrain.pt, sft.pt, ppo.pt, ...); several answer "
                            "each prompt side by side", positional=True, nargs="*")
    prompt: str = arg(None, "answer this one prompt and exit (default: chat on stdin)")
    reward: str = arg(None, "reward-model checkpoint for the RM scores (default: reward.pt beside the first "
                            "checkpoint, if it exists; 'none' for no scores)")
    temperature: float = arg(None, "sampling temperature, 0 is greedy (default: 0.7 in a chat, 1.0 when labeling)",
                             type=float)
    top_k: int = arg(None, "sample from the k most likely tokens only (default: all)", type=int)
    top_p: float = arg(None, "nucleus sampling: the smallest set of tokens with this much probability "
                             "(default: all)", type=float)
    max_new_tokens: int = arg(48, "longest answer in tokens")
    seed: int = arg(0, "seed of the sampling, and of the simulated prompts")
    device: str = arg("cpu", "cpu, cuda or auto")
    label: bool = arg(False, "rank K samples of --policy by hand instead of chatting")
    policy: str = arg(None, "--label: the model whose samples you rank (default: the first checkpoint)")
    out: str = arg(None, "--label: JSONL the rankings are appended to (default: comparisons_human.jsonl "
                         "beside the policy)")
    k: int = arg(4, "--label: answers ranked per prompt, 2..9 (paper: 4..9)")
    prompts: str = arg(None, "--label: a file of prompts, one a line or JSONL records (default: the simulated RM "
                             "prompts of --preset and --seed)")
    preset: str = arg("cpu", "--label: which simulated prompts, as data.py builds them", choices=list(data.PRESETS))


def validate(args):
    if args.max_new_tokens <= 0:
        raise UserError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if args.temperature is not None and args.temperature < 0:
        raise UserError(f"--temperature must be 0 (greedy) or positive, got {args.temperature}")
    if args.top_k is not None and args.top_k <= 0:
        raise UserError(f"--top-k must be positive, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.label and not 2 <= args.k <= 9:
        raise UserError(f"--k {args.k}: rank between 2 and 9 answers (paper: 4 to 9)")


def main(argv=None):
    args = parse_config(Config, argv, description=__doc__)
    validate(args)
    device, _ = setup(args.device, args.seed)
    if args.label:
        policy = args.policy or (args.checkpoints[0] if args.checkpoints else None)
        if not policy:
            raise UserError("--label needs --policy CHECKPOINT")
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(policy)), "comparisons_human.jsonl")
        temperature = 1.0 if args.temperature is None else args.temperature
        label(policy, out, args.k, prompts_to_label(args.prompts, args.preset, args.seed), temperature,
              args.max_new_tokens, args.seed, device)
        return
    if not args.checkpoints:
        raise UserError("give one or more checkpoints to chat with (or --label --policy CHECKPOINT)")
    bots = [load_bot(path, device) for path in args.checkpoints]
    reward_path = default_reward_path(args.checkpoints) if args.reward is None else args.reward
    scorer = Scorer(reward_path, device) if reward_path and reward_path != "none" else None
    sampling = dict(max_new_tokens=args.max_new_tokens, top_k=args.top_k, top_p=args.top_p,
                    temperature=0.7 if args.temperature is None else args.temperature)
    chat(bots, sampling, args.seed, scorer, args.prompt)


if __name__ == "__main__":
    run_cli(main)

"""
plumbing/tokenizer.py: text to token ids and back, in the formats the models read, and padded
batches of ids.

  - a byte-level BPE (Sennrich et al. 2016; GPT-2) trained on the simulated corpus, served by
    tiktoken, or GPT-2's own 50257-token BPE read from a local Hugging Face directory;
  - the chat format SFT teaches: <|user|> prompt <|assistant|> response <|endoftext|>;
  - Hugging Face's files for the same tokenizer (vocab.json, merges.txt, tokenizer.json), written by
    `save_hf_tokenizer` for an exported model and read back by `gpt2_tokenizer`;
  - batches: left-padded prompts for generation; right-padded (prompt, response) pairs with their
    next-token targets (sft.sft_batch masks the prompt's); prompt + response sequences for the
    reward model; windows of the pretraining corpus.
Padding is never EOS: a generated EOS must never be masked away as padding.

Where this departs from the paper: the BPE is trained here on the simulated corpus (a few hundred
to a few thousand tokens), with digits split one per token; the paper uses GPT-2/GPT-3's
50257-token BPE (`gpt2_tokenizer` reads it from a local directory).
"""

import json
import os
from array import array
from collections import Counter, defaultdict

import regex
import tiktoken
import torch

from plumbing.cli import UserError
from plumbing.formats import DataError, utf8_lines

# -----------------------------------------------------------------------------
# The tokenizer

SPECIALS = {"eos": "<|endoftext|>", "pad": "<|pad|>", "user": "<|user|>", "assistant": "<|assistant|>"}
# GPT-2's pre-tokenizer, except digits are split one per token (helps a tiny model with sums)
PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Tokenizer:
    """A tiktoken.Encoding plus the ids of the special tokens (eos, pad, user, assistant)."""

    def __init__(self, name, pat_str, tokens, specials):
        # tokens: list of bytes, index = rank = token id; specials: {string: id}
        self.name, self.pat_str, self.tokens, self.specials = name, pat_str, list(tokens), dict(specials)
        ranks = {t: i for i, t in enumerate(self.tokens)}
        assert len(ranks) == len(self.tokens) and all(bytes([b]) in ranks for b in range(256))
        self.enc = tiktoken.Encoding(name=name, pat_str=pat_str, mergeable_ranks=ranks,
                                     special_tokens=self.specials)
        self.eos_id, self.pad_id, self.user_id, self.assistant_id = (
            self.specials[SPECIALS[k]] for k in ("eos", "pad", "user", "assistant"))
        assert self.pad_id != self.eos_id  # a generated EOS must never be masked away as padding
        self.never_sampled = [self.pad_id, self.user_id, self.assistant_id]  # not inside a response
        self.vocab_size = max(len(self.tokens) - 1, *self.specials.values()) + 1

    def encode(self, text):
        return self.enc.encode_ordinary(text)  # special-token strings stay plain text

    def decode(self, ids):
        ids = [int(i) for i in ids if int(i) != self.pad_id]
        return self.enc.decode(ids)

    def chat_prompt(self, prompt):
        """The chat format SFT trains on: <|user|> prompt <|assistant|>; the answer then ends in EOS."""
        return [self.user_id] + self.encode(prompt) + [self.assistant_id]

    def chat_response(self, response):
        return self.encode(response) + [self.eos_id]

    def state(self):
        return {"name": self.name, "pat_str": self.pat_str, "tokens": [t.hex() for t in self.tokens],
                "specials": dict(self.specials)}

    @classmethod
    def from_state(cls, d):
        return cls(d["name"], d["pat_str"], [bytes.fromhex(t) for t in d["tokens"]], d["specials"])


def _with_specials(n):
    return {SPECIALS["eos"]: n, SPECIALS["pad"]: n + 1, SPECIALS["user"]: n + 2, SPECIALS["assistant"]: n + 3}


def train_tokenizer(text, vocab_size):
    """Byte-level BPE (Sennrich et al. 2016; GPT-2): start from the 256 bytes, merge the most
    frequent adjacent pair until vocab_size (specials included) is reached, or no pair occurs twice."""
    n_tokens = vocab_size - len(SPECIALS)
    assert n_tokens >= 256, "vocab_size must leave room for 256 bytes and the specials"
    counts = Counter(m.group() for m in regex.finditer(PAT_STR, text))  # merge on word counts, not on text
    words = [[bytes([b]) for b in w.encode("utf-8")] for w in counts]
    freqs = list(counts.values())
    tokens = [bytes([b]) for b in range(256)]
    known = set(tokens)
    pairs, where = Counter(), defaultdict(set)               # pair -> count; pair -> word indices
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pairs[p] += freqs[i]
            where[p].add(i)
    while len(tokens) < n_tokens and pairs:
        best, n = max(pairs.items(), key=lambda kv: kv[1])  # ties: first seen (deterministic)
        if n < 2:
            break
        merged = best[0] + best[1]
        if merged not in known:  # (a, bc) and (ab, c) make the same token: keep one rank
            tokens.append(merged)
            known.add(merged)
        for i in where.pop(best):
            w, f = words[i], freqs[i]
            for p in zip(w, w[1:]):
                pairs[p] -= f
                if pairs[p] <= 0:
                    del pairs[p]
            new, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    new.append(merged)
                    j += 2
                else:
                    new.append(w[j])
                    j += 1
            for p in zip(new, new[1:]):
                pairs[p] += f
                where[p].add(i)
            words[i] = new
    # named by the size reached: a small corpus can run out of pairs before vocab_size
    return Tokenizer(f"bpe{len(tokens) + len(SPECIALS)}", PAT_STR, tokens, _with_specials(len(tokens)))


def bytes_to_unicode():
    """GPT-2's map from the 256 bytes to printable unicode characters (used in vocab.json)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def gpt2_tokenizer(hf_dir):
    """GPT-2's 50257-token BPE from a local Hugging Face directory (vocab.json + merges.txt).
    EOS is GPT-2's <|endoftext|> (50256); pad, user and assistant get new ids 50257..50259, so a
    GPT-2 checkpoint's embedding must grow to vocab_size (50260) before SFT."""
    vocab_path, merges_path = os.path.join(hf_dir, "vocab.json"), os.path.join(hf_dir, "merges.txt")
    for p in (vocab_path, merges_path):
        if not os.path.isfile(p):
            raise DataError(f"{p}:0: missing; gpt2_tokenizer needs a local Hugging Face GPT-2 "
                            "directory with vocab.json and merges.txt (nothing is downloaded)")
    try:
        with open(vocab_path, encoding="utf-8") as f:
            vocab = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{vocab_path}:0: not a JSON object of token -> id ({e})") from None
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise DataError(f"{vocab_path}:0: not a JSON object of token -> id")
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    eos = vocab.pop(SPECIALS["eos"], None)
    strange = next((tok for tok in vocab if any(c not in byte_of for c in tok)), None)
    if strange is not None:  # GPT-2's vocabulary spells every byte with one of 256 characters
        raise DataError(f"{vocab_path}:0: token {strange!r} is not in GPT-2's byte-level alphabet")
    ranks = {bytes(byte_of[c] for c in tok): i for tok, i in vocab.items()}
    tokens = [t for t, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    if [ranks[t] for t in tokens] != list(range(len(tokens))):
        raise DataError(f"{vocab_path}:0: token ids are not 0..{len(tokens) - 1}")
    for ln, line in utf8_lines(merges_path):  # check the merges agree with the vocabulary
        parts = line.split()
        if line.startswith("#version") or len(parts) != 2:
            continue
        merged = parts[0] + parts[1]
        if any(c not in byte_of for c in merged) or bytes(byte_of[c] for c in merged) not in ranks:
            raise DataError(f"{merges_path}:{ln}: merge result not in vocab.json")
    specials = _with_specials(len(tokens))
    if eos is not None:
        specials = {SPECIALS["eos"]: eos, SPECIALS["pad"]: eos + 1, SPECIALS["user"]: eos + 2,
                    SPECIALS["assistant"]: eos + 3}
    pat_str = hf_pattern(hf_dir)
    name = "gpt2" if pat_str == GPT2_PAT_STR else f"bpe{len(tokens) + len(SPECIALS)}"  # train_tokenizer's name
    return Tokenizer(name, pat_str, tokens, specials)


def hf_pattern(hf_dir):
    """The pre-tokenizer's regex that the directory's tokenizer.json names (an exported BPE of this
    project splits digits one per token), else GPT-2's."""
    path = os.path.join(hf_dir, "tokenizer.json")
    if not os.path.isfile(path):
        return GPT2_PAT_STR
    try:
        with open(path, encoding="utf-8") as f:
            pre = json.load(f).get("pre_tokenizer") or {}
        for step in pre.get("pretokenizers", [pre]):
            if step.get("type") == "Split" and "Regex" in step.get("pattern", {}):
                return step["pattern"]["Regex"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as e:
        raise DataError(f"{path}:0: not a tokenizer.json ({e})") from None
    return GPT2_PAT_STR


def hf_merges(tok):
    """The BPE as Hugging Face's ordered merge list. tiktoken merges any two adjacent parts whose
    concatenation is a token, lowest rank first; Hugging Face merges the listed pairs, earliest listed
    first. So every split (a, b) of every token into two tokens is listed, in the order of the
    token's rank (training can make one token from two pairs, (a, bc) and (ab, c)). The two can
    differ only where two such pairs overlap in one word ("ab a ba"): tiktoken merges the left one,
    Hugging Face the one listed first; tests/test_export.py finds no such word in the corpus."""
    rank = {t: i for i, t in enumerate(tok.tokens)}
    return [(t[:k], t[k:]) for t in tok.tokens if len(t) > 1 for k in range(1, len(t))
            if t[:k] in rank and t[k:] in rank]


# the chat format of chat_prompt and chat_response, as transformers' apply_chat_template writes it
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ '<|user|>' + m['content'] + '<|assistant|>' }}"
                 "{% elif m['role'] == 'assistant' %}{{ m['content'] + '<|endoftext|>' }}{% else %}"
                 "{{ raise_exception('the chat format has user and assistant turns only') }}{% endif %}{% endfor %}")


def save_hf_tokenizer(tok, out_dir, max_length, padding_side="left"):
    """Write the tokenizer as Hugging Face files: vocab.json and merges.txt (GPT-2's two files, read
    back by gpt2_tokenizer), tokenizer.json (what transformers loads: the same BPE with this
    project's pre-tokenizer regex and tiktoken's whole-word lookup, `ignore_merges`), and
    tokenizer_config.json (the special tokens, the chat template, and the padding side: left for a
    policy's prompts, as generation needs; right for a reward model's sequences, as
    encode_responses pads them). The special tokens follow EOS as added tokens, so transformers
    gives the ids chat_prompt gives."""
    u = bytes_to_unicode()

    def spell(token):  # GPT-2's files spell each byte as one printable character
        return "".join(u[b] for b in token)
    vocab = {spell(t): i for i, t in enumerate(tok.tokens)} | {SPECIALS["eos"]: tok.eos_id}
    merges = [f"{spell(a)} {spell(b)}" for a, b in hf_merges(tok)]
    added = [dict(id=i, content=s, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
             for s, i in sorted(tok.specials.items(), key=lambda kv: kv[1])]
    pre_tokenizer = dict(type="Sequence", pretokenizers=[
        dict(type="Split", pattern=dict(Regex=tok.pat_str), behavior="Isolated", invert=False),
        dict(type="ByteLevel", add_prefix_space=False, trim_offsets=True, use_regex=False)])
    model = dict(type="BPE", dropout=None, unk_token=None, continuing_subword_prefix=None, end_of_word_suffix=None,
                 fuse_unk=False, byte_fallback=False, ignore_merges=True, vocab=vocab, merges=merges)
    files = {
        "vocab.json": vocab,
        "tokenizer.json": dict(version="1.0", truncation=None, padding=None, added_tokens=added, normalizer=None,
                               pre_tokenizer=pre_tokenizer, post_processor=None, model=model,
                               decoder=dict(type="ByteLevel", add_prefix_space=False, trim_offsets=True, use_regex=False)),
        "tokenizer_config.json": dict(
            tokenizer_class="PreTrainedTokenizerFast", bos_token=SPECIALS["eos"], eos_token=SPECIALS["eos"],
            pad_token=SPECIALS["pad"], additional_special_tokens=[SPECIALS["user"], SPECIALS["assistant"]],
            model_max_length=max_length, padding_side=padding_side, clean_up_tokenization_spaces=False,
            chat_template=CHAT_TEMPLATE)}
    for name, content in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(content, f, ensure_ascii=False, indent=1 if name != "tokenizer.json" else None)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))


# -----------------------------------------------------------------------------
# Batches


def pack_pairs(tok, pairs, block_size):
    """pairs: [(prompt_ids, response_ids)] -> x (B, T), each prompt + response less its last token,
    right-padded with pad_id; targets (B, T), the next token at every position (x shifted by one),
    -1 on padding; and each row's prompt length (B,). Too long: the prompt is cut from the left
    (keeping one token to predict from), then, if still too long, the response from the right.
    sft.sft_batch turns this into SFT's batch (no loss on the prompt)."""
    rows = []
    for p, r in pairs:
        p, r = list(p), list(r)
        over = len(p) + len(r) - (block_size + 1)
        if over > 0:
            cut = min(over, len(p) - 1)
            p, r = p[cut:], r[:len(r) - (over - cut)]
        rows.append((p + r, len(p)))
    T = max(len(s) for s, _ in rows) - 1
    x = torch.full((len(rows), T), tok.pad_id, dtype=torch.long)
    targets = torch.full((len(rows), T), -1, dtype=torch.long)
    for b, (s, _) in enumerate(rows):
        s = torch.tensor(s, dtype=torch.long)
        x[b, :len(s) - 1], targets[b, :len(s) - 1] = s[:-1], s[1:]
    return x, targets, torch.tensor([n for _, n in rows])


def n_truncated(pairs, block_size):
    """How many pairs pack_pairs would cut (report it: silently cut prompts change the task)."""
    return sum(len(p) + len(r) > block_size + 1 for p, r in pairs)


def left_pad(seqs, pad_id, max_len=None):
    """Left-pad prompts for generation. Returns idx (B, T), attention_mask (B, T) (1 = real token),
    and how many prompts were longer than max_len and lost their left end."""
    cut = sum(max_len is not None and len(s) > max_len for s in seqs)
    seqs = [list(s)[-max_len:] if max_len else list(s) for s in seqs]
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, s in enumerate(seqs):
        if s:
            idx[b, T - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[b, T - len(s):] = 1
    return idx, mask, cut


def decode_responses(tok, responses, response_mask):
    """Generated answers (B, N) as text, EOS and the padding (response_mask 0) left out."""
    rows, masks = responses.tolist(), response_mask.tolist()
    return [tok.decode([t for t, k in zip(row, m) if k and t != tok.eos_id]).strip() for row, m in zip(rows, masks)]


def encode_responses(tok, prompts, responses, block_size):
    """(prompt, response) pairs -> tokens (B, T), attention_mask (B, T): each row the chat prompt,
    the response and EOS, right-padded (the reward model reads its score at the last real token).
    Too long: the prompt is cut from the left, then the response from the right."""
    seqs = []
    for prompt, response in zip(prompts, responses):
        p, r = tok.chat_prompt(prompt), tok.chat_response(response)[:block_size - 1]
        seqs.append(p[-(block_size - len(r)):] + r)
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), tok.pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for b, s in enumerate(seqs):
        tokens[b, :len(s)] = torch.tensor(s)
        mask[b, :len(s)] = 1
    return tokens, mask


def pretrain_stream(tok, corpus):
    """All documents as one stream of ids, each followed by EOS (how GPT-2/3 pack their data)."""
    ids = array("i")  # 4 bytes an id while the stream grows, not a Python int's 36
    for doc in corpus:
        ids.extend(tok.encode(doc))
        ids.append(tok.eos_id)
    return torch.frombuffer(ids, dtype=torch.int32).long()


def corpus_split(tok, corpus, block_size, source="the corpus"):
    """The corpus as (train ids, validation ids): the last 5% is never trained on. Too little text
    for both is a one-line error naming `source`."""
    stream = pretrain_stream(tok, corpus)
    n_val = max(len(stream) // 20, block_size * 4)
    if len(stream) - n_val < 2 * (block_size + 1):
        raise UserError(f"{source}: {len(stream)} tokens of text are too few for training and validation windows of "
                        f"block_size {block_size}")
    return stream[:-n_val], stream[-n_val:]


def pretrain_batch(stream, batch_size, block_size, step, seed):
    """Random windows of the stream, inputs x and next-token targets y (B, block_size). The
    windows depend only on (seed, step), so a resumed run sees the batches of an uninterrupted one."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    start = torch.randint(0, len(stream) - block_size - 1, (batch_size,), generator=g)
    x = torch.stack([stream[s:s + block_size] for s in start.tolist()])
    y = torch.stack([stream[s + 1:s + block_size + 1] for s in start.tolist()])
    return x, y

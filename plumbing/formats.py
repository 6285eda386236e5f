"""
formats.py: reading public data as it comes, and writing JSONL.

A file is `.jsonl`, `.jsonl.gz` (how Anthropic's HH-RLHF ships) or `.json` holding one array of
records (Alpaca's alpaca_data.json); each record's format is detected on its own:

  demonstrations (sft.py --data)   {"prompt","response"}, {"prompt","completion"},
                                   Alpaca {"instruction","input","output"}, chat {"messages":[...]}
  comparisons (reward.py --data,   pairwise {"prompt","chosen","rejected"}, Anthropic HH
    and sft.py --data: the best-   {"chosen","rejected"} (two dialogues sharing a prefix), ranked
    ranked answer demonstrates)    {"prompt","completions":[...],"ranking":[best..worst]}
  prompts (ppo.py --prompts)       a text file, one prompt a line; or records of any format above,
                                   or {"prompt"} alone (their prompts; HH: the dialogue up to its last
                                   assistant turn)
  text (--pretrain-data, sft.py    a text file, documents separated by blank lines; or {"text"} records
    --stage pretrain --data)

Real data has quirks; the readers take it as it is:
  - an empty final answer is an answer (to "tell me her home address again" a labeler preferred
    saying nothing): the model learns to end at once;
  - an HH pair whose two dialogues differ before their last assistant turn is split at the last
    assistant turn whose start they share (adapted); where the first difference is in a human
    turn there are no two answers to compare, and the record is skipped;
  - a comparison between identical answers says nothing and is skipped.
Each reader prints one line: how many records it used, adapted and skipped, with the first skipped
lines. A file where most records cannot be used stops with a one-line error; a malformed record
stops at path:line (DataError), never with a traceback.
"""

import gzip
import json
import os
import random
import re
import zlib

from plumbing.cli import UserError

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"  # Anthropic HH's turn markers


class DataError(UserError):
    """A problem with input data; the message reads "path:line: what is wrong". Scripts print it
    as one line and exit 2 (plumbing.cli.run_cli)."""


class Skip(Exception):
    """A well-formed record that cannot be used (the reason is the message); counted, not fatal."""


# -----------------------------------------------------------------------------
# Files: lines and records, gzip or not

def _open_bytes(path):
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as e:  # a folder, no permission
        raise DataError(f"{path}:0: cannot be read ({e.strerror})") from None


def utf8_lines(path):
    """(line number, line) of a text file (gzipped if it ends in .gz), decoded one line at a time,
    so that a bad byte is reported as DataError("path:line: not UTF-8") instead of a traceback."""
    ln = 0
    with _open_bytes(path) as f:
        try:
            for ln, raw in enumerate(f, 1):
                try:
                    yield ln, raw.decode("utf-8-sig" if ln == 1 else "utf-8")  # a byte-order mark is not text
                except UnicodeDecodeError:
                    raise DataError(f"{path}:{ln}: not UTF-8") from None
        except (OSError, EOFError, zlib.error) as e:  # a truncated or not-gzip .gz file
            raise DataError(f"{path}:{ln + 1}: cannot be decompressed ({e})") from None


def _json_array(path):
    """(line number, record) of a .json file holding one array: each record's line is where it
    starts, and malformed JSON is reported at its own line."""
    with _open_bytes(path) as f:
        try:
            raw = f.read()
        except (OSError, EOFError, zlib.error) as e:  # a truncated or not-gzip .gz file
            raise DataError(f"{path}:0: cannot be decompressed ({e})") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is not text
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8") from None
    del raw
    space, decoder = re.compile(r"[ \t\n\r]*"), json.JSONDecoder()

    def line_at(i):
        return text.count("\n", 0, i) + 1
    i = space.match(text).end()
    if i == len(text):
        return
    if text[i] != "[":
        raise DataError(f"{path}:{line_at(i)}: a .json file must hold one array of records "
                        "(one record a line is .jsonl)")
    i, pos, line = space.match(text, i + 1).end(), 0, 1
    while i < len(text) and text[i] != "]":
        line, pos = line + text.count("\n", pos, i), i
        try:
            record, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        yield line, record
        i = space.match(text, i).end()
        if i < len(text) and text[i] == ",":
            i = space.match(text, i + 1).end()
        elif i < len(text) and text[i] != "]":
            raise DataError(f"{path}:{line_at(i)}: expected ',' or ']' between records")
    if i >= len(text):
        raise DataError(f"{path}:{line_at(len(text))}: the array is not closed with ']'")
    end = space.match(text, i + 1).end()
    if end < len(text):  # a second array, or junk: never drop records silently
        raise DataError(f"{path}:{line_at(end)}: more after the array's closing ']' (one array of records per .json file)")


def json_records(path):
    """(line number, parsed JSON) of every record of a .jsonl, .jsonl.gz or .json file."""
    if path.endswith(".json") or path.endswith(".json.gz"):
        yield from _json_array(path)
        return
    for ln, line in utf8_lines(path):
        if line.strip():
            try:
                yield ln, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{ln}: not valid JSON ({e.msg})") from None


def is_records_file(path):
    """JSON records (.jsonl, .json, gzipped or not) rather than plain text, by the file's name."""
    name = path[:-3] if path.endswith(".gz") else path
    return name.endswith(".jsonl") or name.endswith(".json")


def write_jsonl(path, records):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


# -----------------------------------------------------------------------------
# One record -> a demonstration or a comparison

def _hh_prompt(dialogue_start):
    """The text of an HH dialogue before an assistant turn; a single human turn is just the question."""
    p = dialogue_start.strip()
    if p.startswith("Human:") and ASSISTANT not in p and HUMAN not in p:
        p = p[len("Human:"):].strip()
    return p


def _hh_turn(dialogue, start):
    """The assistant turn that starts at `start`: its text up to the next human turn."""
    end = dialogue.find(HUMAN, start)
    return dialogue[start:end if end >= 0 else len(dialogue)].strip()


def split_hh(chosen, rejected):
    """Two HH dialogues -> (prompt, chosen answer, rejected answer, adapted). Usually they share
    everything up to their last assistant turn, and the answers are those turns. Where they differ
    earlier, the split is at the last assistant turn whose start both share, and the answers are
    that turn of each (what follows it is dropped): adapted. Raises Skip where the first difference
    is in a human turn (then both dialogues give the same answer: nothing to compare)."""
    kc, kr = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if kc < 0 or kr < 0:
        raise ValueError('no "\\n\\nAssistant:" turn')
    if kc == kr and chosen[:kc] == rejected[:kr]:  # the usual case: a human turn after the answer would be cut
        c, r = _hh_turn(chosen, kc + len(ASSISTANT)), _hh_turn(rejected, kr + len(ASSISTANT))
        return _hh_prompt(chosen[:kc]), c, r, HUMAN in chosen[kc:] or HUMAN in rejected[kr:]
    shared = len(os.path.commonprefix([chosen, rejected]))
    k = chosen.rfind(ASSISTANT, 0, shared)  # the last assistant marker wholly inside the shared start
    if k < 0:
        raise Skip("the dialogues differ before any assistant turn")
    c, r = _hh_turn(chosen, k + len(ASSISTANT)), _hh_turn(rejected, k + len(ASSISTANT))
    if c == r:
        raise Skip("the dialogues first differ in a human turn: no two answers to compare")
    return _hh_prompt(chosen[:k]), c, r, True


def is_unicode(text):
    """False for a string JSON allows but UTF-8 cannot hold (a lone surrogate half, as scraped chat
    dumps have): written out, it would stop the run."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _alpaca_prompt(r):
    return r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")


def _chat_messages(r):
    msgs = r["messages"]
    if not isinstance(msgs, list) or not msgs or any(not isinstance(m, dict) or "role" not in m or "content" not in m
                                                     for m in msgs):
        raise ValueError('"messages" must be a list of {"role","content"}')
    return msgs


def parse_record(r):
    """One JSON object -> (kind, record, adapted): kind "sft" with {"prompt","response"} or
    "comparison" with {"prompt","completions","ranking"}. Raises ValueError for a malformed
    record, Skip for one that is well formed but cannot be used."""
    if not isinstance(r, dict):
        raise ValueError("expected a JSON object")
    adapted = False
    if "messages" in r:
        msgs = _chat_messages(r)
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise ValueError('a demonstration\'s "messages" must end with a message of role "assistant"')
        kind, rec = "sft", {"prompt": "\n\n".join(m["content"] for m in msgs[:-1]), "response": msgs[-1]["content"]}
    elif "instruction" in r:
        if "output" not in r:
            raise ValueError('Alpaca record missing key "output"')
        kind, rec = "sft", {"prompt": _alpaca_prompt(r), "response": r["output"]}
    elif "completions" in r or "ranking" in r:
        for k in ("prompt", "completions", "ranking"):
            if k not in r:
                raise ValueError(f'ranked record missing key "{k}"')
        c, rk = r["completions"], r["ranking"]
        if not isinstance(c, list) or not 2 <= len(c) <= 9:
            raise ValueError(f"a ranking needs K = 2..9 completions (the paper: 4..9), got "
                             f"{len(c) if isinstance(c, list) else type(c).__name__}")
        # integers only: sorted([1.0, 0.0]) == [0, 1], and True == 1, but neither indexes a list
        if (not isinstance(rk, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in rk)
                or sorted(rk) != list(range(len(c)))):
            raise ValueError(f"ranking {rk} is not a permutation of the integers 0..{len(c) - 1}")
        kind, rec = "comparison", {"prompt": r["prompt"], "completions": c, "ranking": list(rk)}
    elif "chosen" in r or "rejected" in r:
        for k in ("chosen", "rejected"):
            if k not in r:
                raise ValueError(f'pairwise record missing key "{k}"')
        if "prompt" in r:
            p, c, j = r["prompt"], r["chosen"], r["rejected"]
        else:  # Anthropic HH: two dialogues sharing everything up to the last assistant turn (mostly)
            if not isinstance(r["chosen"], str) or not isinstance(r["rejected"], str):
                raise ValueError("HH dialogues must be strings")
            p, c, j, adapted = split_hh(r["chosen"], r["rejected"])
        kind, rec = "comparison", {"prompt": p, "completions": [c, j], "ranking": [0, 1]}
    elif "prompt" in r and ("response" in r or "completion" in r):
        kind, rec = "sft", {"prompt": r["prompt"], "response": r.get("response", r.get("completion"))}
    else:
        raise ValueError(f"unknown record format with keys {sorted(r)}; expected prompt/response, prompt/completion, "
                         "instruction/input/output, messages, prompt/chosen/rejected, chosen/rejected, "
                         "prompt/completions/ranking")
    texts = [rec["response"]] if kind == "sft" else rec["completions"]
    if not isinstance(rec["prompt"], str) or any(not isinstance(x, str) for x in texts):
        raise ValueError("prompt and responses must be strings")
    if kind == "comparison" and len(set(texts)) == 1:
        raise Skip("the answers compared are identical")
    if not all(is_unicode(x) for x in [rec["prompt"], *texts]):
        raise Skip("not valid Unicode (a lone surrogate half)")
    return kind, rec, adapted


# -----------------------------------------------------------------------------
# The readers

class Tally:
    """What a reader did with a file's records, for its one line and its stop on a file of mostly
    unusable records."""

    def __init__(self, path):
        self.path, self.used, self.adapted, self.empty, self.skipped, self.reasons = path, 0, 0, 0, [], {}
        self.repeats = 0  # prompts met before: dropped, but not a sign of a wrong file

    def skip(self, ln, reason):
        self.skipped.append(ln)
        self.reasons.setdefault(reason, ln)

    def check(self, what):
        """One line saying what was used, adapted, skipped; DataError where most records were skipped."""
        n = self.used + len(self.skipped)
        if n == 0:
            raise DataError(f"{self.path}:0: empty file")
        lines = ", ".join(map(str, self.skipped[:5])) + (", ..." if len(self.skipped) > 5 else "")
        why = "; ".join(f"{reason} (line {ln})" for reason, ln in self.reasons.items())
        if len(self.skipped) > self.used:
            raise DataError(f"{self.path}:{self.skipped[0]}: {len(self.skipped)} of {n} records cannot be used: {why}")
        notes = ([f"{self.adapted} adapted"] if what == "comparison records" else []) + (
            [f"{self.empty} with an empty answer"] if self.empty else [])
        adapted = f" ({', '.join(notes)})" if notes else ""
        repeats = f", {self.repeats} repeated prompts dropped" if self.repeats else ""
        print(f"{self.path}: {self.used} {what} used{adapted}{repeats}, {len(self.skipped)} skipped"
              + (f" (lines {lines}: {why})" if self.skipped else ""))


def read_records(path, quiet=False):
    """Read demonstrations or comparisons in any supported format. Returns (kind, records): kind
    "sft" with {"prompt","response"} or "comparison" with {"prompt","completions","ranking"}.
    Raises DataError("path:line: ...") for a malformed record or a file of mostly unusable ones."""
    kind, out, tally = None, [], Tally(path)
    for ln, obj in json_records(path):
        try:
            k, rec, adapted = parse_record(obj)
        except Skip as e:
            tally.skip(ln, str(e))
            continue
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # wrong types count as malformed
            raise DataError(f"{path}:{ln}: {e}") from None
        if kind and k != kind:
            raise DataError(f"{path}:{ln}: a {k} record in a file of {kind} records")
        kind = k
        out.append(rec)
        tally.used, tally.adapted = tally.used + 1, tally.adapted + adapted
        tally.empty += not all(x.strip() for x in ([rec["response"]] if k == "sft" else rec["completions"]))
    if not quiet:
        tally.check(f"{kind or 'unusable'} records")
    elif not out:
        raise DataError(f"{path}:0: empty file")
    return kind, out


def n_pairs(comps):
    """The comparisons C(K,2) that rankings of K responses hold."""
    return sum(len(c["completions"]) * (len(c["completions"]) - 1) // 2 for c in comps)


def demonstrations(kind, records):
    """Demonstrations from a file of either kind: a comparison's best-ranked answer demonstrates
    (how the HH-based SFT runs train on the chosen dialogues)."""
    if kind == "sft":
        return records
    return [{"prompt": r["prompt"], "response": r["completions"][r["ranking"][0]]} for r in records]


def _prompt_of(obj):
    """The prompt of one record of any format, or of {"prompt"} alone."""
    if isinstance(obj, dict) and "prompt" in obj:
        return obj["prompt"]
    if isinstance(obj, dict) and "instruction" in obj:
        return _alpaca_prompt(obj)
    if isinstance(obj, dict) and "messages" in obj:  # a finished chat: everything before the last answer
        msgs = _chat_messages(obj)
        return "\n\n".join(m["content"] for m in (msgs[:-1] if msgs[-1]["role"] == "assistant" else msgs))
    if isinstance(obj, dict) and isinstance(obj.get("chosen"), str):  # HH: up to the final assistant turn
        k = obj["chosen"].rfind(ASSISTANT)
        if k < 0:
            raise ValueError('no "\\n\\nAssistant:" turn')
        return _hh_prompt(obj["chosen"][:k])
    raise ValueError("no prompt: expected a record with prompt, instruction, messages or chosen")


def read_prompts(path):
    """Prompts from a text file (one a line) or from records of any format (a prompt with several
    comparisons comes once). Empty prompts are skipped, repeats dropped, both counted in the
    reader's line. -> [prompt]."""
    out, seen, tally = [], set(), Tally(path)
    items = json_records(path) if is_records_file(path) else ((ln, line.strip()) for ln, line in utf8_lines(path))
    for ln, obj in items:
        if is_records_file(path):
            try:
                obj = _prompt_of(obj)
                if not isinstance(obj, str):
                    raise ValueError("the prompt must be a string")
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise DataError(f"{path}:{ln}: {e}") from None
        if not obj.strip():  # a blank line of a text file separates, a record's empty prompt is skipped
            if is_records_file(path):
                tally.skip(ln, "empty prompt")
        elif not is_unicode(obj):
            tally.skip(ln, "not valid Unicode (a lone surrogate half)")
        elif obj in seen:
            tally.repeats += 1
        else:
            seen.add(obj)
            out.append(obj)
            tally.used += 1
    tally.check("prompts")
    return out


def own_prompts(path, seed):
    """Your prompts for RL (`read_prompts`) as records, 95% to train on and 5% held out (split_validation)."""
    return split_validation([{"prompt": p} for p in read_prompts(path)], seed, path)


def read_texts(path):
    """Documents for pretraining: a text file's blank-line-separated paragraphs, or the "text" of
    each record of a JSONL/JSON file. -> [document]."""
    docs, tally = [], Tally(path)
    if is_records_file(path):
        for ln, obj in json_records(path):
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise DataError(f'{path}:{ln}: expected a {{"text": "..."}} record')
            if obj["text"].strip():
                docs.append(obj["text"])
            else:
                tally.skip(ln, "empty text")
    else:
        paragraph = []
        for _, line in utf8_lines(path):
            if line.strip():
                paragraph.append(line.rstrip("\r\n"))
            elif paragraph:
                docs.append("\n".join(paragraph))
                paragraph = []
        if paragraph:
            docs.append("\n".join(paragraph))
    tally.used = len(docs)
    tally.check("documents")
    return docs


def split_validation(records, seed, path):
    """Records read from `path` -> (training, validation): shuffled with `seed`, 5% (at least one)
    held out. A file too small to leave both sides something is a one-line error."""
    random.Random(seed).shuffle(records)
    n_val = max(1, len(records) // 20)
    if len(records) <= n_val:
        raise UserError(f"{path}: too few records ({len(records)}) to split into training and validation")
    return records[n_val:], records[:n_val]

"""
formats.py: reading and writing JSONL, in every format the steps take in place of the simulated
labelers (each record's format is detected on its own line):

  demonstrations (sft.py --data)   {"prompt","response"}, {"prompt","completion"},
                                   Alpaca {"instruction","input","output"}, chat {"messages":[...]}
  comparisons (reward.py --data)   pairwise {"prompt","chosen","rejected"}, Anthropic HH
                                   {"chosen","rejected"} (two dialogues sharing a prefix), ranked
                                   {"prompt","completions":[...],"ranking":[best..worst]}

A bad line is one error naming the file and the line (DataError), never a traceback.
"""

import json
import os
import random

from gpt import UserError


class DataError(UserError):
    """A problem with input data; the message reads "path:line: what is wrong". Scripts print it
    as one line and exit 2 (common.run_cli)."""


def utf8_lines(path):
    """(line number, line) of a text file, decoded one line at a time, so that a bad byte is
    reported as DataError("path:line: not UTF-8") instead of a traceback."""
    try:
        f = open(path, "rb")
    except OSError as e:  # a folder, no permission
        raise DataError(f"{path}:0: cannot be read ({e.strerror})") from None
    with f:
        for ln, raw in enumerate(f, 1):
            try:
                yield ln, raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}:{ln}: not UTF-8") from None


def write_jsonl(path, records):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def _split_hh(dialogue):
    """Anthropic HH: '\\n\\nHuman: ...\\n\\nAssistant: ...'; the last assistant turn is the response."""
    k = dialogue.rfind("\n\nAssistant:")
    if k < 0:
        raise ValueError('no "\\n\\nAssistant:" turn')
    prompt, response = dialogue[:k].strip(), dialogue[k + len("\n\nAssistant:"):].strip()
    if prompt.startswith("Human:") and "\n\nAssistant:" not in prompt and "\n\nHuman:" not in prompt:
        prompt = prompt[len("Human:"):].strip()  # single turn: just the question
    return prompt, response


def _parse(r):
    """One JSON object -> ("sft", {"prompt","response"}) or ("comparison", {"prompt","completions","ranking"})."""
    if not isinstance(r, dict):
        raise ValueError("expected a JSON object")
    if "messages" in r:
        msgs = r["messages"]
        if not isinstance(msgs, list) or len(msgs) < 2 or any(not isinstance(m, dict) or "role" not in m or "content" not in m for m in msgs):
            raise ValueError('"messages" must be a list of {"role","content"} with at least 2 turns')
        if msgs[-1]["role"] != "assistant":
            raise ValueError('the last message must have role "assistant"')
        return "sft", {"prompt": "\n\n".join(m["content"] for m in msgs[:-1]), "response": msgs[-1]["content"]}
    if "instruction" in r:
        if "output" not in r:
            raise ValueError('Alpaca record missing key "output"')
        p = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
        return "sft", {"prompt": p, "response": r["output"]}
    if "completions" in r or "ranking" in r:
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
        return "comparison", {"prompt": r["prompt"], "completions": c, "ranking": list(rk)}
    if "chosen" in r or "rejected" in r:
        for k in ("chosen", "rejected"):
            if k not in r:
                raise ValueError(f'pairwise record missing key "{k}"')
        if "prompt" in r:
            p, c, j = r["prompt"], r["chosen"], r["rejected"]
        else:  # Anthropic HH: two dialogues sharing everything up to the last assistant turn
            (p, c), (p2, j) = _split_hh(r["chosen"]), _split_hh(r["rejected"])
            if p != p2:
                raise ValueError("chosen and rejected dialogues do not share a prefix")
        return "comparison", {"prompt": p, "completions": [c, j], "ranking": [0, 1]}
    if "prompt" in r and ("response" in r or "completion" in r):
        return "sft", {"prompt": r["prompt"], "response": r.get("response", r.get("completion"))}
    raise ValueError(f"unknown record format with keys {sorted(r)}; expected prompt/response, prompt/completion, "
                     "instruction/input/output, messages, prompt/chosen/rejected, chosen/rejected, prompt/completions/ranking")


def split_validation(records, seed, path):
    """Records read from --data PATH -> (training, validation): shuffled with `seed`, 5% (at
    least one) held out. A file too small to leave both sides something is a one-line error."""
    random.Random(seed).shuffle(records)
    n_val = max(1, len(records) // 20)
    if len(records) <= n_val:
        raise UserError(f"--data {path}: too few records ({len(records)}) to split into training and validation")
    return records[n_val:], records[:n_val]


def read_jsonl(path):
    """Read any supported format. Returns (kind, records): kind "sft" with {"prompt","response"},
    or "comparison" with {"prompt","completions","ranking"}. Raises DataError("path:line: ...")."""
    kind, out = None, []
    for ln, line in utf8_lines(path):
        if not line.strip():
            continue
        try:
            k, rec = _parse(json.loads(line))
            texts = [rec["response"]] if k == "sft" else rec["completions"]
            if not isinstance(rec["prompt"], str) or any(not isinstance(x, str) for x in texts):
                raise ValueError("prompt and responses must be strings")
            if any(not x.strip() for x in texts):
                raise ValueError("empty response")
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{ln}: not valid JSON ({e.msg})") from None
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # wrong types count as malformed
            raise DataError(f"{path}:{ln}: {e}") from None
        if kind and k != kind:
            raise DataError(f"{path}:{ln}: a {k} record in a file of {kind} records")
        kind = k
        out.append(rec)
    if not out:
        raise DataError(f"{path}:0: empty file")
    return kind, out

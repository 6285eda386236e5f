"""
read_bench.py: how fast do real files of the sizes real data comes in read and tokenize, and how
much memory does that take? Measured in one run, beside the floor: gzip and json.loads of every
line and nothing else.

    python tools/read_bench.py --source ../shared/data/hh-harmless-base-test-first-half.jsonl.gz \
        --records 100000 --tokenizer out/smoke/sft.pt

It writes --records records, repeating --source's lines, to a temporary .jsonl.gz, then times:
  floor          gzip + json.loads of every line
  read_records   formats.read_records: the records as demonstrations or comparisons, quirks handled
  read_prompts   formats.read_prompts: every record's prompt, repeats dropped
  tokenize       sft.demo_pairs: every demonstration as token ids, kept to --block-size
  tokenize whole the same, every id kept, as Python lists (demo_pairs without block_size)
and the process's peak resident memory after each step (it only grows).
"""

import gzip
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sft import demo_pairs  # noqa: E402
from plumbing.checkpoint import load_language_model  # noqa: E402 (after the path above)
from plumbing.cli import arg, parse_config, run_cli  # noqa: E402
from plumbing.formats import demonstrations, read_prompts, read_records, utf8_lines  # noqa: E402


@dataclass
class Args:
    source: str = arg("", "a .jsonl or .jsonl.gz file of records to repeat (e.g. the HH sample)")
    records: int = arg(100_000, "records in the file measured")
    tokenizer: str = arg("", "a checkpoint or GPT-2 directory whose tokenizer tokenizes (empty: no tokenizing)")
    block_size: int = arg(128, "tokens kept per demonstration, as sft.py keeps them")


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main():
    a = parse_config(Args, description=__doc__)
    lines = [line for _, line in utf8_lines(a.source) if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.jsonl.gz")
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
            for i in range(a.records):
                f.write(lines[i % len(lines)].rstrip("\n") + "\n")
        del lines
        print(f"{a.records} records, {os.path.getsize(path) / 1e6:.1f} MB gzipped; peak memory {peak_mb():.0f} MB")
        rows = []

        def step(name, fn):
            t0 = time.time()
            out = fn()
            rows.append((name, time.time() - t0, peak_mb()))
            return out

        step("floor", lambda: sum(1 for line in gzip.open(path, "rb") if json.loads(line)))
        kind, records = step("read_records", lambda: read_records(path))
        step("read_prompts", lambda: read_prompts(path))
        if a.tokenizer:
            tok = load_language_model(a.tokenizer)[1]
            demos = demonstrations(kind, records)
            pairs = step("tokenize", lambda: demo_pairs(tok, demos, a.block_size))
            print(f"{sum(len(p) + len(r) for p, r in pairs)} tokens kept")
            del pairs
            whole = step("tokenize whole", lambda: demo_pairs(tok, demos))  # every id, as Python lists
            print(f"{sum(len(p) + len(r) for p, r in whole)} tokens in all")
    floor = rows[0][1]
    print(f"{'step':14s} {'seconds':>8s} {'x floor':>8s} {'peak MB':>8s}")
    for name, seconds, mb in rows:
        print(f"{name:14s} {seconds:8.2f} {seconds / floor:8.2f} {mb:8.0f}")


if __name__ == "__main__":
    run_cli(main)

"""chat.py: the streamed answer equals checkpoint.respond's, one prompt is answered by several checkpoints
with their RM scores, the chat reads stdin until an empty line or /quit, bad checkpoints are one
line, and labeling re-asks on a bad ranking, saves each ranking at once and resumes."""

import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import chat
from conftest import RM_BIAS
from plumbing import checkpoint, cli, formats
from plumbing.checkpoint import respond

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: a second thread only waits here


def run_cli(*args, input=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "chat.py", *map(str, args)], cwd=ROOT, input=input,
                          capture_output=True, text=True, timeout=60, env=env)


def run_main(capsys, *args):
    """chat.main in this process, as `python chat.py ARGS` runs it -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        cli.run_cli(lambda: chat.main([str(a) for a in args]))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("stage", ["sft", "pretrain"])
def test_streamed_answer_equals_respond(run_dir, stage):
    """The naive token-by-token loop draws what gpt.generate's cached loop draws (same seed)."""
    bot = chat.load_bot(str(run_dir / f"{stage}.pt"))
    assert bot.base == (stage == "pretrain")
    mode = "base" if bot.base else "chat"
    for temperature in (0.0, 1.0):
        for prompt in ["What is 2 + 3?", "Tell me a story about a fox."]:
            pieces = []
            g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
            streamed = chat.stream_reply(bot, prompt, max_new_tokens=16, temperature=temperature,
                                         generator=g1, on_text=pieces.append)
            [ref] = respond(bot.model, bot.tok, [prompt], mode=mode, max_new_tokens=16,
                            temperature=temperature, generator=g2)
            assert streamed == ref
            assert "".join(pieces).strip() == streamed  # what was shown is the answer
            if bot.base:
                assert "\n" not in "".join(pieces)


def test_one_shot_two_checkpoints_with_rm_scores(run_dir, capsys):
    r = run_cli(run_dir / "sft.pt", run_dir / "ppo.pt", "--prompt", "What is 2 + 3?",
                "--temperature", "0", "--max-new-tokens", "12")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if " | " in line]
    assert len(rows) == 2
    assert "sft.pt (sft)" in rows[0] and "ppo.pt (ppo)" in rows[1]
    # the scores are the default reward.pt's (beside the first checkpoint), minus its bias
    scorer = chat.Scorer(str(run_dir / "reward.pt"))
    for row, name in zip(rows, ["sft", "ppo"]):
        shown = float(re.search(r"RM ([+-]\d+\.\d\d) \| ", row).group(1))
        bot = chat.load_bot(str(run_dir / f"{name}.pt"))
        [ref] = respond(bot.model, bot.tok, ["What is 2 + 3?"], max_new_tokens=12)
        assert row.split(" | ", 1)[1].strip() == ref
        [raw] = checkpoint.score_texts(scorer.rm, scorer.tok, ["What is 2 + 3?"], [ref], 64, "cpu")
        assert abs(shown - (raw - RM_BIAS)) < 0.006
    # --reward none: no scores
    code, out, _ = run_main(capsys, run_dir / "sft.pt", "--prompt", "hi", "--reward", "none", "--max-new-tokens", "4")
    assert code == 0 and "RM" not in out and "sft.pt (sft)> " in out


def test_interactive_two_prompts_then_quit(run_dir):
    r = run_cli(run_dir / "ppo.pt", "--max-new-tokens", "8", "--seed", "1",
                input="What is 2 + 3?\nSpell cat backwards.\n/quit\nnever asked\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("you> ") == 3             # two prompts, then /quit
    assert r.stdout.count("ppo.pt (ppo)> ") == 2    # each answer streamed after the model's name
    assert len(re.findall(r"\[RM [+-]\d+\.\d\d\]", r.stdout)) == 2
    # the same through the function: an empty line ends too, and several models answer each prompt
    bots = [chat.load_bot(str(run_dir / f"{s}.pt")) for s in ("pretrain", "sft", "ppo")]
    out = io.StringIO()
    history = chat.chat(bots, dict(max_new_tokens=8, temperature=0.7), seed=0, stdin=io.StringIO("a\nb\n\nc\n"),
                        stdout=out)
    assert len(history) == 2 and all(len(answers) == 3 for answers in history)
    assert out.getvalue().count("pretrain.pt (pretrain)") == 2
    # end of input ends as well
    assert chat.chat(bots[:1], dict(max_new_tokens=4), stdin=io.StringIO("a\n"), stdout=io.StringIO()) != []


def test_corrupt_checkpoint_is_one_line_exit_2(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    r = run_cli(corrupt, "--prompt", "hi")
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "corrupt.pt" in lines[0]


@pytest.mark.parametrize("case", ["missing", "reward_as_chat", "sft_as_reward", "no_checkpoint", "bad_flag", "bad_k",
                                  "prompts_not_utf8"])
def test_bad_input_is_one_line_exit_2(run_dir, tmp_path, capsys, case):
    (tmp_path / "latin1.txt").write_bytes("What is 2 + 3?\nCaf\xe9 or tea?\n".encode("latin-1"))
    args, name = {
        "missing": ([tmp_path / "missing.pt", "--prompt", "hi"], "missing.pt"),
        "reward_as_chat": ([run_dir / "reward.pt", "--prompt", "hi"], "reward.pt"),
        "sft_as_reward": ([run_dir / "sft.pt", "--reward", run_dir / "ppo.pt", "--prompt", "hi"], "ppo.pt"),
        "no_checkpoint": (["--prompt", "hi"], "checkpoint"),
        "bad_flag": ([run_dir / "sft.pt", "--top-p", "1.5", "--prompt", "hi"], "--top-p"),
        "bad_k": (["--label", "--policy", run_dir / "sft.pt", "--k", "12"], "--k 12"),
        "prompts_not_utf8": (["--label", "--policy", run_dir / "sft.pt", "--prompts", tmp_path / "latin1.txt"],
                             "latin1.txt:2: not UTF-8"),
    }[case]
    code, _, err = run_main(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0]


def test_parse_ranking():
    assert chat.parse_ranking("2 1 4 3", 4) == [1, 0, 3, 2]
    assert chat.parse_ranking(" 2,1, 4 3 ", 4) == [1, 0, 3, 2]
    assert chat.parse_ranking("2143", 4) == [1, 0, 3, 2]
    for bad, why in [("1 1 2 3", "twice|2 times"), ("5 1 2 3", "between 1 and 4"), ("abc", "numbers"),
                     ("1 2 3", "all 4"), ("", "all 4"), ("0 1 2 3", "between")]:
        with pytest.raises(ValueError, match=why):
            chat.parse_ranking(bad, 4)


def test_label_rejects_bad_rankings_saves_and_resumes(run_dir, tmp_path):
    out = tmp_path / "human" / "comparisons_human.jsonl"
    task = {"family": "arithmetic", "prompt": "What is 2 + 3?"}
    prompts = [{"prompt": "What is 2 + 3?", "task": task}, "Tell me a story about a fox."]
    kw = dict(k=4, prompts=prompts, max_new_tokens=10, seed=0)
    # session 1: three bad rankings are re-asked, the fourth is saved; then q
    console = io.StringIO()
    saved = chat.label(str(run_dir / "sft.pt"), str(out), stdin=io.StringIO("1 1 2 3\n5 1 2 3\nabc\n2 1 4 3\nq\n"),
                       stdout=console, **kw)
    text = console.getvalue()
    assert saved == 1
    assert text.count("not a ranking") == 3 and text.count("rank best to worst") == 5
    assert "  4. " in text and "What is 2 + 3?" in text
    [rec] = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["ranking"] == [1, 0, 3, 2] and rec["labeler"] == "human" and rec["task"] == task
    assert len(rec["completions"]) == 4 and len(set(rec["completions"])) == 4  # K distinct answers
    assert all(f"  {i + 1}. {c}" in text for i, c in enumerate(rec["completions"]))
    # session 2 resumes: the ranked prompt is skipped, the next one appended; end of input quits
    console = io.StringIO()
    assert chat.label(str(run_dir / "sft.pt"), str(out), stdin=io.StringIO("4 3 2 1\n"), stdout=console, **kw) == 1
    assert "1 already in" in console.getvalue() and "What is 2 + 3?" not in console.getvalue()
    kind, records = formats.read_records(str(out))  # what reward.py --data reads
    assert kind == "comparison" and len(records) == 2
    assert records[1]["prompt"] == "Tell me a story about a fox." and records[1]["ranking"] == [3, 2, 1, 0]
    assert "task" not in json.loads(out.read_text().splitlines()[1])
    # session 3: nothing left
    console = io.StringIO()
    assert chat.label(str(run_dir / "sft.pt"), str(out), stdin=io.StringIO(""), stdout=console, **kw) == 0
    assert "0 prompts to rank" in console.getvalue()


def test_label_cli_with_prompts_file(run_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 2 + 3?\n\nSpell cat backwards.\n")
    out = tmp_path / "h.jsonl"
    r = run_cli("--label", "--policy", run_dir / "sft.pt", "--out", out, "--k", "3", "--prompts", prompts,
                "--max-new-tokens", "8", input="3 3 1\n3 1 2\n")
    assert r.returncode == 0, r.stderr
    assert "not a ranking: 3 appears 2 times" in r.stdout
    kind, records = formats.read_records(str(out))
    assert kind == "comparison" and [c["ranking"] for c in records] == [[2, 0, 1]]

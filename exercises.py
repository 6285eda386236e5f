"""
exercises.py: a homework copy of the project. The functions that carry the paper's ideas lose
their bodies; their signatures and docstrings stay, and each now raises NotImplementedError
naming the idea and where the paper (or the paper it builds on) has it.

    python exercises.py OUT_DIR          # writes the copy, and OUT_DIR/EXERCISES.md (the list)
    python exercises.py --list           # only the list
    cd OUT_DIR && python -m pytest -q tests/test_exercises.py      # one test per exercise
    cd OUT_DIR && python train_all.py --preset smoke                # once they all pass: the whole pipeline

Which functions are exercises is marked in the code itself: a `# exercise: WHAT, WHERE` comment
on the line of the `def` (or the last line of its signature). So the list cannot drift from the
code, and tests/test_exercises.py checks each one with a message that says what was expected on
what input. In this project those tests pass (tests/test_exercise_kit.py holds that they all fail
in the copy).

How a course uses it: hand out OUT_DIR; students fill in one function at a time and run its test
(`pytest -q tests/test_exercises.py -k gae`); the rest of the suite (cached generation against
the naive path, resume, the smoke pipeline) then checks their code in use; `train_all.py --preset
smoke` runs their InstructGPT end to end in a few minutes on a laptop.
"""

import ast
import os
import re
import shutil
from dataclasses import dataclass

from plumbing.cli import UserError, arg, parse_config, run_cli

ROOT = os.path.dirname(os.path.abspath(__file__))
MARK = re.compile(r"#\s*exercise:\s*(.+?)\s*$")
LEFT_OUT = shutil.ignore_patterns(".git", ".venv", "out", "__pycache__", ".pytest_cache", "*.pt", "*.resume.pt")


def find_exercises(path):
    """The exercises of one source file: [(qualified name, label, def line, first body line to
    replace, last line, indent)], lines 1-based. The docstring stays; the rest of the body goes."""
    lines = open(path, encoding="utf-8").read().split("\n")
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if isinstance(child, ast.FunctionDef):
                    signature = lines[child.lineno - 1:child.body[0].lineno - 1]
                    labels = [m.group(1) for m in map(MARK.search, signature) if m]
                    if labels:
                        first = child.body[0]
                        docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                            isinstance(first.value.value, str)
                        start = first.end_lineno + 1 if docstring else first.lineno
                        if start > child.end_lineno:
                            raise UserError(f"{path}:{child.lineno}: exercise {name} has nothing but a docstring")
                        line = lines[first.lineno - 1]
                        indent = line[:len(line) - len(line.lstrip())]
                        found.append((name, labels[0], child.lineno, start, child.end_lineno, indent))
                visit(child, name + ".")
    visit(ast.parse("\n".join(lines)), "")
    return found


def all_exercises(root=ROOT):
    """{file name: its exercises} over the project's top-level Python files."""
    out = {}
    for name in sorted(os.listdir(root)):
        if name.endswith(".py") and name != "exercises.py":
            found = find_exercises(os.path.join(root, name))
            if found:
                out[name] = found
    return out


def blank(path, exercises):
    """Replace each exercise's body (after its docstring) with one `raise NotImplementedError`."""
    lines = open(path, encoding="utf-8").read().split("\n")
    for name, label, _, start, end, indent in sorted(exercises, key=lambda e: -e[3]):  # bottom up
        message = (f"exercise ({label}): write {name} in {os.path.basename(path)}; its docstring says what it "
                   f"computes, and tests/test_exercises.py checks it")
        lines[start - 1:end] = [f"{indent}raise NotImplementedError({message!r})"]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def exercise_list(found):
    rows = [f"| {name} | {file} | {label} |" for file, exercises in found.items() for name, label, *_ in exercises]
    return "\n".join(["| function | file | what, and where the paper has it |", "| --- | --- | --- |", *rows])


@dataclass
class Args:
    out_dir: str = arg("", "where to write the homework copy (a new or empty folder)", positional=True, nargs="?")
    list: bool = arg(False, "only print the exercises")


def main():
    a = parse_config(Args, description=__doc__)
    found = all_exercises()
    if a.list or not a.out_dir:
        print(exercise_list(found))
        if not a.list:
            print("\ngive OUT_DIR to write the homework copy (--help)")
        return
    if os.path.exists(a.out_dir) and os.listdir(a.out_dir):
        raise UserError(f"{a.out_dir}: not empty; the homework copy goes into a new or empty folder")
    if os.path.abspath(a.out_dir).startswith(ROOT + os.sep):
        raise UserError(f"{a.out_dir}: inside the project; write the copy somewhere else")
    shutil.copytree(ROOT, a.out_dir, ignore=LEFT_OUT, dirs_exist_ok=True)
    for file, exercises in found.items():
        blank(os.path.join(a.out_dir, file), exercises)
    with open(os.path.join(a.out_dir, "EXERCISES.md"), "w") as f:
        f.write("# Exercises\n\nEach function below raises NotImplementedError until you write it. Run its test with "
                "`python -m pytest -q tests/test_exercises.py`, then the whole suite, then "
                "`python train_all.py --preset smoke`.\n\n" + exercise_list(found) + "\n")
    n = sum(len(e) for e in found.values())
    print(f"wrote {a.out_dir}: {n} exercises in {', '.join(found)} (EXERCISES.md lists them); "
          f"check them with: cd {a.out_dir} && python -m pytest -q tests/test_exercises.py")


if __name__ == "__main__":
    run_cli(main)

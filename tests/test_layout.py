"""The layout a reader relies on: `ls` shows the pipeline and the plumbing sits in one folder; the
step scripts import none of each other and the plumbing imports no step (nor what runs the steps);
the project's modules import one another without a cycle; the model file needs torch and the
standard library alone; and no file outgrows what a reader can hold."""

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = "plumbing"
TOP = {"gpt", "world", "data", "sft", "reward", "ppo", "dpo", "grpo", "chat", "train_all", "pipeline", "own_data",
       "exercises", "experiments"}
STEPS = {"sft", "reward", "ppo", "dpo", "grpo", "chat"}
ABOVE_STEPS = {"train_all", "pipeline", "own_data", "exercises", "experiments"}  # they run the steps
MODULES = sorted([f[:-3] for f in os.listdir(ROOT) if f.endswith(".py")] +
                 [f"{FOLDER}.{f[:-3]}" for f in os.listdir(os.path.join(ROOT, FOLDER))
                  if f.endswith(".py") and f != "__init__.py"])


def path_of(module):
    return os.path.join(ROOT, *module.split(".")) + ".py"


def imports(module):
    """The project modules `module` imports, anywhere in the file (a lazy import counts too):
    `import ddp` / `from plumbing import ddp` / `from plumbing.ddp import x` all give its name."""
    tree = ast.parse(open(path_of(module)).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name.split(".")[0] if name.split(".")[0] != FOLDER else ".".join(name.split(".")[:2]) for name in found}


def test_the_top_level_shows_the_pipeline_and_the_plumbing_is_one_folder():
    top = {f[:-3] for f in os.listdir(ROOT) if f.endswith(".py")}
    assert top == TOP, f"top level: {sorted(top - TOP)} not expected, {sorted(TOP - top)} missing"
    folders = [d for d in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, d, "__init__.py"))]
    assert folders == [FOLDER], folders
    for m in MODULES:  # each module says what it holds, first thing
        doc = ast.get_docstring(ast.parse(open(path_of(m)).read()))
        assert doc and len(doc.split()) > 8, m


def test_step_scripts_import_none_of_each_other():
    for step in STEPS:
        assert not imports(step) & (STEPS - {step}), step


def test_the_plumbing_imports_no_step_and_nothing_that_runs_them():
    for m in MODULES:
        if m.startswith(FOLDER + "."):
            assert not imports(m) & (STEPS | ABOVE_STEPS), (m, imports(m) & (STEPS | ABOVE_STEPS))


def test_no_import_cycle():
    graph = {m: imports(m) & set(MODULES) for m in MODULES}
    done, path = set(), []

    def visit(m):
        assert m not in path, " -> ".join(path[path.index(m):] + [m])
        if m in done:
            return
        path.append(m)
        for n in graph[m]:
            visit(n)
        path.pop()
        done.add(m)
    for m in MODULES:
        visit(m)


def test_the_model_file_needs_torch_and_the_standard_library_only():
    outside = imports("gpt") - set(sys.stdlib_module_names) - {"torch", "safetensors"}
    assert not outside
    assert not imports("gpt") & {"argparse", "signal", "threading", "time"}  # a script's machinery
    source = open(path_of("gpt")).read()
    assert "UserError" not in source  # command-line errors belong to the plumbing (plumbing/cli.py)


def test_files_stay_a_readable_size():
    for m in MODULES:
        n = sum(1 for _ in open(path_of(m)))
        assert n <= (450 if m == "gpt" else 500), f"{m}: {n} lines"

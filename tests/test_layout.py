"""The layout a reader relies on: the step scripts import none of each other, the project's modules
import one another without a cycle, and the model file needs torch and the standard library alone."""

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(f[:-3] for f in os.listdir(ROOT) if f.endswith(".py"))
STEPS = {"sft", "reward", "ppo", "dpo", "chat"}


def imports(module):
    """The top-level modules `module` imports, anywhere in the file (a lazy import counts too)."""
    tree = ast.parse(open(os.path.join(ROOT, module + ".py")).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_step_scripts_import_none_of_each_other():
    for step in STEPS:
        assert not imports(step) & (STEPS - {step}), step


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

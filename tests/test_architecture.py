"""The package's imports run one way: no cycle, and every module imports on its own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter

from tests.conftest import REPOSITORY

PACKAGE = os.path.join(REPOSITORY, "recbole_kd")


def modules() -> dict[str, str]:
    """Dotted name -> path of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, REPOSITORY)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: str, known: dict[str, str]) -> set[str]:
    """The package's modules that ``name`` imports, lazily inside functions included."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            # A module importing its own package's __init__ is how submodules load: not an edge.
            if candidate and candidate != name and not name.startswith(candidate + "."):
                targets.add(candidate)
    return targets


def test_the_import_graph_has_no_cycle():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None
    assert len(order) == len(known) > 40
    # The bottom stays the bottom: errors, the process group and checkpoints import nothing of
    # the package but what is below them.
    assert graph["recbole_kd.errors"] == set()
    assert graph["recbole_kd.distributed"] == {"recbole_kd.errors"}
    assert graph["recbole_kd.checkpoint"] == {"recbole_kd.errors", "recbole_kd.distributed"}


# In one fresh interpreter: each module imported first, with every recbole_kd module forgotten
# before it, so an import that works only after another module was loaded shows up.
EACH_MODULE_FIRST = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "recbole_kd" or m.startswith("recbole_kd.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f"{name}: {type(error).__name__}: {error}")
print("\\n".join(failed))
"""


def test_every_module_imports_on_its_own():
    names = sorted(modules())
    env = {**os.environ, "PYTHONPATH": REPOSITORY}
    done = subprocess.run([sys.executable, "-c", EACH_MODULE_FIRST, *names], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "", done.stdout

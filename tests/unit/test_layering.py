"""The packages import downwards only, read from the source (every import statement, at module
level or inside functions): elmo_core <- preprocessing <- workflows <- elmo_cli. Inside workflows, one
room per job: registry <- training, registry <- embedding, and demo above all three; training and
embedding know nothing of each other. elmo_core imports neither Ray nor MLflow; nothing outside a
module imports its private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

OURS = ("elmo_cli", "elmo_core", "preprocessing", "workflows")
# what each package may not import (ours above it, and third-party layers it must not know)
FORBIDDEN = {
    "elmo_core": {"elmo_cli", "preprocessing", "workflows", "ray", "mlflow"},
    "preprocessing": {"elmo_cli", "workflows", "mlflow"},
    "workflows": {"elmo_cli"},
    "elmo_cli": set(),
}


# workflows' rooms: what each may not import (the modules directly in workflows/ are shared by all
# rooms and import none of them)
ROOMS = ("registry", "training", "embedding", "demo")
ROOM_FORBIDDEN = {
    "registry": {"training", "embedding", "demo"},
    "training": {"embedding", "demo"},
    "embedding": {"training", "demo"},
    "demo": set(),
    "": set(ROOMS),
}


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported from it, line) for every import statement in ``path``;
    relative imports resolved against the file's package."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out.append((base, [alias.name for alias in node.names], node.lineno))
    return out


def sources(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (REPO / root).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", OURS)
def test_a_package_imports_nothing_above_it(package):
    wrong = [f"{path.relative_to(REPO)}:{line} imports {module}"
             for path in sources(package) for module, _, line in imports_of(path)
             if module.split(".")[0] in FORBIDDEN[package]]
    assert not wrong, wrong


def test_nothing_imports_another_modules_private_names():
    wrong = []
    for path in sources(*OURS, "benchmarks", "infra"):
        for module, names, line in imports_of(path):
            if module.split(".")[0] in OURS and any(n.startswith("_") and not n.startswith("__") for n in names):
                wrong.append(f"{path.relative_to(REPO)}:{line} from {module} import {', '.join(names)}")
    assert not wrong, wrong


def room_of(path_or_module: Path | str) -> str | None:
    """The workflows room a file or module belongs to ("" for workflows/'s shared modules)."""
    parts = (path_or_module.relative_to(REPO).with_suffix("").parts if isinstance(path_or_module, Path)
             else tuple(path_or_module.split(".")))
    if parts[0] != "workflows":
        return None
    return parts[1] if len(parts) > 2 and parts[1] in ROOMS else ("" if len(parts) > 1 else None)


def test_each_workflows_room_imports_only_the_rooms_below_it():
    wrong = [f"{path.relative_to(REPO)}:{line} imports {module}"
             for path in sources("workflows") for module, _, line in imports_of(path)
             if room_of(module) and room_of(module) in ROOM_FORBIDDEN[room_of(path)]]
    assert not wrong, wrong


def test_every_workflows_module_lives_in_a_room():
    """workflows/ holds the rooms and a few modules they share, nothing else."""
    loose = {p.name for p in (REPO / "workflows").glob("*.py")}
    rooms = {p.name for p in (REPO / "workflows").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert rooms == set(ROOMS)
    assert loose <= {"__init__.py", "console.py", "faults.py"}, loose


def test_no_import_cycles_between_modules():
    """Module-level and function-level imports together form no cycle among our modules."""
    graph: dict[str, set[str]] = {}
    names = {".".join(p.relative_to(REPO).with_suffix("").parts) for p in sources(*OURS)}
    for path in sources(*OURS):
        me = ".".join(path.relative_to(REPO).with_suffix("").parts)
        targets = set()
        for module, imported, _ in imports_of(path):
            for candidate in [f"{module}.{n}" for n in imported] + [module]:
                if candidate in names and candidate != me:
                    targets.add(candidate)
                    break
        graph[me] = targets
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*trail[trail.index(nxt):], nxt]) if nxt in trail else nxt)
            if not state.get(nxt):
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])


def test_the_checks_see_imports_inside_functions():
    tree = imports_of(REPO / "workflows" / "training" / "pretrain.py")
    assert any(module == "workflows.training.driver" for module, _, _ in tree)  # imported inside pretrain()


def test_mlflow_is_imported_by_the_tracking_module_and_the_logged_models_code_only():
    """Every MLflow call of the workflows goes through `workflows.registry.tracking` (the logged model's
    own code, `pyfunc_model`, runs where only mlflow and elmo_core are installed)."""
    allowed = {"workflows/registry/tracking.py", "workflows/registry/pyfunc_model.py"}
    importers = {str(path.relative_to(REPO)) for path in sources(*OURS)
                 for module, _, _ in imports_of(path) if module.split(".")[0] == "mlflow"}
    assert importers == allowed

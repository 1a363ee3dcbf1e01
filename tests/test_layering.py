"""The packages import downwards only, read from the source (every import statement, at module
level or inside functions): elmo_core <- preprocessing <- workflows <- elmo_cli. elmo_core imports
neither Ray nor MLflow; nothing outside a module imports its private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("elmo_cli", "elmo_core", "preprocessing", "workflows")
# what each package may not import (ours above it, and third-party layers it must not know)
FORBIDDEN = {
    "elmo_core": {"elmo_cli", "preprocessing", "workflows", "ray", "mlflow"},
    "preprocessing": {"elmo_cli", "workflows", "mlflow"},
    "workflows": {"elmo_cli"},
    "elmo_cli": set(),
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


def test_the_checks_see_imports_inside_functions():
    tree = imports_of(REPO / "workflows" / "pretrain.py")
    assert any(module == "workflows.train_driver" for module, _, _ in tree)  # imported inside pretrain()


def test_mlflow_is_imported_by_the_tracking_module_and_the_logged_models_code_only():
    """Every MLflow call of the workflows goes through `workflows.tracking` (the logged model's
    own code, `pyfunc_model`, runs where only mlflow and elmo_core are installed)."""
    allowed = {"workflows/tracking.py", "workflows/pyfunc_model.py"}
    importers = {str(path.relative_to(REPO)) for path in sources(*OURS)
                 for module, _, _ in imports_of(path) if module.split(".")[0] == "mlflow"}
    assert importers == allowed

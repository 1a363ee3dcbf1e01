"""The README is a user's guide that works when copied: its commands (and those in docs/) parse
with the real parsers, its Python API example runs, the test command it gives is the one CI runs,
its configuration reference is the one generated from the config dataclasses, its Parquet schema
table is the schema the code writes, and the modules, links and layout it names exist."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.helpers.command_check import check_command, shell_commands

README = (REPO / "README.md").read_text(encoding="utf-8")
DOCS = {p.relative_to(REPO).as_posix(): p.read_text(encoding="utf-8") for p in sorted((REPO / "docs").glob("*.md"))}
GUIDES = {"README.md": README, **DOCS}  # the user's guide and the pages it links to
CHECKED_PROGRAMS = {".venv/bin/elmo": "elmo", "elmo": "elmo", "python": "python", ".venv/bin/python": "python",
                    "ray": "ray", ".venv/bin/mlflow": "mlflow", "mlflow": "mlflow"}


def readme_shell_lines(text: str = README) -> list[str]:
    """Every command line of a page's ```sh blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines.extend(line for line in block.replace("\\\n", " ").splitlines() if line.strip())
    return lines


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def program_commands(line: str) -> list[list[str]]:
    """The commands of one line that run our programs (and a `ray job submit`'s entrypoint)."""
    out = []
    if line.strip().startswith("#"):
        return []
    for argv in shell_commands(line, comments=True):
        if argv[0] not in CHECKED_PROGRAMS or (argv[0].endswith("python") and argv[1:2] != ["-m"]):
            continue
        argv = [CHECKED_PROGRAMS[argv[0]], *argv[1:]]
        if argv[:3] == ["ray", "job", "submit"] and "--" in argv:
            cut = argv.index("--")
            out.append(argv)  # the entrypoint after `--` is part of ray's own arguments
            entry = argv[cut + 1:]
            out.append([CHECKED_PROGRAMS.get(entry[0], entry[0]), *entry[1:]])
        else:
            out.append(argv)
    return out


COMMANDS = [argv for line in readme_shell_lines() for argv in program_commands(line)]
DOC_COMMANDS = [argv for text in DOCS.values() for line in readme_shell_lines(text) for argv in program_commands(line)]


def test_the_readme_has_the_commands_a_user_copies():
    names = {" ".join(a[:2]) for a in COMMANDS}
    for needed in ("elmo embed", "elmo preprocess", "elmo pretrain", "elmo adapt", "elmo embed-corpus",
                   "elmo embed-new", "ray job"):
        assert needed in names, f"README has no `{needed}` example"


@pytest.mark.parametrize("argv", COMMANDS + DOC_COMMANDS, ids=lambda a: " ".join(a)[:90])
def test_every_readme_command_is_accepted_by_its_parser(argv):
    if argv[:2] == ["ray", "job"]:  # `ray job submit`: a click group below `ray`
        from ray.dashboard.modules.job.cli import job_cli_group

        job_cli_group.commands[argv[2]].make_context("ray job " + argv[2], argv[3:])
        return
    check_command(argv)


def test_the_configuration_reference_is_generated_from_the_code():
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def test_the_dataset_schema_table_is_the_schema_written():
    from preprocessing.schema import SENTENCES

    section = README[README.index("**A dataset**"):README.index("**Embeddings**")]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.M)
    assert [name for name, _ in rows] == SENTENCES.names
    for name, documented in rows:
        assert documented.strip() == str(SENTENCES.field(name).type).replace("item: ", ""), name


def test_the_embedding_columns_are_the_ones_written():
    from workflows.embedding.output import ROW_COLUMNS

    section = README[README.index("**Embeddings**"):README.index("## Configuration reference")]
    first_row = re.search(r"^\| (`sentence_id`.*?) \| as above", section, re.M).group(1)
    assert re.findall(r"`(\w+)`", first_row) == list(ROW_COLUMNS)


def test_the_two_commands_are_the_ones_the_readme_gives_and_ci_runs():
    lines = readme_shell_lines()
    assert any(line.split("#")[0].split() == ["bash", "scripts/run.sh"] for line in lines)
    assert any(line.split("#")[0].split() == ["bash", "scripts/test.sh"] for line in lines)
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == ["bash scripts/test.sh"], ".ci/run must run exactly the README's test command"


def test_the_python_api_example_runs(tmp_path, bilm_tf):
    """The first example under "## Python API", on bilm-tf's reference model (the fixture's
    options.json and weights, under the names the example uses)."""
    shutil.copy(bilm_tf.options, tmp_path / "options.json")
    shutil.copy(bilm_tf.weights, tmp_path / "weights.hdf5")
    section = README[README.index("## Python API"):]
    example = python_blocks(section)[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    check = subprocess.run([sys.executable, "-c", example + "\nprint(layers[0].shape, tuple(out['mask'].shape))"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    assert check.stdout.split()[:3] == ["(3,", "3,", "32)"], check.stdout  # (layers, tokens, 2P) of the tiny model


PROJECT_PACKAGES = ("elmo_core", "preprocessing", "workflows", "elmo_cli")


def _resolve(dotted: str):
    """The object a dotted name names (module, then attributes), or AttributeError/ImportError."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _outside_generated(text: str) -> str:
    """The page without the generated configuration reference (scripts/config_reference.py owns it)."""
    return re.sub(r"<!-- config-reference:start -->.*?<!-- config-reference:end -->", "", text, flags=re.S)


def test_the_python_examples_import_what_exists():
    for page, text in GUIDES.items():
        for block in python_blocks(text):
            for node in ast.walk(ast.parse(block, filename=page)):
                if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in PROJECT_PACKAGES:
                    for alias in node.names:
                        _resolve(f"{node.module}.{alias.name}")


def test_the_modules_and_names_the_guide_gives_exist():
    """Every `package.module[.name]` of this project the README and docs/ name in backticks."""
    missing = []
    for page, text in GUIDES.items():
        for dotted in set(re.findall(r"`((?:%s)(?:\.\w+)+)" % "|".join(PROJECT_PACKAGES), _outside_generated(text))):
            try:
                _resolve(dotted)
            except (ImportError, AttributeError):
                missing.append(f"{page}: {dotted}")
    assert not missing, "named in the docs but not in the code: " + ", ".join(sorted(missing))


def _anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation but - and _ dropped, spaces -> -."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            for title in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_links_lead_somewhere():
    pages = {**GUIDES, "benchmarks/README.md": (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8"),
             "CHANGELOG.md": (REPO / "CHANGELOG.md").read_text(encoding="utf-8")}
    broken = []
    for page, text in pages.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (REPO / page).parent / path if path else REPO / page
            if not file.exists():
                broken.append(f"{page}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text(encoding="utf-8")):
                broken.append(f"{page}: {target} (no such heading)")
    assert not broken, broken


def test_the_layout_names_every_module():
    """The README's layout block: each package's modules, as they are on disk."""
    block = README[README.index("## Layout"):]
    block = block[block.index("```\n") + 4:]
    block = block[:block.index("```")]
    listed, folder, parent = {}, None, None
    for line in block.splitlines():
        label = re.match(r"^( *)([\w.]+/)", line)
        if label and line[len(label.group(0)):][:1] in (" ", ""):
            folder = label.group(2) if not label.group(1) else parent + label.group(2)
            parent = folder if not label.group(1) else parent
        listed.setdefault(folder, set()).update(re.findall(r"(?<![\w/.])(\w+\.py)\b", line))
    for package in PROJECT_PACKAGES:
        for directory in [REPO / package, *(p.parent for p in (REPO / package).glob("*/__init__.py"))]:
            folder = directory.relative_to(REPO).as_posix() + "/"
            on_disk = {p.name for p in directory.glob("*.py")} - {"__init__.py", "__main__.py"}
            named = listed.get(folder, set()) - {"__main__.py"}
            assert named == on_disk, (f"README layout, {folder}: not on disk {sorted(named - on_disk)}, "
                                      f"not named {sorted(on_disk - named)}")

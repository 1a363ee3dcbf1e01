"""The README is a user's guide that works when copied: its commands parse with the real parsers,
its configuration reference is the one generated from the config dataclasses, and its Parquet
schema table is the schema the code writes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.helpers.command_check import check_command, shell_commands

README = (REPO / "README.md").read_text(encoding="utf-8")
CHECKED_PROGRAMS = {".venv/bin/elmo": "elmo", "elmo": "elmo", "python": "python", ".venv/bin/python": "python",
                    "ray": "ray", ".venv/bin/mlflow": "mlflow", "mlflow": "mlflow"}


def readme_shell_lines() -> list[str]:
    """Every command line of the README's ```sh blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        lines.extend(line for line in block.replace("\\\n", " ").splitlines() if line.strip())
    return lines


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


def test_the_readme_has_the_commands_a_user_copies():
    names = {" ".join(a[:2]) for a in COMMANDS}
    for needed in ("elmo embed", "elmo preprocess", "elmo pretrain", "elmo adapt", "elmo embed-corpus",
                   "elmo embed-new", "ray job"):
        assert needed in names, f"README has no `{needed}` example"


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a)[:90])
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

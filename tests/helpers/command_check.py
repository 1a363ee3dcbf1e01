"""Checking a command without running it: parse it with the real parser of the program it names
(`elmo SUBCOMMAND`, `python -m MODULE`, `mlflow`, `ray`), as the infra manifests and the README's
examples are checked."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import tomllib
import warnings
from pathlib import Path

from tests.helpers import REPO


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


class CommandError(AssertionError):
    pass


def _argparse(prog: str, add_arguments, argv: list[str]) -> argparse.Namespace:
    # allow_abbrev=False: a manifest spells flags out (`--num-actor` would pass as `--num-actors`
    # today and break the day another flag shares the prefix)
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    add_arguments(parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit:
        raise CommandError(f"`{prog} {shlex.join(argv)}`: {err.getvalue().strip()}") from None


def _click(prog: str, command, argv: list[str]) -> dict:
    import click

    try:
        return command.make_context(prog, list(argv)).params
    except click.ClickException as exc:
        raise CommandError(f"`{prog} {shlex.join(argv)}`: {exc.format_message()}") from None


def _runnable_module(name: str):
    """`python -m NAME` must exist and do something (a module without a __main__ block exits 0 doing nothing)."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise CommandError(f"`python -m {name}`: no such module")
    if spec.submodule_search_locations:  # a package: needs __main__
        if importlib.util.find_spec(f"{name}.__main__") is None:
            raise CommandError(f"`python -m {name}`: package without __main__")
        return importlib.import_module(f"{name}.__main__")
    if not re.search(r"""^if __name__ == ["']__main__["']:""", Path(spec.origin).read_text(), re.MULTILINE):
        raise CommandError(f"`python -m {name}`: the module does nothing when run (no __main__ block)")
    return importlib.import_module(name)


def check_command(argv: list[str]) -> tuple[str, object]:
    """Parse one command as its program would: ('elmo pretrain', Namespace) etc.; CommandError if not."""
    from elmo_cli import COMMANDS

    prog, args = argv[0], argv[1:]
    if prog == "elmo":
        assert "elmo" in pyproject()["project"]["scripts"], "pyproject installs no `elmo` script"
        if args in (["--help"], ["-h"]):
            return "elmo", None
        if not args or args[0] not in COMMANDS:
            raise CommandError(f"`elmo {shlex.join(args)}`: no such subcommand (elmo_cli.COMMANDS: "
                               f"{', '.join(COMMANDS)})")
        module = importlib.import_module(COMMANDS[args[0]][0])
        return f"elmo {args[0]}", _argparse(f"elmo {args[0]}", module.add_arguments, args[1:])
    if prog in ("python", "python3") and args[:1] == ["-m"] and len(args) > 1:
        module = _runnable_module(args[1])
        add = getattr(module, "add_arguments", None)
        if add is None:  # e.g. preprocessing runs preprocessing.cli's main
            add = importlib.import_module(module.main.__module__).add_arguments
        owner = next((f"elmo {sub}" for sub, (m, _) in COMMANDS.items()
                      if m in (args[1], getattr(getattr(module, "main", None), "__module__", None))), args[1])
        return owner, _argparse(f"python -m {args[1]}", add, args[2:])
    if prog == "mlflow":
        with warnings.catch_warnings():  # SQLAlchemy deprecation warnings from MLflow's stores
            warnings.simplefilter("ignore")
            from mlflow.cli import cli as mlflow_cli

        import click

        # get_command, as the CLI itself: mlflow's group also answers aliases (`mlflow ui` = `server`)
        command = mlflow_cli.get_command(click.Context(mlflow_cli), args[0]) if args else None
        if command is None:
            raise CommandError(f"`mlflow {shlex.join(args)}`: no such mlflow command")
        return f"mlflow {args[0]}", _click(f"mlflow {args[0]}", command, args[1:])
    if prog == "ray":
        with warnings.catch_warnings():  # ray.scripts imports Ray Serve, whose pydantic models warn
            warnings.simplefilter("ignore")
            from ray.scripts.scripts import cli as ray_cli

        if not args or args[0] not in ray_cli.commands:
            raise CommandError(f"`ray {shlex.join(args)}`: no such ray command")
        return f"ray {args[0]}", _click(f"ray {args[0]}", ray_cli.commands[args[0]], args[1:])
    if prog == "ulimit":
        return "ulimit", None
    raise CommandError(f"`{shlex.join(argv)}`: not a command these tests know how to check")


def shell_commands(script: str, comments: bool = False) -> list[list[str]]:
    """The simple commands of a shell line joined by && or ; (output redirections dropped; with
    ``comments``, a ``#`` starts a comment)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#" if comments else ""
    commands, current, tokens = [], [], list(lexer)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("&&", ";"):
            commands.append(current)
            current = []
        elif tok in (">", ">>"):
            i += 1  # the file
        elif tok and set(tok) <= set("();<>|&"):
            raise CommandError(f"`{script}`: shell operator {tok!r} not understood by the checks")
        else:
            current.append(tok)
        i += 1
    commands.append(current)
    if not all(commands):
        raise CommandError(f"`{script}`: empty command")
    return commands

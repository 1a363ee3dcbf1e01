"""Flags from config dataclasses (`elmo_core.cli_fields`): a field's default, help and choices are
its flag's, the parsed flags build the dataclass back, and every command's ``--help`` line says
what a flag does and shows its default."""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass

import pytest

from elmo_core.cli_fields import HelpFormatter, add_fields, from_args, given, setting

COLOURS = ("red", "green")


@dataclass(frozen=True)
class Example:
    """An example config."""

    path: str = setting("", "where it reads", metavar="DIR", required=True)
    colour: str = setting("red", "the colour", choices=COLOURS)
    steps: int = setting(10, "how many steps")
    limit: int | None = setting(None, "at most this many (None: no limit)")
    rate: float = setting(0.5, "a rate")
    verbose: bool = setting(False, "say more")
    fast: bool = setting(True, "go fast")
    hidden: int = setting(3, "set from Python only", flag=False)


def parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_fields(p, Example, **kw)
    return p


def test_the_parsed_flags_build_the_dataclass_back():
    assert from_args(Example, parser().parse_args(["--path", "p"])) == Example(path="p")
    args = parser().parse_args(["--path", "p", "--colour", "green", "--steps", "3", "--limit", "7", "--rate",
                                "0.25", "--verbose", "--no-fast"])
    assert from_args(Example, args, steps=4) == Example("p", "green", 4, 7, 0.25, True, False)


def test_choices_and_required_flags_come_from_the_field():
    with pytest.raises(SystemExit):
        parser().parse_args(["--path", "p", "--colour", "blue"])
    with pytest.raises(SystemExit):
        parser().parse_args([])
    with pytest.raises(SystemExit):
        parser().parse_args(["--path", "p", "--hidden", "1"])


def test_unset_flags_are_none_until_given():
    p = parser(unset={"steps": "the caller's", "rate": "the caller's"})
    assert given(Example, p.parse_args(["--path", "p", "--rate", "2"])) == {"path": "p", "rate": 2.0, "colour": "red",
                                                                         "verbose": False, "fast": True}
    assert "how many steps (default: the caller's)" in " ".join(p.format_help().split())


def test_help_shows_each_default():
    text = " ".join(parser().format_help().split())
    for line in ("the colour (default: red)", "how many steps (default: 10)", "say more (default: False)",
                 "go fast (default: True)", "An example config."):
        assert line in text


def _commands():
    from elmo_cli import COMMANDS

    return sorted(COMMANDS.items())


@pytest.mark.parametrize("name, spec", _commands(), ids=[name for name, _ in _commands()])
def test_every_flag_of_every_command_says_what_it_does_and_its_default(name, spec):
    module_name, _ = spec
    p = argparse.ArgumentParser(prog=f"elmo {name}", formatter_class=HelpFormatter)
    importlib.import_module(module_name).add_arguments(p)
    formatter = HelpFormatter(f"elmo {name}")
    for action in p._actions:  # noqa: SLF001 (argparse has no public list)
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"elmo {name} {action.option_strings[0]}: no help text"
        text = formatter._get_help_string(action)  # noqa: SLF001 (what --help prints)
        one_of_a_group = action.nargs == 0 and isinstance(action.const, str)
        assert "default" in text or action.required or one_of_a_group, f"elmo {name} {action.option_strings[0]}"
    p.format_help()  # every help text formats

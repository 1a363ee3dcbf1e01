"""Command-line flags from config dataclasses: a setting's default, help text and choices are
written once, on its field.

A config field that is also a flag is declared with `setting` (``dataclasses.field`` plus metadata)::

    tokenizer: str = setting("moses", "how lines are split into tokens", choices=TOKENIZERS)

`add_fields` adds those fields' flags to a parser (``--tokenizer``; a bool is a switch: ``--name``
when it defaults to False, ``--name/--no-name`` when it defaults to True) and `from_args` builds
the dataclass back from the parsed arguments. `HelpFormatter` shows every flag's default on its
``--help`` line. ``scripts/config_reference.py`` reads the same metadata for the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: Iterable[str] | None = None,  # noqa: A002
            metavar: str | None = None, required: bool = False, flag: bool = True,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its command-line description: ``help`` (what it does), ``choices``
    (the constant that lists them), ``metavar``, ``required`` (the command needs it although Python
    callers have a default); ``flag=False``: documented, but no flag."""
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "metavar": metavar,
                "required": required, "flag": flag}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def flag_fields(cls) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line flags."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag")]


def flag_name(f: dataclasses.Field) -> str:
    return "--" + f.name.replace("_", "-")


def help_of(cls, name: str) -> str:
    """The help text of ``cls``'s field ``name`` (for a flag added by hand)."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"]


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_fields(parser, cls, *, unset: Mapping[str, str] | None = None, title: str | None = None) -> None:
    """Add a flag for each flag field of ``cls``, in a group named after it (or ``title``).
    ``unset``: fields whose flag defaults to None (not given: the caller decides), each with what
    that means, for its help line."""
    unset = unset or {}
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    group = parser.add_argument_group(title or f"{cls.__module__}.{cls.__name__}", doc or None)
    hints = typing.get_type_hints(cls)
    for f in flag_fields(cls):
        meta, kind = f.metadata, _base_type(hints[f.name])
        default = None if f.name in unset else field_default(f)
        help_text = (meta["help"] + (f" (default: {unset[f.name]})" if f.name in unset else "")).replace("%", "%%")
        if kind is bool:
            action = argparse.BooleanOptionalAction if default else "store_true"
            group.add_argument(flag_name(f), dest=f.name, action=action, default=default, help=help_text)
            continue
        group.add_argument(flag_name(f), dest=f.name, type=None if kind is str else kind, default=default,
                           choices=meta["choices"], metavar=meta["metavar"], required=meta["required"],
                           help=help_text)


def from_args(cls, args: argparse.Namespace, **values: Any):
    """``cls`` from parsed arguments (its flag fields; the others keep their defaults); ``values``
    win over them."""
    return cls(**{**{f.name: getattr(args, f.name) for f in flag_fields(cls) if hasattr(args, f.name)}, **values})


def given(cls, args: argparse.Namespace) -> dict[str, Any]:
    """``cls``'s flag fields set on the command line (added with ``unset``: None when not given)."""
    return {f.name: getattr(args, f.name) for f in flag_fields(cls) if getattr(args, f.name, None) is not None}


def _base_type(hint: Any) -> Any:
    """``int | None`` -> int; other hints as they are."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (kind,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return kind
    return hint


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each flag's default after its text, unless the text already says it, the
    flag is required, or it stores a constant of a group of flags (``--top`` of ``--all|--top``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        one_of_a_group = action.nargs == 0 and action.const is not None and not isinstance(action.const, bool)
        if "default" in text or action.required or one_of_a_group:
            return text
        return super()._get_help_string(action)

"""The README's configuration reference, generated from the config dataclasses (the one place the
numbers live), their source comments and the commands' flags, so that it cannot drift.

    .venv/bin/python scripts/config_reference.py --write   # rewrite the README's section
    .venv/bin/python scripts/config_reference.py --check   # exit 1 if the README is stale

``tests/test_readme.py`` runs the check.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
README = REPO / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

RECIPE_FLAGS = ("optimizer", "learning_rate", "dropout")  # the TrainingConfig fields `recipe_overrides` sets

ENVIRONMENT = [
    ("MLFLOW_TRACKING_URI", "where runs and registered models live: `http://HOST:5000` (a server), "
     "`sqlite:///PATH.db`; default `sqlite:///mlflow.db` in the working directory (`elmo demo`: its own "
     "`OUT/mlflow.db`)"),
    ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION", "credentials for `s3://` inputs, "
     "outputs and checkpoints, on the driver and every Ray node (`ray job submit --runtime-env-json`)"),
    ("AWS_ENDPOINT_URL", "an S3-compatible server other than AWS (SeaweedFS, MinIO, ...)"),
    ("RAY_ADDRESS", "the Ray cluster a command joins when `--address` is not given (inside a Ray job: "
     "that job's cluster); unset: a local Ray is started for the command"),
    ("RAY_AUTH_MODE", "`disabled` for a private cluster without Ray 2.60's token authentication "
     "(set on every node and client); the workflows set it for the local Ray they start"),
    ("ELMO_BILM_TF_FIXTURES", "tests only: bilm-tf's reference fixture (default `../shared/fixtures/bilm-tf`)"),
]


def _field_comments(cls) -> dict[str, str]:
    """field name -> its source comments: the block just above it and the one on its line."""
    comments, block = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if not text.startswith("---"):
                block.append(text)
            continue
        match = re.match(r"(\w+)\s*:[^#]*?(?:#\s*(.*))?$", stripped)
        if match and not stripped.startswith(("def ", "return", "@")) and "(" not in stripped.split(":")[0]:
            parts = [*block, match.group(2) or ""]
            comments[match.group(1)] = " ".join(p for p in parts if p).replace("|", "\\|")
        block = []
    return comments


def _flags(add_arguments) -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return {a.dest: a for a in parser._actions if a.option_strings}  # noqa: SLF001 (argparse has no public list)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return f"`{value!r}`" if value not in ("", None) else ("none" if value is None else "`\"\"`")


def _table(cls, flags: dict[str, argparse.Action], skip: tuple[str, ...] = (), only_flags: tuple[str, ...] | None = None) -> str:
    comments = _field_comments(cls)
    rows = ["| setting | flag | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        action = flags.get(f.name) if only_flags is None or f.name in only_flags else None
        flag = f"`{action.option_strings[-1]}`" if action else "-"
        meaning = comments.get(f.name) or (action.help % {"default": action.default} if action and action.help else "")
        rows.append(f"| `{f.name}` | {flag} | {_default(f)} | {meaning.replace(chr(10), ' ')} |")
    return "\n".join(rows)


def _presets() -> str:
    from elmo_core.config import PRESETS, BiLMConfig

    rows = ["| preset | char CNN filters (widths: count) | highways | LSTM cells / projection | layers | dropout |",
            "|---|---|---|---|---|---|"]
    for name in sorted(PRESETS):
        config = BiLMConfig.preset(name)
        cnn, lstm = config.char_cnn, config.lstm
        filters = ", ".join(f"{w}:{n}" for w, n in cnn.filters)
        rows.append(f"| `{name}` | {filters} ({sum(n for _, n in cnn.filters)}) | {cnn.n_highway} | "
                    f"{lstm.dim} / {lstm.projection_dim} | {lstm.n_layers} | {config.training.dropout} |")
    return "\n".join(rows)


def render() -> str:
    from elmo_core.config import TrainingConfig
    from preprocessing.cli import add_arguments as preprocess_arguments
    from preprocessing.config import PreprocessConfig, RunOptions
    from workflows.training.config import TrainJobConfig
    from workflows.embedding.config import EmbedJobConfig
    from workflows.training.pretrain import add_arguments as pretrain_arguments
    from workflows.training.pretrain import recipe_overrides
    from workflows.embedding.embed_new import add_arguments as schedule_arguments

    train_flags = _flags(pretrain_arguments)
    overridable = recipe_overrides(argparse.Namespace(**{name: 1 for name in RECIPE_FLAGS}))
    assert tuple(overridable) == RECIPE_FLAGS, "recipe_overrides sets other fields: update RECIPE_FLAGS"
    env = "\n".join(["| variable | what it sets |", "|---|---|",
                     *(f"| `{name}` | {text} |" for name, text in ENVIRONMENT)])
    return "\n\n".join([
        START,
        "<!-- generated by scripts/config_reference.py from the config dataclasses; edit those, then run "
        "`.venv/bin/python scripts/config_reference.py --write` -->",
        "Every number a command uses lives in one config dataclass; a flag sets one field. Python "
        "callers build the dataclass (`TrainJobConfig(max_steps=500, ...)`) and pass it to the same "
        "functions the commands call.",
        "### Environment\n\n" + env,
        "### `elmo preprocess`: `preprocessing.config.PreprocessConfig` (what the dataset holds)\n\n"
        + _table(PreprocessConfig, _flags(preprocess_arguments)),
        "### `elmo preprocess`: `preprocessing.config.RunOptions` (how it runs; never changes the output)\n\n"
        + _table(RunOptions, _flags(preprocess_arguments)),
        "### `elmo pretrain`, `elmo adapt`: `workflows.config.TrainJobConfig` (batching, schedule, "
        "checkpoints, placement)\n\n" + _table(TrainJobConfig, train_flags, skip=("fail_at_step",)),
        "### `elmo pretrain`, `elmo adapt`: `elmo_core.config.TrainingConfig` (the recipe; defaults "
        "before the preset's)\n\n" + _table(TrainingConfig, train_flags, only_flags=RECIPE_FLAGS),
        "### Model presets (`--preset`, `elmo_core.config.PRESETS`)\n\n" + _presets(),
        "### `elmo embed-corpus`, `elmo embed-new`: `workflows.config.EmbedJobConfig`\n\n"
        + _table(EmbedJobConfig, _flags(schedule_arguments)),
        END,
    ])


def current() -> str:
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{README}: no {START} ... {END} section")
    return text[text.index(START):text.index(END) + len(END)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    fresh = render()
    if args.check:
        if current() != fresh:
            print("README.md's configuration reference is stale: run .venv/bin/python scripts/config_reference.py "
                  "--write", file=sys.stderr)
            return 1
        return 0
    text = README.read_text(encoding="utf-8")
    README.write_text(text.replace(current(), fresh), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

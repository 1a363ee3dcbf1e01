"""``elmo preprocess`` and its ``ray job submit`` twin ``python -m preprocessing``.

    elmo preprocess INPUT... --output DIR [--tokenizer moses|whitespace]
        [--vocab FILE | --max-vocab N --min-count K] [--address RAY_ADDRESS]

INPUT: files, directories, globs, ``s3://``/``gs://`` prefixes, ``http(s)://`` URLs, or
``@LIST`` (a file naming one input per line); ``.gz``, ``.bz2``, ``.zst`` are decompressed.
Exit status: 0 done (or already up to date), 2 bad input or arguments (the file is named on
stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys

from elmo_core.cli_fields import add_fields, from_args

from .config import PreprocessConfig, RunOptions
from .entry_point import entry_point

_DEFAULTS = PreprocessConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text shards (see above)")
    p.add_argument("--output", required=True, metavar="DIR", help="dataset directory or s3:// prefix")
    p.add_argument("--vocab", metavar="FILE", help="reuse this vocabulary file (e.g. for domain adaptation) "
                                                   "instead of building one from the train split")
    p.add_argument("--validation-input", action="append", default=[], metavar="INPUT",
                   help="an input whose every line is validation data (repeatable; e.g. a benchmark's own "
                        "valid file); the hashed fractions apply to the other inputs")
    p.add_argument("--test-input", action="append", default=[], metavar="INPUT",
                   help="an input whose every line is test data (repeatable)")
    add_fields(p, PreprocessConfig)
    add_fields(p, RunOptions)


def run(args: argparse.Namespace, vocab_source: str | None = None) -> int:
    """``vocab_source``: what the dataset's manifest records as the origin of ``args.vocab``
    (default: that path; `elmo preprocess --vocab-from` passes the model)."""
    from .driver import PreprocessError, run_preprocess
    from .sources import InputError

    if args.vocab and (args.max_vocab is not None or args.min_count != _DEFAULTS.min_count):
        print("elmo preprocess: error: --vocab cannot be combined with --max-vocab/--min-count", file=sys.stderr)
        return 2
    try:
        assigned = _assigned_splits(args.validation_input, args.test_input)
    except InputError as exc:
        print(f"elmo preprocess: error: {exc}", file=sys.stderr)
        return 2
    try:
        config = from_args(PreprocessConfig, args, assigned_splits=assigned)
        if args.lines_per_block < 1 or args.readers < 1 or (args.num_workers is not None and args.num_workers < 1):
            raise ValueError("--lines-per-block, --readers and --num-workers must be >= 1")
        options = from_args(RunOptions, args)
    except ValueError as exc:
        print(f"elmo preprocess: error: {exc}", file=sys.stderr)
        return 2
    try:
        run_preprocess([*args.inputs, *args.validation_input, *args.test_input], args.output, config, options,
                       vocab_path=args.vocab, vocab_source=vocab_source)
    except (InputError, PreprocessError) as exc:
        print(f"elmo preprocess: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _assigned_splits(validation: list[str], test: list[str]) -> tuple[tuple[str, str], ...]:
    """(shard key, split) of every file the --validation-input / --test-input specs name."""
    from .sources import resolve_inputs

    pairs = []
    for split, specs in (("validation", validation), ("test", test)):
        if specs:
            pairs += [(f.key, split) for f in resolve_inputs(specs)]
    return tuple(pairs)


main = entry_point("elmo preprocess", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())

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

from .config import PreprocessConfig, RunOptions
from .entry_point import entry_point

_DEFAULTS = PreprocessConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text shards (see above)")
    p.add_argument("--output", required=True, metavar="DIR", help="dataset directory or s3:// prefix")
    p.add_argument("--tokenizer", choices=["moses", "whitespace"], default=_DEFAULTS.tokenizer,
                   help="moses (sacremoses, default) or whitespace for pre-tokenized text")
    p.add_argument("--language", default=_DEFAULTS.language, help="Moses language rules (default: en)")
    p.add_argument("--input-format", choices=["sentence", "document"], default=_DEFAULTS.input_format,
                   help="one sentence a line (default) or one document a line, split into sentences")
    p.add_argument("--max-sentence-tokens", type=int, default=_DEFAULTS.max_sentence_tokens,
                   help="cut longer sentences into pieces of this many tokens (default: %(default)s)")
    vocab = p.add_argument_group("vocabulary (built from the train split unless --vocab is given)")
    vocab.add_argument("--vocab", metavar="FILE", help="reuse this vocabulary file (e.g. for domain adaptation)")
    vocab.add_argument("--max-vocab", type=int, default=_DEFAULTS.max_vocab, metavar="N",
                       help="keep at most N entries, specials included (default: no limit)")
    vocab.add_argument("--min-count", type=int, default=_DEFAULTS.min_count, metavar="K",
                       help="keep words seen at least K times (default: %(default)s)")
    p.add_argument("--validation-fraction", type=float, default=_DEFAULTS.validation_fraction,
                   help="share of lines (by a hash of each line's id) held out for validation (default: %(default)s)")
    p.add_argument("--test-fraction", type=float, default=_DEFAULTS.test_fraction)
    p.add_argument("--validation-input", action="append", default=[], metavar="INPUT",
                   help="an input whose every line is validation data (repeatable; e.g. a benchmark's own "
                        "valid file); the hashed fractions apply to the other inputs")
    p.add_argument("--test-input", action="append", default=[], metavar="INPUT",
                   help="an input whose every line is test data (repeatable)")
    p.add_argument("--shard-size-mb", type=int, default=_DEFAULTS.shard_size_mb,
                   help="Parquet file size target in MB: a new file starts once one reaches it (default: %(default)s)")
    p.add_argument("--quarantine-bad-files", action="store_true",
                   help="skip shards that cannot be read and list them in the manifest instead of failing")
    run = p.add_argument_group("execution (does not change the output)")
    run.add_argument("--address", metavar="RAY_ADDRESS",
                     help="Ray cluster to use (default: the job's cluster, else a local Ray started now)")
    run.add_argument("--num-workers", type=int, help="tokenizer workers (default: one per CPU)")
    run.add_argument("--cpus-per-worker", type=float, default=1.0)
    run.add_argument("--lines-per-block", type=int, default=RunOptions.lines_per_block)


def run(args: argparse.Namespace) -> int:
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
        config = PreprocessConfig(
            assigned_splits=assigned,
            tokenizer=args.tokenizer, language=args.language, input_format=args.input_format,
            max_sentence_tokens=args.max_sentence_tokens, max_vocab=args.max_vocab, min_count=args.min_count,
            validation_fraction=args.validation_fraction, test_fraction=args.test_fraction,
            shard_size_mb=args.shard_size_mb, quarantine_bad_files=args.quarantine_bad_files)
        if args.lines_per_block < 1 or (args.num_workers is not None and args.num_workers < 1):
            raise ValueError("--lines-per-block and --num-workers must be >= 1")
        options = RunOptions(num_workers=args.num_workers, cpus_per_worker=args.cpus_per_worker,
                             lines_per_block=args.lines_per_block, address=args.address)
    except ValueError as exc:
        print(f"elmo preprocess: error: {exc}", file=sys.stderr)
        return 2
    try:
        run_preprocess([*args.inputs, *args.validation_input, *args.test_input], args.output, config, options,
                       vocab_path=args.vocab)
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

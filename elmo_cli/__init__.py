"""The ``elmo`` command, the product's one entry point, above the three packages it fronts
(`elmo_core`, `preprocessing`, `workflows`; none of them imports this one). A subcommand's module
is imported only when that subcommand runs (``elmo embed`` never loads Ray or MLflow)."""

from __future__ import annotations

import importlib
import os
import sys

# The LSTM runs many small parallel regions per time step; letting OpenMP threads spin between
# them (instead of sleeping) measured 10-20% faster embedding on 2 cores. Must be set before
# torch loads; a value from the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000000")

# subcommand -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "embed": ("elmo_core.embed_command", "embed a file of tokenized sentences into HDF5 (AllenNLP layout)"),
    "preprocess": ("workflows.registry.preprocess_command", "corpus shards -> vocabulary + Parquet of word ids and tokens (Ray Data)"),
    "pretrain": ("workflows.training.pretrain", "pretrain a biLM on Ray Train; track and register it in MLflow"),
    "adapt": ("workflows.training.adapt", "continue LM training on a new domain from a registered/imported model"),
    "register": ("workflows.registry.register", "register a finished training run's model and apply the champion gate"),
    "embed-corpus": ("workflows.embedding.embed_corpus", "embed corpora with a registered model on Ray Data (Parquet or HDF5)"),
    "embed-new": ("workflows.embedding.embed_new", "embed new files of a source exactly once (cron / --every)"),
    "demo": ("workflows.demo.demo", "the whole product on real text on this machine (what scripts/run.sh runs)"),
}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from elmo_core.cli_fields import HelpFormatter

    parser = argparse.ArgumentParser(prog="elmo", description="Train, adapt and use ELMo embeddings.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if name == chosen:  # only the chosen command's module is imported
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


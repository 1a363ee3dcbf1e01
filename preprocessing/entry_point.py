"""The ``main(argv)`` of a command module, for ``python -m ...`` (what ``ray job submit`` runs):
the parser `elmo COMMAND` builds from the module's ``add_arguments``, then its ``run``."""

from __future__ import annotations

import argparse
from typing import Callable

from elmo_core.cli_fields import HelpFormatter


def entry_point(prog: str, doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int], **parser_options) -> Callable[[list[str] | None], int]:
    """``main(argv=None) -> exit status``; ``doc``'s first paragraph is the parser's description,
    every flag's default is shown on its ``--help`` line."""

    def main(argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0],
                                         **{"formatter_class": HelpFormatter, **parser_options})
        add_arguments(parser)
        return run(parser.parse_args(argv))

    main.__module__ = run.__module__  # the command module's own `main`
    return main

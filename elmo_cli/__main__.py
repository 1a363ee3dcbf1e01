"""``python -m elmo_cli`` = the ``elmo`` command."""

import sys

from elmo_cli import main

sys.exit(main())

"""``python -m workflows.demo``: what `scripts/run.sh` runs (= `elmo demo`)."""

import sys

from workflows.demo.demo import main

if __name__ == "__main__":
    sys.exit(main())

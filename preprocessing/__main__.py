"""``python -m preprocessing``: `elmo preprocess` as a ``ray job submit`` entrypoint.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m preprocessing s3://corpus/shards/ --output s3://data/elmo-v1
"""

import sys

from preprocessing.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""Table layouts of the preprocessing stage, defined once.

* **staged sentences** (internal, under the output's ``_staging/``): pass 1 (read + tokenize)
  writes the sentence rows of each block without word ids (the vocabulary is not known yet),
  plus the line's split; pass 2 adds word ids and writes the dataset.
* **statistics** (internal): what pass 1 returns to the driver instead of the text: per-block
  token counts by split, line counters by (source, split), and one marker per input file
  (its checksum, or its read error). Ray Data sums them by ``STATS_KEYS``.
* **sentences** (the product, ``train/``, ``validation/``, ``test/``): one row per sentence.
  Training reads ``word_ids`` and ``tokens`` straight into arrays; a sentence's (num_tokens, 50)
  character ids are computed from the tokens' UTF-8 bytes with array operations
  (`elmo_core.characters.utf8_to_ids`, no per-token Python), so they are not stored: they would
  be 100 bytes a token, and writing and reading them cost ten times the rest of the row.
"""

from __future__ import annotations

import pyarrow as pa

# --- sentences (the dataset) ----------------------------------------------------------------
SENTENCES = pa.schema(
    [
        ("sentence_id", pa.string()),  # "<shard key>:<line>:<index in line>", stable across runs
        ("source", pa.string()),  # input URI
        ("line", pa.int64()),  # 1-based line number in the source
        ("sentence_index", pa.int32()),  # sentences of one line (document pieces, cut pieces), 0-based
        ("num_tokens", pa.int32()),
        ("tokens", pa.list_(pa.string())),  # as tokenized (not truncated)
        ("word_ids", pa.list_(pa.int32())),  # vocabulary ids, <UNK> for out-of-vocabulary
    ]
)

# sentences before word ids: what tokenizing a block of lines gives (`stage.tokenize_lines`)
TOKENIZED = pa.schema([f for f in SENTENCES if f.name != "word_ids"])

# --- staged sentences -----------------------------------------------------------------------
STAGED = pa.schema(list(TOKENIZED) + [pa.field("split", pa.string())])

# --- statistics -----------------------------------------------------------------------------
KIND_TOKEN = "token"  # key = the token, count = its occurrences in `split`
KIND_LINES = "lines"  # line counters of one source and split
KIND_FILE_END = "file_end"  # key = sha256 of the raw (compressed) bytes; lines = lines read
KIND_FILE_ERROR = "file_error"  # key = error message; lines = lines read before it

STATS_KEYS = ("kind", "source", "split", "key")
STATS_SUMS = ("count", "lines", "empty_lines", "invalid_utf8_lines", "sentences", "tokens", "split_sentences")
STATS = pa.schema([(name, pa.string()) for name in STATS_KEYS] + [(name, pa.int64()) for name in STATS_SUMS])

MANIFEST_NAME = "manifest.json"
VOCAB_NAME = "vocab.txt"
COUNTS_NAME = "vocab_counts.tsv"  # token<TAB>count in the training split, vocabulary order
STAGING_DIR = "_staging"
VERSIONS_DIR = "versions"
MANIFEST_FORMAT = 2  # 2: character ids computed from tokens, not stored

"""Table layouts of the preprocessing stage, defined once.

Two tables:

* **staged lines** (internal, under the output's ``_staging/``): one row per input line, plus
  one marker row per input file (``kind`` = ``file_end`` or ``file_error``) that carries the
  file's checksum or error. Pass 1 (read + tokenize) writes it; the statistics, vocabulary and
  pass 2 read it.
* **sentences** (the product, ``train/``, ``validation/``, ``test/``): one row per sentence.
  Training reads ``word_ids`` and ``char_ids`` straight into arrays: ``char_ids`` is the
  sentence's (num_tokens, 50) character-id matrix flattened row-major (ids as in
  `elmo_core.characters`, +1 offset, no ``<S>``/``</S>`` rows: the trainer adds them).
"""

from __future__ import annotations

import pyarrow as pa

# --- staged lines ---------------------------------------------------------------------------
KIND_LINE = "line"
KIND_FILE_END = "file_end"  # detail = sha256 of the raw (compressed) bytes; line = lines read
KIND_FILE_ERROR = "file_error"  # detail = error message; line = lines read before it

STAGED_LINES = pa.schema(
    [
        ("kind", pa.string()),
        ("source", pa.string()),  # input URI
        ("line", pa.int64()),  # 1-based line number (file markers: lines read)
        ("doc_id", pa.string()),  # "<shard key>:<line>", hashed for the split
        ("split", pa.string()),
        ("is_empty", pa.int8()),  # blank after decoding/tokenizing
        ("invalid_utf8", pa.int8()),  # the line had bytes that are not UTF-8 (decoded with U+FFFD)
        ("sentences", pa.list_(pa.list_(pa.string()))),  # tokenized sentences of the line
        ("num_sentences", pa.int32()),
        ("num_tokens", pa.int64()),
        ("split_sentences", pa.int32()),  # sentences of this line cut at max_sentence_tokens
        ("detail", pa.string()),
    ]
)

# --- sentences (the dataset) ----------------------------------------------------------------
SENTENCES = pa.schema(
    [
        ("sentence_id", pa.string()),  # "<shard key>:<line>:<index in line>", stable across runs
        ("source", pa.string()),
        ("line", pa.int64()),
        ("sentence_index", pa.int32()),
        ("num_tokens", pa.int32()),
        ("tokens", pa.list_(pa.string())),  # as tokenized (not truncated)
        ("word_ids", pa.list_(pa.int32())),  # vocabulary ids, <UNK> for out-of-vocabulary
        ("char_ids", pa.list_(pa.uint16())),  # num_tokens * 50, row-major
    ]
)

MANIFEST_NAME = "manifest.json"
VOCAB_NAME = "vocab.txt"
COUNTS_NAME = "vocab_counts.tsv"  # token<TAB>count in the training split, vocabulary order
STAGING_DIR = "_staging"
VERSIONS_DIR = "versions"
MANIFEST_FORMAT = 1

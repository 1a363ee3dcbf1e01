"""A generated multi-shard corpus with hostile lines, and an independent single-process oracle.

Prose comes from the running interpreter (`pydoc_data.topics`); nothing is downloaded.
"""

from __future__ import annotations

import bz2
import gzip
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import zstandard

from preprocessing.config import SPLITS, PreprocessConfig
from preprocessing.ids import line_split_codes
from preprocessing.text import LineProcessor
from preprocessing.sample_text import pydoc_sentences


def doc_id(shard_key: str, line: int) -> str:
    """Identity of an input line: its shard's key and 1-based line number."""
    return f"{shard_key}:{line}"


def sentence_id(line_doc_id: str, index: int) -> str:
    """Identity of a sentence: its line's id and its index among that line's sentences."""
    return f"{line_doc_id}:{index}"


def split_of(shard_key: str, line: int, config: PreprocessConfig) -> str:
    """`line_split_codes` for one line."""
    return SPLITS[int(line_split_codes(shard_key, np.array([line]), config)[0])]


HOSTILE_LINES = [
    b"caf\xe9 au lait \xff\xfe is not UTF-8 .",  # invalid bytes (Latin-1 and junk)
    b"x" * 3000 + b" is a huge token .",  # far beyond the 48-byte character limit
    ("a" + "\u00e9" * 40 + " cut inside a two-byte character .").encode(),  # 48-byte cut mid-char
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440 , \u044d\u0442\u043e \u0442\u0435\u0441\u0442 .".encode(),
    "\u3053\u308c\u306f \u30c6\u30b9\u30c8 \u3067\u3059 \u3002".encode(),
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645".encode(),
    "\U0001F600 emoji \U0001F389 test".encode(),
    b"",  # blank
    b"   \t  ",  # whitespace only
    b"\x00\x01\x02",  # control characters
]


def long_line(n_tokens: int) -> bytes:
    return " ".join(f"w{i % 97}" for i in range(n_tokens)).encode()


def write_corpus(root: str, n_sentences: int = 400, crlf_shard: bool = True) -> list[str]:
    """Shards a.txt (with BOM, CRLF), b.txt.gz, sub/c.txt.bz2, sub/d.txt.zst; returns their paths."""
    os.makedirs(os.path.join(root, "sub"), exist_ok=True)
    prose = [" ".join(t).encode() for t in pydoc_sentences(limit=n_sentences)]
    quarter = len(prose) // 4
    parts = [prose[i * quarter:(i + 1) * quarter] for i in range(4)]
    parts[0] = parts[0][:5] + HOSTILE_LINES + parts[0][5:]
    parts[1] = parts[1] + [long_line(130), b""]
    parts[2] = [b"", b""] + parts[2]
    parts[3] = parts[3] + HOSTILE_LINES[:3] + [long_line(300)]
    a = b"\xef\xbb\xbf" + (b"\r\n" if crlf_shard else b"\n").join(parts[0]) + b"\r\n"
    paths = [os.path.join(root, p) for p in ("a.txt", "b.txt.gz", "sub/c.txt.bz2", "sub/d.txt.zst")]
    with open(paths[0], "wb") as f:
        f.write(a)
    with gzip.open(paths[1], "wb") as f:
        f.write(b"\n".join(parts[1]) + b"\n")
    with open(paths[2], "wb") as f:
        f.write(bz2.compress(b"\n".join(parts[2])))  # no trailing newline
    with open(paths[3], "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(b"\n".join(parts[3]) + b"\n"))
    return paths


def raw_lines(path: str) -> list[bytes]:
    """Independent reader: whole-file decompression and byte splitting."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.endswith(".bz2"):
        data = bz2.decompress(data)
    elif path.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


@dataclass
class Oracle:
    lines_in: int = 0
    empty_lines: int = 0
    invalid_utf8_lines: int = 0
    split_sentences: int = 0
    sentences: dict = field(default_factory=dict)  # sentence_id -> tokens
    line_tokens: dict = field(default_factory=dict)  # doc_id -> all tokens of the line
    split: dict = field(default_factory=dict)  # doc_id -> split
    counts: dict = field(default_factory=lambda: {"train": Counter(), "validation": Counter(), "test": Counter()})


def oracle(root: str, paths: list[str], config: PreprocessConfig) -> Oracle:
    """Single-process ground truth for the corpus under ``root``."""
    process = LineProcessor(config)
    result = Oracle()
    for path in paths:
        key = os.path.relpath(path, root).replace(os.sep, "/")
        for number, raw in enumerate(raw_lines(path), start=1):
            result.lines_in += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "replace")
                result.invalid_utf8_lines += 1
            if number == 1:
                text = text.removeprefix("\ufeff")
            sentences, cut = process(text)
            result.split_sentences += cut
            if not sentences:
                result.empty_lines += 1
                continue
            doc = doc_id(key, number)
            result.split[doc] = split_of(key, number, config)
            result.line_tokens[doc] = [t for s in sentences for t in s]
            for k, sentence in enumerate(sentences):
                result.sentences[sentence_id(doc, k)] = sentence
                result.counts[result.split[doc]].update(sentence)
    return result

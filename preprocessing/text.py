"""Lines of text -> tokenized sentences: decoding, tokenizers, sentence splitting, cutting."""

from __future__ import annotations

import re
from typing import Callable

from elmo_core.tokenization import Tokenization

from .config import PreprocessConfig

Tokenizer = Callable[[str], str]  # text -> its tokens joined by single spaces ("" if none)


def decode_line(raw: bytes) -> tuple[str, bool]:
    """UTF-8 with U+FFFD for invalid bytes; returns (text, had_invalid_bytes)."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def make_tokenizer(config: PreprocessConfig) -> Tokenizer:
    """The tokenizer of ``config`` (`elmo_core.tokenization`: the same code the embedding jobs and
    the registered pyfunc tokenize with), returning the tokens as one string joined by single
    spaces: the stager turns a block's sentences into an Arrow list array by splitting on " " in
    C++, with no Python object per token."""
    return Tokenization(config.tokenizer, config.language).joined_tokenizer()


# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace and
# an opening quote/bracket or an upper-case letter or digit; or right after CJK full stops.
_BOUNDARY = re.compile(
    r"""(?<=[.!?])["'\u201d\u2019)\]]*\s+(?=["'\u201c\u2018(\[]?[A-Z0-9\u00C0-\u00DE\u0391-\u03A9\u0410-\u042F])"""
    r"""|(?<=[\u3002\uff01\uff1f])\s*"""
)
# Common English abbreviations that end in a period but rarely end a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e inc ltd co corp no fig eq vol pp al jan feb mar apr "
    "jun jul aug sep sept oct nov dec u.s".split()
)


def split_document(text: str) -> list[str]:
    """Rule-based sentence splitter for one-document-per-line input (fast, conservative:
    it only splits where a sentence plainly ends, and never after a known abbreviation)."""
    pieces, start = [], 0
    for match in _BOUNDARY.finditer(text):
        candidate = text[start:match.start()]
        last_word = candidate.rsplit(None, 1)[-1] if candidate.strip() else ""
        if last_word.rstrip(".").lower() in _ABBREVIATIONS or re.fullmatch(r"(?:[A-Za-z]\.)+", last_word):
            continue  # "Dr. Smith", "U.S. Army", initials
        pieces.append(candidate)
        start = match.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def cut(joined: str, max_tokens: int) -> list[str]:
    """Consecutive pieces of at most ``max_tokens`` tokens of a space-joined sentence (overlong
    sentences are never dropped)."""
    tokens = joined.split(" ")
    return [" ".join(tokens[i:i + max_tokens]) for i in range(0, len(tokens), max_tokens)]


class LineProcessor:
    """One decoded line -> its sentences (each its tokens joined by single spaces), and how many
    were cut."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self.tokenize = make_tokenizer(config)

    def joined(self, text: str) -> tuple[list[str], int]:
        texts = split_document(text) if self.config.input_format == "document" else [text]
        sentences: list[str] = []
        cut_count = 0
        limit = self.config.max_sentence_tokens
        for piece in texts:
            tokens = self.tokenize(piece)
            if not tokens:
                continue
            if tokens.count(" ") >= limit:  # more than `limit` tokens
                cut_count += 1
                sentences.extend(cut(tokens, limit))
            else:
                sentences.append(tokens)
        return sentences, cut_count

    def __call__(self, text: str) -> tuple[list[list[str]], int]:
        """The same as `joined`, each sentence as its list of tokens."""
        sentences, cut_count = self.joined(text)
        return [s.split(" ") for s in sentences], cut_count

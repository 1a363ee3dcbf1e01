"""Lines of text -> tokenized sentences: decoding, tokenizers, sentence splitting, cutting."""

from __future__ import annotations

import re
from typing import Callable

from .config import PreprocessConfig

Tokenizer = Callable[[str], list[str]]


def decode_line(raw: bytes) -> tuple[str, bool]:
    """UTF-8 with U+FFFD for invalid bytes; returns (text, had_invalid_bytes)."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def make_tokenizer(config: PreprocessConfig) -> Tokenizer:
    """``moses``: sacremoses' Moses tokenizer (no XML escaping, so ``&`` stays ``&``);
    ``whitespace``: split on Unicode whitespace (pre-tokenized corpora such as 1B Word)."""
    if config.tokenizer == "whitespace":
        return str.split
    moses = _moses_tokenizer(config.language)

    def tokenize(text: str) -> list[str]:
        # Moses keeps no empty tokens, but its regexes treat some Unicode spaces as letters:
        # split its output again on whitespace so no token ever contains one.
        return " ".join(moses.tokenize(text, escape=False)).split()

    return tokenize


def _moses_tokenizer(language: str):
    """sacremoses' MosesTokenizer with its two character-class tests answered from sets built
    once: sacremoses 0.2 rebuilds a set of every Unicode letter (thousands of characters) on
    each call, which was ~30% of tokenizing English prose here. Same answers (tests compare the
    output with the unmodified class)."""
    from sacremoses import MosesTokenizer

    class Tokenizer(MosesTokenizer):
        def __init__(self, lang: str) -> None:
            super().__init__(lang=lang)
            self._lower = frozenset(self.IsLower)
            self._alpha = frozenset(self.IsAlpha)

        def islower(self, text: str) -> bool:
            return self._lower.issuperset(text)

        def isanyalpha(self, text: str) -> bool:
            return not self._alpha.isdisjoint(text)

    return Tokenizer(language)


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


def cut(tokens: list[str], max_tokens: int) -> list[list[str]]:
    """Consecutive pieces of at most ``max_tokens`` tokens (overlong sentences are never dropped)."""
    return [tokens[i:i + max_tokens] for i in range(0, len(tokens), max_tokens)]


class LineProcessor:
    """One decoded line -> its sentences (each a token list), and how many were cut."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self.tokenize = make_tokenizer(config)

    def __call__(self, text: str) -> tuple[list[list[str]], int]:
        texts = split_document(text) if self.config.input_format == "document" else [text]
        sentences: list[list[str]] = []
        cut_count = 0
        for piece in texts:
            tokens = self.tokenize(piece)
            if not tokens:
                continue
            if len(tokens) > self.config.max_sentence_tokens:
                cut_count += 1
                sentences.extend(cut(tokens, self.config.max_sentence_tokens))
            else:
                sentences.append(tokens)
        return sentences, cut_count

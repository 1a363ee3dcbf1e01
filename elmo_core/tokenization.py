"""How a model's text is split into tokens, recorded with the model so that every consumer splits
raw text the way its training text was split.

A model folder (`elmo_core.weights`) may hold ``tokenization.json``::

    {"tokenizer": "moses", "language": "en"}

written by `elmo pretrain` / `elmo adapt` from their training data's preprocessing settings.
The registered pyfunc (and so ``mlflow models serve``), ``elmo embed-corpus`` and ``elmo
embed-new`` read it and tokenize raw text the same way, unless told otherwise. A model that
records nothing (made before the record existed, or converted from bilm-tf files) is read with
`FALLBACK`, `elmo preprocess`'s default, and a warning that names the override.

Tokenizers: ``moses`` (sacremoses' Moses tokenizer with ``language``'s rules, no XML escaping, so
``&`` stays ``&``) and ``whitespace`` (split on Unicode whitespace: pre-tokenized text).
sacremoses is imported only when a Moses tokenizer is built.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

TOKENIZERS = ("moses", "whitespace")
TOKENIZATION_NAME = "tokenization.json"
# What a setting names when it means "as the model records" (consumers' default)
FROM_MODEL = "model"

JoinedTokenizer = Callable[[str], str]  # text -> its tokens joined by single spaces ("" if none)


@dataclass(frozen=True)
class Tokenization:
    """A tokenizer and its language rules (``language`` matters to ``moses`` only)."""

    tokenizer: str = "moses"
    language: str = "en"

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be {' or '.join(TOKENIZERS)}, not {self.tokenizer!r}")
        if not isinstance(self.language, str) or not self.language.strip() or self.language == FROM_MODEL:
            raise ValueError(f"language must be a language code such as 'en', not {self.language!r}")

    def describe(self) -> str:
        return "whitespace" if self.tokenizer == "whitespace" else f"moses ({self.language})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenization":
        return cls(tokenizer=d.get("tokenizer", "moses"), language=d.get("language", "en"))

    def with_overrides(self, tokenizer: str | None = None, language: str | None = None) -> "Tokenization":
        """This tokenization with the settings given (None, "" or ``"model"``: keep this one's)."""
        keep = (None, "", FROM_MODEL)
        return Tokenization(self.tokenizer if tokenizer in keep else tokenizer,
                            self.language if language in keep else language)

    def joined_tokenizer(self) -> JoinedTokenizer:
        """text -> its tokens joined by single spaces (the form preprocessing stages in Arrow)."""
        if self.tokenizer == "whitespace":
            return lambda text: " ".join(text.split())
        moses = _moses_tokenizer(self.language)

        def tokenize(text: str) -> str:
            # Moses keeps no empty tokens, but its regexes treat some Unicode spaces as letters:
            # split its output again on whitespace so no token ever contains one.
            return " ".join(moses.tokenize(text, escape=False, return_str=True).split())

        return tokenize

    def tokenizer_fn(self) -> Callable[[str], list[str]]:
        """text -> its tokens."""
        joined = self.joined_tokenizer()
        return lambda text: joined(text).split()


# Used where a model records nothing: `elmo preprocess`'s default, what models trained before the
# record existed were most likely trained on.
FALLBACK = Tokenization("moses", "en")


def write_tokenization(directory: str | os.PathLike, tokenization: Tokenization) -> Path:
    """Record ``tokenization`` in a model folder."""
    path = Path(directory) / TOKENIZATION_NAME
    path.write_text(json.dumps(tokenization.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_tokenization(directory: str | os.PathLike | None) -> Tokenization | None:
    """A model folder's recorded tokenization, or None where it records none."""
    if directory is None:
        return None
    path = Path(directory) / TOKENIZATION_NAME
    if not path.is_file():
        return None
    try:
        return Tokenization.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a tokenization record ({exc})") from None


def resolve_tokenization(recorded: Tokenization | None, tokenizer: str | None = None, language: str | None = None,
                         model_name: str = "the model", warn: Callable[[str], None] | None = None) -> Tokenization:
    """What a consumer tokenizes with: ``recorded`` (the model's) with the settings given on top
    (None, "" or ``"model"``: the model's). A model that records nothing gets `FALLBACK` and, unless
    both settings are given, a warning naming the override."""
    if recorded is None:
        if tokenizer in (None, "", FROM_MODEL) or (tokenizer == "moses" and language in (None, "", FROM_MODEL)):
            message = (f"{model_name} records no tokenization ({TOKENIZATION_NAME}): raw text is tokenized with "
                       f"{FALLBACK.describe()} (elmo preprocess's default); if its training text was tokenized "
                       "otherwise, say so (--tokenizer/--language, or the pyfunc's tokenizer/language params)")
            (warn or (lambda m: warnings.warn(m, stacklevel=3)))(message)
        recorded = FALLBACK
    return recorded.with_overrides(tokenizer, language)


def tokenization_of_preprocessing(config: dict) -> Tokenization:
    """The tokenization an `elmo preprocess` dataset was made with (its manifest's ``config``)."""
    return Tokenization.from_dict(config)


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

"""Word vocabulary in the bilm-tf file format: one token a line, ``<S>``, ``</S>``, ``<UNK>``
first, the rest by descending frequency (the order the log-uniform sampled softmax assumes)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:  # torch is imported only where tensors are made (preprocessing never needs it)
    import torch

from .characters import BOS_TOKEN, EOS_TOKEN

UNK_TOKEN = "<UNK>"
SPECIALS = (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)


class Vocabulary:
    """Token <-> id mapping; ids are line numbers of the vocab file."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        missing = [s for s in SPECIALS if s not in tokens]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        if len(set(tokens)) != len(tokens):
            seen, dup = set(), None
            for t in tokens:
                if t in seen:
                    dup = t
                    break
                seen.add(t)
            raise ValueError(f"vocabulary lists {dup!r} twice")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        self.bos, self.eos, self.unk = (self.index[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def id(self, token: str) -> int:
        return self.index.get(token, self.unk)

    def batch_ids(self, sentences: Sequence[Sequence[str]], add_boundaries: bool = True) -> "torch.Tensor":
        """(B, T) word ids, right-padded with -1 (matching `characters.batch_to_ids` with the same add_boundaries)."""
        import numpy as np
        import torch

        from .characters import wrap_padded

        rows = [np.array([self.id(t) for t in s], dtype=np.int64) for s in sentences]
        if add_boundaries:
            return torch.from_numpy(wrap_padded(rows, self.bos, self.eos, -1)[0])
        out = torch.full((len(rows), max((len(r) for r in rows), default=0)), -1, dtype=torch.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.from_numpy(r)
        return out

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], max_size: int | None = None, min_count: int = 1) -> "Vocabulary":
        """Specials first, then words by descending count, ties by code point order (deterministic).

        Words with fewer than ``min_count`` occurrences are dropped; ``max_size`` counts the
        three specials. Tokens equal to a special are not counted as words.
        """
        words = sorted(((t, c) for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                       key=lambda tc: (-tc[1], tc[0]))
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *(t for t, _ in words)])

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        """Parse a vocabulary file's text (one token a line; a trailing count column is ignored)."""
        tokens = [line.split()[0] if line.split() else line for line in text.splitlines() if line.strip()]
        return cls(tokens)

    def to_text(self) -> str:
        return "".join(t + "\n" for t in self.tokens)

    def digest(self) -> str:
        """sha256 of the file contents (identifies the vocabulary in manifests and registries)."""
        return hashlib.sha256(self.to_text().encode("utf-8")).hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read vocabulary {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ValueError(f"vocabulary {path} is not UTF-8: {exc}") from exc
        return cls.from_text(text)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_text(), encoding="utf-8")

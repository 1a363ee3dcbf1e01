"""Token -> character ids: the one implementation used everywhere (embedding, training, preprocessing).

Ids follow bilm-tf/AllenNLP exactly: a token's UTF-8 bytes truncated to 48, wrapped in
begin-of-word (258) and end-of-word (259), padded with 260 up to 50 positions; the sentence
markers ``<S>``/``</S>`` are the single pseudo-byte 256/257. Every id is then shifted by +1
(AllenNLP's convention) so that an all-zero row marks an absent (padded) token, giving a
262-row character embedding table whose row 0 is zero.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # torch is imported only where tensors are made (preprocessing never needs it)
    import torch

import numpy as np

MAX_CHARS_PER_TOKEN = 50
MAX_WORD_BYTES = MAX_CHARS_PER_TOKEN - 2  # room for begin/end-of-word markers

# Raw bilm-tf ids (before the +1 offset).
BOS_CHAR = 256  # <S>
EOS_CHAR = 257  # </S>
BOW_CHAR = 258  # begin of word
EOW_CHAR = 259  # end of word
PAD_CHAR = 260  # padding inside a token

OFFSET = 1  # AllenNLP's shift: id 0 means "no token here"

BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"


def _raw_ids(token: str) -> np.ndarray:
    """Raw (un-shifted) bilm-tf ids of one token: (50,) int64."""
    ids = np.full(MAX_CHARS_PER_TOKEN, PAD_CHAR, dtype=np.int64)
    if token == BOS_TOKEN:
        body = [BOS_CHAR]
    elif token == EOS_TOKEN:
        body = [EOS_CHAR]
    else:
        body = list(token.encode("utf-8", "ignore")[:MAX_WORD_BYTES])
    ids[0] = BOW_CHAR
    ids[1:len(body) + 1] = body
    ids[len(body) + 1] = EOW_CHAR
    return ids


@lru_cache(maxsize=1 << 18)
def _cached_ids(token: str) -> np.ndarray:
    arr = _raw_ids(token) + OFFSET
    arr.setflags(write=False)
    return arr


def token_to_ids(token: str) -> np.ndarray:
    """Character ids of one token with the +1 offset: (50,) int64, read-only."""
    if not isinstance(token, str):
        raise TypeError(f"tokens must be str, got {type(token).__name__}")
    return _cached_ids(token)


def token_length(token: str) -> int:
    """Number of non-padding character positions of a token (begin + bytes + end)."""
    if token in (BOS_TOKEN, EOS_TOKEN):
        return 3
    return min(len(token.encode("utf-8", "ignore")), MAX_WORD_BYTES) + 2


def ids_to_token(ids: Sequence[int] | np.ndarray) -> str:
    """Inverse of `token_to_ids` (for a truncated token: its first 48 bytes, decoded leniently)."""
    raw = [int(i) - OFFSET for i in ids]
    if not raw or raw[0] != BOW_CHAR:
        raise ValueError("not a character-id row: it does not start with begin-of-word")
    end = raw.index(EOW_CHAR)
    body = raw[1:end]
    if body == [BOS_CHAR]:
        return BOS_TOKEN
    if body == [EOS_CHAR]:
        return EOS_TOKEN
    return bytes(body).decode("utf-8", "replace")


def wrap_padded(rows: Sequence[np.ndarray], bos, eos, pad, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """The one place sentences get their boundaries: ``rows[i]`` (n_i, *F) -> (B, T, *F) laid out
    as ``bos, row_i, eos`` then ``pad`` up to T = max n_i + 2, and the lengths n_i + 2 (B,).

    ``bos``/``eos``/``pad`` are one position's value: a token's char ids (50,), a word id, a
    token-type index. Used for char ids (`batch_to_ids`), word ids and type indices (embedding,
    training batches)."""
    lengths = np.array([len(r) + 2 for r in rows], dtype=np.int64)
    feature = np.shape(bos)
    out = np.empty((len(rows), int(lengths.max(initial=2)), *feature), dtype=dtype)
    out[:] = pad
    for i, row in enumerate(rows):
        out[i, 0] = bos
        out[i, 1:lengths[i] - 1] = row
        out[i, lengths[i] - 1] = eos
    return out, lengths


def sentence_to_ids(tokens: Sequence[str], add_boundaries: bool = True) -> np.ndarray:
    """One sentence -> (n + 2, 50) ids (with ``<S>``, ``</S>``) or (n, 50) without."""
    body = (np.stack([token_to_ids(w) for w in tokens]) if len(tokens)
            else np.zeros((0, MAX_CHARS_PER_TOKEN), dtype=np.int64))
    if not add_boundaries:
        return body
    return wrap_padded([body], token_to_ids(BOS_TOKEN), token_to_ids(EOS_TOKEN), 0)[0][0]


def batch_to_ids(sentences: Sequence[Sequence[str]], add_boundaries: bool = False) -> "torch.Tensor":
    """Sentences -> (B, T, 50) int64 ids, right-padded with all-zero rows: AllenNLP's
    ``batch_to_ids`` (T = longest sentence), the input of `elmo_core.elmo.Elmo`, which adds the
    sentence boundaries itself. ``add_boundaries=True``: each row wrapped in ``<S>`` ... ``</S>``
    (T = longest + 2), the input of `elmo_core.bilm.BiLM`."""
    import torch

    bodies = [sentence_to_ids(s, add_boundaries=False) for s in sentences]
    if add_boundaries:
        out, _ = wrap_padded(bodies, token_to_ids(BOS_TOKEN), token_to_ids(EOS_TOKEN), 0)
        return torch.from_numpy(out)
    out = np.zeros((len(sentences), max((len(b) for b in bodies), default=0), MAX_CHARS_PER_TOKEN), np.int64)
    for i, body in enumerate(bodies):
        out[i, :len(body)] = body
    return torch.from_numpy(out)


def add_sentence_boundaries(char_ids: "torch.Tensor") -> "torch.Tensor":
    """(B, T, 50) ids without ``<S>``/``</S>`` -> (B, T + 2, 50) with them (per row's length);
    the tensor form of `wrap_padded`, for callers that already hold padded ids (`Elmo`)."""
    import torch

    B, T, C = char_ids.shape
    lengths = (char_ids[:, :, 0] != 0).sum(1)
    out = char_ids.new_zeros(B, T + 2, C)
    out[:, 1:-1] = char_ids
    out[:, 0] = torch.from_numpy(token_to_ids(BOS_TOKEN).copy()).to(char_ids.device)
    out[torch.arange(B), lengths + 1] = torch.from_numpy(token_to_ids(EOS_TOKEN).copy()).to(char_ids.device)
    return out


_BOS_BYTES = np.frombuffer(BOS_TOKEN.encode(), dtype=np.uint8)
_EOS_BYTES = np.frombuffer(EOS_TOKEN.encode(), dtype=np.uint8)


def _is_token(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, token: np.ndarray) -> np.ndarray:
    """Mask of the tokens whose bytes equal ``token``."""
    mask = lengths == len(token)
    rows = np.flatnonzero(mask)
    if len(rows):
        found = data[starts[rows, None] + np.arange(len(token))]
        mask[rows] = (found == token).all(axis=1)
    return mask


def utf8_to_ids(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Many tokens at once, as UTF-8 bytes (Arrow's string layout) -> (n, 50) uint16 ids.

    ``data`` holds the tokens' bytes back to back and ``offsets`` (n + 1,) where each token
    starts and ends. Row ``i`` equals ``token_to_ids(token_i)`` (tested), computed with array
    operations only, so per-token cost does not involve Python.
    """
    data = np.asarray(data, dtype=np.uint8)
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    starts = offsets[:-1]
    raw_lengths = np.diff(offsets)
    lengths = np.minimum(raw_lengths, MAX_WORD_BYTES)
    out = np.full((n, MAX_CHARS_PER_TOKEN), PAD_CHAR + OFFSET, dtype=np.uint16)
    out[:, 0] = BOW_CHAR + OFFSET
    total = int(lengths.sum())
    row = np.repeat(np.arange(n), lengths)
    position = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[row, position + 1] = data[starts[row] + position].astype(np.uint16) + OFFSET
    out[np.arange(n), lengths + 1] = EOW_CHAR + OFFSET
    for token, marker in ((_BOS_BYTES, BOS_CHAR), (_EOS_BYTES, EOS_CHAR)):
        special = _is_token(data, starts, raw_lengths, token)
        if special.any():
            out[special, 1:] = PAD_CHAR + OFFSET
            out[special, 1] = marker + OFFSET
            out[special, 2] = EOW_CHAR + OFFSET
    return out

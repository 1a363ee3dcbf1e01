import numpy as np
import pytest
import torch

from elmo_core.characters import (MAX_CHARS_PER_TOKEN, batch_to_ids, ids_to_token, sentence_to_ids,
                                  token_length, token_to_ids, utf8_to_ids)


def test_the_matches_published_ids():
    ids = token_to_ids("The")
    assert ids.shape == (50,)
    assert list(ids[:8]) == [259, 85, 105, 102, 260, 261, 261, 261]
    assert (ids[5:] == 261).all()


def test_sentence_markers_are_single_pseudo_bytes():
    assert list(token_to_ids("<S>")[:4]) == [259, 257, 260, 261]
    assert list(token_to_ids("</S>")[:4]) == [259, 258, 260, 261]


def test_utf8_bytes_and_truncation_to_48_bytes():
    word = "日本" * 10  # 60 bytes
    ids = token_to_ids(word)
    assert ids[0] == 259 and ids[49] == 260  # begin, 48 bytes, end: exactly 50 positions
    assert list(ids[1:49] - 1) == list(word.encode("utf-8")[:48])
    assert token_length(word) == 50
    assert ids_to_token(ids) == word.encode("utf-8")[:48].decode("utf-8", "replace")
    assert token_length("abc") == 5


@pytest.mark.parametrize("token", ["a", "naïve", "Москва", "<S>", "</S>", "x" * 48, "🙂"])
def test_ids_decode_back(token):
    assert ids_to_token(token_to_ids(token)) == token


def test_batch_to_ids_pads_with_zero_rows_and_adds_boundaries():
    batch = batch_to_ids([["a", "b", "c"], ["d"]], add_boundaries=True)
    assert batch.shape == (2, 5, MAX_CHARS_PER_TOKEN) and batch.dtype == torch.int64
    assert torch.equal(batch[1, 0], torch.tensor(token_to_ids("<S>")))
    assert torch.equal(batch[1, 2], torch.tensor(token_to_ids("</S>")))
    assert (batch[1, 3:] == 0).all()
    no_bounds = batch_to_ids([["a", "b"]], add_boundaries=False)
    assert np.array_equal(no_bounds[0].numpy(), sentence_to_ids(["a", "b"], add_boundaries=False))


def test_ids_are_read_only_cache_entries():
    with pytest.raises(ValueError):
        token_to_ids("cache")[0] = 1
    with pytest.raises(TypeError):
        token_to_ids(3)


def test_vectorized_ids_equal_token_by_token():
    tokens = ["", "a", "The", "<S>", "</S>", "<S", "<S>x", "naïve", "日本" * 10, "x" * 47, "x" * 48, "x" * 49,
              "é" * 24 + "x", "x" + "é" * 24, "🙂" * 13, "\ufffd", "a" * 3000]
    encoded = [t.encode("utf-8") for t in tokens]
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    offsets = np.cumsum([0] + [len(b) for b in encoded])
    ids = utf8_to_ids(data, offsets)
    assert ids.dtype == np.uint16 and ids.shape == (len(tokens), MAX_CHARS_PER_TOKEN)
    assert np.array_equal(ids, np.stack([token_to_ids(t) for t in tokens]))
    assert utf8_to_ids(np.zeros(0, np.uint8), np.zeros(1, np.int64)).shape == (0, MAX_CHARS_PER_TOKEN)

"""The preprocessing job's parts without Ray: tokenizing, cutting long sentences, character ids,
the split hash, reading shards, writing split files, assigned splits and the command's argument
errors."""

from __future__ import annotations

import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing.config import SPLITS, PreprocessConfig
from preprocessing.encode import char_ids_of
from tests.helpers.commands import run_preprocess
from tests.helpers.corpus import HOSTILE_LINES, long_line
from tests.helpers.parquet_files import row_group_and_footer


def test_bad_arguments_and_missing_input_exit_2(tmp_path):
    missing = run_preprocess(str(tmp_path / "nope"), "--output", str(tmp_path / "o"))
    assert missing.returncode == 2 and "nope: no such file or directory" in missing.stderr
    both = run_preprocess(str(tmp_path), "--output", str(tmp_path / "o"), "--vocab", "v.txt", "--max-vocab", "10")
    assert both.returncode == 2 and "--vocab cannot be combined" in both.stderr
    with pytest.raises(ValueError, match="fractions"):
        PreprocessConfig(validation_fraction=0.6, test_fraction=0.5)


def test_overlong_sentences_are_cut_not_dropped():
    from preprocessing.text import LineProcessor, split_document

    process = LineProcessor(PreprocessConfig(tokenizer="whitespace", max_sentence_tokens=50))
    sentences, cut = process(long_line(130).decode())
    assert cut == 1 and [len(s) for s in sentences] == [50, 50, 30]
    assert [t for s in sentences for t in s] == long_line(130).decode().split()
    assert split_document("Dr. Smith went home. He slept! Then e.g. tea? Yes.") == [
        "Dr. Smith went home.", "He slept!", "Then e.g. tea?", "Yes."]
    assert split_document("\u4eca\u65e5\u306f\u3002\u660e\u65e5\u3082\u3002") == ["\u4eca\u65e5\u306f\u3002", "\u660e\u65e5\u3082\u3002"]


def test_char_ids_of_arrow_arrays_equal_token_by_token():
    from elmo_core.characters import token_to_ids

    tokens = pa.array(["x", "Москва", "<S>", "", "ab" * 40, "end"], pa.string())
    for array in (tokens, tokens.slice(2, 3), pa.chunked_array([tokens.slice(0, 2), tokens.slice(4)])):
        expected = [token_to_ids(t) for t in (array.to_pylist())]
        assert (char_ids_of(array) == expected).all()


def test_moses_tokenizer_equals_unmodified_sacremoses():
    """Our Moses tokenizer answers sacremoses' character-class tests from cached sets; its
    output must equal the unmodified class's, re-split on whitespace, token for token."""
    import pydoc_data.topics
    from sacremoses import MosesTokenizer

    from preprocessing.text import make_tokenizer

    prose = [line for text in pydoc_data.topics.topics.values() for line in text.splitlines() if line.strip()]
    crafted = ["Mr. Smith met Dr. Who at No. 5 , e.g. at 10 a.m. today .", "The U.S. Army . Ph.D. thesis . A. b. c.",
               "Straße Nr. 3 ist schön . É. Zola et al. wrote it .", "Ends with etc. and then lower . Then Upper .",
               "\u00e9t\u00e9. \u00c9t\u00e9. \u0394. \u03b4. x.y. 3.14 . ...and more ... \u2026",
               "tab\tand\u00a0nbsp\u2009thin"]
    lines = prose[:4000] + crafted + [raw.decode("utf-8", "replace") for raw in HOSTILE_LINES]
    plain = MosesTokenizer(lang="en")
    ours = make_tokenizer(PreprocessConfig(tokenizer="moses"))
    for line in lines:
        expected = [piece for token in plain.tokenize(line, escape=False) for piece in token.split()]
        assert ours(line).split() == expected and " ".join(expected) == ours(line), line


def test_split_hash_is_uniform_per_line_and_the_same_in_mixed_blocks():
    import numpy as np

    from tests.helpers.corpus import split_of
    from preprocessing.ids import line_split_codes
    from preprocessing.tokenize_tasks import raw_block
    from preprocessing.first_pass import BlockStager

    config = PreprocessConfig(tokenizer="whitespace", validation_fraction=0.1, test_fraction=0.05)
    codes = line_split_codes("shard-a.txt", np.arange(1, 200_001), config)
    shares = np.bincount(codes, minlength=3) / len(codes)
    assert abs(shares[1] - 0.1) < 0.004 and abs(shares[2] - 0.05) < 0.003  # 200k lines: > 4 sigma
    other = line_split_codes("shard-b.txt", np.arange(1, 200_001), config)
    assert 0.15 < np.mean(codes != other) < 0.35  # another shard: independent, not a shifted copy
    salted = line_split_codes("shard-a.txt", np.arange(1, 200_001), PreprocessConfig(
        tokenizer="whitespace", validation_fraction=0.1, test_fraction=0.05, split_salt="other"))
    assert 0.15 < np.mean(codes != salted) < 0.35
    assert [split_of("shard-a.txt", n, config) for n in (1, 2, 3, 99_999)] == \
        [SPLITS[c] for c in codes[[0, 1, 2, 99_998]]]

    # a batch holding lines of two shards (Ray Data may bundle blocks) splits each line as alone
    batch = pa.concat_tables([raw_block("/in/a", "a", 1, [b"x y"] * 300), raw_block("/in/b", "b", 7, [b"z"] * 300)])
    staged, _ = BlockStager(config)(batch)
    for source, key in (("/in/a", "a"), ("/in/b", "b")):
        table = staged[source]
        assert table.column("split").to_pylist() == [split_of(key, n, config) for n in table.column("line").to_pylist()]


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_shard_reader_delivers_every_line_whatever_the_chunking(tmp_path, monkeypatch, suffix):
    """Lines are split from whole chunks: a line across chunk boundaries, one longer than a chunk,
    CRLF and LF endings mixed, a carriage return inside a line, blank lines and a last line
    without a newline all come out as a line-by-line reader gives them."""
    import gzip
    import hashlib

    import zstandard

    from preprocessing import sources

    monkeypatch.setattr(sources, "READ_CHUNK", 64)
    lines = [b"first", b"", b"crlf line", b"x" * 300, b"inner \r carriage", b"\r", b"y" * 64, b"", b"no newline at end"]
    data = b"".join(line + (b"\r\n" if i % 3 == 2 else b"\n") for i, line in enumerate(lines[:-1])) + lines[-1]
    stored = {"": data, ".gz": gzip.compress(data), ".zst": zstandard.ZstdCompressor().compress(data)}[suffix]
    path = tmp_path / f"shard.txt{suffix}"
    path.write_bytes(stored)
    reader = sources.ShardReader(str(path))
    batches = list(reader.line_batches())
    expected = [line.removesuffix(b"\r") for line in data.split(b"\n")]  # the CR of a CRLF ending only
    assert len(batches) > 3 and [line for batch in batches for line in batch] == expected
    assert expected[4] == b"inner \r carriage" and expected[5] == b"\r"  # a CR line with a CRLF ending
    assert reader.lines_read == len(lines) and reader.sha256 == hashlib.sha256(stored).hexdigest()


def test_split_writer_starts_a_new_file_at_the_size_target(tmp_path):
    from preprocessing import schema
    from preprocessing.parquet_writer import SplitWriter
    from preprocessing.storage import Storage

    words = [f"w{i}" for i in range(5000)]
    rows = pa.table({"sentence_id": [f"k:{i}:0" for i in range(4000)], "source": ["s"] * 4000,
                     "line": list(range(4000)), "sentence_index": [0] * 4000, "num_tokens": [20] * 4000,
                     "tokens": [words[i:i + 20] for i in range(4000)],
                     "word_ids": [list(range(i, i + 20)) for i in range(4000)]}, schema=schema.SENTENCES)
    writer = SplitWriter(Storage(str(tmp_path)), "train/part", target_bytes=20_000)
    for start in range(0, 4000, 100):  # 40 staged pieces
        writer.add(rows.slice(start, 100))
    written = writer.close()
    names = [f"train/part-{k:05d}.parquet" for k in range(len(written))]
    assert len(written) >= 3 and [w["path"] for w in written] == names
    back = pa.concat_tables([pq.read_table(tmp_path / w["path"]) for w in written])
    assert back.equals(rows) and [w["rows"] for w in written] == [pq.ParquetFile(tmp_path / w["path"]).metadata.num_rows
                                                                 for w in written]
    for w in written:
        metadata = pq.ParquetFile(tmp_path / w["path"]).metadata
        assert w["bytes"] == os.path.getsize(tmp_path / w["path"])
        assert metadata.num_row_groups > 1 and w["bytes"] < 20_000 + row_group_and_footer(metadata)


def test_assigned_inputs_go_wholly_to_their_split_and_leave_other_hashes_alone(tmp_path):
    import numpy as np

    from preprocessing.cli import _assigned_splits
    from preprocessing.ids import line_split_codes

    for name in ("train.txt", "valid.txt", "test.txt"):
        (tmp_path / name).write_text("a b c\n")
    assigned = _assigned_splits([str(tmp_path / "valid.txt")], [str(tmp_path / "test.txt")])
    assert assigned == (("valid.txt", "validation"), ("test.txt", "test"))
    config = PreprocessConfig(assigned_splits=assigned, validation_fraction=0.3, test_fraction=0.3)
    lines = np.arange(1, 2001)
    assert set(line_split_codes("valid.txt", lines, config).tolist()) == {SPLITS.index("validation")}
    assert set(line_split_codes("test.txt", lines, config).tolist()) == {SPLITS.index("test")}
    plain = PreprocessConfig(validation_fraction=0.3, test_fraction=0.3)
    np.testing.assert_array_equal(line_split_codes("train.txt", lines, config), line_split_codes("train.txt", lines, plain))
    assert PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # datasets made before the field existed keep their version: no assignment, same hash
    old_style = {k: v for k, v in plain.to_dict().items() if k != "assigned_splits"}
    text = json.dumps(old_style, sort_keys=True, separators=(",", ":"))
    assert plain.config_hash() == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert config.config_hash() != plain.config_hash()
    with pytest.raises(ValueError, match="unknown split"):
        PreprocessConfig(assigned_splits=(("a.txt", "dev"),))
    with pytest.raises(ValueError, match="more than one split"):
        PreprocessConfig(assigned_splits=(("a.txt", "test"), ("a.txt", "validation")))

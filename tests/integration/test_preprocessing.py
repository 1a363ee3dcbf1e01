"""The preprocessing job end to end on a real local Ray: counts, decoding, vocabulary, splits,
versions, bad shards, crashes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.corpus import oracle, raw_lines, write_corpus
from elmo_core.characters import MAX_WORD_BYTES, ids_to_token
from elmo_core.vocabulary import Vocabulary
from preprocessing.config import SPLITS, PreprocessConfig, RunOptions
from preprocessing.dataset import Dataset, DatasetError
from preprocessing.encode import char_ids_of
from tests.helpers import REPO
from tests.helpers.commands import run_preprocess
from tests.helpers.parquet_files import row_group_and_footer

pytest.importorskip("ray")
CONFIG = PreprocessConfig(max_sentence_tokens=50, min_count=2, validation_fraction=0.1, test_fraction=0.1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    return root, write_corpus(root)


@pytest.fixture(scope="module")
def moses_run(cluster, corpus, tmp_path_factory):
    from preprocessing.driver import run_preprocess

    root, paths = corpus
    out = str(tmp_path_factory.mktemp("out") / "ds")
    manifest = run_preprocess([root], out, CONFIG, RunOptions(num_workers=2, lines_per_block=64), log=lambda m: None)
    return out, manifest, oracle(root, paths, CONFIG)


def read_split(out: str, split: str) -> list[dict]:
    rows = []
    for uri in Dataset.open(out).split_files(split):
        rows.extend(pq.read_table(uri).to_pylist())
    return rows


def test_counts_add_up_and_match_a_single_process_pass(moses_run, corpus):
    out, m, expected = moses_run
    root, paths = corpus
    written_lines = sum(len(raw_lines(p)) for p in paths)
    assert m["lines_in"] == written_lines == expected.lines_in
    assert m["lines_in"] == m["lines_out"] + m["empty_lines"] + m["quarantined_lines"]
    assert m["quarantined_lines"] == 0
    assert m["empty_lines"] == expected.empty_lines >= 5  # blanks, whitespace, a no-newline shard
    assert m["invalid_utf8_lines"] == expected.invalid_utf8_lines == 2
    assert m["split_sentences"] == expected.split_sentences >= 2  # the 130- and 300-token lines
    assert m["sentences_out"] == len(expected.sentences)
    assert m["tokens_out"] == sum(len(t) for t in expected.sentences.values())
    rows = {s: read_split(out, s) for s in SPLITS}
    assert sum(len(r) for r in rows.values()) == m["sentences_out"]
    for split in SPLITS:
        assert m["splits"][split]["sentences"] == len(rows[split]) > 0
    # every input file is listed with its size and the sha256 of its stored bytes
    by_key = {entry["key"]: entry for entry in m["inputs"]}
    assert sorted(by_key) == ["a.txt", "b.txt.gz", "sub/c.txt.bz2", "sub/d.txt.zst"]
    for path in paths:
        entry = by_key[os.path.relpath(path, root)]
        data = open(path, "rb").read()
        assert entry["status"] == "ok" and entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["lines"] == len(raw_lines(path))


def test_rows_decode_back_to_their_tokens(moses_run):
    out, m, expected = moses_run
    vocab = Dataset.open(out).vocabulary
    seen_ids = set()
    by_line: dict[str, list[str]] = {}
    for split in SPLITS:
        for row in read_split(out, split):
            tokens = row["tokens"]
            assert row["sentence_id"] not in seen_ids
            seen_ids.add(row["sentence_id"])
            assert tokens == expected.sentences[row["sentence_id"]]
            assert expected.split[row["sentence_id"].rsplit(":", 1)[0]] == split
            assert row["num_tokens"] == len(tokens) <= CONFIG.max_sentence_tokens
            assert row["word_ids"] == [vocab.id(t) for t in tokens]
            chars = char_ids_of(pa.array(tokens, pa.string()))
            assert chars.shape == (len(tokens), 50)
            for token, char_row in zip(tokens, chars):
                truncated = token.encode("utf-8")[:MAX_WORD_BYTES].decode("utf-8", "replace")
                assert ids_to_token(char_row) == truncated
            by_line.setdefault(f"{row['source']}#{row['line']}", []).append((row["sentence_index"], tokens))
    # a cut sentence's pieces are consecutive and lose nothing
    assert any(len(p) > 1 for p in by_line.values())
    for key, pieces in by_line.items():
        pieces.sort()
        assert [i for i, _ in pieces] == list(range(len(pieces)))
    huge = [t for s in expected.sentences.values() for t in s if len(t.encode()) > MAX_WORD_BYTES]
    assert any(len(t) == 3000 for t in huge)  # the huge token is kept whole in `tokens`


def test_vocabulary_equals_single_process_count(moses_run):
    out, m, expected = moses_run
    vocab = Dataset.open(out).vocabulary
    assert vocab == Vocabulary.from_counts(expected.counts["train"], CONFIG.max_vocab, CONFIG.min_count)
    assert vocab.tokens[:3] == ["<S>", "</S>", "<UNK>"]
    counts = [line.split("\t") for line in open(os.path.join(out, "vocab_counts.tsv"), encoding="utf-8").read().splitlines()]
    assert [t for t, _ in counts] == vocab.tokens
    assert all(int(c) == expected.counts["train"][t] for t, c in counts[3:])
    freqs = [int(c) for _, c in counts[3:]]
    assert freqs == sorted(freqs, reverse=True) and min(freqs) >= CONFIG.min_count
    assert m["vocab"]["digest"] == vocab.digest()
    total = sum(sum(c.values()) for c in expected.counts.values())
    oov = sum(n for c in expected.counts.values() for t, n in c.items() if t not in set(vocab.tokens))
    assert m["oov_tokens"] == oov and m["oov_rate"] == pytest.approx(oov / total)


def test_split_and_rows_stable_across_workers_and_blocks(cluster, corpus, tmp_path):
    from preprocessing.driver import run_preprocess

    root, _ = corpus
    config = PreprocessConfig(tokenizer="whitespace", max_sentence_tokens=50, min_count=1,
                              validation_fraction=0.2, test_fraction=0.2, max_vocab=300)
    results = []
    for name, options in (("a", RunOptions(num_workers=1, lines_per_block=7)),
                          ("b", RunOptions(num_workers=2, lines_per_block=1000))):
        out = str(tmp_path / name)
        run_preprocess([root], out, config, options, log=lambda m: None)
        rows = {s: sorted((r["sentence_id"], r["word_ids"], r["tokens"]) for r in read_split(out, s)) for s in SPLITS}
        results.append((rows, Dataset.open(out).vocabulary))
    assert results[0] == results[1]
    assert len(results[0][1]) == 300
    assert all(len(results[0][0][s]) > 10 for s in SPLITS)


def test_rerun_is_a_no_op_and_a_changed_config_a_new_version(cluster, corpus, tmp_path):
    from preprocessing.driver import run_preprocess

    root, _ = corpus
    out = str(tmp_path / "ds")
    config = PreprocessConfig(tokenizer="whitespace", min_count=1)
    first = run_preprocess([root], out, config, log=lambda m: None)
    stamp = os.stat(os.path.join(out, "manifest.json")).st_mtime_ns
    again = run_preprocess([root], out, config, log=lambda m: None)
    assert again == first and os.stat(os.path.join(out, "manifest.json")).st_mtime_ns == stamp
    changed = run_preprocess([root], out, PreprocessConfig(tokenizer="whitespace", min_count=2), log=lambda m: None)
    assert changed["version"] != first["version"] and changed["config_hash"] != first["config_hash"]
    assert Dataset.open(out).manifest["version"] == changed["version"]
    archived = os.path.join(out, "versions", first["version"][:16])
    assert json.load(open(os.path.join(archived, "manifest.json")))["version"] == first["version"]
    for split in SPLITS:  # the archived version is complete and readable
        for entry in first["splits"][split]["files"]:
            assert pq.read_metadata(os.path.join(archived, entry["path"])).num_rows == entry["rows"]
    assert not os.path.exists(os.path.join(out, "_staging"))


def test_corrupt_shard_fails_naming_it_or_is_quarantined(cluster, tmp_path):
    root = tmp_path / "corpus"
    paths = write_corpus(str(root), n_sentences=120)
    good = str(tmp_path / "good")
    args = ["--tokenizer", "whitespace", "--min-count", "1", "--address", cluster]
    assert run_preprocess(str(root), "--output", good, *args).returncode == 0
    before = open(os.path.join(good, "manifest.json")).read()
    # truncate the gzip shard in the middle of its compressed stream
    data = open(paths[1], "rb").read()
    open(paths[1], "wb").write(data[: len(data) // 2])
    failed = run_preprocess(str(root), "--output", good, *args)
    assert failed.returncode == 2
    assert paths[1] in failed.stderr.splitlines()[-1] and "quarantine" in failed.stderr
    assert open(os.path.join(good, "manifest.json")).read() == before  # the old dataset is untouched
    assert not os.path.exists(os.path.join(good, "_staging"))

    quarantined = str(tmp_path / "quarantined")
    ok = run_preprocess(str(root), "--output", quarantined, "--quarantine-bad-files", *args)
    assert ok.returncode == 0, ok.stderr
    m = Dataset.open(quarantined).manifest
    entry = next(e for e in m["inputs"] if e["path"] == paths[1])
    assert entry["status"] == "quarantined" and "unreadable" in entry["error"]
    assert m["quarantined_lines"] == entry["lines"] > 0
    assert m["lines_in"] == m["lines_out"] + m["empty_lines"] + m["quarantined_lines"]
    sources = {r["source"] for s in SPLITS for r in read_split(quarantined, s)}
    assert paths[1] not in sources and len(sources) == 3
    # the tokens read from the bad shard before its error count nowhere
    truth = oracle(str(root), [p for p in paths if p != paths[1]], PreprocessConfig(tokenizer="whitespace", min_count=1))
    assert m["tokens_out"] == sum(sum(c.values()) for c in truth.counts.values())
    counted = [line.split("\t") for line in open(os.path.join(quarantined, "vocab_counts.tsv"), encoding="utf-8")
               .read().splitlines()[3:]]
    assert {t: int(c) for t, c in counted} == dict(truth.counts["train"])


def test_killed_run_leaves_no_readable_half_dataset(cluster, tmp_path):
    root = tmp_path / "corpus"
    write_corpus(str(root), n_sentences=400)
    out = tmp_path / "ds"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "preprocessing", str(root), "--output", str(out),
                             "--address", cluster, "--min-count", "1"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any((out / "_staging").glob("*/sentences/*.arrow")):
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    with pytest.raises(DatasetError, match="no committed dataset"):
        Dataset.open(str(out)).split_files("train")
    # a rerun clears the debris and commits
    done = run_preprocess(str(root), "--output", str(out), "--address", cluster, "--min-count", "1")
    assert done.returncode == 0, done.stderr
    assert Dataset.open(str(out)).manifest["sentences_out"] > 0
    assert not (out / "_staging").exists()


def test_http_urls_from_a_list_file(cluster, corpus, tmp_path):
    import functools
    import http.server
    import threading

    from preprocessing.driver import run_preprocess

    root, paths = corpus
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        listing = tmp_path / "inputs.txt"
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        listing.write_text("# shards\n" + "".join(base + os.path.relpath(p, root) + "\n" for p in paths))
        config = PreprocessConfig(tokenizer="whitespace", min_count=1)
        m = run_preprocess([f"@{listing}"], str(tmp_path / "ds"), config, log=lambda m: None)
    finally:
        server.shutdown()
    expected = oracle(root, paths, config)
    assert m["lines_in"] == expected.lines_in and m["sentences_out"] == len(expected.sentences)
    assert [e["key"] for e in m["inputs"]] == ["a.txt", "b.txt.gz", "c.txt.bz2", "d.txt.zst"]
    assert all(e["fingerprint"].startswith("http:") for e in m["inputs"])
    by_size = {os.path.basename(p): os.path.getsize(p) for p in paths}
    assert all(e["size"] == by_size[e["key"]] for e in m["inputs"])


def test_dataset_files_stay_near_the_size_target(cluster, tmp_path):
    """``shard_size_mb`` bounds the Parquet files: a new file starts once one reaches it, so
    none is more than a row group and its footer over; every sentence is in exactly one file."""
    import pydoc_data.topics

    from preprocessing.driver import run_preprocess

    root = tmp_path / "corpus"
    root.mkdir()
    prose = [" ".join(line.split()) for text in pydoc_data.topics.topics.values() for line in text.splitlines()]
    prose = [line for line in prose if line]
    for shard in range(3):
        (root / f"s{shard}.txt").write_text("\n".join(prose * 6) + "\n")  # ~3 MB each
    config = PreprocessConfig(tokenizer="whitespace", min_count=1, shard_size_mb=1)
    m = run_preprocess([str(root)], str(tmp_path / "ds"), config, RunOptions(num_workers=2), log=lambda m: None)
    train = m["splits"]["train"]["files"]
    assert len(train) >= 4 and sum(f["rows"] for f in train) == m["splits"]["train"]["sentences"]
    for entry in train:
        metadata = pq.ParquetFile(os.path.join(tmp_path / "ds", entry["path"])).metadata
        assert metadata.num_rows == entry["rows"] and os.path.getsize(tmp_path / "ds" / entry["path"]) == entry["bytes"]
        assert entry["bytes"] < (1 << 20) + row_group_and_footer(metadata), entry
    assert sorted(r["sentence_id"] for s in SPLITS for r in read_split(str(tmp_path / "ds"), s)) == \
        sorted(set(r["sentence_id"] for s in SPLITS for r in read_split(str(tmp_path / "ds"), s)))
    assert sum(len(read_split(str(tmp_path / "ds"), s)) for s in SPLITS) == m["sentences_out"]


@pytest.mark.parametrize("num_workers", [None, 2])
def test_tasks_follow_the_shards_not_the_cpus_at_the_start(cluster, corpus, tmp_path, monkeypatch, num_workers):
    """With Ray reporting 1 CPU and then 64 at the start, the job plans the same tasks (one read
    task and one statistics partition per shard; tokenizer tasks capped by --num-workers only) and
    writes the same files, byte for byte."""
    import ray

    import preprocessing.driver as driver
    from preprocessing.driver import run_preprocess

    root, paths = corpus
    plans, computes = [], []
    plan_of, map_batches = driver.TaskPlan.of, ray.data.Dataset.map_batches

    def recorded_plan(shards, options):
        plans.append(plan_of(shards, options))
        return plans[-1]

    def recorded_map_batches(self, fn, *args, **kwargs):
        computes.append((fn.__name__, kwargs["compute"].size))
        return map_batches(self, fn, *args, **kwargs)

    monkeypatch.setattr(driver.TaskPlan, "of", staticmethod(recorded_plan))
    monkeypatch.setattr(ray.data.Dataset, "map_batches", recorded_map_batches)
    outputs = []
    for cpus in (1, 64):
        monkeypatch.setattr(ray, "cluster_resources", lambda cpus=cpus: {**ray.available_resources(), "CPU": cpus})
        out = tmp_path / f"cpus-{cpus}"
        m = run_preprocess([root], str(out), CONFIG, RunOptions(num_workers=num_workers, lines_per_block=64),
                           log=lambda m: None)
        files = sorted(f["path"] for s in SPLITS for f in m["splits"][s]["files"])
        outputs.append({p: hashlib.sha256((out / p).read_bytes()).hexdigest() for p in [*files, "vocab.txt"]})
    assert plans[0] == plans[1]
    assert plans[0].read_tasks == plans[0].stats_partitions == len(paths) == 4
    assert plans[0].max_concurrency == num_workers
    workers = num_workers  # None: no cap, Ray Data runs what the cluster has CPUs for
    assert computes == 2 * [("read_shards", min(4, num_workers or RunOptions().readers)), ("stage_block", workers),
                            ("encode_staged", workers)]
    assert outputs[0] == outputs[1] and len(outputs[0]) > 3

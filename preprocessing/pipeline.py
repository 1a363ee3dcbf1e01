"""The preprocessing job on Ray Data: shards -> staged sentences + statistics -> vocabulary -> Parquet.

Two Ray Data executions; nothing is held in memory beyond a block per worker and the counts:

1. read + tokenize + count: one read task per shard yields blocks of raw lines (smart-open,
   decompression, sha256 of the stored bytes); a pool of tokenizer tasks turns each block into
   staged sentence rows (`stage.BlockStager`), written as Arrow IPC files under
   ``DIR/_staging/<run>/`` (one per block and source, named after both, so a retried task
   rewrites the same file), and returns the block's statistics (token counts by split, line
   counters, file markers), which Ray Data sums with ``groupby(kind, source, split, key)``. A
   shard that fails to read leaves a ``file_error`` marker instead of raising, so the driver can
   name it.
2. word ids: the vocabulary (from the train split's counts, or given) is looked up for the staged
   rows of every good shard, and each task writes its sentences per split as Parquet files of
   about ``shard_size_mb``.

Then the manifest (`manifest`) and the commit (`storage`): files moved into ``train/``, ``validation/``, ``test/``, the
manifest written last. The tokenizer runs once; character ids are computed from the tokens
when read (see `schema`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from elmo_core.vocabulary import Vocabulary

from . import schema
from .config import SPLITS, PreprocessConfig, RunOptions
from .ids import SPLIT_HASH
from .manifest import PassResult, build_manifest
from .ray_session import ensure_ray
from .sources import InputError, InputFile, ShardReader, resolve_inputs
from .stage import KIND_LINE, RAW_LINES, BlockStager
from .storage import OutputLocation, commit


class PreprocessError(Exception):
    """The job cannot finish; the message names the input or output at fault."""


# --- pass 1: read, tokenize, count (runs on Ray workers) -------------------------------------
def _raw_block(source: str, key: str, first_line: int, lines: list[bytes]) -> pa.Table:
    n = len(lines)
    def constant(value: str) -> pa.Array:
        return pa.repeat(pa.scalar(value, pa.string()), n)

    return pa.Table.from_arrays(
        [constant(KIND_LINE), constant(source), constant(key),
         pa.array(np.arange(first_line, first_line + n, dtype=np.int64)), pa.array(lines, pa.binary()),
         pa.nulls(n, pa.string())], schema=RAW_LINES)


def _marker(kind: str, source: str, key: str, lines: int, detail: str) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array([kind]), pa.array([source]), pa.array([key]), pa.array([lines], pa.int64()),
         pa.array([None], pa.binary()), pa.array([detail])], schema=RAW_LINES)


def read_shards(files: pa.Table, lines_per_block: int) -> Iterator[pa.Table]:
    """Ray Data generator UDF: each shard of the batch -> blocks of raw lines, then one marker."""
    for uri, key in zip(files.column("uri").to_pylist(), files.column("key").to_pylist()):
        reader = ShardReader(uri)
        block: list[bytes] = []
        first = 1
        try:
            for lines in reader.line_batches():
                block += lines
                while len(block) >= lines_per_block:
                    yield _raw_block(uri, key, first, block[:lines_per_block])
                    first += lines_per_block
                    del block[:lines_per_block]
        except InputError as exc:
            if block:
                yield _raw_block(uri, key, first, block)
            yield _marker(schema.KIND_FILE_ERROR, uri, key, reader.lines_read, str(exc))
            continue
        if block:
            yield _raw_block(uri, key, first, block)
        yield _marker(schema.KIND_FILE_END, uri, key, reader.lines_read, reader.sha256 or "")


def source_tag(source: str) -> str:
    """Prefix of a source's staged files (so the files of one shard can be found by name)."""
    return hashlib.blake2b(source.encode("utf-8"), digest_size=8).hexdigest()


# Staged rows are Arrow IPC files, zstd-compressed: read once by pass 2, so they need no Parquet
# encoding (writing them took a third of the time; 1.7x Parquet's size, 0.6x uncompressed IPC's).
STAGED_SUFFIX = ".arrow"
_STAGED_WRITE = pa.ipc.IpcWriteOptions(compression="zstd")
_STAGERS: dict[str, BlockStager] = {}  # per worker process: the tokenizer is built once
_LOCATIONS: dict[str, OutputLocation] = {}


def stage_block(batch: pa.Table, config: dict, staging_uri: str) -> pa.Table:
    """Ray Data UDF: raw lines -> staged sentence files (a side output) -> the block's statistics."""
    key = json.dumps(config, sort_keys=True)
    if key not in _STAGERS:
        _STAGERS[key] = BlockStager(PreprocessConfig.from_dict(config))
    if staging_uri not in _LOCATIONS:
        _LOCATIONS[staging_uri] = OutputLocation(staging_uri)
        _LOCATIONS[staging_uri].fs.create_dir(_LOCATIONS[staging_uri].root, recursive=True)
    location = _LOCATIONS[staging_uri]
    staged, stats = _STAGERS[key](batch)
    for source, table in staged.items():
        name = f"{source_tag(source)}-{table.column('line')[0].as_py():012d}{STAGED_SUFFIX}"
        with location.fs.open_output_stream(location.path(name)) as f:
            with pa.ipc.new_file(f, schema.STAGED, options=_STAGED_WRITE) as writer:
                writer.write_table(table)
    return stats


def read_staged(fs, path: str) -> pa.Table:
    """One staged sentence file (`stage_block` wrote it) as a table of `schema.STAGED`."""
    with fs.open_input_file(path) as f:
        return pa.ipc.open_file(f).read_all()


# --- pass 2: word ids, written as the dataset's Parquet files -----------------------------------
_WORD_IDS: dict = {}  # vocabulary digest -> WordIds (one per worker process)
# A Parquet row group holds at most this many sentences, and at most a quarter of the file size
# target in memory (Arrow bytes, before encoding and compression).
ROW_GROUP_ROWS = 65536
PARQUET_COMPRESSION = "zstd"  # smaller than snappy and, measured here, faster to write


class _SplitWriter:
    """The Parquet files of one split written by one task: ``<prefix>-<k>.parquet``, a new file
    once one reaches ``target_bytes`` (so a file is at most one row group and the footer over)."""

    def __init__(self, location: OutputLocation, prefix: str, target_bytes: int) -> None:
        self.location, self.prefix, self.target_bytes = location, prefix, target_bytes
        self.pending: list[pa.Table] = []
        self.pending_rows = self.pending_bytes = 0
        self.stream = self.writer = None
        self.written: list[dict] = []  # {"path", "rows", "bytes"} of each finished file

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.pending_bytes += table.nbytes
        if self.pending_rows >= ROW_GROUP_ROWS or self.pending_bytes >= self.target_bytes // 4:
            self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        if self.writer is None:
            rel = f"{self.prefix}-{len(self.written):05d}.parquet"
            self.written.append({"path": rel, "rows": 0, "bytes": 0})
            path = self.location.path(rel)
            self.location.fs.create_dir(posixpath.dirname(path), recursive=True)
            self.stream = self.location.fs.open_output_stream(path)
            self.writer = pq.ParquetWriter(self.stream, schema.SENTENCES, compression=PARQUET_COMPRESSION)
        self.writer.write_table(pa.concat_tables(self.pending), row_group_size=self.pending_rows)
        self.written[-1]["rows"] += self.pending_rows
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
        if self.stream.tell() >= self.target_bytes:
            self._close_file()

    def _close_file(self) -> None:
        self.writer.close()
        self.written[-1]["bytes"] = self.stream.tell()
        self.stream.close()
        self.stream = self.writer = None

    def close(self) -> list[dict]:
        self._flush()
        if self.writer is not None:
            self._close_file()
        return self.written


def encode_staged(groups: pa.Table, vocab_tokens: list[str], vocab_digest: str, root_uri: str, data_dir: str,
                  target_bytes: int) -> pa.Table:
    """Ray Data UDF: groups of staged sentence files -> the dataset's Parquet files, per split
    under ``data_dir/<split>/``, named after the group's first staged file (a retried task
    rewrites the same files). Returns one row per file written: split, path, rows, bytes.

    The files are written here rather than by ``Dataset.write_parquet``: the rows then never
    pass through the object store, and the manifest needs no second look at the files."""
    from .encode import WordIds

    if vocab_digest not in _WORD_IDS:
        _WORD_IDS.clear()
        _WORD_IDS[vocab_digest] = WordIds(vocab_tokens)
    if root_uri not in _LOCATIONS:
        _LOCATIONS[root_uri] = OutputLocation(root_uri)
    location = _LOCATIONS[root_uri]
    written = []
    for paths in groups.column("paths").to_pylist():
        name = posixpath.basename(paths[0]).removesuffix(STAGED_SUFFIX)
        writers = {split: _SplitWriter(location, posixpath.join(data_dir, split, name), target_bytes)
                   for split in SPLITS}
        for rel in paths:
            rows = _WORD_IDS[vocab_digest](read_staged(location.fs, location.path(rel)))
            for split, writer in writers.items():
                part = rows.filter(pc.equal(rows.column("split"), split))
                if part.num_rows:
                    writer.add(part.drop_columns(["split"]))
        written += [{"split": split, **entry} for split, writer in writers.items() for entry in writer.close()]
    return pa.Table.from_pylist(written, schema=pa.schema([("split", pa.string()), ("path", pa.string()),
                                                          ("rows", pa.int64()), ("bytes", pa.int64())]))


def _groups(files: list[tuple[str, int]], target_bytes: int, workers: int) -> list[list[str]]:
    """Consecutive runs of staged (path, size) of about equal size: enough runs that each is
    under ``target_bytes`` of staged data (each writes about one dataset file per split) and,
    where there are files enough, at least one per worker."""
    total = sum(size for _, size in files)
    count = min(len(files), max(-(-total // target_bytes), workers))
    groups: list[list[str]] = [[] for _ in range(count)]
    done = 0
    for rel, size in files:
        groups[min(count - 1, done * count // max(total, 1))].append(rel)
        done += size
    return [g for g in groups if g]


# --- driver ----------------------------------------------------------------------------------
@dataclass
class _Progress:
    log: Callable[[str], None]
    start: float

    def __call__(self, message: str) -> None:
        self.log(f"[preprocess {time.monotonic() - self.start:7.1f}s] {message}")


@contextlib.contextmanager
def _resource_reservation(enabled: bool):
    """Ray Data reserves a share of the CPUs for each operator (on by default). With one
    tokenizer worker that keeps the reader and the counting from crowding it out; with several
    it split 2 CPUs so that only one tokenizer task ran at a time (1 -> 2 workers: 1.0x). Measured
    on 200 MB (benchmarks/results/README.md): 1 worker +2.4% over the tokenizer alone with the
    reservation, +25% without; 2 workers 1.56x the 1-worker speed without it. The setting is
    restored afterwards (the context is per driver process)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    before = context.op_resource_reservation_enabled
    context.op_resource_reservation_enabled = enabled
    try:
        yield
    finally:
        context.op_resource_reservation_enabled = before


def _dataset_version(config: PreprocessConfig, vocab: Vocabulary | None, files: list[InputFile]) -> str:
    identity = {"format": schema.MANIFEST_FORMAT, "split_hash": SPLIT_HASH, "config_hash": config.config_hash(),
                "vocab": vocab.digest() if vocab else None, "inputs": [f.to_dict() for f in files]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


def _load_vocab(path: str) -> Vocabulary:
    import smart_open

    try:
        with smart_open.open(path, "r", encoding="utf-8") as f:
            return Vocabulary.from_text(f.read())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PreprocessError(f"{path}: cannot use as vocabulary: {exc}") from exc


def run_preprocess(inputs: list[str], output: str, config: PreprocessConfig, options: RunOptions | None = None,
                   vocab_path: str | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Preprocess ``inputs`` into the dataset at ``output``; returns its manifest.

    A dataset of the same version (config, vocabulary, input fingerprints) already committed at
    ``output`` is left as it is (no-op). Raises `InputError`/`PreprocessError` naming the input
    at fault; the previously committed dataset, if any, is then untouched.
    """
    import ray

    options = options or RunOptions()
    say = _Progress(log or (lambda m: print(m, file=sys.stderr, flush=True)), time.monotonic())
    files = resolve_inputs(inputs)
    say(f"{len(files)} input shard(s), {sum(max(f.size, 0) for f in files) / 1e6:.1f} MB")
    given_vocab = _load_vocab(vocab_path) if vocab_path else None
    version = _dataset_version(config, given_vocab, files)
    out = OutputLocation(output)
    current = out.read_json(schema.MANIFEST_NAME)
    if current is not None and current.get("version") == version:
        say(f"{out.uri} already holds this version ({version[:16]}): nothing to do")
        return current

    ensure_ray(options.address)
    total_cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)))
    workers = options.num_workers or max(1, int(total_cpus // options.cpus_per_worker))
    out.delete_dir(schema.STAGING_DIR)  # debris of an interrupted run (one writer per output directory)
    staging = posixpath.join(schema.STAGING_DIR, f"{version[:16]}-{uuid.uuid4().hex[:8]}")
    started = time.time()
    try:
        with _resource_reservation(enabled=workers == 1):
            job = PreprocessJob(files, out, staging, config, options, given_vocab, vocab_path, workers, say)
            manifest = build_manifest(job.files, job.config, job.vocab_path, _run_passes(job))
        manifest.update(version=version, created_unix=round(started), elapsed_s=round(time.time() - started, 3))
        commit(out, staging, manifest, say)
    finally:
        out.delete_dir(schema.STAGING_DIR)
    say(f"committed {out.uri}: {manifest['sentences_out']:,} sentences, {manifest['tokens_out']:,} tokens, "
        f"vocabulary {manifest['vocab']['size']:,}, OOV {manifest['oov_rate']:.2%}")
    return manifest


@dataclass(frozen=True)
class PreprocessJob:
    """One run of the job, as the driver decided it."""

    files: list[InputFile]
    out: OutputLocation
    staging: str  # the run's directory under DIR/_staging/
    config: PreprocessConfig
    options: RunOptions
    given_vocab: Vocabulary | None  # --vocab, loaded
    vocab_path: str | None
    workers: int
    say: Callable[[str], None]


def _run_passes(job: PreprocessJob) -> PassResult:
    import ray

    files, out, staging, config, options, workers, say = (job.files, job.out, job.staging, job.config, job.options,
                                                           job.workers, job.say)

    sentences_dir = posixpath.join(staging, "sentences")
    pool = ray.data.TaskPoolStrategy(size=workers)  # at most `workers` tasks of each operator at a time
    say(f"pass 1/2: read + tokenize ({config.tokenizer}) + count with {workers} worker(s)")
    items = [f.to_dict() for f in files]
    stats = (ray.data.from_items(items, override_num_blocks=len(items))
             .map_batches(read_shards, batch_size=1, batch_format="pyarrow", num_cpus=0, compute=pool,
                          fn_kwargs={"lines_per_block": options.lines_per_block})
             .map_batches(stage_block, batch_format="pyarrow", batch_size=options.lines_per_block,
                          fn_kwargs={"config": config.to_dict(), "staging_uri": out.uri_of(sentences_dir)},
                          compute=pool, num_cpus=options.cpus_per_worker)
             .groupby(list(schema.STATS_KEYS), num_partitions=max(1, workers)).sum(list(schema.STATS_SUMS))
             .take_all())
    rows = [{**{k: r[k] for k in schema.STATS_KEYS}, **{k: r[f"sum({k})"] for k in schema.STATS_SUMS}}
            for r in stats]
    markers = {r["source"]: r for r in rows if r["kind"] in (schema.KIND_FILE_END, schema.KIND_FILE_ERROR)}
    missing = [f.uri for f in files if f.uri not in markers]
    if missing:
        raise PreprocessError(f"{missing[0]}: the reader left no end marker (internal error)")
    errors = [m for m in markers.values() if m["kind"] == schema.KIND_FILE_ERROR]
    if errors and not config.quarantine_bad_files:
        others = f" (and {len(errors) - 1} more bad shard(s))" if len(errors) > 1 else ""
        raise InputError(f"{errors[0]['key']}{others}; pass --quarantine-bad-files to skip and list them")
    quarantined = frozenset(m["source"] for m in errors)
    for m in errors:
        say(f"quarantined {m['source']}: {m['key']}")
    per_split = {s: Counter() for s in SPLITS}
    counts = {s: Counter() for s in SPLITS}
    for r in rows:
        if r["kind"] == schema.KIND_LINES and r["source"] not in quarantined:
            per_split[r["split"]].update(
                lines=r["lines"], empty_lines=r["empty_lines"], lines_out=r["lines"] - r["empty_lines"],
                invalid_utf8_lines=r["invalid_utf8_lines"], sentences_out=r["sentences"],
                tokens_out=r["tokens"], split_sentences=r["split_sentences"])
        elif r["kind"] == schema.KIND_TOKEN:
            counts[r["split"]][r["key"]] += r["count"]
    staged_files = out.list_files(sentences_dir)
    bad_tags = {source_tag(s) for s in quarantined}
    bad_files = {rel for rel, _ in staged_files if posixpath.basename(rel).split("-", 1)[0] in bad_tags}
    if bad_files:  # a quarantined shard's lines read before its error: their tokens do not count
        from .encode import token_counts

        for rel in sorted(bad_files):
            for r in token_counts(read_staged(out.fs, out.path(rel))).to_pylist():
                counts[r["split"]][r["token"]] -= r["count"]
        counts = {s: Counter({t: n for t, n in c.items() if n > 0}) for s, c in counts.items()}
    vocab = job.given_vocab or Vocabulary.from_counts(counts["train"], config.max_vocab, config.min_count)

    good_files = [(rel, size) for rel, size in staged_files if rel not in bad_files]
    say(f"pass 2/2: word ids for {sum(c['sentences_out'] for c in per_split.values()):,} sentences")
    written = []
    if good_files:
        target_bytes = config.shard_size_mb << 20
        groups = _groups(good_files, target_bytes, workers)
        written = (ray.data.from_items([{"paths": g} for g in groups], override_num_blocks=len(groups))
                   .map_batches(encode_staged, batch_size=1, batch_format="pyarrow", compute=pool,
                                num_cpus=options.cpus_per_worker,
                                fn_kwargs={"vocab_tokens": vocab.tokens, "vocab_digest": vocab.digest(),
                                           "root_uri": out.uri, "data_dir": posixpath.join(staging, "data"),
                                           "target_bytes": target_bytes})
                   .take_all())

    out.write_text(vocab.to_text(), staging, schema.VOCAB_NAME)
    train_counts = counts["train"]
    out.write_text("".join(f"{t}\t{train_counts.get(t, 0)}\n" for t in vocab.tokens), staging, schema.COUNTS_NAME)
    return PassResult(markers, per_split, counts, vocab, written)

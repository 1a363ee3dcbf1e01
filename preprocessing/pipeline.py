"""The preprocessing job on Ray Data: shards -> staged lines -> vocabulary -> sentence Parquet.

Passes (all streamed block by block; memory does not grow with the corpus):

1. read + tokenize: one read task per shard yields blocks of raw lines (smart-open, decompression,
   sha256 of the stored bytes); a pool of tokenizer workers turns each block into staged lines
   (`schema.STAGED_LINES`), written as Parquet under ``DIR/_staging/<run>/lines``. A shard that
   fails to read leaves a ``file_error`` marker instead of raising, so the driver can name it.
2. statistics and token counts over the staged lines: per-block partial counts, then a Ray Data
   ``groupby(["split", "token"]).sum()``; the vocabulary comes from the training split.
3. encode: staged lines -> sentence rows (`schema.SENTENCES`) with word and character ids,
   written per split.
4. commit (`storage`): files moved into ``train/``, ``validation/``, ``test/``, then the
   manifest is written last. The tokenizer runs once, in pass 1; later passes read Parquet.
"""

from __future__ import annotations

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

from elmo_core.vocabulary import Vocabulary

from . import schema
from .config import SPLITS, PreprocessConfig, RunOptions
from .ids import doc_id, split_of
from .sources import InputError, InputFile, ShardReader, resolve_inputs
from .storage import OutputLocation
from .text import LineProcessor, decode_line

COUNT_FIELDS = ("lines_in", "lines_out", "sentences_out", "tokens_out", "empty_lines",
                "quarantined_lines", "invalid_utf8_lines", "split_sentences")
_RAW_LINES = pa.schema([("kind", pa.string()), ("source", pa.string()), ("key", pa.string()),
                        ("line", pa.int64()), ("raw", pa.binary()), ("detail", pa.string())])


class PreprocessError(Exception):
    """The job cannot finish; the message names the input or output at fault."""


# --- pass 1: read + tokenize (runs on Ray workers) --------------------------------------------
def _raw_block(source: str, key: str, first_line: int, lines: list[bytes]) -> pa.Table:
    n = len(lines)
    return pa.Table.from_arrays(
        [pa.array([schema.KIND_LINE] * n), pa.array([source] * n), pa.array([key] * n),
         pa.array(np.arange(first_line, first_line + n, dtype=np.int64)), pa.array(lines, pa.binary()),
         pa.array([None] * n, pa.string())], schema=_RAW_LINES)


def _marker(kind: str, source: str, key: str, lines: int, detail: str) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array([kind]), pa.array([source]), pa.array([key]), pa.array([lines], pa.int64()),
         pa.array([None], pa.binary()), pa.array([detail])], schema=_RAW_LINES)


def read_shards(files: pa.Table, lines_per_block: int) -> Iterator[pa.Table]:
    """Ray Data generator UDF: each shard of the batch -> blocks of raw lines, then one marker."""
    for uri, key in zip(files.column("uri").to_pylist(), files.column("key").to_pylist()):
        reader = ShardReader(uri)
        block: list[bytes] = []
        first = 1
        try:
            for raw in reader:
                block.append(raw)
                if len(block) == lines_per_block:
                    yield _raw_block(uri, key, first, block)
                    first += len(block)
                    block = []
        except InputError as exc:
            if block:
                yield _raw_block(uri, key, first, block)
            yield _marker(schema.KIND_FILE_ERROR, uri, key, reader.lines_read, str(exc))
            continue
        if block:
            yield _raw_block(uri, key, first, block)
        yield _marker(schema.KIND_FILE_END, uri, key, reader.lines_read, reader.sha256 or "")


_LINE_PROCESSORS: dict[str, LineProcessor] = {}


def tokenize_lines(batch: pa.Table, config: dict) -> pa.Table:
    """Ray Data UDF: raw line blocks -> staged lines. The tokenizer is built once per worker
    process (tasks, not an actor pool: a pool holding every CPU starves Ray Data's other steps)."""
    key = json.dumps(config, sort_keys=True)
    if key not in _LINE_PROCESSORS:
        _LINE_PROCESSORS[key] = LineProcessor(PreprocessConfig.from_dict(config))
    process = _LINE_PROCESSORS[key]
    cfg = process.config
    cols = {name: batch.column(name).to_pylist() for name in _RAW_LINES.names}
    out: dict[str, list] = {name: [] for name in schema.STAGED_LINES.names}
    for kind, source, key_, line, raw, detail in zip(*(cols[n] for n in _RAW_LINES.names)):
        doc = doc_id(key_, line)
        sentences, cut_count, invalid = [], 0, False
        if kind == schema.KIND_LINE:
            text, invalid = decode_line(raw)
            if line == 1 and text.startswith("\ufeff"):
                text = text[1:]  # byte-order mark
            sentences, cut_count = process(text)
        values = dict(kind=kind, source=source, line=line, doc_id=doc, split=split_of(doc, cfg),
                      is_empty=int(kind == schema.KIND_LINE and not sentences), invalid_utf8=int(invalid),
                      sentences=sentences, num_sentences=len(sentences),
                      num_tokens=sum(len(s) for s in sentences), split_sentences=cut_count, detail=detail)
        for name, value in values.items():
            out[name].append(value)
    return pa.Table.from_pydict(out, schema=schema.STAGED_LINES)


# --- pass 2: statistics and counts ------------------------------------------------------------
def _kept_lines(batch: pa.Table, quarantined: frozenset[str]) -> pa.Table:
    """Text lines of shards that were read completely."""
    mask = pc.equal(batch.column("kind"), schema.KIND_LINE)
    if quarantined:
        mask = pc.and_(mask, pc.invert(pc.is_in(batch.column("source"), pa.array(sorted(quarantined)))))
    return batch.filter(mask)


_SUMMED = ("is_empty", "invalid_utf8", "num_sentences", "num_tokens", "split_sentences")


def summarize_block(batch: pa.Table) -> pa.Table:
    """Per-block sums of the line counters by (source, split), plus the block's file markers as
    rows of their own: one execution gives the driver both, and it can leave out quarantined
    shards afterwards."""
    lines = batch.filter(pc.equal(batch.column("kind"), schema.KIND_LINE))
    sums = (lines.group_by(["source", "split"])
            .aggregate([("line", "count"), *((c, "sum") for c in _SUMMED)]).to_pylist())
    rows = [dict(kind=schema.KIND_LINE, source=r["source"], split=r["split"], lines=r["line_count"], detail="",
                 **{c: r[f"{c}_sum"] for c in _SUMMED}) for r in sums]
    markers = batch.filter(pc.not_equal(batch.column("kind"), schema.KIND_LINE))
    for kind, source, n, detail in zip(*(markers.column(c).to_pylist() for c in ("kind", "source", "line", "detail"))):
        rows.append(dict(kind=kind, source=source, split="", lines=n, detail=detail, **{c: 0 for c in _SUMMED}))
    return pa.Table.from_pylist(rows)


def count_tokens(batch: pa.Table, quarantined: frozenset[str]) -> pa.Table:
    """Per-block token counts by split (pre-aggregation before Ray's groupby)."""
    from .encode import token_counts

    return token_counts(_kept_lines(batch, quarantined))


_ENCODERS: dict = {}  # vocabulary digest -> SentenceEncoder (one per worker process)


def encode_sentences(batch: pa.Table, vocab_tokens: list[str], vocab_digest: str,
                     quarantined: frozenset[str]) -> pa.Table:
    """Ray Data UDF: staged lines -> sentence rows plus their split (for partitioning)."""
    from .encode import SentenceEncoder

    if vocab_digest not in _ENCODERS:  # one vocabulary index per worker process
        _ENCODERS.clear()
        _ENCODERS[vocab_digest] = SentenceEncoder(vocab_tokens)
    lines = _kept_lines(batch, quarantined)
    lines = lines.filter(pc.equal(lines.column("is_empty"), 0))
    table = _ENCODERS[vocab_digest](lines)
    splits = np.repeat(np.array(lines.column("split").to_pylist(), dtype=object),
                       lines.column("num_sentences").to_numpy())
    return table.append_column("split", pa.array(splits.tolist(), pa.string()))


# --- driver ----------------------------------------------------------------------------------
@dataclass
class _Progress:
    log: Callable[[str], None]
    start: float

    def __call__(self, message: str) -> None:
        self.log(f"[preprocess {time.monotonic() - self.start:7.1f}s] {message}")


def ensure_ray(address: str | None) -> None:
    """Connect to ``address``, or to the cluster a ``ray job submit`` job runs in, or start a
    local Ray on the fly."""
    import ray

    if ray.is_initialized():
        return
    ray.init(address=address) if address else ray.init()


def _dataset_version(config: PreprocessConfig, vocab: Vocabulary | None, files: list[InputFile]) -> str:
    identity = {"config_hash": config.config_hash(), "vocab": vocab.digest() if vocab else None,
                "inputs": [f.to_dict() for f in files]}
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
        manifest = _run_passes(files, out, staging, config, options, given_vocab, vocab_path, workers, say)
        manifest.update(version=version, created_unix=round(started), elapsed_s=round(time.time() - started, 3))
        _commit(out, staging, manifest, say)
    finally:
        out.delete_dir(schema.STAGING_DIR)
    say(f"committed {out.uri}: {manifest['sentences_out']:,} sentences, {manifest['tokens_out']:,} tokens, "
        f"vocabulary {manifest['vocab']['size']:,}, OOV {manifest['oov_rate']:.2%}")
    return manifest


def _run_passes(files, out, staging, config, options, given_vocab, vocab_path, workers, say) -> dict:
    import ray

    lines_uri = out.uri_of(staging, "lines")
    say(f"pass 1/3: read + tokenize ({config.tokenizer}) with {workers} worker(s)")
    items = [f.to_dict() for f in files]
    (ray.data.from_items(items, override_num_blocks=len(items))
     .map_batches(read_shards, batch_size=1, batch_format="pyarrow", num_cpus=0, concurrency=workers,
                  fn_kwargs={"lines_per_block": options.lines_per_block})
     .map_batches(tokenize_lines, batch_format="pyarrow", batch_size=options.lines_per_block,
                  fn_kwargs={"config": config.to_dict()}, concurrency=workers, num_cpus=options.cpus_per_worker)
     .write_parquet(lines_uri, ray_remote_args={"num_cpus": 0}))

    staged = ray.data.read_parquet(lines_uri)
    say("pass 2/3: statistics and token counts")
    summary = staged.map_batches(summarize_block, batch_format="pyarrow", batch_size=options.lines_per_block,
                                 num_cpus=0.5).take_all()
    markers = {r["source"]: r for r in summary if r["kind"] != schema.KIND_LINE}
    missing = [f.uri for f in files if f.uri not in markers]
    if missing:
        raise PreprocessError(f"{missing[0]}: the reader left no end marker (internal error)")
    errors = [m for m in markers.values() if m["kind"] == schema.KIND_FILE_ERROR]
    if errors and not config.quarantine_bad_files:
        others = f" (and {len(errors) - 1} more bad shard(s))" if len(errors) > 1 else ""
        raise InputError(f"{errors[0]['detail']}{others}; pass --quarantine-bad-files to skip and list them")
    quarantined = frozenset(m["source"] for m in errors)
    for m in errors:
        say(f"quarantined {m['source']}: {m['detail']}")
    per_split = {s: Counter() for s in SPLITS}
    for r in summary:
        if r["kind"] == schema.KIND_LINE and r["source"] not in quarantined:
            per_split[r["split"]].update(
                lines=r["lines"], empty_lines=r["is_empty"], lines_out=r["lines"] - r["is_empty"],
                invalid_utf8_lines=r["invalid_utf8"], sentences_out=r["num_sentences"],
                tokens_out=r["num_tokens"], split_sentences=r["split_sentences"])
    grouped = (staged.map_batches(count_tokens, batch_format="pyarrow", fn_kwargs={"quarantined": quarantined},
                                  batch_size=options.lines_per_block, num_cpus=0.5)
               .groupby(["split", "token"], num_partitions=max(1, workers)).sum("count").take_all())
    counts = {s: {} for s in SPLITS}
    for row in grouped:
        counts[row["split"]][row["token"]] = row["sum(count)"]
    vocab = given_vocab or Vocabulary.from_counts(counts["train"], config.max_vocab, config.min_count)

    say(f"pass 3/3: encode {sum(c['sentences_out'] for c in per_split.values()):,} sentences")
    data_uri = out.uri_of(staging, "data")
    (staged.map_batches(encode_sentences, batch_format="pyarrow",
                        fn_kwargs={"vocab_tokens": vocab.tokens, "vocab_digest": vocab.digest(),
                                   "quarantined": quarantined},
                        batch_size=options.lines_per_block, concurrency=workers, num_cpus=options.cpus_per_worker)
     .write_parquet(data_uri, partition_cols=["split"], min_bytes_per_file=config.shard_size_mb << 20,
                    ray_remote_args={"num_cpus": 0}))

    out.write_text(vocab.to_text(), staging, schema.VOCAB_NAME)
    train_counts = counts["train"]
    out.write_text("".join(f"{t}\t{train_counts.get(t, 0)}\n" for t in vocab.tokens), staging, schema.COUNTS_NAME)
    return _manifest(files, markers, per_split, counts, vocab, vocab_path, config, out, staging)


def _manifest(files, markers, per_split, counts, vocab, vocab_path, config, out, staging) -> dict:
    import pyarrow.parquet as pq

    errors = [m for m in markers.values() if m["kind"] == schema.KIND_FILE_ERROR]
    quarantined_lines = sum(int(m["lines"]) for m in errors)
    totals = Counter()
    for c in per_split.values():
        totals.update(c)
    in_vocab = set(vocab.tokens)

    def oov(split_counts: dict) -> tuple[int, int]:
        total = sum(split_counts.values())
        return total - sum(c for t, c in split_counts.items() if t in in_vocab), total

    splits = {}
    for split in SPLITS:
        files_out = []
        for rel, size in out.list_files(staging, "data", f"split={split}"):
            with out.fs.open_input_file(out.path(rel)) as f:
                rows = pq.ParquetFile(f).metadata.num_rows
            files_out.append({"staged": rel, "bytes": size, "rows": rows})
        oov_tokens, total = oov(counts[split])
        splits[split] = {"files": files_out, "sentences": per_split[split]["sentences_out"],
                         "tokens": per_split[split]["tokens_out"], "oov_tokens": oov_tokens,
                         "oov_rate": oov_tokens / total if total else 0.0}
    oov_all = sum(s["oov_tokens"] for s in splits.values())
    tokens_out = int(totals["tokens_out"])
    inputs = []
    for f in files:
        marker = markers[f.uri]
        entry = {"path": f.uri, "key": f.key, "size": f.size, "fingerprint": f.fingerprint, "lines": marker["lines"]}
        if marker["kind"] == schema.KIND_FILE_ERROR:
            entry.update(status="quarantined", error=marker["detail"])
        else:
            entry.update(status="ok", sha256=marker["detail"])
        inputs.append(entry)
    manifest = {
        "format": schema.MANIFEST_FORMAT,
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "lines_in": int(totals["lines"]) + quarantined_lines,
        "lines_out": int(totals["lines_out"]),
        "sentences_out": int(totals["sentences_out"]),
        "tokens_out": tokens_out,
        "empty_lines": int(totals["empty_lines"]),
        "quarantined_lines": quarantined_lines,
        "invalid_utf8_lines": int(totals["invalid_utf8_lines"]),
        "split_sentences": int(totals["split_sentences"]),
        "oov_tokens": oov_all,
        "oov_rate": oov_all / tokens_out if tokens_out else 0.0,
        "vocab": {"size": len(vocab), "digest": vocab.digest(), "file": schema.VOCAB_NAME,
                  "counts_file": schema.COUNTS_NAME, "source": vocab_path or "built from the train split"},
        "splits": splits,
        "inputs": inputs,
        "schema": {f.name: str(f.type) for f in schema.SENTENCES},
    }
    return manifest


def _commit(out: OutputLocation, staging: str, manifest: dict, say) -> None:
    """Archive the committed version (if any), move the new files in, write the manifest last."""
    old = out.read_json(schema.MANIFEST_NAME)
    if old is not None:
        archive = posixpath.join(schema.VERSIONS_DIR, str(old.get("version", "unknown"))[:16])
        out.write_json(old, archive, "manifest.incomplete.json")
        out.delete_file(schema.MANIFEST_NAME)  # from here on no reader sees a dataset here
        for rel in _manifest_files(old):
            if out.exists(rel):
                out.move(rel, posixpath.join(archive, rel))
        out.write_json(old, archive, schema.MANIFEST_NAME)
        out.delete_file(archive, "manifest.incomplete.json")
        say(f"previous version {archive} archived")
    for split in SPLITS:  # files of an interrupted commit, listed by no manifest
        out.delete_dir(split)
    for split in SPLITS:
        for i, entry in enumerate(manifest["splits"][split]["files"]):
            final = posixpath.join(split, f"part-{i:05d}.parquet")
            out.move(entry.pop("staged"), final)
            entry["path"] = final
    for name in (schema.VOCAB_NAME, schema.COUNTS_NAME):
        out.move(posixpath.join(staging, name), name)
    out.write_json(manifest, schema.MANIFEST_NAME)


def _manifest_files(manifest: dict) -> list[str]:
    """Every file a manifest owns, relative to its directory."""
    files = [manifest.get("vocab", {}).get("file", schema.VOCAB_NAME),
             manifest.get("vocab", {}).get("counts_file", schema.COUNTS_NAME)]
    for split in manifest.get("splits", {}).values():
        files.extend(entry["path"] for entry in split.get("files", []))
    return files

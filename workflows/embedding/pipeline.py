"""The embedding jobs' pipeline on Ray Data: input files -> one output each, written by the actors.

    read (Ray tasks, several input files each: raw line blocks, then an end-or-error marker per
      file; or Parquet batches)
    -> tokenize (CPU tasks; `preprocessing.first_pass.tokenize_lines`, the tokenizer of `elmo preprocess`)
    -> embed (an actor pool: each actor loads the model once from the object store, then
       `elmo_core.embedder.Embedder` over length-sorted, ``batch_tokens``-sized batches; GPU with
       ``use_gpu``), and writes each run of rows of one input it embedded as a Parquet part into
       OUT's staging area (`workflows.embedding.parts`); it returns one small record per part
       (`RECORDS`: name, lines, rows, tokens, bytes, sha256) and passes the file markers on
    -> the driver reads only these records (no vectors); a file is complete when its marker has
       arrived (after its parts: blocks keep their order, ``preserve_order``); complete files go
       to the caller (`embed_files`' ``on_file``) in input order, which publishes their parts
       (`parts.publish_parts`: moves, no data through the driver) and commits them.

Memory stays bounded: Ray Data's streaming executor holds a few blocks per operator; the driver
holds a few records per part of the files not yet complete. Vectors do not depend on batching,
actors or their number (every sentence starts from a zero state).
"""

from __future__ import annotations

import hashlib
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from preprocessing import schema as pre_schema
from preprocessing.sources import InputError, InputFile, resolve_inputs

from workflows import faults
from workflows.embedding.config import EmbedJobConfig
from workflows.embedding.model_source import ResolvedModel
from workflows.embedding.output import FORMATS, ROW_COLUMNS

KIND_SENTENCE = "sentence"
# rows between the stages: sentences, and one marker per input file at its end
ROWS = pa.schema([
    ("kind", pa.string()),  # "sentence", or the file marker: preprocessing's file_end / file_error
    ("input", pa.string()),  # URI of the input file (the output it goes to)
    ("sentence_id", pa.string()), ("source", pa.string()), ("line", pa.int64()),
    ("sentence_index", pa.int32()), ("tokens", pa.list_(pa.string())),
    ("text", pa.string()),  # the line, stripped (hdf5's sentence_to_index); null otherwise
    ("lines", pa.int64()),  # marker: lines (rows) read
    ("detail", pa.string()),  # marker: sha256 of the stored bytes, or the error
    ("row", pa.int64()),  # Parquet input: the row's 0-based position in its file (text: null)
])
KIND_PART = "part"
# what the actors return to the driver: one record per part written, and the file markers
RECORDS = pa.schema([
    ("kind", pa.string()),  # "part", or the file marker (as in ROWS)
    ("input", pa.string()),  # URI of the input file
    ("staged", pa.string()),  # part: where it was written, relative to OUT (`parts.staging_path`)
    ("name", pa.string()),  # part: its file name in the output folder (`output.part_name`)
    ("first_line", pa.int64()), ("last_line", pa.int64()),  # part: lines (Parquet input: rows), 1-based
    ("rows", pa.int64()), ("distinct_lines", pa.int64()), ("tokens", pa.int64()),  # part: counts
    ("bytes", pa.int64()), ("sha256", pa.string()),  # part: as stored
    ("lines", pa.int64()), ("detail", pa.string()),  # marker: as in ROWS
])


class EmbedError(Exception):
    """The job cannot finish; the message names the input or setting at fault."""


@dataclass
class FileResult:
    """One input file's outcome: its staged parts (complete), or an error."""

    input: InputFile
    status: str  # "ok" | "failed"
    parts: list = field(default_factory=list)  # RECORDS' part fields, in line order
    sha256: str | None = None
    lines: int = 0  # lines (text) or rows (parquet) read
    blank_lines: int = 0  # lines without tokens (skipped)
    sentences: int = 0
    tokens: int = 0
    error: str | None = None
    description: dict = field(default_factory=dict)
    schema: pa.Schema | None = None  # the output's rows (`output_schema`)


# --- inputs -----------------------------------------------------------------------------------
def list_inputs(specs: list[str], config: EmbedJobConfig) -> list[InputFile]:
    """What the user named -> input files (text inputs as `elmo preprocess` reads them; for
    ``parquet``: committed preprocessing datasets, every split, or Parquet files)."""
    if config.input_format != "parquet":
        return resolve_inputs(specs)
    import dataclasses

    from preprocessing.dataset import Dataset, DatasetError
    from preprocessing.storage import Storage

    files = []
    for spec in specs:
        storage = Storage(spec)
        if storage.exists(pre_schema.MANIFEST_NAME):
            try:
                dataset = Dataset.open(storage)
            except DatasetError as exc:
                raise InputError(str(exc)) from None
            for split in dataset.manifest["splits"].values():
                for entry in split["files"]:
                    (found,) = resolve_inputs([storage.uri_of(entry["path"])])
                    files.append(dataclasses.replace(found, key=entry["path"]))
        else:
            files += [f for f in resolve_inputs([spec]) if f.key.endswith(".parquet")]
    if not files:
        raise InputError(f"{', '.join(specs)}: no Parquet files (a committed `elmo preprocess` output, or *.parquet)")
    return files


# --- stage 1: read (Ray tasks) -------------------------------------------------------------------
def _marker(kind: str, uri: str, lines: int, detail: str) -> pa.Table:
    row = {name: [None] for name in ROWS.names}
    row.update(kind=[kind], input=[uri], lines=[lines], detail=[detail])
    return pa.table(row, schema=ROWS)


def read_parquet_inputs(files: pa.Table, rows_per_block: int):
    """Ray Data generator UDF: preprocessed Parquet files -> sentence blocks, then a marker."""
    import pyarrow.parquet as pq

    from preprocessing.sources import open_input

    for uri in files.column("uri").to_pylist():
        rows = 0
        try:
            digest = hashlib.sha256()
            with open_input(uri) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            with open_input(uri) as f:
                for batch in pq.ParquetFile(f).iter_batches(
                        rows_per_block, columns=["sentence_id", "source", "line", "sentence_index", "tokens"]):
                    n = batch.num_rows
                    rows += n
                    yield pa.table({
                        "kind": pa.repeat(pa.scalar(KIND_SENTENCE), n), "input": pa.repeat(pa.scalar(uri), n),
                        **{c: batch.column(c) for c in ("sentence_id", "source", "line", "sentence_index", "tokens")},
                        "text": pa.nulls(n, pa.string()), "lines": pa.nulls(n, pa.int64()),
                        "detail": pa.nulls(n, pa.string()), "row": pa.array(range(rows - n, rows), pa.int64())},
                        schema=ROWS)
        except Exception as exc:  # unreadable or not our Parquet: reported per file
            yield _marker(pre_schema.KIND_FILE_ERROR, uri, rows, f"{uri}: unreadable Parquet after {rows} rows: {exc}")
            continue
        yield _marker(pre_schema.KIND_FILE_END, uri, rows, digest.hexdigest())


# --- stage 2: tokenize (Ray tasks) ---------------------------------------------------------------
_PROCESSORS: dict = {}


def tokenize_block(batch: pa.Table, config: dict, keep_text: bool) -> pa.Table:
    """Ray Data UDF: raw lines (`preprocessing.first_pass.RAW_LINES`) -> `ROWS` (markers passed on)."""
    from preprocessing.config import PreprocessConfig
    from preprocessing.first_pass import KIND_LINE, tokenize_lines
    from preprocessing.text import LineProcessor

    key = repr(sorted(config.items()))
    if key not in _PROCESSORS:
        _PROCESSORS[key] = LineProcessor(PreprocessConfig.from_dict(config))
    out = []
    # in order: a batch may hold the last lines of a file, its end marker and the next file's lines
    for run in _runs(batch, "kind", "source"):
        if run.column("kind")[0].as_py() != KIND_LINE:
            out += [_marker(m["kind"], m["source"], m["line"], m["detail"] or "") for m in run.to_pylist()]
            continue
        tokenized = tokenize_lines(run.select(["source", "key", "line"]), run.column("raw").to_pylist(),
                                   _PROCESSORS[key])
        rows = tokenized.rows
        n = rows.num_rows
        take = pa.array(tokenized.line_of, pa.int64())
        text = pa.array(tokenized.texts, pa.string()).take(take) if keep_text else pa.nulls(n, pa.string())
        out.append(pa.table({
            "kind": pa.repeat(pa.scalar(KIND_SENTENCE), n), "input": rows.column("source"),
            **{c: rows.column(c) for c in ("sentence_id", "source", "line", "sentence_index", "tokens")},
            "text": text, "lines": pa.nulls(n, pa.int64()), "detail": pa.nulls(n, pa.string()),
            "row": pa.nulls(n, pa.int64())}, schema=ROWS))
    return pa.concat_tables(out) if out else ROWS.empty_table()


# --- stage 3: embed (Ray actors) -----------------------------------------------------------------
def vector_column(matrices: list[np.ndarray], dim: int, dtype) -> pa.Array:
    """Per-row (n_i, dim) matrices -> list<fixed_size_list<dim>> (no Python per token)."""
    offsets = np.zeros(len(matrices) + 1, np.int32)
    np.cumsum([len(m) for m in matrices], out=offsets[1:])
    flat = np.concatenate(matrices).reshape(-1) if matrices else np.zeros(0, dtype)
    per_token = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(dtype, copy=False)), dim)
    return pa.ListArray.from_arrays(pa.array(offsets), per_token)


_LIBC = None  # glibc's malloc_trim once found; False where there is none


def release_freed_memory() -> None:
    """Hand memory freed by the last call back to the OS (glibc's ``malloc_trim``; nothing elsewhere).

    Each call allocates and frees ~100 MB (activations, the block's vectors); glibc keeps the freed
    pages, so an actor's resident memory wandered between 0.9 and 1.2 GB and its peak grew with the
    number of calls, i.e. with the corpus. Trimmed, it stays flat (benchmarks/README.md)."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        try:
            _LIBC = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC(0)


class EmbedActor:
    """Loads the model once (from the object store), then embeds block after block and writes
    each block's rows of one input as a part into OUT's staging area (`parts.staging_path`)."""

    def __init__(self, blob_ref: list, layers: str, dtype: str, batch_tokens: int, use_gpu: bool,
                 threads: int, out: str, inputs: dict, description: dict, keep_text: bool,
                 write_threads: int = 1) -> None:
        import ray
        import torch

        from elmo_core.embedder import Embedder
        from elmo_core.layer_selection import DTYPES, LayerSelection
        from elmo_core.weights import model_from_embedding_bytes
        from preprocessing.storage import TEMP_DIR, Storage

        if not use_gpu:
            torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu else "cpu"
        model = model_from_embedding_bytes(ray.get(blob_ref[0]), device)
        self.selection = LayerSelection.parse(layers, dtype)
        self.embedder = Embedder(model, batch_size=1 << 20, layers=self.selection, batch_tokens=batch_tokens)
        self.n_layers = model.config.n_output_layers
        self.names = self.selection.column_names(self.n_layers)
        self.dim = 2 * model.config.lstm.projection_dim
        self.dtype = DTYPES[dtype]
        self.store = Storage(out)
        self.inputs = inputs  # URI -> {"digest": `parts.input_digest`, "input": the input's identity}
        self.description = description  # what every part records (model, settings, columns)
        self.columns = [*ROW_COLUMNS, *(["text"] if keep_text else []), *self.names]
        # a block's parts written several at once: small parts wait on the storage, not the CPU
        self.writer = ThreadPoolExecutor(max(1, write_threads), thread_name_prefix="elmo-part")
        self.store.stat(f"{TEMP_DIR}/.client")  # makes the storage client here: making it is not thread-safe

    def __call__(self, batch: pa.Table) -> pa.Table:
        """`ROWS` -> `RECORDS`: the sentences' parts written, the markers passed on."""
        faults.point("embed_actor")  # tests: one actor killed (`workflows.faults`)
        is_sentence = pc.equal(batch.column("kind"), KIND_SENTENCE).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(is_sentence)
        outputs = self.embedder.embed_all(batch.column("tokens").take(pa.array(rows)).to_pylist()) if len(rows) else []
        empty = np.zeros((0, self.dim), self.dtype)
        for j, name in enumerate(self.names):
            per_row = [empty] * batch.num_rows
            for r, out in zip(rows, outputs):
                per_row[r] = out[j] if self.selection.keeps_layer_axis else out
            column = vector_column(per_row, self.dim, self.dtype)
            mask = pa.array(~is_sentence)
            batch = batch.append_column(name, pa.ListArray.from_arrays(column.offsets, column.values, mask=mask))
        del outputs, per_row, column
        records = []  # in the block's order: a part's record (once written) or a marker
        for run in _part_runs(batch):
            if run.column("kind")[0].as_py() == KIND_SENTENCE:
                records.append(self.writer.submit(self._write_part, run))
            else:
                records += run.select(["kind", "input", "lines", "detail"]).to_pylist()
        records = [r.result() if isinstance(r, Future) else r for r in records]
        del batch
        release_freed_memory()
        return pa.Table.from_pylist(records, schema=RECORDS)

    def _write_part(self, run: pa.Table) -> dict:
        from workflows.embedding.output import part_name, write_part
        from workflows.embedding.parts import staging_path

        uri = run.column("input")[0].as_py()
        lines = run.column("line").to_numpy()
        first_row, last_row = run.column("row")[0].as_py(), run.column("row")[-1].as_py()
        if first_row is None:  # text: (line, sentence index); Parquet input: its rows
            first, last, sub = int(lines[0]), int(lines[-1]), int(run.column("sentence_index")[0].as_py())
        else:
            first, last, sub = first_row + 1, last_row + 1, 0
        tokens = int(pc.sum(pc.list_value_length(run.column("tokens"))).as_py() or 0)
        part = {"first_line": first, "last_line": last, "rows": run.num_rows, "tokens": tokens}
        staged = staging_path(self.inputs[uri]["digest"], first, sub)
        written = write_part(self.store, staged, run.select(self.columns),
                             {**self.description, "input": self.inputs[uri]["input"], "part": part})
        distinct = int(np.count_nonzero(lines[1:] != lines[:-1]) + 1)
        return {"kind": KIND_PART, "input": uri, "staged": staged, "name": part_name(first, sub), **part,
                "distinct_lines": distinct, **written}


def _part_runs(batch: pa.Table):
    """The batch's runs of one kind and input, sentence runs cut where their order breaks (a part
    holds rows in line order)."""
    for run in _runs(batch, "kind", "input"):
        if run.column("kind")[0].as_py() != KIND_SENTENCE or run.num_rows < 2:
            yield run
            continue
        row = run.column("row")
        if row.null_count == 0:
            key = row.to_numpy()
        else:
            key = run.column("line").to_numpy() * (1 << 24) + run.column("sentence_index").to_numpy()
        cuts = [0, *(np.flatnonzero(key[1:] <= key[:-1]) + 1).tolist(), run.num_rows]
        for start, end in zip(cuts[:-1], cuts[1:]):
            yield run.slice(start, end - start)


# --- the driver ------------------------------------------------------------------------------------
def output_schema(names: list[str], dim: int, dtype: str) -> pa.Schema:
    """Rows of an output file: `output.ROW_COLUMNS` + one vector column per name."""
    from elmo_core.layer_selection import DTYPES

    vector = pa.list_(pa.list_(pa.from_numpy_dtype(DTYPES[dtype]), dim))
    fields = [ROWS.field(c) for c in ROW_COLUMNS]
    return pa.schema(fields + [pa.field(n, vector) for n in names])


def describe(result: FileResult, model: ResolvedModel, config: EmbedJobConfig, names: list[str]) -> dict:
    """What an output records about itself (its ``_common_metadata`` or HDF5 attribute, manifest, ledger)."""
    return {**model.describe(), **config.output_settings(), "columns": names,
            "input": {**result.input.to_dict(), "sha256": result.sha256},
            "lines": result.lines, "blank_lines": result.blank_lines, "sentences": result.sentences,
            "tokens": result.tokens}


def output_name(key: str, fmt: str) -> str:
    """Output name of an input: its key (path relative to what the user named) + the format's suffix."""
    return key + FORMATS[fmt]


def _runs(block: pa.Table, *columns: str):
    """The block as consecutive slices of equal ``columns`` values, in order (zero-copy slices)."""
    n = block.num_rows
    if n == 0:
        return
    values = [block.column(c).to_numpy(zero_copy_only=False) for c in columns]
    change = np.flatnonzero(np.any([v[1:] != v[:-1] for v in values], axis=0)) + 1
    bounds = [0, *change.tolist(), n]
    for start, end in zip(bounds[:-1], bounds[1:]):
        yield block.slice(start, end - start)


def embed_files(files: list[InputFile], model: ResolvedModel, config: EmbedJobConfig, store,
                on_file: Callable[[FileResult], None], log: Callable[[str], None] | None = None,
                on_input: Callable[[str], None] | None = None) -> list[FileResult]:
    """Embed ``files`` into parts staged in ``store`` (`preprocessing.storage.Storage` of OUT);
    each finished (or failed) file goes to ``on_file`` as soon as it and the files before it are
    done, in input order, with its staged parts (``result.parts``, for `parts.publish_parts`).
    ``on_input(uri)`` is called when the driver first hears of a file."""
    from ray.data import DataContext

    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    started = time.monotonic()
    context = DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.target_max_block_size)
    context.execution_options.preserve_order = True  # a file's marker follows its parts' records
    # Ray Data merges what a task yields into blocks of up to this size: left at 128 MiB, a whole
    # input file became one block (one actor's work, its vectors held at once, growing with the
    # file; measured in benchmarks/README.md). Small blocks spread a file over the actors, which
    # take `lines_per_block` sentences a call, and keep memory independent of file size.
    context.target_max_block_size = config.block_kb << 10
    try:
        return _run(files, model, config, store, on_file, on_input or (lambda uri: None), say, started)
    finally:
        context.execution_options.preserve_order, context.target_max_block_size = saved


def _run(files, model, config, store, on_file, on_input, say, started) -> list[FileResult]:
    import ray

    from elmo_core.layer_selection import LayerSelection

    from workflows.embedding.parts import input_digest

    names = LayerSelection.parse(config.layers, config.dtype).column_names(model.config.n_output_layers)
    blob_ref = [ray.put(model.blob)]  # in the object store: fetched once per node by its actors
    settings = config.output_settings()
    writes = {"out": store.uri, "keep_text": config.format == "hdf5",
              "description": {**model.describe(), **settings, "columns": names},
              "inputs": {f.uri: {"digest": input_digest(f.to_dict(), model.digest, settings), "input": f.to_dict()}
                         for f in files}}
    ds = _embedded_rows(_sentence_rows(files, config), config, blob_ref, writes)
    collector = _RecordCollector(files, model, config, names, on_file, on_input, say, started)
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
        collector.add_block(block)
    done = {r.input.uri for r in collector.results}
    missing = [f.uri for f in files if f.uri not in done]
    if missing:
        raise EmbedError(f"{missing[0]}: the reader left no end marker (internal error)")
    return collector.results


def _sentence_rows(files: list[InputFile], config: EmbedJobConfig):
    """Stages 1 and 2: a Ray Dataset of `ROWS` (sentences, and each file's marker after them)."""
    import ray

    from preprocessing.tokenize_tasks import read_shards

    items = [f.to_dict() for f in files]
    # several files a read task (in input order): a feed of small files costs one task per
    # `read_tasks`-th of it, not one per file
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), config.read_tasks))
    if config.input_format == "parquet":
        return ds.map_batches(read_parquet_inputs, batch_size=1, batch_format="pyarrow", num_cpus=0.5,
                              fn_kwargs={"rows_per_block": config.lines_per_block})
    return (ds.map_batches(read_shards, batch_size=1, batch_format="pyarrow", num_cpus=0.5,
                           fn_kwargs={"lines_per_block": config.lines_per_block})
            # batch_size=None: each block the reader yields, as it comes (a batch size here would
            # make the fused read+tokenize task gather that many input rows, i.e. files, first)
            .map_batches(tokenize_block, batch_size=None, batch_format="pyarrow", num_cpus=0.5,
                         fn_kwargs={"config": config.preprocess_config().to_dict(),
                                    "keep_text": config.format == "hdf5"}))


def _embedded_rows(ds, config: EmbedJobConfig, blob_ref: list, writes: dict):
    """Stage 3: the parts written by a pool of `EmbedActor`s; the dataset of their `RECORDS`."""
    from workflows.embedding.actor_pool import actor_pool

    # blocks of `lines_per_block` sentences whatever the files' sizes: one actor call each, spread
    # over the pool (a small corpus was otherwise one block: one call, one actor)
    ds = ds.repartition(target_num_rows_per_block=config.lines_per_block)
    return ds.map_batches(
        EmbedActor, batch_size=config.lines_per_block, batch_format="pyarrow",
        compute=actor_pool(ds, config.num_actors, config.tasks_per_actor),
        num_cpus=config.cpus_per_actor, num_gpus=1 if config.use_gpu else 0,
        fn_constructor_kwargs={"blob_ref": blob_ref, "layers": config.layers, "dtype": config.dtype,
                               "batch_tokens": config.batch_tokens, "use_gpu": config.use_gpu,
                               "threads": int(round(config.cpus_per_actor)),
                               "write_threads": config.write_threads, **writes})


@dataclass
class _Arriving:
    """A file the driver has heard of: its parts so far, and its marker once it came."""

    result: FileResult
    parts: list = field(default_factory=list)
    marker: dict | None = None


class _RecordCollector:
    """The driver's end of the pipeline: part records and markers in (never vectors); each file,
    once its marker has come, handed to ``on_file`` in input order."""

    def __init__(self, files: list[InputFile], model: ResolvedModel, config: EmbedJobConfig, names: list[str],
                 on_file: Callable[[FileResult], None], on_input: Callable[[str], None],
                 say: Callable[[str], None], started: float) -> None:
        self.files = files
        self.by_uri = {f.uri: f for f in files}
        self.model, self.config, self.names = model, config, names
        self.schema = output_schema(names, 2 * model.config.lstm.projection_dim, config.dtype)
        self.on_file, self.on_input, self.say, self.started = on_file, on_input, say, started
        self.arriving: dict[str, _Arriving] = {}
        self.next = 0  # files[next] is the next to hand over
        self.results: list[FileResult] = []
        self.total_tokens, self.last_progress = 0, time.monotonic()

    def add_block(self, block: pa.Table) -> None:
        if block.schema.names != RECORDS.names:  # the driver takes records, never vectors
            raise EmbedError(f"internal error: the driver got columns {block.schema.names}")
        for record in block.to_pylist():
            arriving = self._heard_of(record["input"])
            if record["kind"] == KIND_PART:
                arriving.parts.append(record)
                self.total_tokens += record["tokens"]
            else:
                arriving.marker = record
                self._hand_over_complete()
        if time.monotonic() - self.last_progress > 30:
            self.last_progress = time.monotonic()
            elapsed = self.last_progress - self.started
            self.say(f"[embed {elapsed:7.1f}s] {self.total_tokens:,} tokens "
                     f"({self.total_tokens / elapsed:,.0f}/s), {len(self.results)}/{len(self.by_uri)} files done")

    def _heard_of(self, uri: str) -> _Arriving:
        if uri not in self.arriving:
            self.on_input(uri)
            self.arriving[uri] = _Arriving(FileResult(self.by_uri[uri], "ok"))
        return self.arriving[uri]

    def _hand_over_complete(self) -> None:
        while self.next < len(self.files):
            arriving = self.arriving.get(self.files[self.next].uri)
            if arriving is None or arriving.marker is None:
                return
            del self.arriving[self.files[self.next].uri]
            self.next += 1
            self._finish(arriving)

    def _finish(self, arriving: _Arriving) -> None:
        """The file's counts from its parts and marker, then ``on_file``."""
        result, marker = arriving.result, arriving.marker
        result.lines = int(marker["lines"])
        if marker["kind"] == pre_schema.KIND_FILE_ERROR:
            result.status, result.error = "failed", marker["detail"]
            self.say(f"[embed] {result.input.uri}: FAILED: {marker['detail']}")
        else:
            parts = sorted(arriving.parts, key=lambda p: p["name"])
            result.parts = parts
            result.sha256 = marker["detail"]
            result.sentences = sum(p["rows"] for p in parts)
            result.tokens = sum(p["tokens"] for p in parts)
            if self.config.input_format != "parquet":  # parquet rows are sentences, never blank
                # a line's sentences are consecutive: only neighbouring parts can share one
                shared = sum(a["last_line"] == b["first_line"] for a, b in zip(parts, parts[1:]))
                result.blank_lines = result.lines - (sum(p["distinct_lines"] for p in parts) - shared)
            result.description = describe(result, self.model, self.config, self.names)
            result.schema = self.schema
            self.say(f"[embed {time.monotonic() - self.started:7.1f}s] {result.input.key}: "
                     f"{result.sentences:,} sentences, {result.tokens:,} tokens "
                     f"({result.blank_lines} blank lines skipped)")
        self.results.append(result)
        self.on_file(result)

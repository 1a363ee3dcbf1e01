"""The embedding jobs' pipeline on Ray Data: input files -> one embeddings file each.

    read (one task per file: raw line blocks, then an end-or-error marker; or Parquet batches)
    -> tokenize (CPU tasks; `preprocessing.first_pass.tokenize_lines`, the tokenizer of `elmo preprocess`)
    -> embed (an actor pool: each actor loads the model once from the object store, then
       `elmo_core.embedder.Embedder` over length-sorted, ``batch_tokens``-sized batches; GPU with
       ``use_gpu``)
    -> the driver writes each file's rows as they stream in, and hands the finished file to the
       caller (`embed_files`' ``on_file``), which publishes it.

Blocks keep their order (``preserve_order``), so a file's marker arrives after its last rows: the
file is complete then. Memory stays bounded: Ray Data's streaming executor holds a few blocks per
operator, and the driver one block and one open file writer at a time. Vectors do not depend on
batching, actors or their number (every sentence starts from a zero state).
"""

from __future__ import annotations

import hashlib
import sys
import time
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
from workflows.embedding.output import FORMATS, open_output

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
])


class EmbedError(Exception):
    """The job cannot finish; the message names the input or setting at fault."""


@dataclass
class FileResult:
    """One input file's outcome: a finished local output (``local_path``), or an error."""

    input: InputFile
    status: str  # "ok" | "failed"
    local_path: str | None = None
    sha256: str | None = None
    lines: int = 0  # lines (text) or rows (parquet) read
    blank_lines: int = 0  # lines without tokens (skipped)
    sentences: int = 0
    tokens: int = 0
    error: str | None = None
    description: dict = field(default_factory=dict)


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
    import smart_open

    for uri in files.column("uri").to_pylist():
        rows = 0
        try:
            digest = hashlib.sha256()
            with smart_open.open(uri, "rb", compression="disable") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            with smart_open.open(uri, "rb", compression="disable") as f:
                for batch in pq.ParquetFile(f).iter_batches(
                        rows_per_block, columns=["sentence_id", "source", "line", "sentence_index", "tokens"]):
                    n = batch.num_rows
                    rows += n
                    yield pa.table({
                        "kind": pa.repeat(pa.scalar(KIND_SENTENCE), n), "input": pa.repeat(pa.scalar(uri), n),
                        **{c: batch.column(c) for c in ("sentence_id", "source", "line", "sentence_index", "tokens")},
                        "text": pa.nulls(n, pa.string()), "lines": pa.nulls(n, pa.int64()),
                        "detail": pa.nulls(n, pa.string())}, schema=ROWS)
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
            "text": text, "lines": pa.nulls(n, pa.int64()), "detail": pa.nulls(n, pa.string())}, schema=ROWS))
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
    """Loads the model once (from the object store), then embeds block after block."""

    def __init__(self, blob_ref: list, layers: str, dtype: str, batch_tokens: int, use_gpu: bool,
                 threads: int) -> None:
        import ray
        import torch

        from elmo_core.embedder import Embedder
        from elmo_core.layer_selection import DTYPES, LayerSelection
        from elmo_core.weights import model_from_embedding_bytes

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

    def __call__(self, batch: pa.Table) -> pa.Table:
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
        release_freed_memory()
        return batch


# --- the driver ------------------------------------------------------------------------------------
def output_schema(names: list[str], dim: int, dtype: str) -> pa.Schema:
    """Rows of an output file: `output.ROW_COLUMNS` + one vector column per name."""
    from elmo_core.layer_selection import DTYPES

    vector = pa.list_(pa.list_(pa.from_numpy_dtype(DTYPES[dtype]), dim))
    fields = [ROWS.field(c) for c in ("sentence_id", "source", "line", "sentence_index", "tokens")]
    return pa.schema(fields + [pa.field(n, vector) for n in names])


def describe(result: FileResult, model: ResolvedModel, config: EmbedJobConfig, names: list[str]) -> dict:
    """What an output file records about itself (file metadata, manifest, ledger)."""
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


class _OpenFile:
    """An input file whose rows are arriving: its output being written and its counts."""

    def __init__(self, input_file: InputFile, output) -> None:
        self.output = output
        self.result = FileResult(input_file, "ok")
        self.lines_seen: set[int] = set()


def embed_files(files: list[InputFile], model: ResolvedModel, config: EmbedJobConfig,
                temp_file: Callable[[str], str], on_file: Callable[[FileResult], None],
                log: Callable[[str], None] | None = None) -> list[FileResult]:
    """Embed ``files``; each finished (or failed) file goes to ``on_file`` as soon as it is done,
    in input order, its output at ``result.local_path`` (from ``temp_file(suffix)``)."""
    from ray.data import DataContext

    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    started = time.monotonic()
    context = DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.target_max_block_size)
    context.execution_options.preserve_order = True  # a file's marker follows its rows
    # Ray Data merges what a task yields into blocks of up to this size: left at 128 MiB, a whole
    # input file became one block (one actor's work, its vectors held at once, growing with the
    # file; measured in benchmarks/README.md). Small blocks spread a file over the actors, which
    # take `lines_per_block` sentences a call, and keep memory independent of file size.
    context.target_max_block_size = config.block_kb << 10
    try:
        return _run(files, model, config, temp_file, on_file, say, started)
    finally:
        context.execution_options.preserve_order, context.target_max_block_size = saved


def _run(files, model, config, temp_file, on_file, say, started) -> list[FileResult]:
    import ray

    from elmo_core.layer_selection import LayerSelection

    names = LayerSelection.parse(config.layers, config.dtype).column_names(model.config.n_output_layers)
    blob_ref = [ray.put(model.blob)]  # in the object store: fetched once per node by its actors
    ds = _embedded_rows(_sentence_rows(files, config), config, blob_ref)
    writer = _OutputWriter(files, model, config, names, temp_file, on_file, say, started)
    try:
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            writer.add_block(block)
    finally:
        writer.abort_open_files()
    done = {r.input.uri for r in writer.results}
    missing = [f.uri for f in files if f.uri not in done]
    if missing:
        raise EmbedError(f"{missing[0]}: the reader left no end marker (internal error)")
    return writer.results


def _sentence_rows(files: list[InputFile], config: EmbedJobConfig):
    """Stages 1 and 2: a Ray Dataset of `ROWS` (sentences, and each file's marker after them)."""
    import ray

    from preprocessing.tokenize_tasks import read_shards

    items = [f.to_dict() for f in files]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
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


def _embedded_rows(ds, config: EmbedJobConfig, blob_ref: list):
    """Stage 3: the rows with their vectors, from a pool of `EmbedActor`s."""
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
                               "threads": int(round(config.cpus_per_actor))})


class _OutputWriter:
    """The driver's end of the pipeline: each file's rows into its output as they arrive; a
    file's marker finishes (or aborts) it and hands it to ``on_file``."""

    def __init__(self, files: list[InputFile], model: ResolvedModel, config: EmbedJobConfig, names: list[str],
                 temp_file: Callable[[str], str], on_file: Callable[[FileResult], None],
                 say: Callable[[str], None], started: float) -> None:
        self.by_uri = {f.uri: f for f in files}
        self.model, self.config, self.names = model, config, names
        self.empty = output_schema(names, 2 * model.config.lstm.projection_dim, config.dtype)
        self.temp_file, self.on_file, self.say, self.started = temp_file, on_file, say, started
        self.arriving: dict[str, _OpenFile] = {}
        self.results: list[FileResult] = []
        self.total_tokens, self.last_progress = 0, time.monotonic()

    def add_block(self, block: pa.Table) -> None:
        # a block may hold the end of one file, its marker and the start of the next: take its
        # runs of rows of one kind and one input in order (the marker closes its file)
        for run in _runs(block, "kind", "input"):
            uri = run.column("input")[0].as_py()
            if run.column("kind")[0].as_py() == KIND_SENTENCE:
                self._add_sentences(self._opened(uri), run)
            else:
                for marker in run.to_pylist():
                    self._close(uri, marker)
        if time.monotonic() - self.last_progress > 30:
            self.last_progress = time.monotonic()
            elapsed = self.last_progress - self.started
            self.say(f"[embed {elapsed:7.1f}s] {self.total_tokens:,} tokens "
                     f"({self.total_tokens / elapsed:,.0f}/s), {len(self.results)}/{len(self.by_uri)} files done")

    def _opened(self, uri: str) -> _OpenFile:
        if uri not in self.arriving:
            output = open_output(self.config.format, self.temp_file(FORMATS[self.config.format]), self.names)
            self.arriving[uri] = _OpenFile(self.by_uri[uri], output)
        return self.arriving[uri]

    def _add_sentences(self, current: _OpenFile, run: pa.Table) -> None:
        current.output.add(run)
        n_tokens = int(pc.sum(pc.list_value_length(run.column("tokens"))).as_py() or 0)
        current.result.sentences += run.num_rows
        current.result.tokens += n_tokens
        current.lines_seen.update(run.column("line").to_numpy().tolist())
        self.total_tokens += n_tokens

    def _close(self, uri: str, marker: dict) -> None:
        """The file's marker: its output finished (or aborted, for a file error), then ``on_file``."""
        current = self._opened(uri)
        del self.arriving[uri]
        result = current.result
        result.lines = int(marker["lines"])
        if marker["kind"] == pre_schema.KIND_FILE_ERROR:
            current.output.abort()
            result.status, result.error = "failed", marker["detail"]
            result.sentences = result.tokens = 0
            self.say(f"[embed] {result.input.uri}: FAILED: {marker['detail']}")
        else:
            result.sha256 = marker["detail"]
            if self.config.input_format != "parquet":  # parquet rows are sentences, never blank
                result.blank_lines = result.lines - len(current.lines_seen)
            result.description = describe(result, self.model, self.config, self.names)
            current.output.finish(result.description, self.empty)
            result.local_path = current.output.path
            self.say(f"[embed {time.monotonic() - self.started:7.1f}s] {result.input.key}: "
                     f"{result.sentences:,} sentences, {result.tokens:,} tokens "
                     f"({result.blank_lines} blank lines skipped)")
        self.results.append(result)
        self.on_file(result)
        release_freed_memory()  # the file's row groups

    def abort_open_files(self) -> None:
        for current in self.arriving.values():
            current.output.abort()

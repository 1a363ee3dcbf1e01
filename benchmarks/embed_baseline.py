"""`bench_embed.py`'s baseline phase: elmo_core's embedder in one process, no Ray, doing what the
job's actors do with each block and writing the job's Parquet layout."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from processes import ProcessSampler


def read_blocks(path: Path, lines_per_block: int):
    """The file's non-empty lines as the job reads them: per block of ``lines_per_block`` lines,
    (line numbers from 1, whitespace tokens)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for first in range(0, len(lines), lines_per_block):
        numbers, toks = [], []
        for n, line in enumerate(lines[first:first + lines_per_block], first + 1):
            words = line.split()
            if words:
                numbers.append(n)
                toks.append(words)
        yield numbers, toks


def block_table(path: Path, numbers: list[int], toks: list[list[str]], outputs, n_layers: int, dim: int):
    """One block's rows in the job's Parquet layout; ``outputs`` per sentence (L+1, n, 2P) float32."""
    import numpy as np
    import pyarrow as pa

    offsets = pa.array(np.concatenate([[0], np.cumsum([len(s) for s in toks])]).astype(np.int32))
    columns = {"sentence_id": pa.array([f"{path.name}:{n}:0" for n in numbers]),
               "source": pa.array([str(path)] * len(toks)), "line": pa.array(numbers, pa.int64()),
               "sentence_index": pa.array([0] * len(toks), pa.int32()),
               "tokens": pa.array(toks, pa.list_(pa.string()))}
    for j in range(n_layers):
        flat = np.concatenate([o[j] for o in outputs]).reshape(-1)
        columns[f"layer_{j}"] = pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(pa.array(flat), dim))
    return pa.table(columns)


def phase_baseline(corpus: Path, model_dir: Path, threads: int, lines_per_block: int, batch_tokens: int) -> dict:
    """elmo_core's embedder in this process, on the job's blocks, writing the job's Parquet layout."""
    import pyarrow.parquet as pq
    import torch

    from elmo_core.embedder import Embedder
    from elmo_core.weights import load_model_folder

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out, ProcessSampler() as procs:
        start = time.perf_counter()
        model, _ = load_model_folder(model_dir)
        embedder = Embedder(model, batch_size=1 << 20, layers="all", batch_tokens=batch_tokens)  # as EmbedActor
        load_s = time.perf_counter() - start
        n_layers, dim = model.config.n_output_layers, 2 * model.config.lstm.projection_dim
        embed_s = tokens = sentences = 0
        for path in sorted(corpus.iterdir()):
            writer = None
            for numbers, toks in read_blocks(path, lines_per_block):
                t = time.perf_counter()
                outputs = embedder.embed_all(toks)  # each (L+1, n, 2P) float32
                embed_s += time.perf_counter() - t
                table = block_table(path, numbers, toks, outputs, n_layers, dim)
                if writer is None:
                    writer = pq.ParquetWriter(os.path.join(out, path.stem + ".parquet"), table.schema,
                                              compression="zstd")
                writer.write_table(table)
                tokens += sum(len(s) for s in toks)
                sentences += len(toks)
            writer.close()
        seconds = time.perf_counter() - start
    return {"threads": threads, "seconds": seconds, "model_load_s": load_s, "embed_seconds": embed_s,
            "tokens": tokens, "sentences": sentences, "tokens_per_s": tokens / seconds,
            "tokens_per_s_without_model_load": tokens / (seconds - load_s), "embed_tokens_per_s": tokens / embed_s,
            **procs.summary()}

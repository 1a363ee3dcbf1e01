"""An input's embeddings travel as parts: written by the embedding actors into OUT's staging
area, published (moved to their final names) by the driver once the input is complete.

    staging   OUT/_tmp/<input digest>.<part name>     (invisible: readers and listings skip _tmp)
    final     OUT/<output>/<part name> + _common_metadata      (Parquet: a folder per input)
              OUT/<output>                                     (HDF5: one file, merged by a worker task)

The input digest is a function of the input's identity (URI, size, fingerprint), the model
digest and the output settings, and a part's name of its first line and sentence index
(`output.part_name`), so a rerun writes the same names. Publishing moves files (a rename
locally, a server-side copy + delete on S3; `embed-new` copies a group's parts and deletes the
staged ones in one request): the driver issues requests and carries no vectors.
"""

from __future__ import annotations

import hashlib
import json
import os

from preprocessing.storage import TEMP_DIR, Storage

from workflows import faults
from workflows.embedding.output import (FORMATS, Hdf5Output, part_name, write_common_metadata,
                                        write_part)


def input_digest(input_dict: dict, model_digest: str, settings: dict) -> str:
    """Names the staged parts of one input embedded by one model with one set of settings."""
    text = json.dumps({"input": {k: input_dict.get(k) for k in ("uri", "size", "fingerprint")},
                       "model_digest": model_digest, "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def staging_path(digest: str, first_line: int, first_sentence_index: int) -> str:
    """Where an actor writes a part (relative to OUT)."""
    return f"{TEMP_DIR}/{digest}.{part_name(first_line, first_sentence_index)}"


def publish_parts(store: Storage, result, rel: str, existing: list[str] | None = None,
                  staged_copies: list[str] | None = None) -> list[dict]:
    """Publish ``result``'s staged parts (a `pipeline.FileResult`, complete) as the output ``rel``;
    returns the parts as recorded in the manifest / ledger entry (``path`` relative to OUT, in
    line order). Parquet: moved into the folder ``rel`` (whatever an earlier, killed run left
    there is removed first: ``existing``, the files in it if the caller listed them, else one
    listing), then its ``_common_metadata``. With ``staged_copies`` (a list) on an object store,
    the parts are copied and their staged names appended to it: the caller deletes them (one
    request per 1,000; staged files left by a kill go with the next run's ``clear_temp``).
    HDF5: a worker task merges them into the file ``rel``."""
    if rel.endswith(FORMATS["hdf5"]):
        return _merge_on_worker(store, result, rel)
    final = {rel + "/" + p["name"]: p for p in result.parts}
    if not final:  # no sentences: an empty part keeps the folder readable with its schema
        empty = result.schema.empty_table()
        name = part_name(1, 0)
        final[f"{rel}/{name}"] = {"name": name, "staged": None, "rows": 0, "tokens": 0, "first_line": 0,
                                  "last_line": 0, **write_part(store, f"{rel}/{name}", empty, result.description)}
    if store.local and os.path.isfile(store.path(rel)):  # an output of the one-file layout (before parts)
        os.unlink(store.path(rel))
    left = [f.path for f in store.list(rel)] if existing is None else existing  # a killed run's, not committed
    for path in left:
        if path not in final:
            store.delete(path)
    for path, part in final.items():
        if part["staged"] is not None:
            if staged_copies is not None and not store.local:
                store.copy(part["staged"], path)
                staged_copies.append(part["staged"])
            else:
                store.move(part["staged"], path)
            faults.point("publishing")  # tests: killed between two parts' moves
    write_common_metadata(store, rel, result.schema, result.description)
    return [{"path": path, **{k: part[k] for k in ("first_line", "last_line", "rows", "tokens", "bytes", "sha256")}}
            for path, part in sorted(final.items())]


def _merge_on_worker(store: Storage, result, rel: str) -> list[dict]:
    import ray

    merge = ray.remote(num_cpus=0.5, max_retries=3)(merge_hdf5)
    ray.get(merge.remote(store.uri, [p["staged"] for p in result.parts], rel, result.description))
    return []


def merge_hdf5(out: str, staged: list[str], rel: str, description: dict) -> None:
    """Ray task: an input's staged parts (in line order) -> its HDF5 file, written on this worker
    and published whole at ``rel``; the parts are deleted."""
    import pyarrow.parquet as pq

    store = Storage(out)
    local = store.temp_file(FORMATS["hdf5"])
    output = Hdf5Output(local, description["columns"])
    try:
        for path in staged:
            with store.fs.open_input_file(store.path(path)) as f:
                output.add(pq.read_table(f))
        output.finish(description)
    except BaseException:
        output.abort()
        raise
    store.publish(local, rel)
    for path in staged:
        store.delete(path)

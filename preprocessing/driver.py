"""`elmo preprocess`, the driver: shards -> staged sentences + statistics -> vocabulary -> Parquet.

Two Ray Data executions; nothing is held in memory beyond a block per worker and the counts:

1. read + tokenize + count (`tokenize_tasks`): one read task per shard, a tokenizer task per
   block writing staged sentence files (how many at a time: `task_plan`, never the CPUs present
   at the start); the blocks' statistics are summed with
   ``groupby(kind, source, split, key)``.
2. word ids (`encode_tasks`): the vocabulary (from the train split's counts, or given) is looked
   up for the staged rows of every good shard, and each task writes its sentences per split as
   Parquet files of about ``shard_size_mb``.

Then the manifest (`manifest`) and the commit (`storage`): files moved into ``train/``,
``validation/``, ``test/``, the manifest written last. The tokenizer runs once; character ids
are computed from the tokens when read (see `schema`).
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
from typing import Callable

from elmo_core.vocabulary import Vocabulary

from . import schema
from .config import SPLITS, PreprocessConfig, RunOptions
from .encode_tasks import encode_staged
from .ids import SPLIT_HASH
from .manifest import PassResult, build_manifest
from .ray_session import ensure_ray
from .sources import InputError, InputFile, resolve_inputs
from .dataset import commit
from .storage import Storage
from .task_plan import TaskPlan
from .tokenize_tasks import read_shards, read_staged, source_tag, stage_block


class PreprocessError(Exception):
    """The job cannot finish; the message names the input or output at fault."""


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
                   vocab_path: str | None = None, log: Callable[[str], None] | None = None,
                   vocab_source: str | None = None) -> dict:
    """Preprocess ``inputs`` into the dataset at ``output``; returns its manifest. ``vocab_path``:
    a vocabulary file to use as it is; ``vocab_source``: what the manifest records as its origin
    (default: ``vocab_path``).

    A dataset of the same version (config, vocabulary, input fingerprints) already committed at
    ``output`` is left as it is (no-op). Raises `InputError`/`PreprocessError` naming the input
    at fault; the previously committed dataset, if any, is then untouched.
    """
    options = options or RunOptions()
    say = _Progress(log or (lambda m: print(m, file=sys.stderr, flush=True)), time.monotonic())
    files = resolve_inputs(inputs)
    say(f"{len(files)} input shard(s), {sum(max(f.size, 0) for f in files) / 1e6:.1f} MB")
    given_vocab = _load_vocab(vocab_path) if vocab_path else None
    version = _dataset_version(config, given_vocab, files)
    out = Storage(output)
    current = out.read_json(schema.MANIFEST_NAME)
    if current is not None and current.get("version") == version:
        say(f"{out.uri} already holds this version ({version[:16]}): nothing to do")
        return current

    ensure_ray(options.address)
    plan = TaskPlan.of(len(files), options)
    out.delete_dir(schema.STAGING_DIR)  # debris of an interrupted run (one writer per output directory)
    staging = posixpath.join(schema.STAGING_DIR, f"{version[:16]}-{uuid.uuid4().hex[:8]}")
    started = time.time()
    try:
        with _resource_reservation(enabled=plan.reserve_resources):
            job = PreprocessJob(files, out, staging, config, options, given_vocab, vocab_source or vocab_path,
                                plan, say)
            manifest = build_manifest(job.files, job.config, job.vocab_path, run_passes(job))
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
    out: Storage
    staging: str  # the run's directory under DIR/_staging/
    config: PreprocessConfig
    options: RunOptions
    given_vocab: Vocabulary | None  # --vocab, loaded
    vocab_path: str | None
    plan: TaskPlan
    say: Callable[[str], None]


def run_passes(job: PreprocessJob) -> PassResult:
    import ray

    files, out, staging, config, options, plan, say = (job.files, job.out, job.staging, job.config, job.options,
                                                        job.plan, job.say)

    sentences_dir = posixpath.join(staging, "sentences")
    pool = plan.compute()
    say(f"pass 1/2: read + tokenize ({config.tokenizer}) + count: {plan.describe()}")
    items = [f.to_dict() for f in files]
    stats = (ray.data.from_items(items, override_num_blocks=len(items))
             .map_batches(read_shards, batch_size=1, batch_format="pyarrow", num_cpus=0, compute=plan.read_compute(),
                          fn_kwargs={"lines_per_block": options.lines_per_block})
             .map_batches(stage_block, batch_format="pyarrow", batch_size=options.lines_per_block,
                          fn_kwargs={"config": config.to_dict(), "staging_uri": out.uri_of(sentences_dir)},
                          compute=pool, num_cpus=options.cpus_per_worker)
             .groupby(list(schema.STATS_KEYS), num_partitions=plan.stats_partitions).sum(list(schema.STATS_SUMS))
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
    staged_files = [(f.path, f.size) for f in out.list(sentences_dir)]
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
        groups = plan.encode_groups(good_files, target_bytes)
        written = (ray.data.from_items([{"paths": g} for g in groups], override_num_blocks=len(groups))
                   .map_batches(encode_staged, batch_size=1, batch_format="pyarrow", compute=pool,
                                num_cpus=options.cpus_per_worker,
                                fn_kwargs={"vocab_tokens": vocab.tokens, "vocab_digest": vocab.digest(),
                                           "root_uri": out.uri, "data_dir": posixpath.join(staging, "data"),
                                           "target_bytes": target_bytes})
                   .take_all())

    out.write(posixpath.join(staging, schema.VOCAB_NAME), vocab.to_text().encode("utf-8"))
    train_counts = counts["train"]
    out.write(posixpath.join(staging, schema.COUNTS_NAME),
              "".join(f"{t}\t{train_counts.get(t, 0)}\n" for t in vocab.tokens).encode("utf-8"))
    return PassResult(markers, per_split, counts, vocab, written)

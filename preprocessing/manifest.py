"""The dataset's manifest: what the two passes produced, summed up and listed (counts, OOV rates,
the files of each split, every input with its fingerprint and status, the config and the schema).
It is written last by the commit (`dataset.commit`) and is what readers trust."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from elmo_core.vocabulary import Vocabulary

from . import schema
from .config import SPLITS, PreprocessConfig
from .ids import SPLIT_HASH
from .sources import InputFile


@dataclass(frozen=True)
class PassResult:
    """What the passes hand the manifest: per-shard end markers, line/sentence counters and token
    counts per split, the vocabulary, and the Parquet files written (staged paths)."""

    markers: dict  # source URI -> its file_end / file_error marker row
    per_split: dict  # split -> Counter of lines, empty_lines, lines_out, sentences_out, tokens_out, ...
    counts: dict  # split -> Counter of tokens
    vocab: Vocabulary
    written: list  # {"split", "path", "bytes", "rows"} per Parquet file


def build_manifest(files: list[InputFile], config: PreprocessConfig, vocab_path: str | None,
                   result: PassResult) -> dict:
    """The manifest of a run (without its version and timing, which the driver adds)."""
    markers, per_split, counts, vocab, written = (result.markers, result.per_split, result.counts, result.vocab,
                                                  result.written)
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
        files_out = sorted(({"staged": w["path"], "bytes": w["bytes"], "rows": w["rows"]}
                            for w in written if w["split"] == split), key=lambda w: w["staged"])
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
            entry.update(status="quarantined", error=marker["key"])
        else:
            entry.update(status="ok", sha256=marker["key"])
        inputs.append(entry)
    manifest = {
        "format": schema.MANIFEST_FORMAT,
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "split_hash": SPLIT_HASH,
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


def manifest_files(manifest: dict) -> list[str]:
    """Every file a manifest owns, relative to its directory."""
    files = [manifest.get("vocab", {}).get("file", schema.VOCAB_NAME),
             manifest.get("vocab", {}).get("counts_file", schema.COUNTS_NAME)]
    for split in manifest.get("splits", {}).values():
        files.extend(entry["path"] for entry in split.get("files", []))
    return files

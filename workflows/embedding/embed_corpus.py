"""``elmo embed-corpus`` and its ``ray job submit`` twin ``python -m workflows.embedding.embed_corpus``: embed
corpora with a model from the registry (or files), on Ray Data.

    elmo embed-corpus INPUT... --model MODEL --output OUT
        [--input-format sentence|document|parquet] [--tokenizer moses|whitespace]
        [--layers all|top|average|mix:W0,W1,W2] [--dtype float32|float16] [--format parquet|hdf5]
        [--num-actors N] [--batch-tokens N] [--use-gpu] [--address ADDR]

One output per input file, ``OUT/<input key>.parquet/`` (a folder of parts written by the
embedding actors, `workflows.embedding.parts`; or one ``.hdf5`` file), published when the file is
done; then ``OUT/_manifest.json``, written last: the model (URI, pinned version, digest), the
settings, every input (URI, size, fingerprint, sha256, counts, output and its parts, or error) and totals.
Readers trust the manifest. The same inputs, model and settings again: nothing to do. Exit
status: 0 done, 2 bad input or arguments (named on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

from preprocessing.entry_point import entry_point
from elmo_core.cli_fields import add_fields, from_args


from workflows.embedding.config import EmbedJobConfig

MANIFEST = "_manifest.json"
MANIFEST_FORMAT = 1


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    """The settings `embed-corpus` and `embed-new` share: the model, `EmbedJobConfig`'s, Ray's."""
    p.add_argument("--model", required=True, metavar="MODEL",
                   help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, a model directory, "
                        "or OPTIONS.json,WEIGHTS.hdf5 (an alias is pinned to one version at the start)")
    p.add_argument("--address", metavar="RAY_ADDRESS",
                   help="Ray cluster (default: the job's cluster, else a local Ray started now)")
    add_fields(p, EmbedJobConfig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, directories, globs, s3:// or http(s):// URLs, @LIST (as elmo preprocess)")
    p.add_argument("--output", required=True, metavar="OUT", help="directory or s3:// prefix")
    add_job_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace embeddings already committed in OUT")


def job_config(args: argparse.Namespace) -> EmbedJobConfig:
    return from_args(EmbedJobConfig, args)


def check_layers(config: EmbedJobConfig, model) -> None:
    """A ``mix`` needs one weight per layer of this model: checked before any work starts."""
    from elmo_core.layer_selection import LayerSelection

    LayerSelection.parse(config.layers, config.dtype).check(model.config.n_output_layers)


def tokenization_label(config: EmbedJobConfig) -> str:
    """The settled tokenizer, as the job's first line names it."""
    from elmo_core.tokenization import Tokenization

    if config.input_format == "parquet":
        return "none (parquet input is tokenized)"
    return Tokenization(config.tokenizer, config.language).describe()


def identity_of(files, model, config: EmbedJobConfig) -> str:
    """Names what a run produces: the inputs as they are, the weights, the output settings."""
    text = json.dumps({"inputs": [f.to_dict() for f in files], "model_digest": model.digest,
                       "settings": config.output_settings(), "format": MANIFEST_FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def run_embed_corpus(inputs: list[str], output: str, model_spec: str, config: EmbedJobConfig,
                     address: str | None = None, overwrite: bool = False, log=None) -> dict:
    """Embed ``inputs`` into ``output``; returns the committed manifest (with ``reused``: True
    when it was already there and nothing was done). Raises `InputError`
    (bad inputs), `ValueError` (bad model or settings) or `EmbedError` naming the cause."""
    from workflows.embedding.model_source import resolve_model
    from preprocessing.ray_session import ensure_ray
    from preprocessing.storage import Storage

    from workflows.embedding.job_run import EmbeddingRun
    from workflows.embedding.parts import publish_parts
    from workflows.embedding.pipeline import EmbedError, embed_files, list_inputs, output_name

    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    files = list_inputs(inputs, config)
    store = Storage(output)
    model = resolve_model(model_spec)
    check_layers(config, model)
    config = config.for_model(model.tokenization, model.version, lambda m: say(f"[embed] warning: {m}"))
    identity = identity_of(files, model, config)
    existing = store.read(MANIFEST)
    if existing is not None:
        previous = json.loads(existing)
        if previous.get("identity") == identity:
            say(f"[embed] {output} already holds these embeddings (same inputs, model and settings): nothing to do")
            return {**previous, "reused": True}
        if not overwrite:
            raise EmbedError(f"{output} already holds other embeddings ({MANIFEST}); "
                             "choose another --output or pass --overwrite")
        store.delete(MANIFEST)  # from here on, readers see no committed embeddings until the new manifest
    say(f"[embed] {len(files)} input file(s), model {model.version} (sha256 {model.digest[:12]}), "
        f"tokenizer {tokenization_label(config)}, layers {config.layers}, {config.dtype}, {config.format}, "
        f"{config.num_actors} actor(s){'' if config.num_actors.fixed else ' (the pool grows and shrinks between them)'}")
    store.clear_temp()
    ensure_ray(address)
    entries = []

    def publish(result) -> None:
        entry = {**result.input.to_dict(), "sha256": result.sha256, "status": result.status,
                 "lines": result.lines, "blank_lines": result.blank_lines,
                 "sentences": result.sentences, "tokens": result.tokens}
        if result.status == "ok":
            entry["output"] = output_name(result.input.key, config.format)
            entry["parts"] = publish_parts(store, result, entry["output"])
        else:
            entry["error"] = result.error
        entries.append(entry)

    started = time.monotonic()
    run = EmbeddingRun("embed-corpus", model, list(inputs), output, config.output_settings(), say)
    try:
        embed_files(files, model, config, store, publish, say)
        failed = [e for e in entries if e["status"] != "ok"]
        if failed and not config.quarantine_bad_files:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise EmbedError(f"{failed[0]['error']}{more}; pass --quarantine-bad-files to skip and list them")
        totals = {k: sum(e[k] for e in entries if e["status"] == "ok")
                  for k in ("lines", "blank_lines", "sentences", "tokens")}
        if totals["sentences"] == 0:
            raise EmbedError(f"{', '.join(inputs)}: no sentences to embed (every input is empty or blank)")
    except BaseException:
        run.finish({"files": len(entries)}, time.monotonic() - started, status="FAILED")
        raise
    seconds = time.monotonic() - started
    manifest = {"format": MANIFEST_FORMAT, "identity": identity, **model.describe(),
                **({"mlflow_run_id": run.run_id} if run.run_id else {}),
                "settings": config.output_settings(), "files": entries, "quarantined": [e["uri"] for e in failed],
                **totals, "seconds": round(seconds, 3), "tokens_per_second": round(totals["tokens"] / max(seconds, 1e-9), 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store.write(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    store.clear_temp(remove_dir=True)
    run.finish({"files": len(entries) - len(failed), "quarantined": len(failed), **totals}, seconds)
    say(f"[embed] done: {totals['sentences']:,} sentences, {totals['tokens']:,} tokens in {seconds:.1f}s "
        f"({manifest['tokens_per_second']:,.0f} tokens/s) -> {output}")
    return manifest


def run(args: argparse.Namespace) -> int:
    from preprocessing.sources import InputError

    from workflows.embedding.pipeline import EmbedError

    try:
        run_embed_corpus(args.inputs, args.output, args.model, job_config(args), args.address, args.overwrite)
    except (InputError, EmbedError, ValueError) as exc:
        print(f"elmo embed-corpus: error: {exc}", file=sys.stderr)
        return 2
    return 0


main = entry_point("python -m workflows.embedding.embed_corpus", __doc__, add_arguments, run)


if __name__ == "__main__":
    sys.exit(main())


"""`elmo demo`: the whole product on real text, on this machine, with no service running.

    elmo demo [--output-dir out/demo] [--quick] [--fresh] [--verbose]
    (= bash scripts/run.sh [...] = python -m workflows.demo [...])

1. a local Ray, and a local MLflow store (``OUT/mlflow.db``, artifacts in ``OUT/mlartifacts``);
2. ``elmo preprocess`` of general English (Wikipedia) and of a domain (Python's documentation),
   the domain with the general vocabulary (`preprocessing.sample_text` says where the text comes from);
3. ``elmo pretrain`` of a small biLM, registered as ``elmo-demo``, alias ``champion`` (the gate);
4. ``elmo adapt`` from that version to the domain, registered as ``elmo-demo-python``, with
   held-out perplexity of both domains before and after;
5. ``elmo embed-corpus`` of new domain text with ``models:/elmo-demo-python@champion``;
6. ``elmo embed-new`` on an incoming folder, a file added, ``elmo embed-new`` again (only that
   file is embedded);
7. plots (``OUT/plots``), a summary table and ``OUT/summary.json``.

Each step prints one line with its elapsed time (a live bar for training on a terminal); what
Ray and the steps print goes to ``OUT/demo.log`` (``--verbose``: to the terminal). Rerunning
reuses every finished step whose settings and inputs are unchanged, and says so; ``--fresh``
starts over in the same directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from preprocessing.entry_point import entry_point

from workflows.console import Console, elapsed, output_to
from workflows.embedding.config import EmbedJobConfig
from workflows.training.config import TrainJobConfig

GENERAL_MODEL, DOMAIN_MODEL = "elmo-demo", "elmo-demo-python"
EXPERIMENT = "elmo-demo"


@dataclass(frozen=True)
class DemoProfile:
    """Every number the demo uses. ``quick`` is what the test runs (< 3 min here); ``full`` is
    the default (< 15 min here)."""

    name: str
    general_paragraphs: int | None  # Wikipedia paragraphs used (None: all, ~0.4M words)
    domain_paragraphs: int | None  # Python reference paragraphs used
    max_vocab: int  # words in the (general) vocabulary; the softmax's size
    preset: str  # elmo_core.config.PRESETS: the sizes not given below
    char_filters: tuple | None  # the char CNN's (width, count) filters (None: the preset's)
    lstm_dim: int | None  # LSTM cell size (None: the preset's)
    projection_dim: int | None  # LSTM projection = token vector size (None: the preset's)
    negatives: int  # sampled-softmax negatives per batch (at most the vocabulary)
    dropout: float
    pretrain_steps: int
    adapt_steps: int
    eval_every: int
    batch_tokens: int
    eval_max_sentences: int
    learning_rate: float
    adapt_learning_rate: float

    def model_options(self, vocab_size: int) -> dict:
        """bilm-tf options of the demo's biLM for a vocabulary of this size (its training numbers
        are `recipe`'s)."""
        from elmo_core.config import BiLMConfig

        config = BiLMConfig.preset(self.preset).with_recipe({"n_tokens_vocab": vocab_size})
        lstm = dataclasses.replace(config.lstm, dim=self.lstm_dim or config.lstm.dim,
                                   projection_dim=self.projection_dim or config.lstm.projection_dim)
        cnn = dataclasses.replace(config.char_cnn, filters=self.char_filters or config.char_cnn.filters)
        return config.replace(lstm=lstm, char_cnn=cnn).to_options()

    def recipe(self, stage: str) -> dict:
        """The `TrainingConfig` fields ``stage`` ("pretrain" or "adapt") trains with."""
        if stage == "adapt":
            return {"learning_rate": self.adapt_learning_rate, "dropout": self.dropout}
        return {"learning_rate": self.learning_rate, "dropout": self.dropout,
                "n_negative_samples_batch": self.negatives}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


PROFILES = {
    "quick": DemoProfile("quick", general_paragraphs=1500, domain_paragraphs=600, max_vocab=5000, preset="tiny",
                         char_filters=None, lstm_dim=None, projection_dim=None, negatives=5000, dropout=0.0,
                         pretrain_steps=60, adapt_steps=30, eval_every=15, batch_tokens=2000,
                         eval_max_sentences=300, learning_rate=0.01, adapt_learning_rate=0.005),
    # Sized for the whole tour in under 15 minutes on 2 cores: `lm5m` itself trained at ~650
    # tokens/s here (a fifth of an epoch of the Wikipedia text in 15 minutes); with LSTMs of
    # 256/128 and 2,048 negatives ~1,170; these sizes ~1,500 (300 + 100 steps: 15m37s in all;
    # 180 + 50 steps: 13m16s from an empty output directory, 9m49s of it pretraining).
    "full": DemoProfile("full", general_paragraphs=None, domain_paragraphs=None, max_vocab=20000, preset="lm5m",
                        char_filters=((1, 32), (2, 32), (3, 64), (4, 128)), lstm_dim=256, projection_dim=128,
                        negatives=1024, dropout=0.1, pretrain_steps=180, adapt_steps=50, eval_every=30,
                        batch_tokens=2560, eval_max_sentences=1000, learning_rate=0.002, adapt_learning_rate=0.001),
}


# --- reuse ------------------------------------------------------------------------------------------
class TourProgress:
    """``OUT/state.json``: each finished step's outcome under a key of what it depended on."""

    NAME = "state.json"

    def __init__(self, store) -> None:
        self.store = store  # `preprocessing.storage.Storage` of OUT
        saved = store.read(self.NAME)
        self.data = json.loads(saved) if saved is not None else {}

    def get(self, step: str, key: str) -> dict | None:
        entry = self.data.get(step)
        return entry["outcome"] if entry and entry["key"] == key else None

    def put(self, step: str, key: str, outcome: dict) -> None:
        self.data[step] = {"key": key, "outcome": outcome}
        self.store.write(self.NAME, json.dumps(self.data, indent=2, default=str).encode())

    def registered(self, step: str, key: str, model_name: str) -> dict | None:
        """The step's outcome, if it registered a version of ``model_name`` that still exists."""
        from workflows.registry.tracking import model_version_exists

        outcome = self.get(step, key)
        return outcome if outcome and model_version_exists(model_name, outcome["version"]) else None


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_documents(store, rel: str, paragraphs: list[str]) -> None:
    """One paragraph a line; rewritten only if different (an unchanged file keeps its mtime, so
    preprocessing and the scheduler see the same file)."""
    data = "".join(p + "\n" for p in paragraphs).encode("utf-8")
    if store.read(rel) != data:
        store.write(rel, data)


def export_model(model_uri: str, destination: Path) -> Path:
    """The registered model as a native model directory (config.json, model.safetensors,
    vocab.txt) at ``destination``, for ``elmo embed --model``; kept if it already holds that model."""
    from workflows.registry.tracking import download_model

    stamp = destination / "source.txt"
    if stamp.exists() and stamp.read_text(encoding="utf-8").strip() == model_uri:
        return destination
    from elmo_core.atomic import atomic_directory

    with tempfile.TemporaryDirectory(prefix="elmo-demo-model-") as download, atomic_directory(destination) as staged:
        shutil.copytree(download_model(model_uri, download), staged, dirs_exist_ok=True)
        (staged / "source.txt").write_text(model_uri + "\n", encoding="utf-8")
    return destination


def training_progress(experiment: str, run_prefix: str, total: int):
    """A poller for the console bar: the newest step rank 0 logged to the step's MLflow run."""
    from workflows.registry.tracking import latest_step

    def poll():
        step = latest_step(experiment, run_prefix, "train_loss")
        return None if step is None else (step, total)

    return poll


# --- the tour ----------------------------------------------------------------------------------------
def run_demo(out: Path, profile: DemoProfile, verbose: bool = False, fresh: bool = False) -> dict:
    from preprocessing.storage import Storage

    sys.stderr.flush()
    # the terminal, kept apart: fd 2 itself goes to the log while the steps run
    console = Console(os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace"), n_steps=8)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{out / 'mlflow.db'}"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local Ray, no token needed
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    log_path = None if verbose else out / "demo.log"
    store = Storage(str(out))
    progress = TourProgress(store)
    began = time.monotonic()
    console.say(f"elmo demo ({profile.name}): everything goes to {out}"
                + ("" if verbose else f"; Ray's and the steps' own output to {log_path}"))
    summary: dict = {"profile": profile.name, "output_dir": str(out)}
    try:
        with output_to(log_path):
            _start_ray(verbose)
            try:
                _Tour(out, profile, console, progress, store, summary).run()
            finally:
                import ray

                ray.shutdown()
    except Exception:
        if log_path is not None:
            console.say(f"elmo demo failed; the steps' own output is in {log_path}. Rerunning continues "
                        "from the last finished step.")
        raise
    store.clear_temp(remove_dir=True)
    summary["seconds"] = round(time.monotonic() - began, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_summary(console, summary)
    return summary


def _start_ray(verbose: bool) -> None:
    import ray
    from ray.data import DataContext

    cpus = os.cpu_count() or 2
    # one CPU more than the machine has: a training worker or an embedding actor takes whole CPUs,
    # Ray Data's readers ask for fractions of one beside it
    ray.init(address="local", num_cpus=cpus + 1, include_dashboard=False, log_to_driver=verbose,
             logging_level="INFO" if verbose else "ERROR")
    DataContext.get_current().enable_progress_bars = verbose
    import logging

    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


class _Tour:
    """The tour's steps, in order; each prints one line (`Console.step`) and adds its part to
    ``summary``."""

    def __init__(self, out: Path, profile: DemoProfile, console: Console, progress: TourProgress, store,
                 summary: dict) -> None:
        self.out, self.profile, self.console, self.progress, self.store = out, profile, console, progress, store
        self.summary = summary
        self.cpus = os.cpu_count() or 2
        self.corpora_dir, self.data_dir = out / "corpora", out / "data"
        self.champion = f"models:/{DOMAIN_MODEL}@champion"

    def run(self) -> None:
        corpora = self.write_text()
        general, domain = self.preprocess()
        _ensure_experiment(self.out)
        job = self.training_job()
        pretrained = self.pretrain(job, general)
        adapted = self.adapt(job, pretrained, domain)
        new_files = sorted(str(p) for p in (self.corpora_dir / "new").glob("*.txt"))
        embed_config = EmbedJobConfig(input_format="document", num_actors=1, cpus_per_actor=float(self.cpus))
        self.embed_corpus(new_files, embed_config)
        self.embed_new(new_files, embed_config)
        self.plots(pretrained, adapted, corpora)
        self.where_to_look()

    def write_text(self):
        """1. Wikipedia and Python's documentation, as text files under OUT/corpora."""
        from preprocessing import sample_text

        with self.console.step("real text: Wikipedia (general English) and Python's documentation (the domain)") as s:
            corpora = sample_text.load_corpora()
            general = corpora.general[:self.profile.general_paragraphs]
            domain = corpora.domain[:self.profile.domain_paragraphs]
            for i in range(4):  # a few files: preprocessing reads them in parallel
                write_documents(self.store, f"corpora/general/wikipedia-{i}.txt", general[i::4])
            for i in range(2):
                write_documents(self.store, f"corpora/domain/python-reference-{i}.txt", domain[i::2])
            for i, paragraphs in enumerate(corpora.new):
                write_documents(self.store, f"corpora/new/python-modules-{i}.txt", paragraphs)
            text = {"general_words": sample_text.words(general), "domain_words": sample_text.words(domain),
                    "new_words": [sample_text.words(p) for p in corpora.new]}
            self.summary["text"] = text
            s["note"] = f"{text['general_words']:,} + {text['domain_words']:,} words ({self.corpora_dir})"
        return corpora

    def preprocess(self) -> tuple[dict, dict]:
        """2. `elmo preprocess` of both corpora; returns their manifests (general, domain)."""
        from preprocessing.config import PreprocessConfig, RunOptions
        from preprocessing.driver import run_preprocess

        data_dir = self.data_dir
        with self.console.step("elmo preprocess: both corpora -> Parquet (the domain with the general vocabulary)") as s:
            config = PreprocessConfig(input_format="document", max_vocab=self.profile.max_vocab, min_count=2,
                                      validation_fraction=0.05, test_fraction=0.02)
            options = RunOptions(num_workers=self.cpus, cpus_per_worker=0.5)
            say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731 (to the log)
            before = {name: _read_json(data_dir / name / "manifest.json") for name in ("general", "domain")}
            general = run_preprocess([str(self.corpora_dir / "general")], str(data_dir / "general"), config,
                                     options, log=say)
            domain = run_preprocess([str(self.corpora_dir / "domain")], str(data_dir / "domain"), config, options,
                                    vocab_path=str(data_dir / "general" / "vocab.txt"), log=say)
            reused = [name for name, m in (("general", general), ("domain", domain))
                      if before[name] and before[name]["created_unix"] == m["created_unix"]]
            self.summary["data"] = {name: {"dir": str(data_dir / name), "sentences": m["sentences_out"],
                                           "tokens": m["tokens_out"], "oov_rate": m["oov_rate"],
                                           "version": m["version"]}
                                    for name, m in (("general", general), ("domain", domain))}
            s["note"] = (f"general {general['tokens_out']:,} tokens, vocabulary {general['vocab']['size']:,}; "
                         f"domain {domain['tokens_out']:,} tokens, OOV {domain['oov_rate']:.1%}"
                         + (f" (reused: {' and '.join(reused)}, same text and settings)" if reused else ""))
        return general, domain

    def training_job(self) -> TrainJobConfig:
        """The pretraining job's settings (adaptation's are the same, on the domain's data)."""
        profile = self.profile
        return TrainJobConfig(data=str(self.data_dir / "general"), max_steps=profile.pretrain_steps,
                              batch_tokens=profile.batch_tokens, eval_every=profile.eval_every,
                              checkpoint_every=profile.eval_every, report_every=max(1, profile.eval_every // 6),
                              eval_max_sentences=profile.eval_max_sentences, num_workers=1,
                              cpus_per_worker=self.cpus, torch_threads=self.cpus, shuffle_buffer=5000)

    def pretrain(self, job: TrainJobConfig, general: dict) -> dict:
        """3. `elmo pretrain` on general English, registered as GENERAL_MODEL (or the version a
        previous run registered from the same data and settings)."""
        from workflows.training.pretrain import pretrain

        profile = self.profile
        key = _digest(profile.key(), general["version"])
        pretrained = self.progress.registered("pretrain", key, GENERAL_MODEL)
        run_name = f"demo-pretrain-{key}"
        model_options = profile.model_options(general["vocab"]["size"])
        lstm = model_options["lstm"]
        with self.console.step(f"elmo pretrain: a biLM (LSTMs {lstm['dim']}/{lstm['projection_dim']}) on general "
                               f"English, registered as {GENERAL_MODEL}",
                               None if pretrained else training_progress(EXPERIMENT, run_name,
                                                                         profile.pretrain_steps)) as s:
            if pretrained:
                s["note"] = f"reused {GENERAL_MODEL} v{pretrained['version']} (same data and settings)"
            else:
                result = pretrain(job, profile.preset, GENERAL_MODEL, str(self.out / "ray_results"),
                                  experiment=EXPERIMENT, model_config=model_options,
                                  recipe=profile.recipe("pretrain"), run_name=run_name)
                pretrained = {k: result[k] for k in ("name", "version", "promoted", "val_ppl", "run_id", "reason")}
                pretrained["tokens_per_s"] = median_metric(result["run_id"], "tokens_per_second")
                self.progress.put("pretrain", key, pretrained)
                s["note"] = (f"held-out perplexity {pretrained['val_ppl']:.1f}; {GENERAL_MODEL} "
                             f"v{pretrained['version']}"
                             f"{', champion' if pretrained['promoted'] else ' (alias kept: ' + pretrained.get('reason', '') + ')'}")
        self.summary["pretrain"] = pretrained
        return pretrained

    def adapt(self, job: TrainJobConfig, pretrained: dict, domain: dict) -> dict:
        """4. `elmo adapt` of that version to the domain, registered as DOMAIN_MODEL; its
        registered version exported as a model folder (OUT/model)."""
        from workflows.training.adapt import adapt

        profile = self.profile
        parent = f"models:/{GENERAL_MODEL}/{pretrained['version']}"
        key = _digest(profile.key(), parent, domain["version"])
        adapted = self.progress.registered("adapt", key, DOMAIN_MODEL)
        run_name = f"demo-adapt-{key}"
        with self.console.step(f"elmo adapt: {GENERAL_MODEL} v{pretrained['version']} -> Python's documentation, "
                               f"registered as {DOMAIN_MODEL}",
                               None if adapted else training_progress(EXPERIMENT, run_name, profile.adapt_steps)) as s:
            if adapted:
                s["note"] = f"reused {DOMAIN_MODEL} v{adapted['version']}"
            else:
                adapt_job = job.replace(data=str(self.data_dir / "domain"), max_steps=profile.adapt_steps)
                result = adapt(adapt_job, parent, DOMAIN_MODEL, str(self.out / "ray_results"),
                               source_data=str(self.data_dir / "general"), experiment=EXPERIMENT, run_name=run_name,
                               recipe=profile.recipe("adapt"))
                adapted = {k: result[k] for k in ("name", "version", "promoted", "reason", "run_id", "target_ppl_before",
                                                  "target_ppl_after", "source_ppl_before", "source_ppl_after")}
                adapted["tokens_per_s"] = median_metric(result["run_id"], "tokens_per_second")
                self.progress.put("adapt", key, adapted)
            s["note"] = (f"{s['note'] + '; ' if s['note'] else ''}domain perplexity "
                         f"{adapted['target_ppl_before']:.1f} -> {adapted['target_ppl_after']:.1f}, general "
                         f"{adapted['source_ppl_before']:.1f} -> {adapted['source_ppl_after']:.1f}; "
                         f"{DOMAIN_MODEL} v{adapted['version']}"
                         + (", champion" if adapted["promoted"] else
                            f" (alias kept: {adapted.get('reason', '')})"))
        self.summary["adapt"] = adapted
        adapted["model_dir"] = str(export_model(f"models:/{DOMAIN_MODEL}/{adapted['version']}", self.out / "model"))
        return adapted

    def embed_corpus(self, new_files: list[str], embed_config: EmbedJobConfig) -> None:
        """5. `elmo embed-corpus` of new domain text with the domain model's champion."""
        from workflows.embedding.embed_corpus import run_embed_corpus

        output = self.out / "embeddings" / "corpus"
        with self.console.step(f"elmo embed-corpus: new domain text with {self.champion}") as s:
            manifest = run_embed_corpus(new_files[:2], str(output), self.champion, embed_config)
            self.summary["embed_corpus"] = {
                "output": str(output), "model": manifest["model_version"], "files": len(manifest["files"]),
                "sentences": manifest["sentences"], "tokens": manifest["tokens"],
                "tokens_per_s": manifest["tokens_per_second"], "reused": manifest.get("reused", False)}
            s["note"] = (f"{manifest['sentences']:,} sentences from {len(manifest['files'])} files with "
                         f"{manifest['model_version']}, {manifest['tokens_per_second']:,.0f} tokens/s"
                         + (" (reused: same inputs, model and settings)" if manifest.get("reused") else ""))

    def embed_new(self, new_files: list[str], embed_config: EmbedJobConfig) -> None:
        """6. `elmo embed-new` on an incoming folder, a file added, `elmo embed-new` again."""
        from workflows.embedding.embed_new import run_once

        incoming, scheduled = self.out / "incoming", self.out / "embeddings" / "scheduled"
        incoming.mkdir(exist_ok=True)
        for path in new_files[:2]:
            if not (incoming / Path(path).name).exists():
                shutil.copy2(path, incoming / Path(path).name)
        passes = []
        with self.console.step(f"elmo embed-new: {incoming} -> {scheduled}, then one file added and run again") as s:
            passes.append(run_once(str(incoming), str(scheduled), self.champion, embed_config))
            added = incoming / Path(new_files[2]).name
            if not added.exists():
                shutil.copy2(new_files[2], added)
            passes.append(run_once(str(incoming), str(scheduled), self.champion, embed_config))
            self.summary["embed_new"] = {"output": str(scheduled), "passes": passes}
            s["note"] = "; ".join(f"pass {i + 1}: {_pass_note(p)}" for i, p in enumerate(passes))

    def plots(self, pretrained: dict, adapted: dict, corpora) -> None:
        """7. Perplexity curves, and ELMo vectors of ambiguous words by layer."""
        with self.console.step("plots: perplexity curves, and ELMo vectors of ambiguous words by layer") as s:
            self.summary["plots"] = make_plots(self.out, pretrained, adapted, corpora, self.champion)
            s["note"] = ", ".join(self.summary["plots"].values())

    def where_to_look(self) -> None:
        """8. How to open the MLflow UI on the demo's store."""
        with self.console.step("MLflow: runs, curves and registered models") as s:
            self.summary["mlflow_ui"] = (f"mlflow ui --backend-store-uri sqlite:///{self.out / 'mlflow.db'} "
                                         f"--host 127.0.0.1 --port 5000")
            s["note"] = f"open with: {self.summary['mlflow_ui']}  (then http://127.0.0.1:5000)"


def _pass_note(summary: dict) -> str:
    embedded = summary.get("embedded", [])
    status = summary.get("status")
    if embedded:
        names = ", ".join(Path(e).name.split(".txt.")[0] + ".txt" for e in embedded)
        return f"{len(embedded)} new file{'s' if len(embedded) > 1 else ''} embedded ({names})"
    return "nothing new" if status in ("nothing", "done") else str(status)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def median_metric(run_id: str, key: str) -> float | None:
    import statistics

    from workflows.registry.tracking import metric_history

    values = [h[key] for h in metric_history(run_id, key)]
    return statistics.median(values) if values else None


def _ensure_experiment(out: Path) -> None:
    """The demo's experiment with its artifacts under OUT (not ./mlruns of the working directory)."""
    from workflows.registry.tracking import ensure_experiment

    ensure_experiment(EXPERIMENT, (out / "mlartifacts").as_uri())


def make_plots(out: Path, pretrained: dict, adapted: dict, corpora, model_uri: str) -> dict:
    import numpy as np

    from elmo_core.embedder import Embedder
    from elmo_core.weights import load_model_folder

    from workflows.demo import plots
    from workflows.registry.tracking import download_pinned, metric_history

    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    curves = plots.perplexity_curves(
        metric_history(pretrained["run_id"], "val_ppl"), metric_history(adapted["run_id"], "val_ppl"),
        before={"domain": adapted["target_ppl_before"], "general": adapted["source_ppl_before"]},
        after={"domain": adapted["target_ppl_after"], "general": adapted["source_ppl_after"]},
        path=plots_dir / "perplexity.png")
    general = plots.tokenize_for_plot(corpora.general, 6000)
    domain = plots.tokenize_for_plot(corpora.domain + [p for f in corpora.new for p in f], 6000)
    occurrences = plots.find_occurrences(general, domain)
    folder, _, _ = download_pinned(model_uri, str(plots_dir / ".model"))
    model, _ = load_model_folder(folder)
    vectors = Embedder(model, batch_size=64, layers="all").embed_all([o.tokens for o in occurrences])
    layers = np.stack([v[:, o.position] for v, o in zip(vectors, occurrences)])  # (n, L+1, 2P)
    contexts = plots.context_projection(occurrences, layers, plots_dir / "contexts.png")
    shutil.rmtree(plots_dir / ".model", ignore_errors=True)
    return {"perplexity": str(curves), "contexts": str(contexts)}


def print_summary(console: Console, summary: dict) -> None:
    p, a, e = summary["pretrain"], summary["adapt"], summary["embed_corpus"]
    rows = [
        ("pretrained", f"{GENERAL_MODEL} v{p['version']}", f"held-out general perplexity {p['val_ppl']:.1f}",
         f"{p['tokens_per_s']:,.0f} tokens/s" if p.get("tokens_per_s") else ""),
        ("adapted", f"{DOMAIN_MODEL} v{a['version']}",
         f"domain {a['target_ppl_before']:.1f} -> {a['target_ppl_after']:.1f}; "
         f"general {a['source_ppl_before']:.1f} -> {a['source_ppl_after']:.1f}",
         f"{a['tokens_per_s']:,.0f} tokens/s" if a.get("tokens_per_s") else ""),
        ("model dir", f"{DOMAIN_MODEL} v{a['version']}", a["model_dir"], "elmo embed --model"),
        ("embed-corpus", f"{e['sentences']:,} sentences", e["output"],
         f"{e['tokens_per_s']:,.0f} tokens/s" if e.get("tokens_per_s") else ""),
        *[(f"embed-new #{i + 1}", _pass_note(x), summary["embed_new"]["output"] if i == 0 else "", "")
          for i, x in enumerate(summary["embed_new"]["passes"])],
        ("plots", "", ", ".join(summary["plots"].values()), ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    console.say("")
    for row in rows:
        console.say("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    console.say(f"\ndone in {elapsed(summary['seconds'])}; summary: {summary['output_dir']}/summary.json")
    console.say(f"MLflow UI: {summary['mlflow_ui']}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="out/demo", type=Path, help="where everything goes (default: out/demo)")
    parser.add_argument("--quick", action="store_true", help="a smaller run (< 3 min here; what the test runs)")
    parser.add_argument("--fresh", action="store_true", help="delete the output directory first")
    parser.add_argument("--verbose", action="store_true", help="Ray's and the steps' output on the terminal")


def run(args: argparse.Namespace) -> int:
    from preprocessing.sample_text import TextSourceError

    try:
        run_demo(args.output_dir, PROFILES["quick" if args.quick else "full"], args.verbose, args.fresh)
    except TextSourceError as exc:
        print(f"elmo demo: error: {exc}", file=sys.stderr)
        return 2
    return 0

main = entry_point("elmo demo", __doc__, add_arguments, run,
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)


if __name__ == "__main__":
    sys.exit(main())

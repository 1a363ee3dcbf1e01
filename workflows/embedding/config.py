"""Settings of the embedding jobs (`elmo embed-corpus`, `elmo embed-new`): the one place their numbers live."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from elmo_core.cli_fields import setting
from elmo_core.layer_selection import DTYPES
from elmo_core.tokenization import FROM_MODEL, TOKENIZERS, Tokenization, resolve_tokenization
from workflows.embedding.actor_pool import ActorRange

EMBED_INPUT_FORMATS = ("sentence", "document", "parquet")
OUTPUT_FORMATS = ("parquet", "hdf5")


@dataclass(frozen=True)
class EmbedJobConfig:
    """The embedding jobs (`elmo embed-corpus`, `elmo embed-new`): what they output, and how they
    run (the run settings never change a vector)."""

    # --- what the output holds ------------------------------------------------------------------
    input_format: str = setting("sentence", "one sentence a line, one document a line, or an `elmo preprocess` "
                                "output / Parquet files with a tokens column", choices=EMBED_INPUT_FORMATS)
    tokenizer: str = setting(FROM_MODEL, "how raw text is split into tokens: model (as the model's training text "
                             "was, its tokenization.json), moses or whitespace (ignored for parquet input)",
                             choices=(FROM_MODEL, *TOKENIZERS))
    language: str = setting(FROM_MODEL, "Moses language rules: model (the model's) or a code such as en, de, fr")
    max_sentence_tokens: int = setting(256, "cut longer sentences into pieces (as preprocessing; hdf5 never cuts)")
    layers: str = setting("all", "all (layer_0..layer_2 columns) | top | average | mix:W0,W1,W2 "
                          "(elmo_core.layer_selection)")
    dtype: str = setting("float32", "stored precision; computing is float32", choices=sorted(DTYPES))
    format: str = setting("parquet", "parquet, or hdf5 (exactly elmo embed's file for each input; sentence input "
                          "only)", choices=OUTPUT_FORMATS)
    quarantine_bad_files: bool = setting(False, "skip unreadable inputs and list them instead of failing the job")
    # --- how it runs ------------------------------------------------------------------------------
    num_actors: ActorRange = setting(ActorRange(1), "embedding actors (each loads the model once): N, or MIN..MAX "
                                     "for a pool that grows with the queued work and the cluster (a node that "
                                     "joins gets actors)", metavar="N|MIN..MAX")
    cpus_per_actor: float = setting(1.0, "CPUs per actor, also its torch threads (rounded, at least 1)")
    use_gpu: bool = setting(False, "one GPU per actor")
    batch_tokens: int = setting(6000, "padded tokens of an LSTM batch, sentences x (longest + 2)")
    lines_per_block: int = setting(1024, "lines read per block; sentences per tokenizing and embedding call")
    # Ray Data joins what a task yields into blocks up to this size (128 MiB by default: a whole
    # file became one block). 8 MiB was measured (benchmarks/README.md); with 256 KiB the
    # benchmark took over 16 min instead of 9 (stopped).
    block_kb: int = setting(8192, "Ray Data block size bound in KiB")
    # With 1, an actor that is ready first cannot queue blocks the others could start on
    # (benchmarks/README.md).
    tasks_per_actor: int = setting(1, "embedding calls queued at an actor at once (Ray Data's default: 4)",
                                   flag=False)

    # A feed of small files (one document a file): one read task per file cost more than the file.
    read_tasks: int = setting(64, "read tasks at most; more input files than this share tasks, in input order",
                              flag=False)

    # embed-new: S3 copies and deletes wait on the server, so the driver publishes a commit
    # group's outputs several at once (benchmarks/README.md, bench_feed.py)
    publish_threads: int = setting(8, "outputs embed-new's driver publishes at once", flag=False)
    # the actors write a block's parts this many at a time (small parts: the writes wait on the storage)
    write_threads: int = setting(8, "parts an embedding actor writes at once", flag=False)

    def __post_init__(self) -> None:
        from elmo_core.layer_selection import LayerSelection

        if self.input_format not in EMBED_INPUT_FORMATS:
            raise ValueError(f"input format must be one of {', '.join(EMBED_INPUT_FORMATS)}, not {self.input_format!r}")
        if self.tokenizer not in (FROM_MODEL, *TOKENIZERS):
            raise ValueError(f"tokenizer must be {', '.join((FROM_MODEL, *TOKENIZERS))}, not {self.tokenizer!r}")
        if not self.language.strip():
            raise ValueError("language must be 'model' or a language code such as en")
        LayerSelection.parse(self.layers, self.dtype)
        if self.format not in OUTPUT_FORMATS:
            raise ValueError(f"format must be {' or '.join(OUTPUT_FORMATS)}, not {self.format!r}")
        if self.format == "hdf5" and self.input_format != "sentence":
            raise ValueError("--format hdf5 writes one dataset per line, as elmo embed: it needs --input-format sentence")
        object.__setattr__(self, "num_actors", ActorRange(self.num_actors))  # also from an int or "MIN..MAX"
        for name in ("batch_tokens", "lines_per_block", "max_sentence_tokens", "block_kb",
                     "tasks_per_actor", "read_tasks", "publish_threads", "write_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        if self.cpus_per_actor <= 0:
            raise ValueError("cpus-per-actor must be > 0")

    @property
    def tokenization_settled(self) -> bool:
        """Whether the tokenizer is known (not "follow the model"): whitespace needs no language."""
        return self.tokenizer == "whitespace" or FROM_MODEL not in (self.tokenizer, self.language)

    def for_model(self, recorded: Tokenization | None, model_name: str, warn=None) -> "EmbedJobConfig":
        """This config with its tokenization settled: the model's (``recorded``, its
        ``tokenization.json``; None: it records none, `elmo_core.tokenization.FALLBACK` with a
        warning) with the settings given here on top. Parquet input is tokenized already: no warning."""
        quiet = self.input_format == "parquet"
        chosen = resolve_tokenization(recorded, self.tokenizer, self.language, model_name,
                                      (lambda message: None) if quiet else warn)
        return self.replace(tokenizer=chosen.tokenizer, language=chosen.language)

    def preprocess_config(self):
        """The tokenizing settings, as preprocessing takes them (`preprocessing.first_pass.tokenize_lines`)."""
        from preprocessing.config import PreprocessConfig

        if not self.tokenization_settled:
            raise ValueError("the tokenization follows the model: settle it first (EmbedJobConfig.for_model)")
        cut = 1 << 30 if self.format == "hdf5" else self.max_sentence_tokens  # elmo embed never cuts
        language = "en" if self.language == FROM_MODEL else self.language  # whitespace: unused
        return PreprocessConfig(tokenizer=self.tokenizer, language=language,
                                input_format=self.input_format if self.input_format != "parquet" else "sentence",
                                max_sentence_tokens=cut)

    def output_settings(self) -> dict:
        """What an output depends on besides the model and the input (recorded with it). The
        language only where it changes the tokens (Moses, not English): outputs recorded before it
        was a setting keep their identity."""
        keys = ("input_format", "tokenizer", "max_sentence_tokens", "layers", "dtype", "format")
        settings = {k: getattr(self, k) for k in keys}
        if self.tokenizer != "whitespace" and self.language != "en":
            settings["language"] = self.language
        return settings

    def replace(self, **changes) -> "EmbedJobConfig":
        return dataclasses.replace(self, **changes)

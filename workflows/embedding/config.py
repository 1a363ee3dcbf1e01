"""Settings of the embedding jobs (`elmo embed-corpus`, `elmo embed-new`): the one place their numbers live."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

EMBED_INPUT_FORMATS = ("sentence", "document", "parquet")


@dataclass(frozen=True)
class EmbedJobConfig:
    """The embedding jobs (`elmo embed-corpus`, `elmo embed-new`): what they output, and how they
    run (the run settings never change a vector)."""

    # --- what the output holds ------------------------------------------------------------------
    input_format: str = "sentence"  # one sentence a line, one document a line, or preprocessed Parquet
    tokenizer: str = "moses"  # as `elmo preprocess` (ignored for parquet input)
    max_sentence_tokens: int = 256  # longer sentences are cut (as preprocessing); hdf5 never cuts
    layers: str = "all"  # elmo_core.layer_selection: all | top | average | mix:W0,W1,W2
    dtype: str = "float32"  # stored precision; computing is float32
    format: str = "parquet"  # parquet | hdf5 (hdf5: elmo embed's layout, sentence input only)
    quarantine_bad_files: bool = False  # False: an unreadable input fails the job
    # --- how it runs ------------------------------------------------------------------------------
    num_actors: int = 1  # embedding actors (each loads the model once)
    cpus_per_actor: float = 1.0  # also its torch threads (rounded, at least 1)
    use_gpu: bool = False  # one GPU per actor
    batch_tokens: int = 6000  # positions per LSTM batch (sentences x longest, <S>/</S> included)
    lines_per_block: int = 1024  # lines read per block; sentences per tokenizing and embedding call
    # Ray Data blocks of at most this size (KiB). Ray Data joins what a task yields into blocks up
    # to this size (128 MiB by default: a whole file became one block). 8 MiB was measured
    # (benchmarks/README.md); with 256 KiB the benchmark took over 16 min instead of 9 (stopped).
    block_kb: int = 8192
    # embedding calls queued at an actor at once (Ray Data's default: 4). With 1, an actor that is
    # ready first cannot queue blocks the others could start on (benchmarks/README.md)
    tasks_per_actor: int = 1

    def __post_init__(self) -> None:
        from elmo_core.layer_selection import LayerSelection

        if self.input_format not in EMBED_INPUT_FORMATS:
            raise ValueError(f"input format must be one of {', '.join(EMBED_INPUT_FORMATS)}, not {self.input_format!r}")
        if self.tokenizer not in ("moses", "whitespace"):
            raise ValueError(f"tokenizer must be moses or whitespace, not {self.tokenizer!r}")
        LayerSelection.parse(self.layers, self.dtype)
        if self.format not in ("parquet", "hdf5"):
            raise ValueError(f"format must be parquet or hdf5, not {self.format!r}")
        if self.format == "hdf5" and self.input_format != "sentence":
            raise ValueError("--format hdf5 writes one dataset per line, as elmo embed: it needs --input-format sentence")
        for name in ("num_actors", "batch_tokens", "lines_per_block", "max_sentence_tokens", "block_kb",
                     "tasks_per_actor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        if self.cpus_per_actor <= 0:
            raise ValueError("cpus-per-actor must be > 0")

    def preprocess_config(self):
        """The tokenizing settings, as preprocessing takes them (`preprocessing.stage.tokenize_lines`)."""
        from preprocessing.config import PreprocessConfig

        cut = 1 << 30 if self.format == "hdf5" else self.max_sentence_tokens  # elmo embed never cuts
        return PreprocessConfig(tokenizer=self.tokenizer, input_format=self.input_format if self.input_format != "parquet"
                                else "sentence", max_sentence_tokens=cut)

    def output_settings(self) -> dict:
        """What an output depends on besides the model and the input (recorded with it)."""
        keys = ("input_format", "tokenizer", "max_sentence_tokens", "layers", "dtype", "format")
        return {k: getattr(self, k) for k in keys}

    def replace(self, **changes) -> "EmbedJobConfig":
        return dataclasses.replace(self, **changes)

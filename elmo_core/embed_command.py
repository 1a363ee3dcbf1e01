"""``elmo embed``: one whitespace-tokenized sentence per line -> HDF5 in AllenNLP's layout.

Output: one dataset per input line (float32 unless ``--dtype float16``), named by its 0-based
line index, shape (3, n, 2P) for ``--all``, (n, 2P) for ``--top`` (last layer), ``--average``
(mean of the layers) and ``--layers mix:W0,W1,W2`` (`elmo_core.layer_selection`); plus ``sentence_to_index``, one JSON string mapping each sentence's text to its key.
The file appears only when complete (written to a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_file
from .cli_fields import add_fields, from_args, help_of, setting
from .layer_selection import DEFAULT_LAYERS, DTYPES, LayerSelection


class InputError(ValueError):
    """Bad input the user can fix; reported as one line on stderr, exit status 2."""


class OutputError(OSError):
    """The output could not be written (disk full, file size limit, ...); reported as one line on
    stderr, exit status 1, with no partial file left and an earlier output untouched."""


@dataclass(frozen=True)
class EmbedFileConfig:
    """How `elmo embed` embeds a file: what it stores, and how it batches (stateless batching
    never changes a vector)."""

    layers: str = setting(DEFAULT_LAYERS, "all | top | average | mix:W0,W1,W2 (weighted sum, weights as given); "
                          "--all, --top, --average for short", flag=False)  # added with them, one of a group
    dtype: str = setting("float32", "stored precision", choices=sorted(DTYPES))
    batch_size: int = setting(64, "sentences per batch")
    stateful: bool = setting(False, "carry LSTM state from row k of a batch to row k of the next, batches being "
                             "consecutive groups of --batch-size lines (bilm-tf/AllenNLP behaviour)")
    device: str = setting("cpu", "cpu or cuda[:N]")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_file", help="text file, one whitespace-tokenized sentence per line (UTF-8)")
    p.add_argument("output_file", help="HDF5 file to write")
    layers = p.add_mutually_exclusive_group()
    layers.add_argument("--all", dest="layers", action="store_const", const="all",
                        help="all layers: (3, n, 2P) per sentence (the default)")
    layers.add_argument("--top", dest="layers", action="store_const", const="top", help="top layer: (n, 2P)")
    layers.add_argument("--average", dest="layers", action="store_const", const="average",
                        help="mean of the layers: (n, 2P)")
    layers.add_argument("--layers", dest="layers", metavar="SPEC", help=help_of(EmbedFileConfig, "layers"))
    p.set_defaults(layers=EmbedFileConfig.layers)
    p.add_argument("--options-file", help="bilm-tf/AllenNLP options.json (with --weight-file)")
    p.add_argument("--weight-file", help="bilm-tf/AllenNLP weights .hdf5 (with --options-file)")
    p.add_argument("--model", help="native model directory (config.json + model.safetensors)")
    add_fields(p, EmbedFileConfig)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_sentences(path: str) -> tuple[list[str], list[list[str]]]:
    """Lines and their tokens; blank lines and undecodable bytes are input errors."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read input file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 (byte offset {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # final newline
    sentences = []
    for number, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            raise InputError(f"{path}:{number}: blank line (every line must hold one sentence)")
        sentences.append(tokens)
    if not sentences:
        raise InputError(f"{path}: no sentences")
    return [line.strip() for line in lines], sentences


def write_sentence_index(fout, mapping: dict[str, str]) -> None:
    """AllenNLP's ``sentence_to_index``: one JSON string, sentence text -> dataset key."""
    import h5py
    import numpy as np

    fout.create_dataset("sentence_to_index", data=np.array([json.dumps(mapping)], dtype=h5py.string_dtype()))


# HDF5 bytes of a dataset beyond its values (object header, name, B-tree share); measured ~0.5 KiB
HDF5_BYTES_PER_DATASET = 1024


def check_room(path: Path, needed: int) -> None:
    """OutputError unless the output's filesystem and the file-size limit leave ``needed`` bytes:
    HDF5 cannot recover from a failed write (the library crashes the process), so a full disk is
    found before writing."""
    import resource

    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise OutputError(f"{path}: the output needs about {needed / 1e6:,.1f} MB and {path.parent} has "
                          f"{free / 1e6:,.1f} MB free; nothing was written")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and needed > limit:
        raise OutputError(f"{path}: the output needs about {needed / 1e6:,.1f} MB and the file-size limit "
                          f"(ulimit -f) is {limit / 1e6:,.1f} MB; nothing was written")


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived while the output was being written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While active, SIGINT and SIGTERM only set a flag that `check` turns into `Stopped` between
    two datasets: an exception raised straight from a signal handler can land in a weakref
    callback or a destructor, where Python swallows it (seen here with SIGTERM)."""

    def __enter__(self) -> "StopSignals":
        self.received: int | None = None
        self.previous = {s: signal.signal(s, self._note) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _note(self, signum, frame) -> None:
        self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise Stopped(self.received)

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except InputError as exc:
        print(f"elmo embed: error: {exc}", file=sys.stderr)
        return 2
    except OutputError as exc:
        print(f"elmo embed: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Stopped) as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        print(f"elmo embed: stopped ({signal.Signals(signum).name}); {args.output_file} was not written",
              file=sys.stderr)
        return 128 + signum


def _run(args: argparse.Namespace) -> int:
    config = from_args(EmbedFileConfig, args, layers=args.layers)
    if config.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if not args.model and not (args.options_file and args.weight_file):
        raise InputError("give --model DIR, or both --options-file and --weight-file")
    if args.model and (args.options_file or args.weight_file):
        raise InputError("give either --model or --options-file/--weight-file, not both")
    try:
        selection = LayerSelection.parse(config.layers, config.dtype)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    lines, sentences = read_sentences(args.input_file)
    out_path = Path(args.output_file)
    if not out_path.parent.is_dir():
        raise InputError(f"output directory {out_path.parent} does not exist")

    import h5py
    import torch
    from tqdm import tqdm

    from .embedder import Embedder
    from .weights import WeightFileError, load_model

    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda, but no CUDA device is available")
    try:
        model = load_model(args.model, args.options_file, args.weight_file, map_location=device)
    except (WeightFileError, ValueError) as exc:
        raise InputError(str(exc)) from None

    try:
        embedder = Embedder(model, batch_size=config.batch_size, stateful=config.stateful, layers=selection)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    n_tokens = sum(len(s) for s in sentences)
    check_room(out_path, n_tokens * selection.bytes_per_token(model.config.n_output_layers, model.config.output_dim)
               + len(sentences) * HDF5_BYTES_PER_DATASET)
    started = time.perf_counter()
    written = 0
    try:
        with StopSignals() as stop, atomic_file(out_path, suffix=".part") as tmp:
            with h5py.File(tmp, "w") as fout, tqdm(total=n_tokens, unit="tok", disable=args.no_progress or None,
                                                   desc="embedding", file=sys.stderr) as bar:
                for index, layers in embedder.embed(sentences):
                    stop.check()
                    fout.create_dataset(str(index), data=layers)
                    written += 1
                    bar.update(layers.shape[-2])
                write_sentence_index(fout, {line: str(i) for i, line in enumerate(lines)})
    except OSError as exc:  # the temporary file could not be made or written
        raise OutputError(f"cannot write {out_path} (after {written} of {len(sentences)} sentences): "
                          f"{exc}; nothing was written there") from None
    elapsed = time.perf_counter() - started
    print(f"elmo embed: {len(sentences)} sentences, {n_tokens} tokens in {elapsed:.1f}s "
          f"({n_tokens / max(elapsed, 1e-9):.0f} tokens/s) -> {out_path}", file=sys.stderr)
    return 0

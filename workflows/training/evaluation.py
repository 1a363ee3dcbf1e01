"""Held-out perplexity (full softmax), in the two ways a language model is read.

* ``sentence``: every sentence from a zero LSTM state (``<S> w1 .. wn </S>``), as `elmo embed`
  and the pretrained ELMo use the model;
* ``stream``: the state carried across the running text (`workflows.training.streams`), as Kim et al.
  2016 and bilm-tf's ``run_test.py`` evaluate.

Both predict each word and each sentence end once per direction (``n + 1`` targets a sentence),
so the two are over the same targets and differ only in the context the model is given.
Workers evaluate a share each; the sums are all-reduced before the perplexity is taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pyarrow as pa
import torch

from elmo_core.bilm import BiLM, Perplexity
from elmo_core.vocabulary import Vocabulary
from preprocessing.dataset import Dataset

from workflows.training.streams import RunningText, evaluation_windows

MODES = ("sentence", "stream")
STAT_KEYS = ("forward_nll", "forward_count", "backward_nll", "backward_count")


@torch.no_grad()
def sentence_sums(model: BiLM, vocab: Vocabulary, tables: Iterable[pa.Table], batch_tokens: int,
                  max_sentences: int | None, device, rank: int = 0, world_size: int = 1) -> list[float]:
    """NLL sums and target counts (`STAT_KEYS`) of this worker's sentences (every
    ``world_size``-th of the first ``max_sentences``), each from a zero state."""
    from workflows.training.batches import sentences_from_table, to_tensors

    was_training = model.training
    model.eval()
    sums = [0.0] * len(STAT_KEYS)
    pending, seen, pending_tokens = [], 0, 0

    def flush():
        nonlocal pending_tokens
        pending_tokens = 0
        if not pending:
            return
        batch = {k: v.to(device) for k, v in to_tensors(pending, vocab).items()}
        _, stats, _ = model.lm_loss(batch["char_ids"], batch["next_ids"], batch["prev_ids"])
        for i, key in enumerate(STAT_KEYS):
            sums[i] += float(stats[key])
        pending.clear()

    for table in tables:
        for sentence in sentences_from_table(table):
            if max_sentences is not None and seen >= max_sentences:
                break
            if seen % world_size == rank:
                pending.append(sentence)
                pending_tokens += len(sentence) + 2
                if pending_tokens >= batch_tokens:
                    flush()
            seen += 1
    flush()
    model.train(was_training)
    return sums


@torch.no_grad()
def stream_sums(model: BiLM, text: RunningText, rows: int, unroll: int, device, rank: int = 0,
                world_size: int = 1) -> list[float]:
    """NLL sums and target counts of this worker's rows of the running text, state carried."""
    was_training = model.training
    model.eval()
    sums = [0.0] * len(STAT_KEYS)
    state = None
    for char_ids, targets, first in evaluation_windows(text, rows, unroll, rank, world_size):
        if first:
            state = None
        _, stats, state = model.stream_loss(char_ids.to(device), targets.to(device), state)
        for i, key in enumerate(STAT_KEYS):
            sums[i] += float(stats[key])
    model.train(was_training)
    return sums


def all_reduce(values: list[float], device) -> list[float]:
    """Sum over the workers of a distributed group (identity without one)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def perplexity_of(sums: list[float], device) -> Perplexity:
    f_nll, f_n, b_nll, b_n = all_reduce(sums, device)
    return Perplexity.from_sums(f_nll, int(f_n), b_nll, int(b_n))


def read_split(dataset: Dataset, split: str) -> list[pa.Table]:
    """A committed dataset's split as Arrow tables (local or s3://), the columns evaluation reads."""
    import pyarrow.parquet as pq

    from workflows.training.batches import COLUMNS

    return [pq.read_table(uri, columns=COLUMNS) for uri in dataset.split_files(split)]


def evaluate_model(model: BiLM, vocab: Vocabulary, tables: list[pa.Table], modes: Iterable[str] = MODES, *,
                   batch_tokens: int = 2560, stream_rows: int = 10, unroll_steps: int = 35,
                   max_sentences: int | None = None, device="cpu") -> dict[str, Perplexity]:
    """Perplexity of ``model`` on held-out rows in each of ``modes`` (one process)."""
    from workflows.training.streams import running_text

    results = {}
    for mode in modes:
        if mode == "sentence":
            sums = sentence_sums(model, vocab, tables, batch_tokens, max_sentences, device)
        elif mode == "stream":
            sums = stream_sums(model, running_text(tables, vocab, max_sentences), stream_rows, unroll_steps, device)
        else:
            raise ValueError(f"evaluation mode must be one of {MODES}, got {mode!r}")
        results[mode] = perplexity_of(sums, device)
    return results


def load_for_evaluation(model_dir: str, dataset: Dataset) -> tuple[BiLM, Vocabulary]:
    """A native model directory or a training checkpoint (its model) and the vocabulary to use
    (the model's own, else the dataset's)."""
    from workflows.training.checkpoints import load_model_and_vocab

    path = Path(model_dir)
    model, vocab = load_model_and_vocab(path)
    if vocab is None:
        vocab = dataset.vocabulary
    return model, vocab

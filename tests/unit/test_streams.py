"""Stream mode: the running text, its windows, the carried state, and the validation schedule."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from elmo_core.bilm import BiLM, sentence_targets
from elmo_core.characters import batch_to_ids
from elmo_core.config import BiLMConfig
from elmo_core.softmax import IGNORE
from elmo_core.vocabulary import Vocabulary
from workflows.training.config import TrainJobConfig
from workflows.training.evaluation import sentence_sums, stream_sums
from workflows.training.lr_schedule import PlateauSchedule
from workflows.training.streams import StreamLayout, evaluation_windows, running_text

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def rows_table(sentences: list[list[str]], vocab: Vocabulary, lines: list[int] | None = None) -> pa.Table:
    """Rows of the preprocessing schema (the columns stream mode reads), one sentence a line."""
    lines = lines or list(range(1, len(sentences) + 1))
    return pa.table({
        "num_tokens": pa.array([len(s) for s in sentences], pa.int32()),
        "word_ids": pa.array([[vocab.index.get(w, vocab.unk) for w in s] for s in sentences], pa.list_(pa.int32())),
        "tokens": pa.array(sentences, pa.list_(pa.string())),
        "source": pa.array(["s.txt"] * len(sentences)),
        "line": pa.array(lines, pa.int64()),
        "sentence_index": pa.array([0] * len(sentences), pa.int32()),
    })


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(["<S>", "</S>", "<UNK>", *WORDS])


def random_corpus(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(1, 9))] for _ in range(n)]


def test_running_text_in_corpus_order_with_boundaries_in_both_directions(vocab):
    sentences = [["the", "cat", "sat"], ["a", "dog"], ["ran"]]
    # rows arrive out of order (as Ray Data blocks may): corpus order comes from (source, line)
    table = rows_table(sentences, vocab).take([2, 0, 1])
    text = running_text([table.slice(0, 1), table.slice(1)], vocab)
    tokens = lambda ids: [vocab.tokens[i] for i in ids]  # noqa: E731
    assert tokens(text.forward.word_ids) == ["</S>", "the", "cat", "sat", "</S>", "a", "dog", "</S>", "ran", "</S>"]
    assert tokens(text.backward.word_ids) == ["<S>", "ran", "<S>", "dog", "a", "<S>", "sat", "cat", "the", "<S>"]
    assert text.sentences == 3 and text.words == 6
    # every (input, target) pair: each word and each sentence end predicted once per direction
    assert text.forward.num_pairs == text.words + text.sentences
    chars = text.forward.type_chars[text.forward.types]
    np.testing.assert_array_equal(chars, batch_to_ids([tokens(text.forward.word_ids)], add_boundaries=False)[0].numpy())


@pytest.mark.parametrize("rows,unroll", [(1, 1), (1, 7), (3, 4), (5, 50), (200, 3)])
def test_evaluation_windows_predict_every_pair_exactly_once(vocab, rows, unroll):
    text = running_text([rows_table(random_corpus(40), vocab)], vocab)
    seen = {0: [], 1: []}
    for chars, targets, _ in evaluation_windows(text, rows, unroll):
        assert chars.shape[:3] == targets.shape and chars.shape[0] == 2
        for d in (0, 1):
            seen[d].extend(int(t) for t in targets[d].reshape(-1) if t != IGNORE)
    assert sorted(seen[0]) == sorted(text.forward.word_ids[1:].tolist())
    assert sorted(seen[1]) == sorted(text.backward.word_ids[1:].tolist())
    # two workers share the rows: together they see the same pairs
    shared = []
    for rank in (0, 1):
        for _, targets, _ in evaluation_windows(text, rows, unroll, rank, 2):
            shared.extend(int(t) for t in targets[0].reshape(-1) if t != IGNORE)
    assert sorted(shared) == sorted(seen[0])


def test_training_windows_continue_each_row_and_split_rows_between_workers(vocab):
    text = running_text([rows_table(random_corpus(60), vocab)], vocab)
    layout = StreamLayout(text, rows=4, unroll=5)
    assert layout.steps_per_epoch == (text.forward.num_pairs // 4) // 5
    first, second = layout.batch(0, 0, 1), layout.batch(1, 0, 1)
    for b in range(4):  # row b of step 1 continues row b of step 0 in the running text
        start = b * layout.row_length
        np.testing.assert_array_equal(first.targets[0, b].numpy(), text.forward.word_ids[start + 1:start + 6])
        np.testing.assert_array_equal(second.targets[0, b].numpy(), text.forward.word_ids[start + 6:start + 11])
    later = layout.batch(layout.steps_per_epoch, 0, 1)  # the next epoch starts over
    assert later.epoch == 1 and torch.equal(later.targets, first.targets)
    halves = [layout.batch(0, r, 2) for r in (0, 1)]
    assert torch.equal(halves[0].targets, first.targets[:, 0::2]) and torch.equal(halves[1].targets, first.targets[:, 1::2])
    assert first.num_tokens() == halves[0].num_tokens() == 4 * 5
    with pytest.raises(ValueError, match="too few"):
        StreamLayout(text, rows=4, unroll=10**6)


def tiny_model(vocab: Vocabulary, seed: int = 0) -> BiLM:
    torch.manual_seed(seed)
    return BiLM(BiLMConfig.preset("tiny", n_tokens_vocab=len(vocab), dropout=0.0)).eval()


def test_stream_loss_of_one_sentence_equals_the_sentence_loss(vocab):
    """Forward reading ``<S> w1..wn`` predicting ``w1..wn </S>``, backward reading
    ``</S> wn..w1`` predicting ``wn..w1 <S>``: exactly `lm_loss` on ``<S> w1..wn </S>``."""
    model = tiny_model(vocab)
    words = ["the", "dog", "sat", "on", "a", "mat"]
    wrapped = ["<S>", *words, "</S>"]
    ids = torch.tensor([[vocab.index[w] for w in wrapped]])
    next_ids, prev_ids = sentence_targets(ids, torch.tensor([len(wrapped)]))
    with torch.no_grad():
        _, expected, _ = model.lm_loss(batch_to_ids([wrapped], add_boundaries=False), next_ids, prev_ids)
        chars = torch.stack([batch_to_ids([wrapped[:-1]], add_boundaries=False),
                             batch_to_ids([wrapped[::-1][:-1]], add_boundaries=False)])
        targets = torch.stack([ids[:, 1:], ids.flip(1)[:, 1:]])
        _, stats, _ = model.stream_loss(chars, targets)
    for key in ("forward_nll", "backward_nll", "forward_count", "backward_count"):
        assert float(stats[key]) == pytest.approx(float(expected[key]), rel=1e-6)


def test_carried_state_makes_windows_equal_one_long_window(vocab):
    model = tiny_model(vocab, seed=3)
    text = running_text([rows_table(random_corpus(30), vocab)], vocab)
    whole = stream_sums(model, text, rows=2, unroll=10**6, device="cpu")
    pieces = stream_sums(model, text, rows=2, unroll=3, device="cpu")
    assert whole[1] == pieces[1] == whole[3] == text.forward.num_pairs
    assert pieces[0] == pytest.approx(whole[0], rel=1e-5) and pieces[2] == pytest.approx(whole[2], rel=1e-5)
    # without the carried state the same windows score differently
    reset = 0.0
    for chars, targets, _ in evaluation_windows(text, 2, 3):
        with torch.no_grad():
            reset += float(model.stream_loss(chars, targets)[1]["forward_nll"])
    assert abs(reset - whole[0]) > 1e-3


def test_stream_and_sentence_evaluation_count_the_same_targets(vocab):
    model = tiny_model(vocab)
    table = rows_table(random_corpus(25), vocab)
    stream = stream_sums(model, running_text([table], vocab), rows=3, unroll=8, device="cpu")
    sentence = sentence_sums(model, vocab, [table], batch_tokens=200, max_sentences=None, device="cpu")
    assert stream[1] == sentence[1] and stream[3] == sentence[3]


def test_the_warm_up_rises_linearly_to_the_schedules_rate():
    from workflows.training.lr_schedule import warmup_factor

    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0 and warmup_factor(10**6, 0) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainJobConfig(data="d", warmup_steps=-1)


def test_plateau_schedule_decays_keeps_the_best_and_stops():
    s = PlateauSchedule(1.0, lr_decay=0.5, lr_decay_patience=2, early_stop_patience=3)
    assert s.update(100.0, 1) == (True, False)
    assert s.update(90.0, 2) == (True, False) and s.best == 90.0 and s.best_step == 2
    assert s.update(95.0, 3) == (False, False) and s.learning_rate == 1.0  # one bad evaluation
    assert s.update(96.0, 4) == (False, False) and s.learning_rate == 0.5  # two: decayed
    restored = PlateauSchedule.from_state(s.state_dict())
    assert restored.update(97.0, 5) == (False, True)  # three bad ones in a row: stop
    assert restored.best == 90.0 and restored.best_step == 2

    threshold = PlateauSchedule(1.0, lr_decay=0.5, lr_decay_patience=1, plateau_threshold=0.05)
    threshold.update(100.0, 1)
    assert threshold.update(97.0, 2) == (True, False)  # best so far, but a plateau: decayed
    assert threshold.best == 97.0 and threshold.learning_rate == 0.5

    per_epoch = PlateauSchedule(2.0, lr_decay=0.5, lr_decay_start_epoch=3)
    for epoch in (1, 2):
        per_epoch.update(10.0 + epoch, epoch)  # no improvement, but no plateau decay in this mode
        per_epoch.end_of_epoch(epoch)
    assert per_epoch.learning_rate == 2.0
    per_epoch.end_of_epoch(3)
    per_epoch.end_of_epoch(4)
    assert per_epoch.learning_rate == 0.5

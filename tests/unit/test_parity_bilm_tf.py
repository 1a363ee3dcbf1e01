"""Parity with bilm-tf's reference outputs (../shared/fixtures/bilm-tf), stateful mode."""

import subprocess
import sys

import h5py
import numpy as np
import torch

from elmo_core.characters import batch_to_ids
from elmo_core.elmo import Elmo
from elmo_core.embedder import Embedder
from elmo_core.weights import load_bilm_tf

ATOL = 1e-5


def test_python_api_stateful_top_layer_matches_bilm_tf(bilm_tf):
    model = load_bilm_tf(bilm_tf.options, bilm_tf.weights)
    state = None
    worst = 0.0
    with torch.no_grad():
        for i, batch in enumerate(bilm_tf.batches()):
            out = model(batch_to_ids(batch, add_boundaries=True), state)
            state = out.state
            for k, sentence in enumerate(batch):
                got = out.top[k, 1:len(sentence) + 1].numpy()
                expected = bilm_tf.expected_top(k, i)
                assert got.shape == expected.shape
                worst = max(worst, float(np.abs(got - expected).max()))
    assert worst < ATOL


def test_elmo_module_stateful_matches_and_stateless_does_not(bilm_tf):
    """`Elmo(stateful=True)` reproduces bilm-tf; the default (stateless) differs after batch 0."""
    for stateful in (True, False):
        elmo = Elmo.from_files(options_file=str(bilm_tf.options), weight_file=str(bilm_tf.weights),
                               num_output_representations=1, dropout=0.0, stateful=stateful,
                               scalar_mix_parameters=[-1e4, -1e4, 1e4])  # = top layer
        worst = 0.0
        for i, batch in enumerate(bilm_tf.batches()):
            reps = elmo.embed_sentences(batch)["elmo_representations"][0]
            for k, sentence in enumerate(batch):
                diff = np.abs(reps[k, :len(sentence)].detach().numpy() - bilm_tf.expected_top(k, i)).max()
                worst = max(worst, float(diff))
        if stateful:
            assert worst < ATOL
        else:
            assert worst > 0.1  # the fixture was made with carried state


def test_embed_command_stateful_top_matches_bilm_tf(bilm_tf, tmp_path):
    batches = bilm_tf.batches()
    lines = [" ".join(s) for batch in batches for s in batch]  # batch i = lines 3i..3i+2
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    proc = subprocess.run([sys.executable, "-m", "elmo_cli", "embed", str(tmp_path / "in.txt"), str(out),
                           "--top", "--stateful", "--batch-size", "3", "--options-file", str(bilm_tf.options),
                           "--weight-file", str(bilm_tf.weights)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as f:
        worst = 0.0
        for i in range(len(batches)):
            for k in range(3):
                got = f[str(3 * i + k)][...]
                assert got.dtype == np.float32
                worst = max(worst, float(np.abs(got - bilm_tf.expected_top(k, i)).max()))
    assert worst < ATOL


def test_embedder_stateful_matches_bilm_tf(bilm_tf):
    model = load_bilm_tf(bilm_tf.options, bilm_tf.weights)
    sentences = [s for batch in bilm_tf.batches() for s in batch]
    layers = Embedder(model, batch_size=3, stateful=True).embed_all(sentences)
    worst = max(float(np.abs(layers[3 * i + k][-1] - bilm_tf.expected_top(k, i)).max())
                for i in range(10) for k in range(3))
    assert worst < ATOL

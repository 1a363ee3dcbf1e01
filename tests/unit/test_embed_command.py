"""`elmo embed`: AllenNLP's output layout, keyed outputs, and clear failures that leave no file."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from tests.helpers.random_inputs import random_sentences, seeded
from elmo_core.bilm import BiLM
from elmo_core.characters import batch_to_ids
from elmo_core.config import BiLMConfig
from elmo_core.weights import save_bilm_tf_weights, save_model_folder


def elmo(*args):
    return subprocess.run([sys.executable, "-m", "elmo_cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    model = seeded(BiLM(BiLMConfig.preset("tiny")), seed=9).eval()
    save_bilm_tf_weights(model, root / "weights.hdf5")
    model.config.save(root / "options.json")
    save_model_folder(model, root / "native")
    return model, root


@pytest.fixture(scope="module")
def sentences():
    return random_sentences(23, seed=8, max_len=14)


def _write(path, sentences):
    path.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    return path


@pytest.mark.parametrize("layers", ["--all", "--top", "--average"])
def test_output_layout_and_values_equal_one_sentence_at_a_time(model_files, sentences, tmp_path, layers):
    model, root = model_files
    inp = _write(tmp_path / "in.txt", sentences)
    out = tmp_path / "out.hdf5"
    proc = elmo("embed", inp, out, layers, "--options-file", root / "options.json",
                "--weight-file", root / "weights.hdf5", "--batch-size", 5)
    assert proc.returncode == 0, proc.stderr
    assert "23 sentences" in proc.stderr
    with h5py.File(out, "r") as f:
        assert set(f.keys()) == {str(i) for i in range(23)} | {"sentence_to_index"}
        mapping = json.loads(f["sentence_to_index"][0])
        assert mapping == {" ".join(s): str(i) for i, s in enumerate(sentences)}
        for i, s in enumerate(sentences):
            with torch.no_grad():
                alone = model(batch_to_ids([s], add_boundaries=True)).layers[:, 0, 1:-1].numpy()
            expected = {"--all": alone, "--top": alone[-1], "--average": alone.mean(0)}[layers]
            got = f[str(i)][...]
            assert got.dtype == np.float32 and got.shape == expected.shape
            assert np.abs(got - expected).max() < 1e-5


def test_native_model_directory_gives_the_same_file(model_files, sentences, tmp_path):
    _, root = model_files
    inp = _write(tmp_path / "in.txt", sentences)
    assert elmo("embed", inp, tmp_path / "a.hdf5", "--model", root / "native").returncode == 0
    assert elmo("embed", inp, tmp_path / "b.hdf5", "--options-file", root / "options.json",
                "--weight-file", root / "weights.hdf5").returncode == 0
    with h5py.File(tmp_path / "a.hdf5", "r") as a, h5py.File(tmp_path / "b.hdf5", "r") as b:
        for i in range(len(sentences)):
            assert np.array_equal(a[str(i)][...], b[str(i)][...])


def _fails(proc, out, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith("." + out.name)]  # no temp left


def test_blank_line_is_an_error_naming_the_line(model_files, tmp_path):
    _, root = model_files
    inp = tmp_path / "in.txt"
    inp.write_text("a b\n\nc\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    _fails(elmo("embed", inp, out, "--model", root / "native"), out, "in.txt:2: blank line")


def test_invalid_utf8_and_unreadable_input(model_files, tmp_path):
    _, root = model_files
    inp = tmp_path / "in.txt"
    inp.write_bytes(b"fine line\nbad \xff byte\n")
    out = tmp_path / "out.hdf5"
    _fails(elmo("embed", inp, out, "--model", root / "native"), out, "in.txt:2: not valid UTF-8")
    _fails(elmo("embed", tmp_path / "missing.txt", out, "--model", root / "native"), out,
           "cannot read input file", "missing.txt")


def test_mismatched_options_and_weights(model_files, tmp_path, sentences):
    _, root = model_files
    inp = _write(tmp_path / "in.txt", sentences)
    BiLMConfig.preset("small").save(tmp_path / "small.json")
    out = tmp_path / "out.hdf5"
    _fails(elmo("embed", inp, out, "--options-file", tmp_path / "small.json", "--weight-file", root / "weights.hdf5"),
           out, "options and weights do not belong together")
    _fails(elmo("embed", inp, out, "--options-file", root / "options.json"), out, "--weight-file")
    _fails(elmo("embed", inp, out, "--model", tmp_path), out, "not a model directory")


def test_no_room_for_the_output_is_found_before_writing(model_files, tmp_path):
    """HDF5 crashes the process when a write fails (measured: SIGSEGV under ``ulimit -f``), so a
    file-size limit (or a full disk) below the output's size is an error before anything is written."""
    import resource
    import signal

    _, root = model_files
    inp = _write(tmp_path / "in.txt", random_sentences(300, seed=3, max_len=14))
    complete = tmp_path / "complete.hdf5"
    assert elmo("embed", inp, complete, "--model", root / "native").returncode == 0
    limit = complete.stat().st_size // 2

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out.hdf5"
    out.write_bytes(b"previous result")
    proc = subprocess.run([sys.executable, "-m", "elmo_cli", "embed", str(inp), str(out), "--model",
                           str(root / "native")], capture_output=True, text=True, preexec_fn=limit_file_size)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "the file-size limit (ulimit -f)" in proc.stderr and "nothing was written" in proc.stderr
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["complete.hdf5", "in.txt", "out.hdf5"]


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_stopped_midway_through_writing_leaves_an_existing_output_untouched(model_files, tmp_path, signal_name):
    """Ctrl-C or a kill once the temporary output holds part of the datasets: one clear line,
    no temporary file, and the earlier output as it was."""
    import signal
    import time

    _, root = model_files
    inp = _write(tmp_path / "in.txt", random_sentences(20_000, seed=4, max_len=14))
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"previous result")
    proc = subprocess.Popen([sys.executable, "-m", "elmo_cli", "embed", str(inp), str(out), "--model",
                             str(root / "native"), "--no-progress"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # until the temporary file grows
        parts = [p for p in tmp_path.iterdir() if p.name.startswith(".out.hdf5.")]
        if parts and parts[0].stat().st_size > 200_000:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be stopped: give it more sentences"
    proc.send_signal(getattr(signal, signal_name))
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + getattr(signal, signal_name), stderr
    assert "Traceback" not in stderr and f"{out} was not written" in stderr.strip().splitlines()[-1], stderr
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.hdf5"]


def test_cuda_request_without_gpu_is_explained(model_files, tmp_path, sentences):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-GPU message cannot be tested here")
    _, root = model_files
    out = tmp_path / "out.hdf5"
    _fails(elmo("embed", _write(tmp_path / "in.txt", sentences), out, "--model", root / "native",
                "--device", "cuda"), out, "no CUDA device")

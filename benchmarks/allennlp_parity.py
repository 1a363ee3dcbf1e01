"""AllenNLP's own ELMo code against ours, on the same files and calls: the documented `Elmo`
lines (stateful over batches of changing size, `keep_sentence_boundaries`) and allennlp 0.9's
`ElmoEmbedder` (`embed_sentence` twice, `embed_sentences`, `embed_file` in its three formats).

Needs AllenNLP's source, run through ../shared/tools/allennlp_baseline (its README sets it up);
so it is a recorded check, not a test. Models: the `tiny` preset with random weights (written by
`elmo_core.weights.save_bilm_tf_weights`) and the released `small` configuration with random
weights written by the harness (bilm-tf's layout). (bilm-tf's own fixture cannot be used:
AllenNLP refuses biLMs without skip connections.)

    PYTHONPATH=.:/tmp/allen/extra .venv/bin/python benchmarks/allennlp_parity.py \
        --allennlp-src /tmp/allen/src --harness ../shared/tools/allennlp_baseline
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

SENTENCES = [["The", "cat", "sat", "on", "the", "mat", "."], ["ELMo", "naïve", "日本語"], ["x" * 60],
             ["A", "four", "token", "sentence"], ["Москва", ",", "42"], ["one"],
             ["a", "b", "c", "d", "e", "f", "g", "h", "i"], ["short", "."], ["The", "end", "."],
             ["again", "the", "cat"], ["z"]]
BATCHES = [SENTENCES[0:3], SENTENCES[3:6], SENTENCES[6:8], SENTENCES[8:11] + [["more"]]]  # 3, 3, 2, 4 rows


def tiny_files(work: Path) -> tuple[str, str]:
    from elmo_core.bilm import BiLM
    from elmo_core.config import BiLMConfig
    from elmo_core.weights import save_bilm_tf_weights

    model = BiLM(BiLMConfig.preset("tiny"))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p.shape[-2] if p.dim() >= 2 else 4
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
    options, weights = work / "tiny_options.json", work / "tiny_weights.hdf5"
    options.write_text(json.dumps(model.config.to_options()))
    save_bilm_tf_weights(model, weights)
    return str(options), str(weights)


def max_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a - b).max()) if a.size else 0.0


def compare_elmo(A, options: str, weights: str) -> dict:
    from elmo_core import Elmo, batch_to_ids

    out = {}
    for keep in (False, True):
        theirs = A.Elmo(options, weights, 2, dropout=0, keep_sentence_boundaries=keep)
        ours = Elmo(options, weights, 2, dropout=0, keep_sentence_boundaries=keep)
        worst, masks_equal, ids_equal = 0.0, True, True
        for batch in BATCHES:
            ids_equal &= bool(torch.equal(A.batch_to_ids(batch), batch_to_ids(batch)))
            with torch.no_grad():
                t, o = theirs(A.batch_to_ids(batch)), ours(batch_to_ids(batch))
            masks_equal &= bool(torch.equal(t["mask"].bool(), o["mask"]))
            for rt, ro in zip(t["elmo_representations"], o["elmo_representations"]):
                worst = max(worst, max_diff(rt.numpy(), ro.numpy()))
        out[f"elmo_keep_boundaries_{keep}"] = {"max_abs_diff": worst, "masks_equal": masks_equal,
                                               "batch_to_ids_equal": ids_equal}
    return out


def compare_embedder(A, options: str, weights: str, work: Path) -> dict:
    from elmo_core import ElmoEmbedder

    out = {}
    theirs, ours = A.ElmoEmbedder(options, weights), ElmoEmbedder(options, weights)
    with torch.no_grad():
        pairs = [(theirs.embed_sentence(SENTENCES[3]), ours.embed_sentence(SENTENCES[3])) for _ in range(2)]
    out["embed_sentence_twice"] = {"max_abs_diff": max(max_diff(t, o) for t, o in pairs),
                                   "shape": list(pairs[0][1].shape),
                                   "second_call_differs_by": max_diff(pairs[0][1], pairs[1][1])}
    theirs, ours = A.ElmoEmbedder(options, weights), ElmoEmbedder(options, weights)
    with torch.no_grad():
        t = list(theirs.embed_sentences(SENTENCES, batch_size=3))
    o = list(ours.embed_sentences(SENTENCES, batch_size=3))
    out["embed_sentences_batch_3"] = {"max_abs_diff": max(max_diff(a, b) for a, b in zip(t, o)), "n": len(o)}
    text = work / "in.txt"
    text.write_text("\n".join(" ".join(s) for s in SENTENCES + [SENTENCES[0]]) + "\n", encoding="utf-8")
    for fmt in ("all", "top", "average"):
        a, b = work / f"allennlp_{fmt}.hdf5", work / f"ours_{fmt}.hdf5"
        with torch.no_grad():
            A.ElmoEmbedder(options, weights).embed_file(open(text, encoding="utf-8"), str(a), fmt, batch_size=4)
        ElmoEmbedder(options, weights).embed_file(open(text, encoding="utf-8"), str(b), fmt, batch_size=4)
        with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
            keys_equal = sorted(fa.keys()) == sorted(fb.keys())
            index_equal = (json.loads(fa["sentence_to_index"][0]) == json.loads(fb["sentence_to_index"][0])
                           and fa["sentence_to_index"].shape == fb["sentence_to_index"].shape)
            numeric = [k for k in fa.keys() if k != "sentence_to_index"]
            dtypes_equal = all(fa[k].dtype == fb[k].dtype == np.float32 for k in numeric)
            worst = max(max_diff(fa[k][...], fb[k][...]) for k in numeric)
        out[f"embed_file_{fmt}"] = {"max_abs_diff": worst, "keys_equal": keys_equal,
                                    "sentence_to_index_equal": index_equal, "float32": dtypes_equal}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--allennlp-src", required=True, help="AllenNLP's extracted source (the harness README)")
    ap.add_argument("--harness", required=True, help="../shared/tools/allennlp_baseline")
    ap.add_argument("--out", default="benchmarks/results/allennlp_parity.json")
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    sys.path.insert(0, args.harness)
    import bench_allennlp as H  # the harness: imports AllenNLP from its source, stubbing what ELMo does not use

    A = H.import_allennlp(args.allennlp_src)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = {"tiny": tiny_files(work), "small": H.ensure_small_model(str(work / "small"), 0)}
        for name, (options, weights) in models.items():
            results[name] = {**compare_elmo(A, options, weights), **compare_embedder(A, options, weights, work)}
    checks = [v for model in results.values() for v in model.values()]
    ok = all(c["max_abs_diff"] <= args.atol and all(x for x in c.values() if isinstance(x, bool)) for c in checks)
    results["atol"], results["pass"] = args.atol, ok
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

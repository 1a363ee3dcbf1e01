"""The champion gate's rule (`workflows.registry.comparability`): which held-out perplexities are
comparable, and the gate's decision, without a registry (tests/integration/test_gate.py runs it
against a real MLflow server)."""

from __future__ import annotations

import copy

import pytest

from preprocessing.config import PreprocessConfig
from preprocessing.ids import SPLIT_HASH
from preprocessing.schema import MANIFEST_FORMAT
from workflows.registry.comparability import GATE_KEYS, decide, evaluation_tags, heldout_digest


def manifest(**config) -> dict:
    """The fields of an `elmo preprocess` manifest the held-out digest reads."""
    return {"format": MANIFEST_FORMAT, "split_hash": SPLIT_HASH, "config": PreprocessConfig(**config).to_dict(),
            "version": "v", "vocab": {"digest": "vocab-a", "size": 100},
            "inputs": [{"path": "s3://corpus/a.txt", "key": "a.txt", "status": "ok", "sha256": "aa"},
                       {"path": "s3://corpus/b.txt", "key": "b.txt", "status": "ok", "sha256": "bb"}],
            "splits": {"train": {"sentences": 900, "tokens": 9000}, "validation": {"sentences": 10, "tokens": 100},
                       "test": {"sentences": 10, "tokens": 100}}}


def test_the_heldout_digest_follows_the_heldout_text_only():
    base = heldout_digest(manifest())
    assert base is not None and len(base) == 64
    moved = manifest()
    for entry in moved["inputs"]:
        entry["path"] = entry["path"].replace("s3://corpus", "/data")
    smaller_vocab = manifest(max_vocab=50, min_count=1, shard_size_mb=4)
    smaller_vocab["vocab"] = {"digest": "vocab-b", "size": 50}  # (the vocabulary is compared on its own)
    training_only = manifest(assigned_splits=(("c.txt", "train"),))
    training_only["inputs"].append({"path": "s3://corpus/c.txt", "key": "c.txt", "status": "ok", "sha256": "cc"})
    training_only["splits"]["train"]["sentences"] += 500
    for same in (moved, smaller_vocab):
        assert heldout_digest(same) == base
    # a shard assigned wholly to train gives no held-out line: the held-out text is the same
    assert heldout_digest(training_only) == heldout_digest(manifest(assigned_splits=(("c.txt", "train"),)))

    new_input = manifest()
    new_input["inputs"].append({"path": "s3://corpus/c.txt", "key": "c.txt", "status": "ok", "sha256": "cc"})
    edited = manifest()
    edited["inputs"][0]["sha256"] = "a2"
    fewer = manifest()
    fewer["splits"]["validation"]["sentences"] = 9
    differ = [new_input, edited, fewer, manifest(tokenizer="whitespace"), manifest(language="de"),
              manifest(validation_fraction=0.02), manifest(max_sentence_tokens=100), manifest(input_format="document")]
    digests = [heldout_digest(m) for m in differ]
    assert base not in digests and len(set(digests)) == len(differ)
    assert heldout_digest({"version": "v"}) is None  # not a manifest this rule can read


def test_the_evaluation_tags_come_from_the_runs_job_params():
    assert evaluation_tags({"job.mode": "sentence", "job.eval_max_sentences": "20000"}) == {
        "eval_mode": "sentence", "eval_max_sentences": "20000"}
    assert evaluation_tags({"job.mode": "stream", "job.eval_stream_rows": "10", "job.eval_max_sentences": "None"}) == {
        "eval_mode": "stream (10 rows)", "eval_max_sentences": "all"}
    assert evaluation_tags({}) == {}


TAGS = {"val_ppl": "40.0", "heldout_digest": "h" * 64, "vocab_digest": "v" * 64, "eval_mode": "sentence",
        "eval_max_sentences": "20000"}


def test_comparable_versions_are_gated_on_val_ppl():
    better = decide(2, {**TAGS, "val_ppl": "30.0"}, 1, TAGS)
    assert better.promote and better.comparable
    assert better.reason == "promoted to champion: val_ppl 30.00 < 40.00 of version 1"
    worse = decide(2, {**TAGS, "val_ppl": "50.0"}, 1, TAGS)
    assert not worse.promote and worse.comparable and "val_ppl 50.00 >= 40.00" in worse.reason
    assert decide(2, TAGS, None).promote  # no champion yet: the first version is it
    assert not decide(1, TAGS, 1, TAGS).promote  # re-gating the champion itself changes nothing


@pytest.mark.parametrize("key,other,what", [
    ("heldout_digest", "g" * 64, "held-out data differs"),
    ("vocab_digest", "w" * 64, "vocabulary differs"),
    ("eval_mode", "stream (10 rows)", "evaluation mode differs"),
    ("eval_max_sentences", "all", "held-out sentences evaluated differs"),
])
def test_a_better_val_ppl_on_other_terms_is_not_promoted_unless_asked(key, other, what):
    new = {**TAGS, key: other, "val_ppl": "10.0"}
    kept = decide(2, new, 1, TAGS)
    assert not kept.promote and kept.comparable is False
    assert what in kept.reason and "--promote-anyway" in kept.reason and "\n" not in kept.reason
    forced = decide(2, new, 1, TAGS, promote_anyway=True)
    assert forced.promote and forced.comparable is False and what in forced.reason


@pytest.mark.parametrize("key", sorted(GATE_KEYS))
def test_a_version_without_the_rules_tags_is_comparable_with_nothing(key):
    """A champion registered before the rule (no heldout_digest, eval_mode, ...) is kept by a
    better new version; a new version without them (a run logged by older code) is not promoted."""
    old = {k: v for k, v in TAGS.items() if k != key}
    kept = decide(2, {**TAGS, "val_ppl": "10.0"}, 1, old)
    assert not kept.promote and kept.comparable is False and f"version 1 has no {key} tag" in kept.reason
    untagged = decide(2, {**old, "val_ppl": "10.0"}, 1, TAGS)
    assert not untagged.promote and f"version 2 has no {key} tag" in untagged.reason
    assert decide(2, {**TAGS, "val_ppl": "10.0"}, 1, old, promote_anyway=True).promote
    assert decide(2, copy.deepcopy(old), None).promote  # but with no champion at all, it is the champion

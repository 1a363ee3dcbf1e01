"""The champion gate's rule: when two registered versions' held-out perplexities (``val_ppl``)
can be compared, and what the gate decides.

Two versions are comparable when the tags in `GATE_KEYS` are present on both and equal: the
held-out data (`heldout_digest`), the vocabulary (``vocab_digest``: the softmax's targets) and
how the perplexity was evaluated (``eval_mode``, ``eval_max_sentences``). A version that lacks
one of them (registered by code older than this rule, or tagged by hand) is comparable with
nothing. No MLflow here: `tracking.gate` reads and writes the registry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

# tag -> what it stands for (in the reason a version is not comparable)
GATE_KEYS = {"heldout_digest": "held-out data", "vocab_digest": "vocabulary", "eval_mode": "evaluation mode",
             "eval_max_sentences": "held-out sentences evaluated"}
# `PreprocessConfig` fields that change the vocabulary or the file layout but not the held-out text
NOT_HELD_OUT = ("max_vocab", "min_count", "shard_size_mb", "quarantine_bad_files")
NOT_EVALUATION_SPLIT = ("train", "test")  # inputs assigned wholly to these give no held-out line


def heldout_digest(manifest: dict) -> str | None:
    """sha256 of what decides a dataset's ``validation`` split (its token sequences): the split
    scheme, the text settings (tokenizer, language, sentence cutting, fractions, salt), the
    content (sha256) of every input that can give it lines, and the split's sentence and token
    counts. Not the vocabulary (compared on its own) nor the paths: the same text elsewhere, or
    with more training-only inputs, has the same digest. None for a manifest without these."""
    try:
        config = {k: v for k, v in manifest["config"].items() if k not in NOT_HELD_OUT}
        assigned = {key: split for key, split in config.get("assigned_splits", [])}
        inputs = sorted([entry["key"], entry["sha256"]] for entry in manifest["inputs"]
                        if entry.get("status") == "ok" and assigned.get(entry["key"]) not in NOT_EVALUATION_SPLIT)
        split = manifest["splits"]["validation"]
        identity = {"format": manifest["format"], "split_hash": manifest["split_hash"], "config": config,
                    "inputs": inputs, "sentences": split["sentences"], "tokens": split["tokens"]}
    except (KeyError, TypeError, ValueError):
        return None
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


def evaluation_tags(params: dict) -> dict:
    """``eval_mode`` and ``eval_max_sentences`` from a training run's ``job.*`` params: held-out
    perplexity follows the training mode (stream mode: over ``eval_stream_rows`` rows), on the
    first ``eval_max_sentences`` held-out sentences ("all": no cap)."""
    mode = params.get("job.mode")
    if mode is None:
        return {}
    if mode == "stream":
        mode = f"stream ({params.get('job.eval_stream_rows')} rows)"
    cap = params.get("job.eval_max_sentences")
    return {"eval_mode": mode, "eval_max_sentences": "all" if cap in (None, "None") else cap}


def incomparable(version: str, tags: dict, champion: str, champion_tags: dict) -> str | None:
    """Why version ``version`` (tags ``tags``) cannot be compared with champion version
    ``champion``, in one clause; None when they can."""
    for key, what in GATE_KEYS.items():
        for number, of in ((champion, champion_tags), (version, tags)):
            if not of.get(key):
                return f"version {number} has no {key} tag ({what}; registered before the gate compared it?)"
        if tags[key] != champion_tags[key]:
            return f"{what} differs ({key} {_short(tags[key])} vs {_short(champion_tags[key])})"
    for number, of in ((champion, champion_tags), (version, tags)):
        if _ppl(of) is None:
            return f"version {number} has no val_ppl tag"
    return None


@dataclass(frozen=True)
class GateDecision:
    """What the gate does with a new version: move ``champion`` to it or not, and why (one line)."""

    promote: bool
    comparable: bool | None  # None: there was no other champion to compare with
    reason: str


def decide(version, tags: dict, champion=None, champion_tags: dict | None = None,
           promote_anyway: bool = False) -> GateDecision:
    """The gate's decision for ``version`` against the current ``champion`` (None: none)."""
    version = str(version)
    if champion is None:
        return GateDecision(True, None, "promoted to champion (there was none)")
    champion = str(champion)
    if champion == version:
        return GateDecision(False, None, f"version {version} is the champion already")
    why = incomparable(version, tags, champion, champion_tags or {})
    if why is not None:
        if promote_anyway:
            return GateDecision(True, False, f"promoted to champion by --promote-anyway, not compared with version "
                                             f"{champion}: {why}")
        return GateDecision(False, False, f"candidate only, champion version {champion} kept: not comparable, {why}; "
                                          "--promote-anyway promotes it")
    new, old = _ppl(tags), _ppl(champion_tags)
    if new < old:
        return GateDecision(True, True, f"promoted to champion: val_ppl {new:.2f} < {old:.2f} of version {champion}")
    return GateDecision(False, True, f"candidate only, champion version {champion} kept: val_ppl {new:.2f} >= "
                                     f"{old:.2f}")


def _ppl(tags: dict) -> float | None:
    try:
        return float(tags["val_ppl"])
    except (KeyError, TypeError, ValueError):
        return None


def _short(value: str) -> str:
    return value[:12] + "..." if len(value) > 15 else value

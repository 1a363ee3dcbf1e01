"""English sentences that every CPython ships (``pydoc_data.topics``), for demos and benchmarks.

Nothing is downloaded or committed: the text comes from the running interpreter.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORDY = re.compile(r"^[\"'(]?[A-Za-z][A-Za-z'-]*[\"')]?[.,;:!?]?[\"')]?$")


def pydoc_sentences(limit: int | None = None, min_tokens: int = 10, max_tokens: int = 40) -> list[list[str]]:
    """Distinct prose sentences (whitespace tokens) from the pydoc topics, in a fixed order."""
    import pydoc_data.topics

    seen: set[str] = set()
    out: list[list[str]] = []
    for key in sorted(pydoc_data.topics.topics):
        for paragraph in re.split(r"\n\s*\n", pydoc_data.topics.topics[key]):
            lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
            if not lines or any(line.startswith((">>>", "...", "$", "#")) for line in lines):
                continue  # code samples
            for sentence in _SENTENCE_END.split(" ".join(lines)):
                tokens = sentence.split()
                if not (min_tokens <= len(tokens) <= max_tokens):
                    continue
                if sum(bool(_WORDY.match(t)) for t in tokens) < 0.8 * len(tokens):
                    continue  # mostly code or symbols
                text = " ".join(tokens)
                if text not in seen:
                    seen.add(text)
                    out.append(tokens)
                    if limit is not None and len(out) == limit:
                        return out
    return out

"""The demo's pictures: perplexity curves of both training runs, and where the biLM puts the
same word in different sentences, layer by layer (a 2-D projection of its contextual vectors).

Both write PNGs with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Words used in both corpora, often in different senses (Wikipedia vs Python's documentation);
# the plot takes the ones with the most sentences in both.
AMBIGUOUS_WORDS = ("class", "set", "function", "list", "value", "type", "object", "order", "state", "return",
                   "key", "power", "table", "string", "range", "block", "field", "frame", "module", "exception")
WORDS_SHOWN = 4
SENTENCES_PER_WORD_AND_CORPUS = 12


@dataclass(frozen=True)
class Occurrence:
    word: str
    corpus: str  # "general" | "domain"
    tokens: list[str]  # the sentence
    position: int  # index of the word in it


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def perplexity_curves(pretrain_history: list[dict], adapt_history: list[dict], before: dict, after: dict,
                      path: Path) -> Path:
    """Held-out perplexity against step: pretraining (general text), then adaptation (domain
    text), with both held-out sets' perplexity before and after adaptation."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = [h for h in pretrain_history if "val_ppl" in h]
    a.plot([h["step"] for h in rows], [h["val_ppl"] for h in rows], marker="o", color="tab:blue")
    a.set(title="1. pretraining on general English", xlabel="step", ylabel="held-out perplexity (general)")
    rows = [h for h in adapt_history if "val_ppl" in h]
    steps = [0] + [h["step"] for h in rows]
    b.plot(steps, [before["domain"]] + [h["val_ppl"] for h in rows], marker="o", color="tab:orange",
           label="held-out domain text")
    b.plot([0, steps[-1]], [before["general"], after["general"]], marker="s", linestyle="--", color="tab:blue",
           label="held-out general text")
    b.set(title="2. adaptation to Python's documentation", xlabel="step", ylabel="held-out perplexity")
    b.legend()
    for axis in (a, b):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def find_occurrences(general: list[list[str]], domain: list[list[str]]) -> list[Occurrence]:
    """Sentences (tokenized) that hold the ambiguous words in both corpora, for `context_projection`."""
    found = {}
    for name, sentences in (("general", general), ("domain", domain)):
        for word in AMBIGUOUS_WORDS:  # the lower-case form only: "Set" has other characters
            hits = [(s, s.index(word)) for s in sentences if word in s and len(s) <= 60]
            found[(word, name)] = hits[:SENTENCES_PER_WORD_AND_CORPUS]
    ranked = sorted(AMBIGUOUS_WORDS, key=lambda w: -min(len(found[(w, "general")]), len(found[(w, "domain")])))
    chosen = [w for w in ranked[:WORDS_SHOWN] if found[(w, "general")] and found[(w, "domain")]]
    return [Occurrence(w, c, s, p) for w in chosen for c in ("general", "domain") for s, p in found[(w, c)]]


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, 2): the first two principal components."""
    centered = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return centered @ vt[:2].T


def context_projection(occurrences: list[Occurrence], layers: np.ndarray, path: Path) -> Path:
    """``layers``: (n_occurrences, L+1, 2P), the word's vector in its sentence at each layer.
    One panel a layer: layer 0 (the char CNN) gives a word one point whatever its sentence;
    the LSTM layers move it by context."""
    plt = _plt()
    words = list(dict.fromkeys(o.word for o in occurrences))
    colors = dict(zip(words, plt.get_cmap("tab10").colors))
    markers = {"general": "o", "domain": "^"}
    n_layers = layers.shape[1]
    fig, axes = plt.subplots(1, n_layers, figsize=(4.6 * n_layers, 4.4))
    for j, axis in enumerate(np.atleast_1d(axes)):
        xy = project_2d(layers[:, j].astype(np.float64))
        for word in words:
            for corpus, marker in markers.items():
                rows = [i for i, o in enumerate(occurrences) if o.word == word and o.corpus == corpus]
                axis.scatter(xy[rows, 0], xy[rows, 1], c=[colors[word]], marker=marker, s=36, alpha=0.75,
                             label=f"{word} ({'Wikipedia' if corpus == 'general' else 'Python docs'})")
        axis.set(title=f"layer {j}" + (" (char CNN: no context)" if j == 0 else " (biLSTM)"),
                 xticks=[], yticks=[])
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="best")
    fig.suptitle("The same words in different sentences: 2-D projection (PCA) of their ELMo vectors")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tokenize_for_plot(paragraphs: list[str], limit: int) -> list[list[str]]:
    """Paragraphs -> up to ``limit`` sentences of at least 5 tokens, split and tokenized as
    `elmo preprocess --input-format document` does."""
    from preprocessing.config import PreprocessConfig
    from preprocessing.text import LineProcessor

    sentences_of = LineProcessor(PreprocessConfig(input_format="document"))
    out = []
    for paragraph in paragraphs:
        out += [tokens for tokens in sentences_of(paragraph)[0] if len(tokens) >= 5]
        if len(out) >= limit:
            return out[:limit]
    return out

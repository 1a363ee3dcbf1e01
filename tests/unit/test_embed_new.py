"""`elmo embed-new`'s parts without a cluster: the `--every` interval and the version folders."""

from __future__ import annotations

import pytest


def test_every_accepts_units_and_refuses_nonsense():
    import argparse

    from workflows.embedding.embed_new import parse_every, version_dir

    assert [parse_every(t) for t in ("90", "90s", "15m", "1h", "1.5d")] == [90, 90, 900, 3600, 129600]
    for bad in ("", "0", "-5m", "1w", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_every(bad)
    assert version_dir("elmo-news/12") == "elmo-news-v12" and version_dir("sha256:ab12") == "sha256-ab12"

"""Tests without servers or Ray clusters: the fast tier (``pytest -m "not slow"``)."""

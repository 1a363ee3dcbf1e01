"""The test suite: ``unit/`` (no servers, no Ray cluster, a few training steps at most; ``pytest -m
"not slow"``) and ``integration/`` (real servers, Ray clusters, whole jobs; marked ``slow``)."""

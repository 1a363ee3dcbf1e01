"""Tests with real servers, Ray clusters and whole jobs: marked ``slow`` by ``tests/conftest.py``."""

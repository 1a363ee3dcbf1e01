"""Deployment files; ``infra.local`` is the one Python package here (real servers on one machine)."""

"""What both test tiers share: generated inputs, the corpus oracle, the numpy reference, the
command checks."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

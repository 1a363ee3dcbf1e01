"""What both test tiers import: generated inputs (random_inputs, corpus), the numpy reference
(reference_numpy), command checks (command_check, commands, console), small waits (waiting) and
Parquet sizes (parquet_files). ``REPO`` is the repository root."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

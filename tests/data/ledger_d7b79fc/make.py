"""Writes this folder's ledger (`_ledger/`) with the ledger code of the checkout on PYTHONPATH: kept
as it was written by commit d7b79fc (checkpoints with the text id index only), for
`tests/unit/test_ledger_index.py`. Run: ``PYTHONPATH=<checkout of d7b79fc> python make.py``."""

import os
import shutil

from preprocessing.storage import Storage
from workflows.embedding.ledger import Ledger, LedgerSettings, entry_id, file_identity


def fixture_entry(i: int, version: str = "m/1") -> dict:
    ident = {"uri": f"/in/{i}.txt", "size": i, "fingerprint": f"mtime_ns:{i}"}
    return {"entry_id": entry_id(ident, version, {}), "file_identity": file_identity(ident), "output": f"{version}/o{i}"}


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.rmtree(os.path.join(here, "_ledger"), ignore_errors=True)
    ledger = Ledger(Storage(here), LedgerSettings(checkpoint_every=3))
    ledger.commit_group([fixture_entry(i) for i in range(0, 40)])
    ledger.commit_group([fixture_entry(i) for i in range(40, 50)])
    ledger.commit(fixture_entry(7, "m/2"))  # checkpoint at 3: a file identity twice, two model versions
    for i in range(50, 53):
        ledger.commit(fixture_entry(i))  # checkpoint at 6
    ledger.commit_group([fixture_entry(3), fixture_entry(53)])  # after it: a duplicate, a new file

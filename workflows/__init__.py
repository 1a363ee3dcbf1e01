"""The jobs, one room (sub-package) each, named after the commands they serve:

* `workflows.training`: `elmo pretrain` (`pretrain.py`) and `elmo adapt` (`adapt.py`) on Ray Train.
* `workflows.registry`: `elmo register` (`register.py`), MLflow tracking and the logged model.
* `workflows.embedding`: `elmo embed-corpus` (`embed_corpus.py`) and `elmo embed-new`
  (`embed_new.py`) on Ray Data.
* `workflows.demo`: `elmo demo`, the whole product on this machine.

Each command module is also a `ray job submit` entrypoint (``python -m workflows.training.pretrain``).
training and embedding use the registry and never each other; the demo uses them all. Shared by
the rooms: `console.py` (one line per step) and `faults.py`
(the recovery tests' fault injection).
"""

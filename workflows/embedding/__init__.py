"""`elmo embed-corpus` (`embed_corpus.py`) and `elmo embed-new` (`embed_new.py`): MODEL -> pinned
weights (`model_source.py`), the Ray Data pipeline (`pipeline.py`), one output file per input
(`output.py`), the exactly-once ledger and lease (`ledger.py`); settings: `config.py`."""

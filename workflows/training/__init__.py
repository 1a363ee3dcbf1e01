"""`elmo pretrain` and `elmo adapt`: LM training on Ray Train (driver side: `driver.py`; each
worker's loop: `worker.py`; one optimizer step: `step.py`; sentence-mode batches: `batches.py`;
stream mode: `streams.py`; held-out perplexity: `evaluation.py`; LR decay, best model and early
stop: `lr_schedule.py`; what a checkpoint holds: `checkpoints.py`; settings: `config.py`)."""

"""Validation-driven schedule: learning-rate decay on a plateau, the best model, early stopping.

After every evaluation the validation perplexity (of the run's training mode) is compared with
the best so far. An improvement by more than ``plateau_threshold`` (relative) makes it the best
(the loop keeps that model); otherwise the evaluation counts as a bad one. After
``lr_decay_patience`` bad evaluations in a row the learning rate is multiplied by ``lr_decay``
(Kim et al. 2016: halved when an epoch does not improve validation perplexity); after
``early_stop_patience`` the run stops. With ``lr_decay_start_epoch`` the rate is instead
multiplied by ``lr_decay`` at the end of every epoch from that one on (Zaremba et al. 2014): a
schedule that anneals within a fixed number of epochs. A linear warm-up (`warmup_factor`) scales
the rate of the first ``warmup_steps`` steps on top of either. The state is part of every checkpoint, so a resumed run
decides exactly as the uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class PlateauSchedule:
    learning_rate: float
    lr_decay: float = 0.5  # 1.0: never decay
    lr_decay_patience: int = 1
    plateau_threshold: float = 0.0
    early_stop_patience: int = 0  # 0: never stop early
    lr_decay_start_epoch: int | None = None  # per-epoch decay from this (1-based) epoch's end on
    # state
    best: float = math.inf
    best_step: int = 0
    bad: int = 0  # bad evaluations since the last improvement or decay
    bad_total: int = 0  # bad evaluations since the last improvement (early stopping)

    def update(self, perplexity: float, step: int) -> tuple[bool, bool]:
        """Record an evaluation; returns (new best, stop now)."""
        if perplexity < self.best * (1.0 - self.plateau_threshold):
            self.best, self.best_step, self.bad, self.bad_total = perplexity, step, 0, 0
            return True, False
        if perplexity < self.best:  # better, but not by the threshold: keep it, still a plateau
            self.best, self.best_step = perplexity, step
        self.bad += 1
        self.bad_total += 1
        if self.lr_decay < 1.0 and self.lr_decay_start_epoch is None and self.bad >= self.lr_decay_patience:
            self.learning_rate *= self.lr_decay
            self.bad = 0
        stop = self.early_stop_patience > 0 and self.bad_total >= self.early_stop_patience
        return perplexity <= self.best, stop

    def end_of_epoch(self, epochs_done: int) -> None:
        """Called once when the ``epochs_done``-th epoch (1-based) has been trained."""
        if self.lr_decay_start_epoch is not None and epochs_done >= self.lr_decay_start_epoch:
            self.learning_rate *= self.lr_decay

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "PlateauSchedule":
        return cls(**state)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The linear warm-up's factor of 0-based ``step``: (step + 1) / warmup_steps, 1 from then on."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)

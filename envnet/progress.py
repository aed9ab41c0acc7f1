"""How long a training run has left, from the trainer's epoch_start and batch events.

A run's time goes to batches and, at each epoch's end, to overhead (validation, measuring the filters,
saving). Both are measured separately: the seconds between batch events (or from an epoch's start to its
first batch) and the seconds from an epoch's last batch to the next epoch's start. Time left is then
remaining batches × batch time + remaining epoch ends × overhead, and between events it counts down with
the clock. So while the pace stays the same the estimate never rises: each event lowers it by exactly the
time that passed. (The older elapsed × (1 − f) / f counted up whenever the clock ran between two events.)
"""

from __future__ import annotations

from collections import deque

RECENT = 50  # gaps averaged: recent enough to follow a machine that gets busier, enough to be smooth


class TimeLeft:
    """Feed it events with a clock reading (seconds, any origin); ask `seconds_left(now)`."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.epoch = 0  # the epoch in progress (1-based), 0 before the first
        self.batch = 0  # batches done in it
        self.n_batches = 0
        self._last: float | None = None  # clock at the last event
        self._last_kind = ""
        self._batch_gaps: deque[float] = deque(maxlen=RECENT)
        self._end_gaps: deque[float] = deque(maxlen=RECENT)
        self._estimate: float | None = None  # seconds left at the last event

    def epoch_start(self, epoch: int, n_batches: int, t: float) -> None:
        if self._last is not None and self._last_kind == "batch":  # the previous epoch's end overhead
            self._end_gaps.append(t - self._last)
        self.epoch, self.batch, self.n_batches = epoch, 0, n_batches
        self._event("epoch_start", t)

    def batch_done(self, epoch: int, batch: int, n_batches: int, t: float) -> None:
        if self._last is not None and epoch == self.epoch:
            self._batch_gaps.append(t - self._last)
        self.epoch, self.batch, self.n_batches = epoch, batch, n_batches
        self._event("batch", t)

    def _event(self, kind: str, t: float) -> None:
        self._last, self._last_kind = t, kind
        if not self._batch_gaps or not self.n_batches:
            self._estimate = None
            return
        per_batch = sum(self._batch_gaps) / len(self._batch_gaps)
        per_end = sum(self._end_gaps) / len(self._end_gaps) if self._end_gaps else 0.0
        batches_left = (self.epochs - self.epoch) * self.n_batches + (self.n_batches - self.batch)
        ends_left = self.epochs - self.epoch + (1 if self.epoch else 0)  # this epoch's end is still to come
        self._estimate = batches_left * per_batch + ends_left * per_end

    def seconds_left(self, now: float) -> float | None:
        """None until one batch has been timed; never below zero."""
        if self._estimate is None or self._last is None:
            return None
        return max(0.0, self._estimate - (now - self._last))

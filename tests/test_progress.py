"""The Train page's time-left estimate: it counts down with the clock and never rises while the pace is steady."""

from __future__ import annotations

import pytest

from envnet.progress import TimeLeft


def simulate(epochs: int, n_batches: int, batch_s: float, end_s: float, tick: float = 0.25):
    """A run with a steady pace, polled every `tick` seconds like the page: [(time, seconds left, true left)]."""
    events, t = [], 0.0
    for e in range(1, epochs + 1):
        events.append((t, "start", e, 0))
        for b in range(1, n_batches + 1):
            t += batch_s
            events.append((t, "batch", e, b))
        t += end_s  # validation, filter measurement, saving
    total = t
    eta, polls, i, now = TimeLeft(epochs), [], 0, 0.0
    while now <= total:
        while i < len(events) and events[i][0] <= now:
            at, kind, e, b = events[i]
            if kind == "start":
                eta.epoch_start(e, n_batches, at)
            else:
                eta.batch_done(e, b, n_batches, at)
            i += 1
        polls.append((now, eta.seconds_left(now), total - now))
        now += tick
    return polls


@pytest.mark.parametrize("n_batches", [1, 4])  # one batch per epoch: a small own-classes run
def test_time_left_never_rises_while_batches_take_the_same_time(n_batches):
    polls = simulate(epochs=6, n_batches=n_batches, batch_s=2.0, end_s=0.0)
    shown = [left for _, left, _ in polls if left is not None]
    assert shown, "no estimate was ever shown"
    assert all(b <= a + 1e-9 for a, b in zip(shown, shown[1:], strict=False)), shown
    # And it is right: from the first timed batch on, it is the real time left.
    assert all(abs(left - true) < 1e-6 for _, left, true in polls if left is not None)


def test_with_a_steady_overhead_per_epoch_it_rises_at_most_once_then_counts_down():
    polls = simulate(epochs=5, n_batches=3, batch_s=1.5, end_s=4.0)
    first_end = 3 * 1.5 + 4.0  # the first epoch's overhead is not known before it has happened
    after = [left for t, left, _ in polls if t >= first_end and left is not None]
    assert all(b <= a + 1e-9 for a, b in zip(after, after[1:], strict=False))
    assert all(abs(left - true) < 1e-6 for t, left, true in polls if t >= first_end and left is not None)


def test_nothing_is_guessed_before_a_batch_has_been_timed():
    eta = TimeLeft(epochs=3)
    assert eta.seconds_left(0.0) is None
    eta.epoch_start(1, n_batches=5, t=10.0)  # after the initial filter measurement
    assert eta.seconds_left(15.0) is None
    eta.batch_done(1, 1, 5, t=12.0)
    assert eta.seconds_left(12.0) == pytest.approx(14 * 2.0)  # 14 batches to go at 2 s each
    assert eta.seconds_left(1000.0) == 0.0  # never negative

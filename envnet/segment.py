"""A long recording → examples: where a sound made again and again starts and stops.

A recording session ("clap ten times") or a long uploaded file is cut into one example per event:
frames of 10 ms are marked loud when their energy rises well above the recording's own noise floor
(so a quiet room and a noisy classroom both work), loud stretches separated by short dips are joined,
and a stretch that holds several events back to back (knocks with no silence between them) is split
again at its onsets, the frames where the energy jumps up. A steady sound with no events (a fan, rain)
is one long stretch; it is cut into EnvNet-window-sized pieces so that it still gives several examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envnet.model import SAMPLE_RATE, WINDOW

FRAME = SAMPLE_RATE // 100  # 10 ms


@dataclass(frozen=True)
class Segment:
    start: int  # first sample
    end: int  # one past the last sample

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def frame_db(wave: torch.Tensor, frame: int = FRAME) -> torch.Tensor:
    """Energy of each 10 ms frame in dB (a tiny floor keeps digital silence finite)."""
    n = wave.numel() // frame
    if n == 0:
        return torch.empty(0)
    power = wave[: n * frame].float().view(n, frame).pow(2).mean(1)
    return 10 * torch.log10(power + 1e-10)


def onsets(wave: torch.Tensor, *, min_gap: float = 0.12, rise_db: float = 9.0) -> list[int]:
    """Sample positions where a new event starts: the energy rises by `rise_db` within 30 ms over the
    quietest of the frames just before, and the frame is clearly above the noise floor. Onsets closer
    than `min_gap` seconds to the previous one are dropped (one clap rings for a while)."""
    db = frame_db(wave)
    if db.numel() < 4:
        return []
    floor, peak = _floor_and_peak(db)
    if peak - floor < rise_db:
        return []
    loud = floor + 0.25 * (peak - floor)
    found: list[int] = []
    gap = round(min_gap * SAMPLE_RATE / FRAME)
    for i in range(1, db.numel()):
        before = float(db[max(0, i - 3) : i].min())
        if db[i] >= loud and db[i] - before >= rise_db and (not found or i - found[-1] >= gap):
            found.append(i)
    return [i * FRAME for i in found]


def split_examples(
    wave: torch.Tensor,
    *,
    min_seconds: float = 0.02,
    max_seconds: float = WINDOW / SAMPLE_RATE,
    join_gap: float = 0.15,
    pre_roll: float = 0.03,
    tail: float = 0.12,
) -> list[Segment]:
    """One Segment per event in a recording of a sound made again and again.

    - Loud frames: more than a third of the way (in dB) from the noise floor to the peak, and at least
      6 dB above the floor; dips shorter than `join_gap` seconds do not end an event.
    - A loud stretch with several onsets is cut just before each later onset.
    - Each event gets `pre_roll` seconds before it and up to `tail` seconds after (a clap's ring), never
      overlapping its neighbours; events louder than the threshold for less than `min_seconds` are
      dropped (a single crackle), longer than `max_seconds` are cut into pieces of that length.
    Returns [] for silence or a recording with no clear events.
    """
    db = frame_db(wave)
    if db.numel() == 0:
        return []
    floor, peak = _floor_and_peak(db)
    if peak - floor < 6.0 or peak < -70.0:  # nothing stands out, or digital near-silence
        return []
    threshold = max(floor + 6.0, floor + (peak - floor) / 3)
    loud = (db > threshold).tolist()
    runs = _runs(loud, max_gap=round(join_gap * SAMPLE_RATE / FRAME))
    starts = [s // FRAME for s in onsets(wave)]
    pieces: list[tuple[int, int]] = []  # in frames
    for a, b in runs:
        cuts = [a] + [s for s in starts if a + 2 < s < b - 2] + [b]
        for s, e in zip(cuts, cuts[1:], strict=False):
            # A cut at an onset ends the previous event where its energy last fell below the threshold.
            end = e
            while end > s + 1 and not loud[end - 1]:
                end -= 1
            pieces.append((s, end))
    segs: list[Segment] = []
    pre, post = round(pre_roll * SAMPLE_RATE), round(tail * SAMPLE_RATE)
    longest = round(max_seconds * SAMPLE_RATE)
    bounds = [(a * FRAME, b * FRAME) for a, b in pieces]
    for k, (a, b) in enumerate(bounds):
        lo = max(0, a - pre, bounds[k - 1][1] if k else 0)
        hi = min(wave.numel(), b + post, bounds[k + 1][0] if k + 1 < len(bounds) else wave.numel())
        if (b - a) < min_seconds * SAMPLE_RATE:
            continue
        if hi - lo <= longest:
            segs.append(Segment(lo, hi))
            continue
        n = -(-(hi - lo) // longest)  # a steady sound: equal pieces no longer than one window
        step = (hi - lo) / n
        segs += [Segment(lo + round(i * step), lo + round((i + 1) * step)) for i in range(n)]
    return segs


def split_background(wave: torch.Tensor, min_seconds: float = 0.5) -> list[Segment]:
    """A recording of the room (no events to find): back-to-back pieces of one EnvNet window, the last
    one kept if it lasts at least `min_seconds`."""
    n = wave.numel()
    segs = [Segment(s, min(s + WINDOW, n)) for s in range(0, n, WINDOW)]
    return [s for s in segs if s.end - s.start >= min_seconds * SAMPLE_RATE]


def cut(wave: torch.Tensor, segments: list[Segment]) -> list[torch.Tensor]:
    """The segments' audio, as separate tensors."""
    return [wave[s.start : s.end].clone() for s in segments]


def _floor_and_peak(db: torch.Tensor) -> tuple[float, float]:
    """The noise floor (10th percentile of frame energies) and the peak (99.5th, so one spike cannot set it)."""
    q = torch.quantile(db, torch.tensor([0.1, 0.995]))
    return float(q[0]), float(q[1])


def _runs(flags: list[bool], max_gap: int) -> list[tuple[int, int]]:
    """[start, end) of the True stretches, joining stretches separated by at most max_gap False frames."""
    runs: list[tuple[int, int]] = []
    i, n = 0, len(flags)
    while i < n:
        if not flags[i]:
            i += 1
            continue
        j = i
        while j < n and flags[j]:
            j += 1
        if runs and i - runs[-1][1] <= max_gap:
            runs[-1] = (runs[-1][0], j)
        else:
            runs.append((i, j))
        i = j
    return runs

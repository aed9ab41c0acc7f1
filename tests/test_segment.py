"""envnet.segment: a recording of one sound made again and again → one example per event."""

from __future__ import annotations

import numpy as np
import torch

from envnet.model import SAMPLE_RATE, WINDOW
from envnet.segment import cut, onsets, split_examples

SR = SAMPLE_RATE


def clicks_recording(times: list[float], seconds: float = 12.0, seed: int = 0, noise: float = 0.003) -> torch.Tensor:
    """Room noise with a click (a 40 ms decaying noise burst, like a knock or a clap) at each time."""
    rng = np.random.default_rng(seed)
    x = noise * rng.standard_normal(int(seconds * SR))
    n = int(0.04 * SR)
    env = np.exp(-np.arange(n) / (0.008 * SR))
    for t in times:
        i = int(t * SR)
        x[i : i + n] += 0.6 * env * rng.standard_normal(n)
    return torch.from_numpy(x.astype(np.float32))


def click_times(n: int = 11, seed: int = 1) -> list[float]:
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(0.55, 1.2, n)  # a person's irregular rhythm
    return list(0.6 + np.cumsum(gaps) - gaps[0])


def test_repeated_clicks_give_one_example_each_starting_at_the_click():
    times = click_times()
    wave = clicks_recording(times)
    segs = split_examples(wave)
    assert len(segs) == len(times)
    for seg, t in zip(segs, times, strict=True):
        click = int(t * SR)
        assert seg.start <= click < seg.end, (seg, t)
        assert click - seg.start <= int(0.06 * SR)  # a little pre-roll, no more
        assert 0.04 <= seg.seconds <= 0.3  # the click and its tail, not the silence after it
    assert all(a.end <= b.start for a, b in zip(segs, segs[1:], strict=False))  # never overlapping
    pieces = cut(wave, segs)
    assert [p.numel() for p in pieces] == [s.end - s.start for s in segs]


def test_onsets_find_clicks_back_to_back_with_no_silence_between():
    # Knocks 0.2 s apart ring into each other: energy never drops to the floor, onsets still split them.
    times = [1.0 + 0.2 * k for k in range(6)]
    rng = np.random.default_rng(0)
    x = 0.003 * rng.standard_normal(4 * SR)
    n = int(0.2 * SR)
    env = np.exp(-np.arange(n) / (0.05 * SR))  # rings for the whole gap
    for t in times:
        x[int(t * SR) : int(t * SR) + n] += 0.5 * env * rng.standard_normal(n)
    wave = torch.from_numpy(x.astype(np.float32))
    found = onsets(wave)
    assert len(found) == len(times)
    assert all(abs(f - t * SR) <= 0.03 * SR for f, t in zip(found, times, strict=True))
    assert len(split_examples(wave)) == len(times)


def test_louder_and_quieter_recordings_split_the_same():
    times = click_times(8, seed=3)
    base = clicks_recording(times, seconds=9.0, seed=3)
    for gain in (0.05, 1.0):
        assert len(split_examples(base * gain)) == len(times)


def test_steady_sound_becomes_window_sized_pieces():
    t = torch.arange(10 * SR) / SR
    hum = 0.3 * torch.sin(2 * torch.pi * 220 * t)
    hum[: SR] = 0  # silence, then 9 s of a steady tone
    segs = split_examples(hum)
    assert len(segs) >= 6  # 9 s in pieces of at most one window
    assert all(s.end - s.start <= WINDOW for s in segs)
    assert sum(s.end - s.start for s in segs) >= 8.5 * SR


def test_silence_and_noise_only_give_no_examples():
    assert split_examples(torch.zeros(5 * SR)) == []
    noise = torch.from_numpy(0.01 * np.random.default_rng(0).standard_normal(5 * SR).astype(np.float32))
    assert split_examples(noise) == []
    assert split_examples(torch.zeros(10)) == []

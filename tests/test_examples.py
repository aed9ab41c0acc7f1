"""The generated demo sounds."""

from __future__ import annotations

import torch

from envnet import examples
from envnet.model import SAMPLE_RATE


def test_demo_sounds_are_valid_clips():
    for name, make in examples.DEMO_SOUNDS.items():
        w = make()
        assert w.dtype == torch.float32 and w.dim() == 1, name
        assert w.numel() == int(examples.DURATION * SAMPLE_RATE), name
        assert torch.isfinite(w).all() and 0.05 < float(w.abs().max()) <= 1.0, name


def test_sweep_rises_in_frequency():
    w = examples.sweep(100.0, 4000.0, seconds=2.0)
    first, last = w[: SAMPLE_RATE // 4], w[-SAMPLE_RATE // 4 :]
    zero_crossings = lambda x: int(((x[:-1] < 0) & (x[1:] >= 0)).sum())  # noqa: E731
    assert zero_crossings(last) > 10 * zero_crossings(first)

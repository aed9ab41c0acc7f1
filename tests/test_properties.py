"""Property-based tests (hypothesis): any length and common rate decodes to the expected length, cuts
into windows of exactly 24,014 samples, and gives finite probabilities that sum to 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, encode, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envnet.audio import MIN_SECONDS, EmptyAudioError, load_audio, window_starts, windows
from envnet.model import SAMPLE_RATE, WINDOW
from envnet.predict import predict

RATES = [8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000]
SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "FLOAT"]

# Few examples with a fixed seed: the suite stays quick and a CI failure reproduces exactly.
FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None)
SLOW = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def content(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "noise":
        return rng.uniform(-1, 1, n).astype(np.float32)
    if kind == "square":
        return np.sign(np.sin(np.arange(n) * 0.05) + 1e-9).astype(np.float32)
    return (0.5 * np.cos(np.arange(n) * rng.uniform(0.01, 3.0))).astype(np.float32)


@FAST
@given(n=st.integers(1, 5 * SAMPLE_RATE), hop=st.one_of(st.none(), st.integers(1_000, 40_000)))
def test_windows_are_always_exactly_24014(n: int, hop: int | None) -> None:
    # Distinct values, so positions can be checked; all above 1 % of the peak, so nothing is trimmed.
    wave = torch.arange(n + 1, 2 * n + 1, dtype=torch.float32)
    batch, starts = windows(wave, hop=hop)
    assert batch.shape == (len(starts), WINDOW)
    assert 1 <= len(starts) <= (10 if hop is None else (n - WINDOW) // hop + 2 if n > WINDOW else 1)
    for b, s in zip(batch, starts, strict=True):
        inside = torch.arange(WINDOW) + s  # the clip positions this window claims to cover
        valid = (inside >= 0) & (inside < n)
        assert torch.equal(b[valid], inside[valid].float() + n + 1)
        assert torch.count_nonzero(b[~valid]) == 0  # padding is silence
    if n >= WINDOW:
        assert starts[0] == 0 and starts[-1] == n - WINDOW  # the whole clip is covered
        assert starts == sorted(set(starts))
        if hop is not None and len(starts) > 2:
            assert min(np.diff(starts)) >= hop / 4  # no window twice over
    else:
        assert len(starts) == 1 and valid.sum() == n  # the whole short clip is inside its one window


@FAST
@given(n=st.integers(WINDOW + 1, 20 * SAMPLE_RATE), crops=st.integers(1, 12))
def test_evenly_spaced_crops(n: int, crops: int) -> None:
    starts = window_starts(n, n_crops=crops)
    assert 1 <= len(starts) <= crops and all(0 <= s <= n - WINDOW for s in starts)
    if crops > 1:
        assert starts[0] == 0 and starts[-1] == n - WINDOW
        gaps = np.diff(starts)
        assert gaps.size == 0 or gaps.max() - gaps.min() <= 1


@FAST
@given(
    seconds=st.floats(0.001, 5.0),
    rate=st.sampled_from(RATES),
    subtype=st.sampled_from(SUBTYPES),
    channels=st.sampled_from([1, 2]),
    kind=st.sampled_from(["tone", "noise", "silence", "square"]),
    seed=st.integers(0, 2**16),
)
def test_decode_any_length_and_rate(seconds: float, rate: int, subtype: str, channels: int, kind: str,
                                    seed: int) -> None:
    n = max(1, int(seconds * rate))
    x = content(kind, n, seed)
    if channels == 2:
        x = np.stack([x, x[::-1]], axis=1)
    if n / rate < MIN_SECONDS:
        with pytest.raises(EmptyAudioError, match="too short to be a sound"):
            load_audio(encode(x, rate, subtype=subtype))
        return
    wave = load_audio(encode(x, rate, subtype=subtype))
    assert wave.numel() == -(-n * SAMPLE_RATE // rate)  # ceil(n · 16000 / rate): torchaudio's length
    assert torch.isfinite(wave).all() and float(wave.abs().max()) <= 1.0
    batch, _ = windows(wave)
    assert batch.shape[1] == WINDOW and torch.isfinite(batch).all()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@SLOW
@given(
    n=st.integers(1, 5 * SAMPLE_RATE),
    kind=st.sampled_from(["tone", "noise", "silence", "square"]),
    scale=st.sampled_from([1e-6, 0.01, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_probabilities_sum_to_one(model, n: int, kind: str, scale: float, seed: int) -> None:
    wave = torch.from_numpy(content(kind, n, seed) * np.float32(scale))
    pred = predict(model, wave, TINY_CLASSES, n_crops=3)
    assert torch.isfinite(pred.window_probs).all()
    torch.testing.assert_close(pred.window_probs.sum(1), torch.ones(len(pred.starts)))
    assert float(pred.probs.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(pred.probs.min()) >= 0

"""Accuracy guard for the inference speed-ups: the fast path (envnet.fast, used by envnet.predict) gives
the same probabilities as the plain reference EnvNet (benchmarks/reference.py) on the same weights.

Tolerance: 1e-5 absolute on probabilities. Folding BatchNorm and changing the convolution algorithm only
reorders float32 sums; measured differences are ~1e-8 (benchmarks/README.md). bf16 autocast moves them
by more than the tolerance, so a bf16 fast path would fail here, which is the point.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import encode, sine

from envnet.audio import load_audio
from envnet.fast import FastEnvNet, fuse, inference_model
from envnet.model import WINDOW, build_model
from envnet.predict import predict, window_probabilities

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["low", "mid", "high"]


def _reference_module():
    spec = importlib.util.spec_from_file_location("envnet_bench_reference", ROOT / "benchmarks" / "reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ref_mod = _reference_module()


def trained_like_model(seed: int = 0):
    """A small model whose BatchNorm layers hold non-trivial statistics, as a trained one does:
    with fresh BN (mean 0, var 1, weight 1, bias 0) folding would be a no-op and prove nothing."""
    torch.manual_seed(seed)
    model = build_model(n_classes=3, fc_width=64)
    with torch.no_grad():
        for block in (model.conv1, model.conv2, model.conv3, model.conv4):
            bn = block[1]
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.05, 3.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return model.eval()


def windows_batch(n: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(WINDOW) / 16_000
    tones = torch.stack([0.4 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 1500.0, 5000.0)][:n])
    return tones + 0.05 * torch.randn(n, WINDOW, generator=g)


def test_fast_probabilities_match_the_plain_reference():
    model = trained_like_model()
    x = windows_batch()
    ref = ref_mod.from_library(model)
    expected = ref_mod.window_probabilities(ref, x)
    got = window_probabilities(model, x)
    assert got.shape == (3, 3)
    assert (got - expected).abs().max() < TOL
    # and the library's own unfused EnvNet agrees too, so the reference really holds the same weights
    with torch.inference_mode():
        plain = torch.softmax(model(x), -1)
    assert (plain - expected).abs().max() < TOL


def test_fast_learned_spectrogram_matches_the_library_features():
    model = trained_like_model()
    x = windows_batch(2)
    with torch.inference_mode():
        plain = model.features(x)
        fast = fuse(model).features(x)
    assert fast.shape == (2, 40, 150)
    assert torch.allclose(fast, plain, rtol=1e-4, atol=1e-5)


def test_overlapping_windows_share_their_first_layers_with_the_same_result():
    """Windows of one clip, overlapping (a timeline's), touching, apart, and out of order: each window's learned
    spectrogram is the one it gets alone, and a clip's window probabilities are those of its windows stacked."""
    model = trained_like_model()
    g = torch.Generator().manual_seed(3)
    samples = 0.3 * torch.randn(8 * WINDOW, generator=g)
    starts = [0, 8_000, 16_000, 17_001, 40_000, 64_014, 5 * WINDOW, 3 * WINDOW + 7, 7 * WINDOW]
    stacked = torch.stack([samples[s : s + WINDOW] for s in starts])
    fast = fuse(model)
    with torch.inference_mode():
        shared, alone = fast.window_features(samples, starts), fast.features(stacked)
    assert shared.shape == (len(starts), 40, 150)
    torch.testing.assert_close(shared, alone, rtol=1e-5, atol=1e-6)
    assert (window_probabilities(model, samples, starts) - window_probabilities(model, stacked)).abs().max() < TOL
    with pytest.raises(ValueError, match="do not fit"):
        fast.window_features(samples, [7 * WINDOW + 1])
    with pytest.raises(ValueError, match="batch of windows"):
        window_probabilities(model, samples[: 3 * 30_000].reshape(3, 30_000))
    assert fast.window_features(samples, []).shape == (0, 40, 150)


def test_a_model_that_is_not_fused_gets_its_windows_stacked(monkeypatch):
    """On a GPU (training's validation) the model runs as it is, on each window: the same probabilities."""
    model = trained_like_model()
    samples = 0.3 * torch.randn(3 * WINDOW, generator=torch.Generator().manual_seed(4))
    starts = [0, 8_000, 2 * WINDOW]
    fused = window_probabilities(model, samples, starts)
    monkeypatch.setattr(sys.modules["envnet.predict"], "inference_model", lambda m: m)
    assert (window_probabilities(model, samples, starts) - fused).abs().max() < TOL


def test_predict_on_decoded_clip_matches_reference_pipeline():
    """Bytes of a 44.1 kHz clip → top-k: the library path and the plain pipeline give the same answer."""
    model = trained_like_model()
    data = encode(sine(700.0, seconds=2.5, sr=44_100) + sine(3000.0, seconds=2.5, sr=44_100, amplitude=0.2),
                  sr=44_100)
    pred = predict(model, load_audio(data), CLASSES)
    ref = ref_mod.from_library(model)
    ref_top = ref_mod.classify(ref, data, CLASSES, k=3)
    assert [c for c, _ in pred.top(3)] == [c for c, _ in ref_top]
    assert np.allclose([p for _, p in pred.top(3)], [p for _, p in ref_top], atol=TOL)


def test_fused_model_is_cached_and_rebuilt_when_weights_change():
    model = trained_like_model()
    x = windows_batch(1)
    first = inference_model(model)
    assert isinstance(first, FastEnvNet)
    assert inference_model(model) is first  # built once per weights, not per call
    before = window_probabilities(model, x)

    # a training step changes the weights in place: the next prediction must see the new ones
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model(windows_batch(3)).logsumexp(-1).mean()
    loss.backward()
    opt.step()
    model.eval()
    assert inference_model(model) is not first
    after = window_probabilities(model, x)
    with torch.inference_mode():
        expected = torch.softmax(model(x), -1)
    assert (after - expected).abs().max() < TOL
    assert (after - before).abs().max() > 1e-4  # the step really changed the answer

    # so must loading other weights
    other = trained_like_model(seed=5)
    model.load_state_dict(other.state_dict())
    with torch.inference_mode():
        expected = torch.softmax(other(x), -1)
    assert (window_probabilities(model, x) - expected).abs().max() < TOL


def test_predict_keeps_the_model_mode_and_leaves_weights_alone():
    model = trained_like_model().train()
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    predict(model, torch.from_numpy(sine(440.0, seconds=2.0)), CLASSES)
    assert model.training
    assert all(torch.equal(snapshot[k], v) for k, v in model.state_dict().items())


def test_inference_model_passes_through_what_it_cannot_fuse():
    other = torch.nn.Linear(3, 3)
    assert inference_model(other) is other
    with pytest.raises(TypeError, match="EnvNet"):
        fuse(other)


def test_bf16_is_not_equal_enough_which_is_why_the_fast_path_stays_fp32():
    model = trained_like_model()
    x = windows_batch()
    fast = fuse(model)
    with torch.inference_mode():
        fp32 = torch.softmax(fast(x), -1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = torch.softmax(fast(x).float(), -1)
    assert (bf16 - fp32).abs().max() > TOL

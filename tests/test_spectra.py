"""The learned 40×150 spectrogram, the aligned mel spectrogram, and the frequency responses of the
learned filters and of a mel filterbank, checked against answers known in advance."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from conftest import tiny_model

from envnet import spectra
from envnet.model import N_BANDS, N_FRAMES, POOL, SAMPLE_RATE, WINDOW, EnvNet, build_model
from envnet.spectra import (
    N_FFT,
    FrequencyResponse,
    cached_frequency_response,
    frequency_response,
    kernel_spectra,
    learned_spectrogram,
    mel_frequency_response,
    mel_spectrogram,
    silent_frames,
    tone,
    tone_frequencies,
)

FREQS = np.geomspace(50, 8000, 24)  # fewer tones than the app's 96: the same logic, a quarter of the work


def bandpass_model(centres: list[float] | np.ndarray) -> EnvNet:
    """An EnvNet whose filter k is an 8-tap cosine at centres[k] Hz, passed straight through conv2.

    BatchNorm in eval mode with fresh statistics is the identity (up to 1/sqrt(1+eps)), so filter k's
    learned-spectrogram row is the max over 10 ms of ReLU(tone * cosine kernel): its gain at that tone.
    """
    model = tiny_model()
    n = np.arange(8)
    with torch.no_grad():
        w1 = np.stack([np.cos(2 * np.pi * f * n / SAMPLE_RATE) for f in centres])
        model.conv1[0].weight.copy_(torch.from_numpy(w1).float().unsqueeze(1))
        w2 = torch.zeros_like(model.conv2[0].weight)
        w2[torch.arange(N_BANDS), torch.arange(N_BANDS), 7] = 1.0  # channel k → channel k, no mixing
        model.conv2[0].weight.copy_(w2)
    return model.eval()


def mel_band_of(freq: float, n_mels: int = N_BANDS) -> int:
    """The band whose triangular filter weighs `freq` most, from torchaudio's own filterbank."""
    fb = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE)  # (n_freqs, n_mels)
    bin_ = round(freq * N_FFT / SAMPLE_RATE)
    return int(fb[bin_].argmax())


# ---- mel spectrogram ------------------------------------------------------------------------------

def test_mel_shape_and_units() -> None:
    batch = torch.stack([tone(440), tone(2000)])
    mel = mel_spectrogram(batch)
    assert mel.shape == (2, 40, 150)
    assert mel_spectrogram(tone(440)).shape == (40, 150)  # one window without a batch axis
    # dB of power: a 0.5-amplitude tone is tens of dB above the -100 dB floor, and never above ~+60 dB.
    assert -100 <= float(mel.min()) and float(mel.max()) < 60
    assert float(mel.max()) - float(mel.min()) > 40


@pytest.mark.parametrize("freq", [250.0, 1000.0, 4000.0])
def test_tone_peaks_in_the_mel_band_that_contains_it(freq: float) -> None:
    mel = mel_spectrogram(tone(freq))
    assert int(mel.mean(dim=1).argmax()) == mel_band_of(freq)


def test_mel_band_of_1khz_is_what_the_filterbank_says() -> None:
    # By hand: HTK mel(1000 Hz) = 2595·log10(1 + 1000/700) = 1000; 40 bands split mel(8 kHz) = 2840 into
    # 41 steps of 69.3, so band k peaks at 69.3·(k+1): band 13 (970) is nearest 1000, band 14 (1039) next.
    assert mel_band_of(1000.0) == 13


def test_silence_gives_finite_spectrograms() -> None:
    silence = torch.zeros(2, WINDOW)
    mel = mel_spectrogram(silence)
    assert torch.isfinite(mel).all()
    assert float(mel.max()) == pytest.approx(-100.0)  # the floor of AmplitudeToDB, not -inf
    learned = learned_spectrogram(tiny_model(), silence)
    assert learned.shape == (2, 40, 150) and torch.isfinite(learned).all()


def test_silent_frames_are_those_whose_samples_are_all_silence() -> None:
    # Frame g convolves samples 160 g … 160 g + 173: a 10-sample burst at 8000 is in frames 49 and 50 only.
    x = np.zeros(WINDOW, np.float32)
    x[8000:8010] = 0.5
    x[100] = 5e-5  # below digital silence (1e-4): still silent
    silent = silent_frames(x)
    assert silent.shape == (150,) and set(np.flatnonzero(~silent)) == {49, 50}
    assert silent_frames(np.zeros(100)).shape == (0,)  # under one frame


def test_learned_spectrogram_shape_mode_and_batching() -> None:
    model = tiny_model()
    model.train()
    x = torch.stack([tone(300), tone(3000)])
    both = learned_spectrogram(model, x)
    assert both.shape == (2, N_BANDS, N_FRAMES)
    one = learned_spectrogram(model, x[1])
    assert one.shape == (40, 150)
    torch.testing.assert_close(one, both[1])  # eval mode: a window's result does not depend on its batch
    assert model.training


def test_mel_and_learned_frames_are_aligned() -> None:
    """A 5 ms click peaks in the same frame of both spectrograms: they can be shown frame for frame."""
    model = bandpass_model(np.full(N_BANDS, 4000.0))
    for frame in (20, 75, 131):
        x = torch.zeros(WINDOW)
        centre = frame * POOL + 87  # the sample at the centre of learned frame `frame`
        x[centre - 40 : centre + 40] = tone(4000, 80)
        mel_peak = int(mel_spectrogram(x).mean(0).argmax())
        learned_peak = int(learned_spectrogram(model, x).mean(0).argmax())
        assert mel_peak == frame
        assert abs(learned_peak - frame) <= 1  # max-pooling sees the click from the frame either side


# ---- frequency responses ------------------------------------------------------------------------------

def test_known_answer_a_1khz_filter_prefers_1khz() -> None:
    model = bandpass_model([1000.0] * N_BANDS)
    row = learned_spectrogram(model, torch.stack([tone(100), tone(1000), tone(6000)]))[:, 0].mean(-1)
    low, mid, high = row.tolist()
    # An 8-tap cosine's gain is 4.0 at 1 kHz, 1.1 at 100 Hz and 1.1 at 6 kHz (its DFT); ×0.5 amplitude.
    assert mid == pytest.approx(0.5 * 4.0, rel=0.05)
    assert mid > 2.5 * low and mid > 2.5 * high
    fr = frequency_response(model, FREQS)
    assert 700 <= fr.centres[0] <= 1500


def test_response_shape_order_and_centres() -> None:
    rng = np.random.default_rng(0)
    design = rng.permutation(np.geomspace(300, 6000, N_BANDS))
    fr = frequency_response(bandpass_model(design), FREQS)
    assert isinstance(fr, FrequencyResponse)
    assert fr.response.shape == (40, len(FREQS)) and np.isfinite(fr.response).all()
    assert sorted(fr.order.tolist()) == list(range(40))  # a permutation
    assert np.all(np.diff(fr.centres[fr.order]) >= 0)  # sorted by centre frequency
    # The measured centres follow the designed ones (8 taps blur them, so rank correlation, not equality).
    rho = np.corrcoef(np.argsort(np.argsort(design)), np.argsort(np.argsort(fr.centres)))[0, 1]
    assert rho > 0.9
    assert fr.sorted_response.shape == fr.response.shape
    norm = fr.normalised(sort=True)
    np.testing.assert_allclose(norm.max(axis=1), 1.0)


def test_dead_filters_sort_last_with_nan_centres() -> None:
    model = bandpass_model(np.geomspace(300, 6000, N_BANDS))
    with torch.no_grad():
        model.conv2[0].weight[[3, 17]] = 0.0  # two filters that never fire
    fr = frequency_response(model, FREQS)
    assert np.isnan(fr.centres[[3, 17]]).all()
    assert set(fr.order[-2:].tolist()) == {3, 17}
    live = fr.centres[fr.order[:-2]]
    assert np.isfinite(live).all() and np.all(np.diff(live) >= 0)


def test_random_and_trained_models_respond_differently() -> None:
    # "Trained" here: first-layer kernels set to band-pass filters, which is what training produces.
    random = frequency_response(tiny_model(seed=1), FREQS)
    trained = frequency_response(bandpass_model(np.geomspace(300, 6000, N_BANDS)), FREQS)
    a, b = random.normalised(), trained.normalised()
    assert np.abs(a - b).mean() > 0.1
    assert not np.array_equal(random.order, trained.order)


def test_shipped_checkpoint_responds_differently_from_random() -> None:
    from envnet.checkpoint import CheckpointError, default_checkpoint, load

    try:
        ckpt = load(default_checkpoint())
    except CheckpointError as e:
        pytest.skip(f"no shipped checkpoint: {e}")
    freqs = np.geomspace(50, 8000, 12)
    trained = frequency_response(ckpt.model, freqs).normalised()
    random = frequency_response(tiny_model(seed=1), freqs).normalised()
    assert np.abs(trained - random).mean() > 0.05


def test_mel_filterbank_centres_increase_with_band_index() -> None:
    fr = mel_frequency_response(tone_frequencies(96, 20, 8000))
    assert fr.response.shape == (40, 96)
    live = ~np.isnan(fr.centres)
    assert live.sum() >= 38  # the lowest bands sit between the tones and may read as the same peak
    assert np.all(np.diff(fr.centres[live]) >= 0)
    assert np.array_equal(fr.order[: live.sum()], np.flatnonzero(live))  # band order is centre order
    assert 600 <= fr.centres[mel_band_of(1000.0)] <= 1400


def test_tone_frequencies_are_log_spaced_to_nyquist() -> None:
    f = tone_frequencies()
    assert f[0] == pytest.approx(10) and f[-1] == pytest.approx(8000) and len(f) == 96
    ratios = f[1:] / f[:-1]
    np.testing.assert_allclose(ratios, ratios[0])


def test_kernel_spectra() -> None:
    model = bandpass_model(np.full(N_BANDS, 2000.0))
    w, db, freqs = kernel_spectra(model)
    assert w.shape == (40, 8) and db.shape == (40, 257) and freqs.shape == (257,)
    assert freqs[int(db[0].argmax())] == pytest.approx(2000, abs=300)


def test_frequency_response_is_measured_once_per_model_object(monkeypatch):
    calls = []
    monkeypatch.setattr(spectra, "frequency_response", lambda m: calls.append(m) or object())
    m1, m2 = build_model(n_classes=2, fc_width=64), build_model(n_classes=2, fc_width=64)
    a = cached_frequency_response(m1)
    assert cached_frequency_response(m1) is a and len(calls) == 1
    assert cached_frequency_response(m2) is not a and len(calls) == 2
    calls.clear()
    gone = weakref.ref(m2)
    del m2
    gc.collect()
    # A dropped model does not stay alive in the cache (counting entries would also count other tests'
    # models, which their AppTest sessions release at their own pace).
    assert gone() is None and m1 in spectra._fr_cache


def test_callers_arriving_during_a_measurement_wait_for_it_instead_of_measuring_again(monkeypatch):
    """The server's warm-up thread and a first visitor's page ask for the same model's response at once;
    measuring it twice doubled the CPU a first upload cost on a busy 2-core server."""
    calls, started = [], threading.Event()

    def slow(model):
        calls.append(model)
        started.set()
        time.sleep(0.5)
        return object()

    monkeypatch.setattr(spectra, "frequency_response", slow)
    model = build_model(n_classes=2, fc_width=64)
    results = []
    first = threading.Thread(target=lambda: results.append(cached_frequency_response(model)))
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=lambda: results.append(cached_frequency_response(model))) for _ in range(3)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(10)
    assert len(calls) == 1 and len(results) == 4 and all(r is results[0] for r in results)
    assert model not in spectra._fr_measuring  # nothing left behind once measured

"""What the first layers see: the learned 40×150 spectrogram, a mel spectrogram aligned to it frame
for frame, and the frequency responses of the learned filters and of a mel filterbank."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torchaudio.transforms as T

from envnet.audio import SILENCE_THRESHOLD
from envnet.fast import inference_model
from envnet.model import N_BANDS, N_FRAMES, POOL, SAMPLE_RATE, WINDOW, EnvNet, inference

N_FFT = 400  # 25 ms analysis window, the usual speech/audio front end
# Learned frame i pools conv2 outputs 160i…160i+159, which see input samples 160i…160i+173: its centre
# is 160i + 87. Padding by 113 puts the centre of the 400-sample mel frame i at the same sample.
FRAME_CENTRE = 87
MEL_PAD = (N_FFT // 2) - FRAME_CENTRE
CONTEXT = WINDOW - N_FRAMES * POOL  # 14: the samples the two 8-tap convolutions eat


@lru_cache(maxsize=4)
def _mel(n_mels: int = N_BANDS) -> torch.nn.Module:
    return torch.nn.Sequential(
        T.MelSpectrogram(SAMPLE_RATE, n_fft=N_FFT, hop_length=POOL, n_mels=n_mels, center=False, power=2.0),
        T.AmplitudeToDB("power", top_db=None),
    )


def mel_frames(samples: torch.Tensor, n_mels: int = N_BANDS) -> torch.Tensor:
    """(…, n) samples → (…, n_mels, 1 + (n - 400) // 160) dB frames, no padding: frame j covers samples
    160 j … 160 j + 399. Frames are independent of each other (top_db is off), so a stream can compute
    its new frames alone (envnet/stream.py)."""
    with torch.no_grad():
        return _mel(n_mels)(samples)


def mel_spectrogram(windows: torch.Tensor, n_mels: int = N_BANDS) -> torch.Tensor:
    """(batch, 24014) → (batch, n_mels, 150) in dB, frames aligned with the learned spectrogram's."""
    x = windows if windows.dim() == 2 else windows.unsqueeze(0)
    mel = mel_frames(torch.nn.functional.pad(x, (MEL_PAD, MEL_PAD)), n_mels)
    return mel[..., :N_FRAMES] if windows.dim() == 2 else mel[0, :, :N_FRAMES]


def silent_frames(samples) -> np.ndarray:
    """(160 n + 14,) samples → (n,) bools: whether each learned frame's 174 samples are all digital silence
    (audio.SILENCE_THRESHOLD). There the learned map holds only the layers' biases (0.24-0.76 for the shipped
    model), which a map drawn in dB re its loudest cell shows bright: the pages draw such frames as zeros."""
    a = np.abs(np.asarray(samples, dtype=np.float32).reshape(-1))
    n = (a.size - CONTEXT) // POOL
    if n <= 0:
        return np.zeros(0, dtype=bool)
    peaks = np.lib.stride_tricks.sliding_window_view(a[: POOL * n + CONTEXT], POOL + CONTEXT)[::POOL].max(1)
    return peaks < SILENCE_THRESHOLD


def learned_spectrogram(model: EnvNet, windows: torch.Tensor) -> torch.Tensor:
    """(batch, 24014) → (batch, 40, 150): the feature block's output, in eval mode."""
    x = windows if windows.dim() == 2 else windows.unsqueeze(0)
    fast = inference_model(model)  # BN folded, channels-last: same output, ~2× faster (envnet/fast.py)
    with inference(model):
        out = fast.features(x)
    return out if windows.dim() == 2 else out[0]


def tone(freq: float, length: int = WINDOW, amplitude: float = 0.5, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """A pure tone of `length` samples: the filters' test signal and the demo sounds' (envnet/examples.py).
    Cosine, not sine: a sine at exactly Nyquist samples to all zeros."""
    t = torch.arange(length, dtype=torch.float64) / sr
    return (amplitude * torch.cos(2 * torch.pi * freq * t)).float()


def tone_frequencies(n: int = 96, f_min: float = 10.0, f_max: float = SAMPLE_RATE / 2) -> np.ndarray:
    return np.geomspace(f_min, f_max, n)


@dataclass
class FrequencyResponse:
    freqs: np.ndarray  # (n_freqs,) Hz
    response: np.ndarray  # (n_filters, n_freqs): mean output over time for each tone
    order: np.ndarray  # filter indices sorted by centre frequency
    centres: np.ndarray  # (n_filters,) centre frequency of each filter, Hz

    @property
    def sorted_response(self) -> np.ndarray:
        return self.response[self.order]

    def normalised(self, sort: bool = False) -> np.ndarray:
        """Each filter scaled to its own peak, so quiet and loud filters are comparable."""
        r = self.sorted_response if sort else self.response
        return r / np.maximum(r.max(axis=1, keepdims=True), 1e-12)


def centres_and_order(response: np.ndarray, freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre = the tone frequency of peak response (log-spaced tones make that the natural choice);
    ties broken by the log-frequency centroid. Dead filters (all zero) go last."""
    r = np.maximum(response, 0)
    peak = freqs[np.argmax(r, axis=1)]
    weights = r / np.maximum(r.sum(axis=1, keepdims=True), 1e-12)
    centroid = np.exp((weights * np.log(freqs)).sum(axis=1))
    centres = np.where(r.max(axis=1) > 0, peak, np.inf)
    order = np.lexsort((centroid, centres))
    return np.where(np.isfinite(centres), centres, np.nan), order


def _response(fn, freqs: np.ndarray, batch: int = 32) -> np.ndarray:
    tones = torch.stack([tone(f) for f in freqs])
    outs = [fn(tones[i : i + batch]).mean(dim=-1) for i in range(0, len(tones), batch)]
    return torch.cat(outs).T.double().numpy()  # (n_filters, n_freqs)


def frequency_response(model: EnvNet, freqs: np.ndarray | None = None) -> FrequencyResponse:
    """Feed log-spaced tones through the feature block; each filter's mean output per tone."""
    freqs = tone_frequencies() if freqs is None else np.asarray(freqs)
    response = _response(lambda x: learned_spectrogram(model, x), freqs)
    centres, order = centres_and_order(response, freqs)
    return FrequencyResponse(freqs, response, order, centres)


_fr_cache: weakref.WeakKeyDictionary[EnvNet, FrequencyResponse] = weakref.WeakKeyDictionary()
_fr_measuring: weakref.WeakKeyDictionary[EnvNet, threading.Lock] = weakref.WeakKeyDictionary()
_fr_lock = threading.Lock()


def cached_frequency_response(model: EnvNet) -> FrequencyResponse:
    """The filters' frequency response, measured once per model object (96 tones through the feature
    block is ~1 s on a small CPU). Weak keys: a model a session drops is not kept alive by the cache.
    A caller that arrives while another is measuring the same model waits for that result instead of
    measuring again (the server's warm-up thread and the first visitor's page ask at the same time)."""
    with _fr_lock:
        hit = _fr_cache.get(model)
        if hit is not None:
            return hit
        measuring = _fr_measuring.setdefault(model, threading.Lock())
    with measuring:
        with _fr_lock:
            hit = _fr_cache.get(model)
        if hit is not None:
            return hit
        fr = frequency_response(model)
        with _fr_lock:
            _fr_cache[model] = fr
            _fr_measuring.pop(model, None)
    return fr


def mel_frequency_response(freqs: np.ndarray | None = None, n_mels: int = N_BANDS) -> FrequencyResponse:
    """The same measurement for a mel filterbank, in power (not dB), for comparison."""
    freqs = tone_frequencies() if freqs is None else np.asarray(freqs)
    response = _response(lambda x: 10 ** (mel_spectrogram(x, n_mels) / 10), freqs)
    centres, order = centres_and_order(response, freqs)
    return FrequencyResponse(freqs, response, order, centres)


def kernel_spectra(model: EnvNet, n_fft: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First layer's 40 kernels (40, 8) and their magnitude spectra in dB (40, n_fft//2+1) with freqs."""
    w = model.conv1[0].weight.detach().float()[:, 0, :]  # (40, 8)
    mag = torch.fft.rfft(w, n=n_fft).abs()
    db = 20 * torch.log10(mag.clamp(min=1e-8))
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    return w.numpy(), db.numpy(), freqs


def mel_band_centres(n_mels: int = N_BANDS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Centre frequency (Hz) of each band of the mel filterbank `mel_spectrogram` uses: torchaudio's
    default HTK mel scale from 0 Hz to Nyquist, bands centred on n_mels + 2 evenly spaced mel points."""
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    mels = np.linspace(to_mel(0.0), to_mel(sr / 2), n_mels + 2)[1:-1]
    return 700.0 * (10 ** (mels / 2595.0) - 1.0)

"""Live audio → EnvNet, incrementally: what the Live page shows while a microphone streams.

    48 kHz frames from WebRTC (any rate, any channels) → mono → 16 kHz (the same sinc kernel as
    audio.resample, block by block) → a ring of the last seconds of samples
    → new learned columns (conv1, conv2, max-pool over each new 160 samples plus the 14-sample context)
    and new mel columns (spectra.mel_spectrogram's framing) → rings of the last ~6 s of columns
    → the classifier on the last 150 learned columns (the last 1.5 s window).

Column g of a stream is frame g of the whole recording taken as one clip: learned over samples
160 g … 160 g + 173, mel over 160 g − 113 … 160 g + 286 (zeros before the first sample), the framing of
`spectra.mel_spectrogram`. So the stream's output equals the batch path's for the same samples
(tests/test_stream.py), and each hop costs only its new columns: the cost per second of audio does not
grow with the stream's length, and memory is a fixed set of rings.

Nothing here imports Streamlit; the page (pages/live.py) feeds `LiveStream.push` from the WebRTC thread and
calls `LiveStream.update` from its own. The server-wide cap on concurrent streams is envnet.jobs.STREAMS.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from envnet.audio import resample_rate, resampler
from envnet.model import N_BANDS, N_FRAMES, POOL, SAMPLE_RATE, WINDOW, EnvNet
from envnet.predict import Prediction, predict_spectrogram
from envnet.spectra import CONTEXT, MEL_PAD, N_FFT, learned_spectrogram, mel_frames, silent_frames

MEL_RIGHT = N_FFT - MEL_PAD  # 287: mel column g ends at sample 160 g + 287 (exclusive)
HISTORY_SECONDS = 6.0  # what the Live page scrolls over
MAX_PENDING_SECONDS = 3.0  # audio waiting for update(); older audio is dropped, never queued without bound


def mixdown(pcm: np.ndarray, channels: int = 1, planar: bool = False) -> np.ndarray:
    """A decoded audio frame's samples → mono float32 in [-1, 1].

    `pcm` is (channels, n) when planar, else interleaved ((1, n × channels) as PyAV gives packed frames,
    or flat). Integers are scaled by their type's full range (int16: 1/32768), floats kept as they are."""
    a = np.asarray(pcm)
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / (float(np.iinfo(a.dtype).max) + 1.0)
    else:
        a = a.astype(np.float32, copy=False)
    a = a.reshape(channels, -1) if planar else a.reshape(-1, channels).T
    return a.mean(0) if channels > 1 else a[0].copy()


class Ring:
    """The last `capacity` items of a stream along its last axis (samples, or columns of a map), in
    fixed memory. `total` counts every item ever added, so absolute positions stay meaningful."""

    def __init__(self, capacity: int, rows: int | None = None, dtype=np.float32) -> None:
        if capacity < 1:
            raise ValueError(f"a ring needs room for at least one item, not {capacity}")
        self.capacity = capacity
        self._buf = np.zeros((capacity,) if rows is None else (rows, capacity), dtype)
        self.total = 0  # items ever added: the next item's absolute position
        self._held = 0

    def __len__(self) -> int:
        return self._held

    def extend(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=self._buf.dtype)
        n = x.shape[-1]
        m = min(n, self.capacity)
        if m:
            self._buf[..., np.arange(self.total + n - m, self.total + n) % self.capacity] = x[..., n - m:]
        self.total += n
        self._held = min(self._held + n, self.capacity)

    def last(self, n: int) -> np.ndarray:
        """The newest n items (fewer if fewer are held), oldest first, as a copy."""
        n = max(0, min(n, self._held))
        return self._buf[..., np.arange(self.total - n, self.total) % self.capacity]

    def clear(self, at: int | None = None) -> None:
        """Hold nothing; the next item's absolute position becomes `at` (0 by default)."""
        self.total, self._held = (0 if at is None else at), 0


class StreamResampler:
    """audio.resample for a stream: the very kernel of the cached torchaudio resampler, applied block by
    block as samples arrive, with the batch path's zero padding at the start. Its output is resample() of
    everything pushed so far, less the last few output samples, which wait for their right-hand
    neighbours (width + stride input samples: under 0.5 ms at 48 kHz)."""

    def __init__(self, orig_sr: int, new_sr: int = SAMPLE_RATE) -> None:
        if orig_sr <= 0:
            raise ValueError(f"a sample rate must be positive, not {orig_sr}")
        self.orig_sr, self.new_sr = int(orig_sr), int(new_sr)
        self._same = resample_rate(self.orig_sr, self.new_sr) == self.new_sr
        if not self._same:
            r = resampler(self.orig_sr, self.new_sr)  # from resample_rate(orig_sr): odd rates are rounded
            self._kernel = r.kernel.float()  # (new, 1, K)
            self._stride = r.orig_freq // r.gcd
            self._pending = np.zeros(r.width, np.float32)  # the batch path pads `width` zeros in front
            self._base = 0  # index of _pending[0] in the padded input
            self._block = 0  # the next block of `new` output samples

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if self._same:
            return x.copy()
        self._pending = np.concatenate([self._pending, x])
        k, s = self._kernel.shape[-1], self._stride
        last = (self._base + len(self._pending) - k) // s  # the last block whose inputs have all arrived
        if last < self._block:
            return np.zeros(0, np.float32)
        lo, hi = self._block * s - self._base, last * s + k - self._base
        with torch.no_grad():
            y = F.conv1d(torch.from_numpy(self._pending[lo:hi])[None, None], self._kernel, stride=s)
        self._block = last + 1
        drop = self._block * s - self._base
        self._pending, self._base = self._pending[drop:], self._base + drop
        return y[0].T.reshape(-1).numpy()


class SpectrogramStream:
    """16 kHz samples in → the learned and mel columns they complete, nothing recomputed.

    A column is emitted once both its learned samples (160 g … 160 g + 173) and its mel samples
    (… 160 g + 286) have arrived, so the two maps stay frame for frame aligned."""

    def __init__(self, model: EnvNet, n_mels: int = N_BANDS) -> None:
        self.model, self.n_mels = model, n_mels
        self._tail = np.zeros(MEL_PAD, np.float32)  # mel_spectrogram's zeros before the first sample
        self._tail_start = -MEL_PAD  # stream index of _tail[0]
        self.samples = 0  # samples received
        self.frames = 0  # columns emitted

    def push(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The new columns: learned (40, k) and mel (n_mels, k), k ≥ 0."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        self._tail = np.concatenate([self._tail, x])
        self.samples += len(x)
        g0, g1 = self.frames, max(0, (self.samples - MEL_RIGHT) // POOL + 1)
        if g1 <= g0:
            return np.zeros((N_BANDS, 0), np.float32), np.zeros((self.n_mels, 0), np.float32)
        ts = self._tail_start
        wave = torch.from_numpy(self._tail)
        learned = learned_spectrogram(self.model, wave[POOL * g0 - ts: POOL * (g1 - 1) + POOL + CONTEXT - ts])
        mel = mel_frames(wave[POOL * g0 - MEL_PAD - ts: POOL * (g1 - 1) + MEL_RIGHT - ts], self.n_mels)
        self.frames = g1
        keep = POOL * g1 - MEL_PAD - ts  # the next column's mel frame starts here; nothing before is needed
        self._tail, self._tail_start = self._tail[keep:], ts + keep
        return learned.numpy(), mel.numpy()


@contextlib.contextmanager
def _one_thread():
    """Run a stream's small tensor ops on the calling thread alone. With OpenMP the setting is per thread,
    so the rest of the server keeps its threads. Measured under load (benchmarks/README.md): one update
    takes ~16 ms on one thread, but ~350 ms when two threads spin against other work on two busy cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass
class LiveView:
    """What the page draws after one update."""

    learned: np.ndarray  # (40, n) the newest columns, oldest first; n ≤ history
    mel: np.ndarray  # (n_mels, n), the same frames
    first_frame: int  # stream column index of learned[:, 0]; its centre is at (160 first_frame + 87) / 16000 s
    # (n,) True where a column's 174 samples are all digital silence (audio.SILENCE_THRESHOLD): its learned values
    # are only the layers' biases, which a map scaled to its own loudest cell would draw bright
    silent: np.ndarray
    prediction: Prediction | None  # the last 1.5 s window; None until 1.5 s have arrived
    seconds: float  # audio received so far, at 16 kHz
    level_db: float  # loudness of the newest 0.1 s, dBFS (RMS)
    arrived: float  # time.time() when the newest audio in this view reached the server (0 when none yet)
    dropped_seconds: float  # audio dropped because updates fell behind


class LiveStream:
    """One visitor's live microphone: `push` from the audio thread (cheap: queues the frame), `update` from
    the page's thread (resample, new columns, prediction). Private to its creator; memory is fixed."""

    def __init__(self, model: EnvNet, classes: list[str], *, history_seconds: float = HISTORY_SECONDS,
                 max_pending_seconds: float = MAX_PENDING_SECONDS, n_mels: int = N_BANDS) -> None:
        self.history_frames = max(N_FRAMES, round(history_seconds * SAMPLE_RATE / POOL))
        self.max_pending_seconds = max_pending_seconds
        self._lock = threading.Lock()  # guards the queue between the audio thread and the page's thread
        self._queue: collections.deque[tuple[np.ndarray, int, float]] = collections.deque()
        self._queued_seconds = 0.0
        self._dropped = 0.0
        self._work = threading.RLock()  # update / capture / set_model: one at a time
        self.n_mels = n_mels
        self.set_model(model, classes)
        self.reset()

    # ---- the audio thread ----------------------------------------------------------------------

    def push(self, samples: np.ndarray, sample_rate: int) -> None:
        """Queue mono samples at any rate. Never blocks on computation; drops the oldest audio when more
        than `max_pending_seconds` wait (a stalled page must not grow memory)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0 or sample_rate <= 0:
            return
        with self._lock:
            self._queue.append((x, int(sample_rate), time.time()))
            self._queued_seconds += x.size / sample_rate
            while self._queued_seconds > self.max_pending_seconds and len(self._queue) > 1:
                old, sr, _ = self._queue.popleft()
                self._queued_seconds -= old.size / sr
                self._dropped += old.size / sr
                self._gap = True

    def push_frame(self, pcm: np.ndarray, sample_rate: int, channels: int = 1, planar: bool = False) -> None:
        """A decoded frame as PyAV gives it (frame.to_ndarray(), its rate, layout and planarity)."""
        self.push(mixdown(pcm, channels, planar), sample_rate)

    # ---- the page's thread ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all audio (a new recording); the model stays."""
        with self._work:
            with self._lock:
                self._queue.clear()
                self._queued_seconds = 0.0
                self._gap = False
            self._resampler: StreamResampler | None = None
            self._spec = SpectrogramStream(self.model, self.n_mels)
            self.wave = Ring(self.history_frames * POOL + WINDOW)
            self.learned = Ring(self.history_frames, N_BANDS)
            self.mel = Ring(self.history_frames, self.n_mels)
            self._prediction: Prediction | None = None
            self._predicted_at = -1
            self._arrived = 0.0

    def set_model(self, model: EnvNet, classes: list[str]) -> None:
        """Switch models mid-stream: the learned columns still in the history are recomputed with the new
        weights from the samples kept, so the maps stay continuous."""
        if len(classes) != model.config.n_classes:
            raise ValueError(f"{len(classes)} class names for a model with {model.config.n_classes} outputs")
        with self._work:
            self.model, self.classes = model, list(classes)
            spec = getattr(self, "_spec", None)
            if spec is None:
                return
            spec.model = model
            self._prediction, self._predicted_at = None, -1
            # Columns whose samples (160 g … 160 g + 173) are all still in the sample ring.
            held_from = self.wave.total - len(self.wave)
            g0 = max(-(-held_from // POOL), spec.frames - self.history_frames)
            n = spec.frames - g0
            self.learned.clear(at=spec.frames - max(n, 0))  # absolute column numbering continues
            if n > 0:
                wave = self.wave.last(self.wave.total - POOL * g0)[: POOL * n + CONTEXT]
                self.learned.extend(learned_spectrogram(model, torch.from_numpy(wave)).numpy())

    def update(self) -> LiveView:
        """Take the queued audio, compute its new columns, and classify the newest 1.5 s window."""
        with self._work, _one_thread():
            with self._lock:
                chunks, self._queue = list(self._queue), collections.deque()
                self._queued_seconds = 0.0
                gap, self._gap = self._gap, False
                dropped = self._dropped
            if gap:  # audio was dropped: start a fresh recording rather than splice across the hole
                self.reset()
            # One pass per run of equal rates, not per 20 ms frame: a handful of torch calls per update.
            while chunks:
                sr = chunks[0][1]
                n = next((i for i, c in enumerate(chunks) if c[1] != sr), len(chunks))
                run, chunks = chunks[:n], chunks[n:]
                if self._resampler is None or self._resampler.orig_sr != sr:
                    if self._resampler is not None:  # the browser changed rates: a new recording
                        self.reset()
                    self._resampler = StreamResampler(sr)
                x16 = self._resampler(np.concatenate([c[0] for c in run]))
                self.wave.extend(x16)
                learned, mel = self._spec.push(x16)
                self.learned.extend(learned)
                self.mel.extend(mel)
                self._arrived = run[-1][2]
            frames = self._spec.frames
            if frames >= N_FRAMES and frames != self._predicted_at:
                spec = torch.from_numpy(self.learned.last(N_FRAMES))
                self._prediction = predict_spectrogram(
                    self.model, spec, self.classes, start=POOL * (frames - N_FRAMES),
                    silent=bool(self._silent_columns(frames - N_FRAMES, frames).all()))  # their samples: the window
                self._predicted_at = frames
            n = min(len(self.learned), len(self.mel))
            recent = self.wave.last(SAMPLE_RATE // 10)
            rms = float(np.sqrt(np.mean(recent.astype(np.float64) ** 2))) if recent.size else 0.0
            return LiveView(
                learned=self.learned.last(n), mel=self.mel.last(n), first_frame=frames - n,
                silent=self._silent_columns(frames - n, frames),
                prediction=self._prediction, seconds=self.wave.total / SAMPLE_RATE,
                level_db=20 * np.log10(max(rms, 1e-10)), arrived=self._arrived, dropped_seconds=dropped,
            )

    def _silent_columns(self, g0: int, g1: int) -> np.ndarray:
        """spectra.silent_frames of columns g0 ≤ g < g1, from the samples kept."""
        return silent_frames(self.wave.last(self.wave.total - POOL * g0)[: POOL * (g1 - g0) + CONTEXT])

    def capture(self, length: int = WINDOW) -> torch.Tensor:
        """The newest `length` samples at 16 kHz (fewer if fewer have arrived): what Capture sends to Classify."""
        with self._work:
            return torch.from_numpy(self.wave.last(length).copy())


# ---- deployment ---------------------------------------------------------------------------------

ICE_ENV = "ENVNET_ICE_SERVERS"


def rtc_configuration(env: Mapping[str, str] | None = None) -> dict | None:
    """WebRTC's ICE servers from the environment (a Space secret arrives as one).

    ENVNET_ICE_SERVERS unset or empty: {"iceServers": []}, enough when browser and server share a machine
    or a network. A JSON list of servers, or an object with "iceServers": STUN/TURN for a public Space.
    "auto": None, so streamlit-webrtc picks servers itself from HF_TOKEN (Hugging Face's TURN), or
    Cloudflare / Twilio credentials. Raises ValueError with a readable message for anything else."""
    raw = (os.environ if env is None else env).get(ICE_ENV, "").strip()
    if not raw:
        return {"iceServers": []}
    if raw.lower() == "auto":
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{ICE_ENV} is not valid JSON ({e.msg} at character {e.pos})") from e
    servers = value.get("iceServers") if isinstance(value, dict) else value
    if not isinstance(servers, list) or not all(isinstance(s, dict) and s.get("urls") for s in servers):
        raise ValueError(f'{ICE_ENV} must be a JSON list of servers like [{{"urls": "stun:stun.l.google.com:19302"}}] '
                         'or an object {"iceServers": [...]}, each server with "urls"')
    return {"iceServers": servers}

"""Audio in: bytes or a path → mono float32 at 16 kHz in [-1, 1] → EnvNet windows.

soundfile decodes wav/flac/ogg/mp3 without FFmpeg; torchcodec (with FFmpeg) is tried for other
containers when it is installed. torchaudio is used only for resampling.

Every clip may come from a hostile visitor of a public server, so the work one clip can cause is bounded:
the rate and channel count are checked from the header, decoding goes in blocks mixed down as it goes, and
the resampling filter between two rates is kept small (see `resample_rate`).
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as T

from envnet import limits
from envnet.model import SAMPLE_RATE, WINDOW

MAX_SECONDS = 60.0
MIN_RATE, MAX_RATE = 1_000, 384_000  # sample rates accepted (Hz): below 1 kHz is not audio worth classifying
MAX_CHANNELS = 16  # 7.1 surround has 8, third-order ambisonics 16
BLOCK_SAMPLES = 1 << 20  # samples (all channels) decoded at a time before mixing down: 4 MB of float32
# The polyphase filter between two rates has (new/g) × (orig/g + taps) coefficients (g = their gcd) and costs
# about lcm(orig, new) multiply-adds per second of audio: enormous between coprime rates (44,101 → 16,000 Hz
# asks for a 2.8 GB filter). Every common rate fits both bounds; 11,025 Hz is the largest (291 k, 7.06 M).
MAX_FILTER = 1 << 20  # coefficients
MAX_LCM = 8_000_000
FILTER_CACHE_BYTES = 32 << 20  # filters kept between clips, least recently used dropped first
MIN_SECONDS = 0.005  # shorter is no sound to classify: a 1-sample file was "0.00 s" and got a class
SILENCE_THRESHOLD = 1e-4  # peak below this counts as digital silence
TRIM = 0.01  # leading/trailing sound quieter than 1 % of the clip's peak is trimmed before windowing
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".webm", ".aiff", ".aif"}


class AudioError(ValueError):
    """A clip we cannot use, with a message meant for the person who supplied it."""


class EmptyAudioError(AudioError):
    pass


class DecodeError(AudioError):
    pass


class UnsupportedFormatError(DecodeError):
    pass


class InvalidSamplesError(AudioError):
    pass


class TooLongError(AudioError):
    pass


class UnsupportedRateError(DecodeError):
    pass


Source = str | Path | bytes | bytearray | memoryview


UNNAMED = "the file"  # what messages call raw bytes; the caller (a page) says which file it was


def _read_bytes(source: Source) -> tuple[bytes, str]:
    """The raw bytes and a name for messages: the file's name, or UNNAMED."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), UNNAMED
    path = Path(source)
    if not path.is_file():
        raise DecodeError(f"{path}: no such file")
    try:
        return path.read_bytes(), path.name
    except OSError as e:  # permissions, a file vanishing between the check and the read
        raise DecodeError(f"{path}: cannot read it ({e.strerror or e})") from e


def _about(name: str, problem: str) -> str:
    """"clip.wav: problem", or only the problem for raw bytes: a page puts the file's name in front itself."""
    return problem if name == UNNAMED else f"{name}: {problem}"


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def _sniff(data: bytes) -> str:
    """The container, by its magic bytes: file extensions from uploads are not to be trusted."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    heads = {b"fLaC": "flac", b"OggS": "ogg", b"ID3": "mp3", b"\x1aE\xdf\xa3": "webm/mkv", b"FORM": "aiff"}
    for magic, name in heads.items():
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        return "m4a/mp4"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "mp3"
    if data[:4] == b"\x89PNG" or data[:3] == b"\xff\xd8\xff":
        return "image"
    if data[:2] == b"PK":
        return "zip"
    if data[:5] in (b"%PDF-",):
        return "PDF"
    if _looks_like_text(data):
        return "text"
    return "unknown"


def _decode_torchcodec(data: bytes, kind: str, name: str) -> tuple[np.ndarray, int]:
    try:
        from torchcodec.decoders import AudioDecoder  # optional: needs FFmpeg's shared libraries
    except Exception as e:  # ImportError, or an OSError when FFmpeg is missing
        raise UnsupportedFormatError(
            _about(name, f"{kind} audio needs torchcodec with FFmpeg, which is not installed here "
                   "(pip install torchcodec; apt-get install ffmpeg). WAV, FLAC, OGG and MP3 always work.")
        ) from e
    try:
        samples = AudioDecoder(data).get_all_samples()
    except Exception as e:
        raise DecodeError(_about(name, f"could not decode this {kind} file ({e})")) from e
    return samples.data.numpy().T, int(samples.sample_rate)


def _check_header(name: str, sr: int, channels: int, frames: int | None, max_seconds: float | None) -> None:
    """Refuse what the header already shows to be unusable, before decoding anything."""
    if not MIN_RATE <= sr <= MAX_RATE:
        raise UnsupportedRateError(
            f"{name} says its sample rate is {sr:,} Hz; rates from {MIN_RATE:,} to {MAX_RATE:,} Hz are accepted"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise DecodeError(f"{name} has {channels} channels; at most {MAX_CHANNELS} are accepted. Mix it down first.")
    if max_seconds is not None and frames is not None and frames / sr > max_seconds:
        raise _too_long(name, frames / sr, max_seconds)


def _read_blocks(f: sf.SoundFile, name: str, max_seconds: float | None, mono: bool) -> np.ndarray:
    """Decode in blocks, mixing each down to mono as it comes when asked (a 64-channel file never exists in
    memory as 64 channels of float32), and stop as soon as the clip proves longer than max_seconds (headers
    can understate the length)."""
    sr, channels = int(f.samplerate), int(f.channels)
    limit = None if max_seconds is None else int(max_seconds * sr) + 1
    block = max(1, BLOCK_SAMPLES // channels)
    parts, n = [], 0
    while True:
        x = f.read(block, dtype="float32", always_2d=True)
        if x.shape[0] == 0:
            break
        parts.append(x.mean(axis=1, keepdims=True) if mono and channels > 1 else x)
        n += x.shape[0]
        if limit is not None and n > limit:
            # The real length is unknown beyond this point: say what was read, which is already too much.
            raise _too_long(name, n / sr, max_seconds)
    if not parts:
        return np.zeros((0, 1 if mono else channels), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _decode(source: Source, max_seconds: float | None = None, mono: bool = False) -> tuple[np.ndarray, int, str]:
    """(frames, channels) float32 and its rate; (frames, 1) mixed down as it decodes when mono."""
    data, name = _read_bytes(source)
    if len(data) == 0:
        raise EmptyAudioError(f"{name} is empty (0 bytes)")
    kind = _sniff(data)
    if kind in ("image", "zip", "PDF", "text"):
        raise UnsupportedFormatError(f"{name} is not audio: it looks like a {kind} file")
    with limits.heavy_work(name, DecodeError):
        try:
            with sf.SoundFile(io.BytesIO(data)) as f:
                sr = int(f.samplerate)
                _check_header(name, sr, int(f.channels), f.frames, max_seconds)
                audio = _read_blocks(f, name, max_seconds, mono)
        except AudioError:
            raise
        except MemoryError as e:
            raise DecodeError(_about(name, "not enough memory to decode it on this server")) from e
        except Exception as e:
            if kind in ("m4a/mp4", "webm/mkv"):
                audio, sr = _decode_torchcodec(data, kind, name)
                _check_header(name, sr, audio.shape[1], audio.shape[0], max_seconds)
                if mono and audio.shape[1] > 1:
                    audio = audio.mean(axis=1, keepdims=True)
                return audio, sr, name
            what = "" if kind == "unknown" else f" ({kind} data, possibly truncated or corrupt)"
            raise DecodeError(_about(name, f"could not decode audio{what}. Supported: WAV, FLAC, OGG, MP3.")) from e
    return audio, sr, name


def _too_long(name: str, seconds: float, max_seconds: float) -> TooLongError:
    return TooLongError(
        f"{name} is {seconds:.1f} s long; the limit is {max_seconds:g} s. Use a shorter clip or trim this one."
    )


def _filter_size(orig_sr: int, new_sr: int, width: int = 6) -> int:
    """Coefficients in torchaudio's sinc filter between two rates (its lowpass_filter_width default, 6)."""
    g = math.gcd(orig_sr, new_sr)
    o, n = orig_sr // g, new_sr // g
    taps = math.ceil(width * o / (min(o, n) * 0.99))
    return n * (2 * taps + o)


def resample_rate(orig_sr: int, new_sr: int = SAMPLE_RATE) -> int:
    """The rate a clip is resampled from: its own when the filter to new_sr is small, else the nearest rate
    on a coarser grid (a divisor of new_sr) whose filter is. 44,101 Hz is treated as 44,100 Hz; over the whole
    accepted range the pitch moves by 0.25 % at most (1,596 → 1,600 Hz), far below what anyone hears."""
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, not {orig_sr} and {new_sr}")
    for d in (d for d in range(1, new_sr + 1) if new_sr % d == 0):
        r = max(d, round(orig_sr / d) * d)
        if _filter_size(r, new_sr) <= MAX_FILTER and math.lcm(r, new_sr) <= MAX_LCM:
            return r
    return new_sr  # not reached: d = new_sr gives a filter of a few dozen coefficients


class _FilterCache:
    """Built filters by (orig, new), bounded in bytes rather than in count: one odd rate's filter can be
    a thousand times the size of a common one's."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[int, int], T.Resample] = OrderedDict()
        self._lock = threading.RLock()

    @staticmethod
    def _bytes(r: T.Resample) -> int:
        return sum(b.numel() * b.element_size() for b in r.buffers())

    def get(self, orig_sr: int, new_sr: int) -> T.Resample:
        key = (orig_sr, new_sr)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        # Building the windowed-sinc kernel costs as much as applying it to a short clip: build it once.
        r = T.Resample(orig_sr, new_sr)
        with self._lock:
            self._items[key] = r
            while len(self._items) > 1 and self.nbytes > self.max_bytes:
                self._items.popitem(last=False)
        return r

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(map(self._bytes, self._items.values()))


_filters = _FilterCache(FILTER_CACHE_BYTES)


def resampler(orig_sr: int, new_sr: int = SAMPLE_RATE) -> T.Resample:
    """The one resampler (a cached windowed-sinc kernel) from resample_rate(orig_sr) to new_sr: its
    orig_freq may differ from orig_sr by a hair. envnet.stream applies the same kernel block by block."""
    return _filters.get(resample_rate(int(orig_sr), int(new_sr)), int(new_sr))


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """`wave` at orig_sr → new_sr, through a bounded filter (see `resample_rate`). Raises AudioError when
    this server has no memory left for it, rather than an allocation error deep in torch."""
    orig_sr = resample_rate(int(orig_sr), int(new_sr))
    if orig_sr == new_sr:
        return wave
    try:
        with limits.heavy_work("this clip", AudioError), torch.no_grad():
            return resampler(orig_sr, new_sr)(wave)
    except (MemoryError, RuntimeError) as e:  # torch reports a failed allocation as a RuntimeError
        raise AudioError(f"the clip could not be resampled from {orig_sr:,} Hz on this server ({e})") from e


def trim_bounds(wave: torch.Tensor, threshold: float = TRIM, frame: int = 160) -> tuple[int, int]:
    """First and one-past-last sample of a clip without its leading and trailing frames whose peak is
    below threshold × the clip's peak; the whole clip when nothing (or everything) is quiet."""
    peak = wave.abs().max() if wave.numel() else 0
    if wave.numel() < frame or peak == 0:
        return 0, wave.numel()
    n = wave.numel() // frame * frame
    loud = wave[:n].abs().view(-1, frame).amax(1) > threshold * peak
    idx = torch.nonzero(loud).flatten()
    if idx.numel() == 0:
        return 0, wave.numel()
    # The ragged tail shorter than a frame stays when the last full frame is loud.
    end = wave.numel() if idx[-1] == loud.numel() - 1 else int(idx[-1] + 1) * frame
    return int(idx[0]) * frame, end


def trim_silence(wave: torch.Tensor, threshold: float = TRIM, frame: int = 160) -> torch.Tensor:
    """Drop leading and trailing frames whose peak is below threshold × the clip's peak."""
    a, b = trim_bounds(wave, threshold, frame)
    return wave[a:b]


def load_audio(
    source: Source,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = MAX_SECONDS,
    trim: bool = False,
) -> torch.Tensor:
    """Decode any supported clip to a mono float32 tensor at `sample_rate`, peak within [-1, 1].

    Integer formats arrive already scaled to [-1, 1); float files may exceed it and are scaled down,
    never up, so quiet sounds stay quiet (loudness is information the model may use).
    """
    audio, sr, name = _decode(source, max_seconds, mono=True)
    if audio.shape[0] == 0:
        raise EmptyAudioError(f"{name} contains no samples")
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise InvalidSamplesError(f"{name} contains {bad} NaN or infinite sample(s); it cannot be analysed")
    if max_seconds is not None and audio.shape[0] / sr > max_seconds:  # headers can understate length
        raise _too_long(name, audio.shape[0] / sr, max_seconds)
    if audio.shape[0] / sr < MIN_SECONDS:
        raise EmptyAudioError(f"{name} lasts {1000 * audio.shape[0] / sr:.2g} ms: too short to be a sound "
                              f"(at least {1000 * MIN_SECONDS:.0f} ms)")
    wave = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))
    wave = resample(wave, sr, sample_rate)
    peak = float(wave.abs().max()) if wave.numel() else 0.0
    if peak > 1.0:
        wave = wave / peak
    if trim:
        wave = trim_silence(wave)
    return wave.contiguous()


def is_silent(wave: torch.Tensor) -> bool:
    return wave.numel() == 0 or float(wave.abs().max()) < SILENCE_THRESHOLD


def pad_to_window(wave: torch.Tensor, length: int = WINDOW) -> torch.Tensor:
    """Centre a short clip in zeros so it fills one window; longer clips are returned unchanged."""
    if wave.numel() >= length:
        return wave
    missing = length - wave.numel()
    return torch.nn.functional.pad(wave, (missing // 2, missing - missing // 2))


def window_starts(n: int, length: int = WINDOW, *, n_crops: int | None = 10, hop: int | None = None) -> list[int]:
    """Start offsets of windows over n samples: n_crops evenly spaced (the papers' test crops),
    or every `hop` samples (a timeline); the first window starts at the clip's start and the last ends at its
    end. A timeline's last window replaces the one before it when they would start under a quarter hop apart:
    a 5 s clip had windows at 3.5 s and 3.50025 s, the same window twice on the slider and the timeline."""
    if hop is not None and hop < 1:
        raise ValueError(f"hop must be at least 1 sample, not {hop}")
    if n <= length:
        return [0]
    last = n - length
    if hop is not None:
        starts = list(range(0, last + 1, hop))
        if len(starts) > 1 and last - starts[-1] < hop / 4:
            starts[-1] = last
        elif starts[-1] != last:
            starts.append(last)
        return starts
    count = max(1, n_crops or 10)
    return sorted({round(i * last / (count - 1)) for i in range(count)}) if count > 1 else [last // 2]


def prepare(wave: torch.Tensor, length: int = WINDOW) -> tuple[torch.Tensor, int, tuple[int, int]]:
    """The one preprocessing before windows are cut, for training's validation, evaluate, predict, the CLI
    and every page: leading and trailing silence trimmed, a clip shorter than a window centred in zeros.

    Chosen by measurement (held-out ESC-10 fold 4, 80 clips, 10 crops, the validation twin): trimmed and
    not padded 87.5 %; trimmed with half a window of zeros each side (the papers' test) 85.0 %; untrimmed
    76.3 %, because windows landed in the silence many recordings start or end with.

    Returns the samples, the shift from the clip's own sample numbers (the window that starts at sample s
    of the clip as given starts at samples[s + shift]) and the kept part of the clip (first, end).
    """
    a, b = trim_bounds(wave)
    inner = wave[a:b].float()
    samples = pad_to_window(inner, length)
    return samples, (samples.numel() - inner.numel()) // 2 - a, (a, b)


def windows(
    wave: torch.Tensor, length: int = WINDOW, *, n_crops: int | None = 10, hop: int | None = None
) -> tuple[torch.Tensor, list[int]]:
    """Cut a clip into (n_windows, length) EnvNet inputs (after `prepare`) and return them with their
    start samples in the clip as given (negative when a short clip was centred in padding)."""
    samples, shift, _ = prepare(wave, length)
    starts = window_starts(samples.numel(), length, n_crops=n_crops, hop=hop)
    return torch.stack([samples[s : s + length] for s in starts]), [s - shift for s in starts]


def window_at(wave: torch.Tensor, start: int, length: int = WINDOW) -> torch.Tensor:
    """The one window that starts at `start`, a start as `windows` returns it (clip-relative)."""
    samples, shift, _ = prepare(wave, length)
    return samples[start + shift : start + shift + length]


def to_wav_bytes(wave: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV, for audio players and downloads."""
    buf = io.BytesIO()
    data = wave.numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    sf.write(buf, np.clip(data, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()

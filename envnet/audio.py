"""Audio in: bytes or a path → mono float32 at 16 kHz in [-1, 1] → EnvNet windows.

soundfile decodes wav/flac/ogg/mp3 without FFmpeg; torchcodec (with FFmpeg) is tried for other
containers when it is installed. torchaudio is used only for resampling.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as T

from envnet.model import SAMPLE_RATE, WINDOW

MAX_SECONDS = 60.0
SILENCE_THRESHOLD = 1e-4  # peak below this counts as digital silence
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


Source = str | Path | bytes | bytearray | memoryview


def _read_bytes(source: Source) -> tuple[bytes, str]:
    """The raw bytes and a name for messages: the file's name, or "the audio data"."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the audio data"
    path = Path(source)
    if not path.is_file():
        raise DecodeError(f"{path}: no such file")
    try:
        return path.read_bytes(), path.name
    except OSError as e:  # permissions, a file vanishing between the check and the read
        raise DecodeError(f"{path}: cannot read it ({e.strerror or e})") from e


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
            f"{name}: {kind} audio needs torchcodec with FFmpeg, which is not installed here "
            "(pip install torchcodec; apt-get install ffmpeg). WAV, FLAC, OGG and MP3 always work."
        ) from e
    try:
        samples = AudioDecoder(data).get_all_samples()
    except Exception as e:
        raise DecodeError(f"{name}: could not decode this {kind} file ({e})") from e
    return samples.data.numpy().T, int(samples.sample_rate)


def _decode(source: Source, max_seconds: float | None = None) -> tuple[np.ndarray, int, str]:
    data, name = _read_bytes(source)
    if len(data) == 0:
        raise EmptyAudioError(f"{name} is empty (0 bytes)")
    kind = _sniff(data)
    if kind in ("image", "zip", "PDF", "text"):
        raise UnsupportedFormatError(f"{name} is not audio: it looks like a {kind} file")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr = int(f.samplerate)
            # Refuse an over-long clip from its header, before decoding it into memory.
            if max_seconds is not None and f.frames / sr > max_seconds:
                raise _too_long(name, f.frames / sr, max_seconds)
            audio = f.read(dtype="float32", always_2d=True)
    except TooLongError:
        raise
    except Exception as e:
        if kind in ("m4a/mp4", "webm/mkv"):
            audio, sr = _decode_torchcodec(data, kind, name)
            return audio, sr, name
        what = "" if kind == "unknown" else f" ({kind} data, possibly truncated or corrupt)"
        raise DecodeError(f"{name}: could not decode audio{what}. Supported: WAV, FLAC, OGG, MP3.") from e
    return audio, sr, name


def _too_long(name: str, seconds: float, max_seconds: float) -> TooLongError:
    return TooLongError(
        f"{name} is {seconds:.1f} s long; the limit is {max_seconds:g} s. Use a shorter clip or trim this one."
    )


def decode_raw(source: Source) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 as stored, and its sample rate. Raises AudioError subclasses."""
    audio, sr, _ = _decode(source)
    return audio, sr


@lru_cache(maxsize=8)
def _resampler(orig_sr: int, new_sr: int) -> T.Resample:
    # Building the windowed-sinc kernel costs as much as applying it to a short clip: build it once.
    return T.Resample(orig_sr, new_sr)


def resampler(orig_sr: int, new_sr: int = SAMPLE_RATE) -> T.Resample:
    """The one resampler (a cached windowed-sinc kernel); envnet.stream applies the same kernel block by block."""
    return _resampler(orig_sr, new_sr)


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    if orig_sr == new_sr:
        return wave
    with torch.no_grad():
        return _resampler(orig_sr, new_sr)(wave)


def trim_silence(wave: torch.Tensor, threshold: float = 0.01, frame: int = 160) -> torch.Tensor:
    """Drop leading and trailing frames whose peak is below threshold × the clip's peak."""
    peak = wave.abs().max()
    if wave.numel() < frame or peak == 0:
        return wave
    n = wave.numel() // frame * frame
    loud = wave[:n].abs().view(-1, frame).amax(1) > threshold * peak
    idx = torch.nonzero(loud).flatten()
    if idx.numel() == 0:
        return wave
    # The ragged tail shorter than a frame stays when the last full frame is loud.
    end = wave.numel() if idx[-1] == loud.numel() - 1 else (idx[-1] + 1) * frame
    return wave[idx[0] * frame : end]


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
    audio, sr, name = _decode(source, max_seconds)
    if audio.shape[0] == 0:
        raise EmptyAudioError(f"{name} contains no samples")
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise InvalidSamplesError(f"{name} contains {bad} NaN or infinite sample(s); it cannot be analysed")
    if max_seconds is not None and audio.shape[0] / sr > max_seconds:  # headers can understate length
        raise _too_long(name, audio.shape[0] / sr, max_seconds)
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
    or every `hop` samples (a timeline); the last window always ends at the clip's end."""
    if hop is not None and hop < 1:
        raise ValueError(f"hop must be at least 1 sample, not {hop}")
    if n <= length:
        return [0]
    last = n - length
    if hop is not None:
        starts = list(range(0, last + 1, hop))
        if starts[-1] != last:
            starts.append(last)
        return starts
    count = max(1, n_crops or 10)
    return sorted({round(i * last / (count - 1)) for i in range(count)}) if count > 1 else [last // 2]


def windows(
    wave: torch.Tensor, length: int = WINDOW, *, n_crops: int | None = 10, hop: int | None = None
) -> tuple[torch.Tensor, list[int]]:
    """Cut a clip into (n_windows, length) EnvNet inputs and return them with their start samples.

    Starts are relative to the unpadded clip (negative when a short clip was centred in padding).
    """
    padded = pad_to_window(wave, length)
    offset = (padded.numel() - wave.numel()) // 2
    starts = window_starts(padded.numel(), length, n_crops=n_crops, hop=hop)
    batch = torch.stack([padded[s : s + length] for s in starts])
    return batch, [s - offset for s in starts]


def window_at(wave: torch.Tensor, start: int, length: int = WINDOW) -> torch.Tensor:
    """The one window that starts at `start`, a start as `windows` returns it (clip-relative)."""
    padded = pad_to_window(wave, length)
    s = start + (padded.numel() - wave.numel()) // 2
    return padded[s : s + length]


def to_wav_bytes(wave: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV, for audio players and downloads."""
    buf = io.BytesIO()
    data = wave.numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    sf.write(buf, np.clip(data, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()

"""Shared test fixtures: audio generated with numpy + soundfile (no audio files are committed), small
models and checkpoints that are quick to build, and the location of the optional ESC-10 data.

Plain helpers (`sine`, `encode`, `write_audio`, ...) can be imported by any test module with
`from conftest import sine, encode`; fixtures wrap the ones that are worth caching.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

# Before envnet is imported anywhere: its caches (decoded waves, downloads, the CPU plan) go to a temporary
# folder, never into the user's ~/.cache/envnet, whatever ENVNET_CACHE says outside. Subprocesses (the app
# under the browser tests, torchrun, the CLI) inherit it.
TEST_CACHE = Path(tempfile.mkdtemp(prefix="envnet-test-cache-"))
os.environ["ENVNET_CACHE"] = str(TEST_CACHE)
atexit.register(shutil.rmtree, TEST_CACHE, ignore_errors=True)

# Tests run beside long training jobs on a small machine: one thread each keeps them from fighting.
torch.set_num_threads(int(os.environ.get("ENVNET_TEST_THREADS", "1")))

ESC10_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"
TINY_CLASSES = ["low", "mid", "high"]

# format name → (soundfile format, default subtype)
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def sine(freq: float = 440.0, seconds: float = 1.0, sr: int = 16_000, amplitude: float = 0.5,
         channels: int = 1) -> np.ndarray:
    """A cosine tone as float32, (frames,) or (frames, channels) with the same tone in every channel."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amplitude * np.cos(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.repeat(x[:, None], channels, axis=1)


def square(freq: float = 200.0, seconds: float = 1.0, sr: int = 16_000, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sign(np.sin(2 * np.pi * freq * t) + 1e-12)).astype(np.float32)


def mp3_writable() -> bool:
    """libsndfile ≥ 1.1 built with LAME can write MP3."""
    return "MP3" in sf.available_formats() and "MPEG_LAYER_III" in sf.available_subtypes("MP3")


def encode(samples: np.ndarray, sr: int = 16_000, fmt: str = "wav", subtype: str | None = None) -> bytes:
    """Encode float samples in [-1, 1] to the bytes of an audio file (wav/flac/ogg/mp3)."""
    sf_format, default_subtype = FORMATS[fmt]
    if fmt == "mp3" and not mp3_writable():
        pytest.skip("this libsndfile cannot write MP3 (needs libsndfile ≥ 1.1 with LAME)")
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=sf_format, subtype=subtype or default_subtype)
    return buf.getvalue()


def write_audio(path: Path, samples: np.ndarray, sr: int = 16_000, fmt: str | None = None,
                subtype: str | None = None) -> Path:
    path.write_bytes(encode(samples, sr, fmt or path.suffix.lstrip("."), subtype))
    return path


def png_bytes() -> bytes:
    """A real 1×1 PNG (its signature is what a decoder would see)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("dog.wav", b"not really")
    return buf.getvalue()


def float_wav_with(value: float, n: int = 1600, sr: int = 16_000) -> bytes:
    """A 32-bit float WAV with one bad sample (NaN or ±inf) in an otherwise normal tone."""
    x = sine(440, n / sr, sr)
    x[n // 2] = value
    return encode(x, sr, "wav", "FLOAT")


def tiny_model(n_classes: int = 3, fc_width: int = 16, seed: int = 0):
    """An EnvNet with narrow fully connected layers: the same feature block, quick to build and run."""
    from envnet.model import build_model

    torch.manual_seed(seed)
    return build_model(n_classes=n_classes, fc_width=fc_width).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stem of a saved tiny checkpoint (3 classes, fc_width 16), float32 so reloads are exact."""
    from envnet import checkpoint

    model = tiny_model()
    stem = tmp_path_factory.mktemp("ckpt") / "tiny"
    card = checkpoint.make_card(model, TINY_CLASSES, "tiny", esc50_targets=[0, 1, 2])
    checkpoint.save(stem, model, card, half=False)
    return stem


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-minute WAV, made cheap: 8 kHz, 16-bit, a quiet tone (9.6 MB), written once per session."""
    path = tmp_path_factory.mktemp("long") / "ten_minutes.wav"
    sf.write(path, sine(300, 600.0, 8_000, amplitude=0.2), 8_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def esc10_dir() -> Path:
    if not (ESC10_DIR / "meta").is_dir() and not (ESC10_DIR / "audio").is_dir():
        pytest.skip(f"ESC-10 data not found at {ESC10_DIR}")
    return ESC10_DIR

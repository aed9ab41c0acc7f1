"""Issue 8's corpus of bad and odd inputs, generated here: each one gives either a correct result or
the right clear error, through the library and through the CLI (exit 3, a message, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, encode, float_wav_with, png_bytes, sine, square, tiny_model, zip_bytes

from envnet.audio import (
    DecodeError,
    EmptyAudioError,
    InvalidSamplesError,
    TooLongError,
    UnsupportedFormatError,
    load_audio,
    windows,
)
from envnet.cli import main
from envnet.model import SAMPLE_RATE, WINDOW
from envnet.predict import predict
from envnet.spectra import learned_spectrogram, mel_spectrogram

REPO = Path(__file__).resolve().parents[1]


def _torchcodec() -> bool:
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:
        return False
    return True


@dataclass
class Case:
    filename: str
    make: Callable[[], bytes] | None  # None: the 10-minute clip, written once per session by conftest
    error: type[Exception] | None = None  # None: it must decode and predict
    words: tuple[str, ...] = ()  # in the error message
    samples: int | None = None  # expected length at 16 kHz, when it decodes
    extra: dict = field(default_factory=dict)


CORPUS: dict[str, Case] = {
    "empty file": Case("empty.wav", lambda: b"", EmptyAudioError, ("empty", "0 bytes")),
    "zero-length audio": Case("zero.wav", lambda: encode(np.zeros(0, np.float32)), EmptyAudioError, ("no samples",)),
    "truncated wav header": Case("truncated.wav", lambda: encode(sine(440, 1.0))[:30], DecodeError,
                                 ("could not decode", "truncated")),
    "wav truncated mid-data": Case("cut.wav", lambda: encode(sine(440, 1.0))[: 44 + 2 * 4000], samples=4000),
    "wrong extension (flac named .mp3)": Case("flac.mp3", lambda: encode(sine(440, 1.0), fmt="flac"),
                                              samples=16_000),
    "text renamed to .wav": Case("notes.wav", lambda: b"Dear diary,\nToday I recorded a dog.\n" * 20,
                                 UnsupportedFormatError, ("not audio", "text")),
    "image renamed to .wav": Case("photo.wav", png_bytes, UnsupportedFormatError, ("not audio", "image")),
    "zip renamed to .wav": Case("archive.wav", zip_bytes, UnsupportedFormatError, ("not audio", "zip")),
    "NaN in a float wav": Case("nan.wav", lambda: float_wav_with(np.nan), InvalidSamplesError, ("NaN",)),
    "inf in a float wav": Case("inf.wav", lambda: float_wav_with(np.inf), InvalidSamplesError, ("infinite",)),
    "8-bit wav": Case("u8.wav", lambda: encode(sine(440, 1.0), subtype="PCM_U8"), samples=16_000),
    "24-bit wav": Case("s24.wav", lambda: encode(sine(440, 1.0, 48_000), 48_000, subtype="PCM_24"), samples=16_000),
    "32-bit float wav": Case("f32.wav", lambda: encode(sine(440, 1.0), subtype="FLOAT"), samples=16_000),
    "6-channel": Case("surround.wav", lambda: encode(sine(440, 1.0, 48_000, channels=6), 48_000), samples=16_000),
    "8 kHz": Case("phone.wav", lambda: encode(sine(440, 2.0, 8_000), 8_000), samples=32_000),
    "96 kHz": Case("studio.wav", lambda: encode(sine(440, 1.0, 96_000), 96_000, subtype="PCM_24"), samples=16_000),
    "10 ms clip": Case("click.wav", lambda: encode(sine(1000, 0.01)), samples=160),
    "10 min clip": Case("ten_minutes.wav", None, TooLongError, ("600.0 s", "limit is 60 s")),
    "all-zero audio": Case("silence.wav", lambda: encode(np.zeros(32_000, np.float32)), samples=32_000),
    "full-scale square wave": Case("square.wav", lambda: encode(square(200, 2.0)), samples=32_000),
    "DC offset": Case("dc.wav", lambda: encode(np.full(24_000, 0.8, np.float32) + 0.1 * sine(300, 1.5)),
                      samples=24_000),
}
if not _torchcodec():
    CORPUS["m4a without torchcodec"] = Case(
        "voice.m4a", lambda: b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isommp42" + bytes(500),
        UnsupportedFormatError, ("m4a", "torchcodec"))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, long_clip) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name, case in CORPUS.items():
        path = folder / case.filename
        if case.make is None:
            os.symlink(long_clip, path)
        else:
            path.write_bytes(case.make())
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def model():
    return tiny_model()


# ---- through the library -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CORPUS)
def test_library(name: str, corpus, model) -> None:
    case, path = CORPUS[name], corpus[name]
    if case.error is not None:
        with pytest.raises(case.error) as info:
            load_audio(path)
        message = str(info.value)
        assert path.name in message  # says which file
        for w in case.words:
            assert w.lower() in message.lower(), message
        return
    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert wave.numel() == case.samples
    assert torch.isfinite(wave).all() and float(wave.abs().max()) <= 1.0
    batch, _ = windows(wave)
    assert batch.shape[1] == WINDOW
    assert torch.isfinite(learned_spectrogram(model, batch)).all()
    assert torch.isfinite(mel_spectrogram(batch)).all()
    pred = predict(model, wave, TINY_CLASSES)
    assert torch.isfinite(pred.window_probs).all()
    assert float(pred.probs.sum()) == pytest.approx(1.0, abs=1e-5)


def test_decoded_content_is_right_not_just_valid(corpus) -> None:
    # A few cases where "a result" must also be "the correct result".
    assert float(load_audio(corpus["all-zero audio"]).abs().max()) == 0.0
    dc = load_audio(corpus["DC offset"])
    assert float(dc.mean()) == pytest.approx(0.8, abs=0.01)  # the offset is kept, not silently removed
    sq = load_audio(corpus["full-scale square wave"])
    assert float(sq.abs().max()) == pytest.approx(1.0, abs=1e-3)
    six = load_audio(corpus["6-channel"])
    # The same tone in 6 channels mixes to itself (away from the edges, where resampling rings).
    assert float(six[1000:-1000].abs().max()) == pytest.approx(0.5, abs=0.01)


def test_ten_minute_clip_works_without_the_cap(corpus, model) -> None:
    wave = load_audio(corpus["10 min clip"], max_seconds=None)
    assert wave.numel() == 600 * SAMPLE_RATE
    pred = predict(model, wave, TINY_CLASSES)  # 10 evenly spaced windows over ten minutes
    assert len(pred.starts) == 10 and pred.starts[-1] == wave.numel() - WINDOW
    assert float(pred.probs.sum()) == pytest.approx(1.0, abs=1e-5)


# ---- through the CLI -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CORPUS)
def test_cli(name: str, corpus, tiny_checkpoint, capsys) -> None:
    case, path = CORPUS[name], corpus[name]
    code = main(["predict", str(path), "--checkpoint", str(tiny_checkpoint), "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if case.error is None:
        assert code == 0, err
        obj = json.loads(out)
        assert obj["file"] == str(path) and obj["windows"] >= 1
        assert sum(t["prob"] for t in obj["top"]) == pytest.approx(1.0, abs=1e-4)  # top 3 of 3 classes
    else:
        assert code == 3 and out == ""
        assert err.startswith("envnet: ") and path.name in err
        for w in case.words:
            assert w.lower() in err.lower(), err


def test_cli_subprocess_whole_corpus(corpus, tiny_checkpoint) -> None:
    """All of it in one real `python -m envnet predict` run: good files answered, each bad one named."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    files = [str(p) for p in corpus.values()]
    r = subprocess.run([sys.executable, "-m", "envnet", "predict", *files, "--checkpoint", str(tiny_checkpoint),
                        "--json"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 3
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    good = [str(corpus[n]) for n, c in CORPUS.items() if c.error is None]
    bad = [corpus[n].name for n, c in CORPUS.items() if c.error is not None]
    assert [json.loads(line)["file"] for line in r.stdout.splitlines()] == good
    err = r.stderr.splitlines()
    assert len(err) == len(bad)
    for line, name in zip(err, bad, strict=True):
        assert line.startswith("envnet: ") and name in line

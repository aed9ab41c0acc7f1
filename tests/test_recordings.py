"""A classroom's own examples saved as a zip of class folders and loaded back: the same sounds, a layout
the CLI trains on, and clear refusals of zips that cannot be used."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from envnet import recordings
from envnet.data import read_class_folders

SR = 16_000


def tone(freq: float, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return 0.5 * torch.sin(2 * torch.pi * freq * t)


def wav_bytes(x: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV")
    return buf.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_round_trip_keeps_classes_names_and_sounds():
    examples = {"clap": [("clap one.wav", tone(300)), ("recording 2", tone(350, 1.0))], "whistle": [("w", tone(3000))]}
    loaded, problems = recordings.from_zip(recordings.to_zip(examples), trim=False)
    assert problems == []
    assert list(loaded) == ["clap", "whistle"]
    assert [name for name, _ in loaded["clap"]] == ["clap one.wav", "recording 2.wav"]
    for (_, before), (_, after) in zip(examples["clap"] + examples["whistle"], loaded["clap"] + loaded["whistle"], strict=True):
        assert after.shape == before.shape
        assert float((after - before).abs().max()) < 1e-4  # 16-bit PCM


def test_saved_zip_is_a_dataset_the_cli_can_train_on(tmp_path):
    examples = {"low": [(f"l{i}", tone(200 + 10 * i)) for i in range(3)], "high": [(f"h{i}", tone(3000)) for i in range(2)]}
    zipfile.ZipFile(io.BytesIO(recordings.to_zip(examples))).extractall(tmp_path)
    ds = read_class_folders(tmp_path)
    assert sorted(ds.classes) == ["high", "low"] and len(ds) == 5


def test_names_are_made_unique_and_cannot_leave_the_folder():
    examples = {"../../etc": [("a.wav", tone(300)), ("a.wav", tone(400))], ".hidden": [("x", tone(500))]}
    with zipfile.ZipFile(io.BytesIO(recordings.to_zip(examples))) as zf:
        names = zf.namelist()
    assert all(not n.startswith((".", "/")) and ".." not in n.split("/") for n in names), names
    assert len(set(names)) == 3


def test_from_zip_skips_what_it_cannot_use_and_says_why():
    good = wav_bytes(np.asarray(tone(440)))
    data = make_zip({
        "sounds/dog/bark.wav": good,
        "sounds/dog/broken.wav": b"RIFF not really",
        "sounds/cat/meow.flac.wav": good,
        "loose.wav": good,  # no class folder
        "__MACOSX/sounds/dog/._bark.wav": b"resource fork",
        "sounds/README.txt": b"notes",
    })
    loaded, problems = recordings.from_zip(data)
    assert {k: [n for n, _ in v] for k, v in loaded.items()} == {"cat": ["meow.flac.wav"], "dog": ["bark.wav"]}
    assert len(problems) == 2
    assert any(p.startswith("sounds/dog/broken.wav:") for p in problems)
    assert any(p.startswith("loose.wav:") and "class folder" in p for p in problems)


@pytest.mark.parametrize("data,message", [
    (b"this is not a zip", "not a zip"),
    (make_zip({"notes.txt": b"hello"}), "no sound files"),
])
def test_unusable_zips_are_refused_with_a_message(data, message):
    with pytest.raises(ValueError, match=message):
        recordings.from_zip(data)


def test_a_zip_that_would_unpack_too_large_is_not_read(monkeypatch):
    monkeypatch.setattr(recordings, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(ValueError, match="unpack to more than"):
        recordings.from_zip(make_zip({"a/big.wav": b"\0" * 5000}))


def test_loading_stops_at_the_sound_budget_and_says_so(monkeypatch):
    monkeypatch.setattr(recordings, "MAX_TOTAL_SECONDS", 1)
    one = wav_bytes(np.asarray(tone(440, 0.6)))
    loaded, problems = recordings.from_zip(make_zip({f"c/{i}.wav": one for i in range(4)}), trim=False)
    assert [n for n, _ in loaded["c"]] == ["0.wav", "1.wav"]
    assert problems == ["c/2.wav and the rest: over 1 seconds of sound, not loaded"]

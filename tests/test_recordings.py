"""A classroom's own examples saved as a zip of class folders and loaded back: the same sounds, a layout
the CLI trains on, and clear refusals of zips that cannot be used."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch
from tonedata import tone_clips

from envnet import recordings
from envnet.data import read_class_folders
from envnet.recordings import to_dataset

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


def test_own_dataset_assigns_every_class_to_folds_and_skips_empty_classes():
    ds = to_dataset({"low": tone_clips(200, 6), "high": tone_clips(3000, 5), "empty": []})
    assert ds.classes == ["low", "high"]
    assert len(ds) == 11 and len(ds.waves) == 11
    held = ds.select(folds=[1])
    assert sorted(c.label for c in held.clips) == [0, 0, 1]  # round-robin: examples 0 and 5 of "low"
    with pytest.raises(ValueError, match="two classes"):
        to_dataset({"only": tone_clips(200)})


def test_own_classes_refuse_bad_names_silence_and_sound_over_the_budget(monkeypatch):
    monkeypatch.setattr(recordings, "MAX_TOTAL_SECONDS", 1.2)
    own = recordings.OwnClasses()
    own.add_class("clap")
    for bad, words in [("", "Type a name"), ("clap", "already a class"), ("Clap", "called “clap”"),
                       ("<b>x</b>", "class name")]:
        with pytest.raises(ValueError, match=words):
            own.add_class(bad)
    with pytest.raises(ValueError) as refused:  # as typed, in quotes: a Python repr doubled the backslash
        own.add_class("a/b\\c")
    assert str(refused.value).startswith("The class name “a/b\\c” has characters that are not allowed (“\\”)")
    with pytest.raises(ValueError, match="silent"):
        own.add("clap", "quiet.wav", torch.zeros(SR))
    with pytest.raises(ValueError, match="shorter than 50 ms"):
        own.add("clap", "click.wav", tone(440, seconds=0.01))
    own.add("clap", "a.wav", tone(440))
    own.add("knock", "b.wav", tone(880))  # a new class is made on the way
    assert list(own.classes) == ["clap", "knock"] and own.held_samples == SR
    with pytest.raises(ValueError, match="already holds 1.2 seconds"):
        own.add("knock", "c.wav", tone(880))
    assert own.held_samples == SR  # nothing kept from the refusal
    with pytest.raises(recordings.AudioError):
        own.add_file("clap", "junk.wav", b"not audio")


def test_own_classes_round_trip_through_a_zip_and_become_datasets():
    own = recordings.OwnClasses()
    for i in range(6):
        own.add("low", f"low{i}.wav", tone(200 + 10 * i))
    for i in range(5):
        own.add("high", f"high{i}.wav", tone(3000 + 50 * i))
    data = own.to_zip()
    assert own.to_zip() is data  # kept while nothing changes
    own.remove("low", own.classes["low"].examples[0])
    assert own.to_zip() != data
    back = recordings.OwnClasses()
    added, n_classes, problems = back.load_zip(data)
    assert (added, n_classes, problems) == (11, 2, [])
    assert [e.name for e in back.classes["low"].examples] == [f"low{i}.wav" for i in range(6)]
    torch.testing.assert_close(back.classes["high"].examples[2].wave, own.classes["high"].examples[2].wave,
                               atol=1e-4, rtol=0)  # 16-bit PCM
    everything, none = back.to_dataset()
    assert none is None and len(everything) == 11 and everything.classes == ["low", "high"]
    train, held = back.to_dataset(holdout=5)
    assert sorted(c.label for c in held.clips) == [0, 1]  # the 5th example of each class
    assert len(train) == 9 and {c.label for c in train.clips} == {0, 1}
    small = recordings.OwnClasses()
    small.add("a", "a.wav", tone(300))
    small.add("b", "b.wav", tone(900))
    assert small.to_dataset(holdout=5)[1] is None  # too few examples to hold any out: train on all


def test_an_uploaded_file_is_one_example_and_a_long_one_or_a_session_is_split_at_its_sounds():
    own = recordings.OwnClasses()
    silent_ends = np.concatenate([np.zeros(SR // 2), np.asarray(tone(440, 1.0)), np.zeros(SR // 2)])
    [kept] = own.add_file("whistle", "w.wav", wav_bytes(silent_ends))
    assert kept.name == "w.wav" and kept.wave.numel() < 1.1 * SR  # one example, its silent ends trimmed

    rng = np.random.default_rng(0)
    knocks = 0.003 * rng.standard_normal(8 * SR)  # 8 s of room noise with a knock every second
    for k in range(7):
        i = int((0.5 + k) * SR)
        knocks[i : i + 640] += 0.6 * np.exp(-np.arange(640) / 128) * rng.standard_normal(640)
    added = own.add_file("knock", "knocks.wav", wav_bytes(knocks))  # longer than LONG_UPLOAD: a session
    assert [e.name for e in added] == [f"take {k + 1}" for k in range(7)]
    assert len(own.add_file("knock", "short.wav", wav_bytes(knocks[: 3 * SR]), session=True)) == 3
    assert [e.name for e in own.classes["knock"].examples][-3:] == ["take 8", "take 9", "take 10"]

    # A long file of one steady sound (rain, a fan) has no events: it was refused as "no separate sounds". It is
    # cut into window-sized pieces; a session of the room (asked for as a sound made again and again) still is not.
    rain = 0.2 * rng.standard_normal(6 * SR)
    added = own.add_file("rain", "rain.wav", wav_bytes(rain))
    assert len(added) == 4 and all(1.0 <= e.seconds <= 1.51 for e in added)
    with pytest.raises(ValueError, match="no separate sounds"):
        own.add_file("rain", "room.wav", wav_bytes(rain), session=True)

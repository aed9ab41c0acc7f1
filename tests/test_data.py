"""Datasets: ESC-50 layout and class folders, fold selection, the waveform cache, crops and BC mixing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_CACHE
from tonedata import CLASSES, ESC_TARGETS, SR, memory_dataset, write_class_folders, write_esc50

import envnet.data as data
from envnet import cpu, download
from envnet.data import (
    bc_batch,
    bc_mix,
    load_waves,
    random_crop,
    random_gain,
    random_scale,
    read_class_folders,
    read_dataset,
    read_esc50,
    sound_gain,
)
from envnet.model import WINDOW


@pytest.fixture(scope="module")
def esc_root(tmp_path_factory):
    return write_esc50(tmp_path_factory.mktemp("esc"), per_class_per_fold=1, seconds=0.2)


def test_esc50_reader_classes_targets_and_folds(esc_root):
    ds = read_esc50(esc_root)
    # classes are ordered by ESC-50 target id, and targets line up with names
    assert ds.classes == ["low", "high", "noise", "hum"]
    assert ds.targets == [0, 1, 10, 42]
    assert len(ds) == 4 * 5 and ds.folds == [1, 2, 3, 4, 5]
    for clip in ds.clips:
        assert ds.classes[clip.label] == {0: "low", 1: "high", 10: "noise", 42: "hum"}[clip.target]
        assert clip.path.name.startswith(f"{clip.fold}-")


def test_esc10_subset_keeps_only_its_classes(esc_root):
    ds = read_esc50(esc_root, subset="esc10")
    assert ds.classes == CLASSES and ds.targets == [ESC_TARGETS[c] for c in CLASSES]
    assert len(ds) == 15 and sorted({c.label for c in ds.clips}) == [0, 1, 2]
    assert read_dataset(esc_root, "esc10").classes == CLASSES  # read_dataset recognises the layout
    with pytest.raises(ValueError, match="unknown subset"):
        read_esc50(esc_root, subset="esc20")


def test_fold_selection(esc_root):
    ds = read_esc50(esc_root, subset="esc10")
    val = ds.select(folds=[4])
    train = ds.select(exclude=[4, 5])
    assert val.folds == [4] and len(val) == 3
    assert train.folds == [1, 2, 3] and len(train) == 9
    assert {c.path for c in val.clips}.isdisjoint(c.path for c in train.clips)
    assert train.classes == ds.classes  # the label space never shrinks with a selection


def test_esc50_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="esc50.csv"):
        read_esc50(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,fold,target,category,esc10\nx.wav,1,0,dog,True\n")
    with pytest.raises(FileNotFoundError, match="no audio files"):
        read_esc50(tmp_path)


def test_class_folders_deterministic_split_with_every_class_in_every_fold(tmp_path):
    write_class_folders(tmp_path, per_class=10, seconds=0.05)
    (tmp_path / "empty").mkdir()  # a folder without audio is not a class
    (tmp_path / "low" / "notes.txt").write_text("not audio")
    a, b = read_class_folders(tmp_path), read_dataset(tmp_path)
    assert a.classes == sorted(CLASSES)
    assert [(c.path, c.fold) for c in a.clips] == [(c.path, c.fold) for c in b.clips]
    assert len(a) == 30 and a.folds == [1, 2, 3, 4, 5]
    for fold in a.folds:
        assert {c.label for c in a.clips if c.fold == fold} == {0, 1, 2}
        assert sum(c.fold == fold for c in a.clips) == 6
    # another seed shuffles differently, but still keeps every class in every fold
    other = read_class_folders(tmp_path, seed=1)
    assert {c.path: c.fold for c in other.clips} != {c.path: c.fold for c in a.clips}
    assert all({c.label for c in other.clips if c.fold == f} == {0, 1, 2} for f in other.folds)


def test_class_folders_need_two_classes(tmp_path):
    write_class_folders(tmp_path, per_class=2, seconds=0.05)
    for name in ("high", "noise"):
        for p in (tmp_path / name).iterdir():
            p.unlink()
    with pytest.raises(FileNotFoundError, match="at least two"):
        read_class_folders(tmp_path)


def test_waves_are_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    write_class_folders(tmp_path / "data", per_class=2, seconds=0.3)
    cache = tmp_path / "cache"
    first = load_waves(read_dataset(tmp_path / "data"), cache_dir=cache)
    assert len(list((cache / "waves").glob("*.npy"))) == 6
    assert all(w.dtype == torch.float32 and 0 < w.numel() <= int(0.3 * SR) for w in first.waves)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "load_audio", no_decoding)
    second = load_waves(read_dataset(tmp_path / "data"), cache_dir=cache)
    for w1, w2 in zip(first.waves, second.waves, strict=True):
        assert torch.equal(w1, w2)
    # an untrimmed load is another cache entry, not the trimmed waves
    with pytest.raises(AssertionError, match="decoded again"):
        load_waves(read_dataset(tmp_path / "data"), cache_dir=cache, trim=False)


def test_undecodable_clip_becomes_empty_and_is_skipped(tmp_path):
    write_class_folders(tmp_path, per_class=2, seconds=0.2)
    (tmp_path / "low" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    ds = load_waves(read_dataset(tmp_path), cache_dir=None)
    broken = [w for c, w in zip(ds.clips, ds.waves, strict=True) if c.path.name == "broken.wav"]
    assert broken[0].numel() == 0 and sum(w.numel() > 0 for w in ds.waves) == 6


def test_random_crop_shapes():
    gen = torch.Generator().manual_seed(0)
    for n in (100, WINDOW, 3 * WINDOW):
        wave = torch.randn(n)
        assert random_crop(wave, gen).shape == (WINDOW,)


def test_random_crop_avoids_silence_when_it_can():
    gen = torch.Generator().manual_seed(0)
    wave = torch.zeros(10 * WINDOW)
    wave[5 * WINDOW : 5 * WINDOW + 2000] = 1.0  # a short click in a long silence
    hits = sum(float(random_crop(wave, gen, tries=50).abs().max()) > 0 for _ in range(20))
    assert hits >= 15


def test_sound_gain_orders_loudness():
    t = torch.arange(SR) / SR
    loud = 0.8 * torch.sin(2 * np.pi * 1000 * t)
    quiet = 0.08 * torch.sin(2 * np.pi * 1000 * t)
    assert sound_gain(loud) - sound_gain(quiet) == pytest.approx(20.0, abs=0.1)  # 10× amplitude = +20 dB
    assert sound_gain(torch.zeros(SR)) == pytest.approx(-80.0)  # silence hits the floor, not -inf
    # A-weighting: at equal amplitude a 50 Hz hum counts for far less than a 1 kHz tone
    assert sound_gain(0.8 * torch.sin(2 * np.pi * 50 * t)) < sound_gain(loud) - 20


def test_bc_mix_bounded_and_ratio_dominates():
    torch.manual_seed(0)
    s1 = torch.rand(WINDOW) * 2 - 1
    s2 = 0.5 * torch.sin(torch.arange(WINDOW) / 5.0)
    for r in (0.0, 0.1, 0.5, 0.9, 1.0):
        mix = bc_mix(s1, s2, r)
        assert torch.isfinite(mix).all()
        # (t·s1 + (1-t)·s2)/sqrt(t² + (1-t)²) can exceed the louder input by at most √2
        assert mix.abs().max() <= 2**0.5 * max(s1.abs().max(), s2.abs().max()) + 1e-5
    near_s1 = bc_mix(s1, s2, 1.0)
    assert torch.corrcoef(torch.stack([near_s1, s1]))[0, 1] > 0.999
    near_s2 = bc_mix(s1, s2, 0.0)
    assert torch.corrcoef(torch.stack([near_s2, s2]))[0, 1] > 0.999
    # silent partners do not blow up the mix
    assert torch.isfinite(bc_mix(torch.zeros(WINDOW), torch.zeros(WINDOW), 0.5)).all()


def test_bc_mix_is_gain_aware():
    """Mixing a loud and a quiet sound at r=0.5 should give them equal perceived weight, so the quiet
    one gets a larger coefficient than the loud one."""
    t = torch.arange(WINDOW) / SR
    loud = 0.9 * torch.sin(2 * np.pi * 1000 * t)
    quiet = 0.09 * torch.sin(2 * np.pi * 1500 * t)
    mix = bc_mix(loud, quiet, 0.5)
    coef = torch.linalg.lstsq(torch.stack([loud, quiet], 1), mix[:, None]).solution.flatten()
    # about 20 dB quieter (A-weighting adds ~1 dB at 1.5 kHz) → about 10× the weight
    expected = 10 ** ((sound_gain(loud) - sound_gain(quiet)) / 20)
    assert 8 < expected < 11
    assert float(coef[1] / coef[0]) == pytest.approx(expected, rel=0.01)


def test_bc_batch_soft_labels_and_partners_of_other_classes():
    ds = memory_dataset(per_class=3, seconds=WINDOW / SR)
    crops = torch.stack(ds.waves)
    labels = ds.labels
    gen = torch.Generator().manual_seed(0)
    mixed, soft = bc_batch(crops, labels, 3, gen)
    assert mixed.shape == crops.shape and torch.isfinite(mixed).all()
    assert torch.allclose(soft.sum(1), torch.ones(len(crops)))
    assert (soft >= 0).all()
    # each mix holds its own class and exactly one other class (a partner of a different class exists)
    for i in range(len(crops)):
        assert soft[i, labels[i]] > 0
        assert int((soft[i] > 0).sum()) <= 2
        others = [c for c in range(3) if c != labels[i]]
        assert soft[i, others].sum() > 0 or soft[i, labels[i]] == pytest.approx(1.0, abs=1e-6)
    # over a batch the ratios are random, not a constant
    assert soft.max(1).values.std() > 0.05


def test_real_esc10_reader(esc10_dir):
    ds = read_esc50(esc10_dir, subset="esc10")
    assert len(ds) == 320 and len(ds.classes) == 10 and ds.folds == [1, 2, 3, 4]
    assert {"dog", "rooster", "rain", "chainsaw"} <= set(ds.classes)
    assert ds.targets == sorted(ds.targets) and ds.targets[0] == 0  # dog is ESC-50's target 0
    assert all(sum(c.fold == f for c in ds.clips) == 80 for f in ds.folds)


def test_random_scale_stretches_time_and_shifts_pitch_together():
    gen = torch.Generator().manual_seed(3)
    n = SR
    wave = torch.sin(2 * torch.pi * 1000 * torch.arange(n) / SR)
    factors = []
    for _ in range(20):
        out = random_scale(wave, gen)
        factor = out.numel() / n
        factors.append(factor)
        assert 0.8 - 1e-3 <= factor <= 1.25 + 1e-3
        # Played at 16 kHz, a clip stretched by `factor` sounds 1000 / factor Hz.
        peak_hz = np.argmax(np.abs(np.fft.rfft(out.numpy()))) * SR / out.numel()
        assert peak_hz == pytest.approx(1000 / factor, rel=0.01)
        assert float(out.abs().max()) <= 1.0 + 1e-6  # interpolation never overshoots
    assert min(factors) < 0.95 and max(factors) > 1.05  # both slower and faster happen


def test_random_gain_stays_within_six_decibels_and_follows_the_seed():
    wave = torch.full((100,), 0.5)
    db = [20 * np.log10(float(random_gain(wave, torch.Generator().manual_seed(s))[0]) / 0.5) for s in range(50)]
    assert -6 <= min(db) < -3 and 3 < max(db) <= 6
    same = [random_gain(wave, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(same[0], same[1])


def test_the_tests_keep_their_caches_out_of_the_users_home():
    """Decoded waves, downloads and the CPU plan go to the tests' temporary folder, never ~/.cache/envnet."""
    assert not TEST_CACHE.is_relative_to(Path.home() / ".cache")
    for path in (data.CACHE_DIR, download.cache_dir(), cpu.CACHE_FILE):
        assert path == TEST_CACHE or TEST_CACHE in path.parents, path


"""The generated demo sounds."""

from __future__ import annotations

import torch

from envnet import examples
from envnet.model import SAMPLE_RATE


def test_demo_sounds_are_valid_clips():
    for name, make in examples.DEMO_SOUNDS.items():
        w = make()
        assert w.dtype == torch.float32 and w.dim() == 1, name
        assert w.numel() == int(examples.DURATION * SAMPLE_RATE), name
        assert torch.isfinite(w).all() and 0.05 < float(w.abs().max()) <= 1.0, name


def test_sweep_rises_in_frequency():
    w = examples.sweep(100.0, 4000.0, seconds=2.0)
    first, last = w[: SAMPLE_RATE // 4], w[-SAMPLE_RATE // 4 :]
    zero_crossings = lambda x: int(((x[:-1] < 0) & (x[1:] >= 0)).sum())  # noqa: E731
    assert zero_crossings(last) > 10 * zero_crossings(first)


def test_dataset_roots_finds_datasets_two_levels_down_in_the_cache(tmp_path, monkeypatch):
    """A download lands in the cache one folder down (cache/esc50/ESC-50-master); a folder named by the user
    may hold the dataset itself. Nothing else is taken for one."""
    def esc50(folder):
        (folder / "meta").mkdir(parents=True)
        (folder / "meta" / "esc50.csv").write_text("filename,fold,target,category\n")
        (folder / "audio").mkdir()
        return folder

    top, nested = esc50(tmp_path / "cache" / "mine"), esc50(tmp_path / "cache" / "esc50" / "ESC-50-master")
    (tmp_path / "cache" / "empty" / "inner").mkdir(parents=True)
    monkeypatch.setattr(examples, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("ENVNET_DATA", raising=False)
    assert [r for r in examples.dataset_roots() if tmp_path in r.parents] == [top, nested]

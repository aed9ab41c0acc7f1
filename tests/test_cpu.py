"""Which path the library takes on a CPU with and without native bf16 (the CPU's answer is mocked both
ways), the probe's cache, and that "auto" reaches the training loop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from envnet import cpu, data
from envnet.model import build_model
from envnet.train import TrainConfig, Trainer
from tests.tonedata import memory_dataset

AVX2_EPYC = cpu.CpuInfo("AMD EPYC", frozenset({"avx", "avx2", "fma"}), "AVX2", 2)
SAPPHIRE = cpu.CpuInfo("Intel(R) Xeon(R) Platinum 8480+", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
                       "AVX512", 2)


@pytest.fixture
def fresh_plan(monkeypatch, tmp_path):
    """plan() recomputed against a mocked CPU and probe, with its cache file in tmp_path."""
    monkeypatch.setattr(cpu, "CACHE_FILE", tmp_path / "cpu-plan.json")
    cpu.plan.cache_clear()
    yield
    cpu.plan.cache_clear()


def test_without_native_bf16_training_is_fp32_and_the_probe_never_runs(monkeypatch, fresh_plan):
    monkeypatch.setattr(cpu, "read_cpu", lambda: AVX2_EPYC)
    monkeypatch.setattr(cpu, "probe_bf16", lambda: pytest.fail("no probe is needed where bf16 is emulated"))
    plan = cpu.plan()
    assert plan.train_bf16 is False
    assert "no native bf16" in plan.reasons["train"]
    assert cpu.resolve_bf16("auto", "cpu") is False
    assert plan.summary()["train_precision"] == "fp32" and plan.summary()["inference_precision"] == "fp32"


def test_with_native_bf16_the_measured_probe_decides_and_is_cached(monkeypatch, fresh_plan):
    calls = []
    monkeypatch.setattr(cpu, "read_cpu", lambda: SAPPHIRE)
    monkeypatch.setattr(cpu, "probe_bf16", lambda: calls.append(1) or {"fp32": 30.0, "bf16": 12.0})
    plan = cpu.plan()
    assert plan.train_bf16 is True
    assert "amx_bf16" in plan.reasons["train"] and "2.5×" in plan.reasons["train"]
    assert cpu.resolve_bf16("auto", "cpu") is True
    # a new process reads the probe back from the cache file instead of measuring again
    cpu.plan.cache_clear()
    assert cpu.plan().train_bf16 is True
    assert calls == [1]
    assert json.loads(cpu.CACHE_FILE.read_text())[SAPPHIRE.key()] == {"fp32": 30.0, "bf16": 12.0}


def test_native_bf16_that_measures_slower_is_not_used():
    plan = cpu.choose(SAPPHIRE, {"fp32": 30.0, "bf16": 29.0})
    assert plan.train_bf16 is False
    assert "needs ≥" in plan.reasons["train"]


def test_a_corrupt_cache_file_means_measuring_again(monkeypatch, fresh_plan):
    cpu.CACHE_FILE.write_text("{not json")
    monkeypatch.setattr(cpu, "read_cpu", lambda: SAPPHIRE)
    monkeypatch.setattr(cpu, "probe_bf16", lambda: {"fp32": 10.0, "bf16": 20.0})
    assert cpu.plan().train_bf16 is False


def test_explicit_settings_win_and_nonsense_is_refused():
    assert cpu.resolve_bf16(True, "cpu") is True
    assert cpu.resolve_bf16(False, "cpu") is False
    with pytest.raises(ValueError, match="'auto'"):
        cpu.resolve_bf16("sometimes", "cpu")


def test_the_real_cpu_is_read():
    info = cpu.read_cpu()
    assert info.cores >= 1 and info.model
    assert info.capability == torch.backends.cpu.get_cpu_capability()
    assert info.native_bf16 == bool({"avx512_bf16", "amx_bf16"} & info.flags)


def test_the_probe_is_cached_in_the_one_cache_folder_never_the_users_home_under_tests():
    # conftest points ENVNET_CACHE at a temporary folder; the datasets' waveform cache lives there too.
    assert cpu.CACHE_FILE.parent == data.CACHE_DIR == Path(os.environ["ENVNET_CACHE"])
    assert Path.home() / ".cache" not in cpu.CACHE_FILE.parents


def test_probe_times_both_precisions():
    probe = cpu.probe_bf16(batch=1, repeats=1)
    assert set(probe) == {"fp32", "bf16"} and all(v > 0 for v in probe.values())


def test_auto_is_the_default_and_the_trainer_follows_the_plan(monkeypatch, fresh_plan):
    assert TrainConfig().bf16 == "auto"
    monkeypatch.setattr(cpu, "read_cpu", lambda: AVX2_EPYC)
    events = []
    ds = memory_dataset(per_class=2)
    trainer = Trainer(ds, None, TrainConfig(epochs=1, batch_size=4, fc_width=16, filters_every=0),
                      callbacks=[events.append])
    assert trainer.bf16 is False
    trainer.run()
    assert events[0]["kind"] == "start" and events[0]["precision"] == "fp32"
    assert trainer.card("t")["recipe"]["precision"] == "fp32"


def test_warm_up_fills_the_caches_the_pages_read():
    """After warm_up, the first classification finds the fused model and the frequency response ready."""
    from envnet import fast, spectra

    torch.manual_seed(0)
    model = build_model(n_classes=3, fc_width=16).eval()
    cpu.warm_up(model)
    assert model in fast._cache
    assert model in spectra._fr_cache  # computed by warm_up, not by the first visitor
    fr = spectra.cached_frequency_response(model)
    assert fr.response.shape[0] == 40


def test_big_tensors_use_huge_pages_where_the_kernel_offers_them():
    """envnet turns PyTorch's 2 MB pages on by default; the plan says when they do not apply."""
    import envnet  # noqa: F401  (already imported: it set the variable before torch allocated anything)

    assert os.environ.get("THP_MEM_ALLOC_ENABLE") is not None
    assert cpu.memory_pages("1", "madvise").startswith("2 MB pages")
    assert cpu.memory_pages("1", "always").startswith("2 MB pages")
    assert cpu.memory_pages("0", "madvise") == "4 KB pages: THP_MEM_ALLOC_ENABLE is off"
    assert cpu.memory_pages(None, "always") == "4 KB pages: THP_MEM_ALLOC_ENABLE is off"
    assert "no transparent huge pages (never)" in cpu.memory_pages("1", "never")
    assert "not Linux" in cpu.memory_pages("1", None)
    assert "memory" in cpu.plan().reasons

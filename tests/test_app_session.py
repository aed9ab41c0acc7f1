"""The app's non-Streamlit helpers: one training per server, background runs that always release the
server, datasets from a user's own clips, safe checkpoint names and the demo sounds."""

from __future__ import annotations

import time

import pytest
import torch

from envnet import examples
from envnet.checkpoint import CHECKPOINT_DIR
from envnet.model import SAMPLE_RATE, build_model
from envnet.recordings import to_dataset
from envnet.session import (
    TrainingJob,
    TrainingSlot,
    cached_frequency_response,
    checkpoint_stem,
    find_run,
    safe_name,
    tiny_config,
)


def tone_clips(freq: float, n: int = 3, seconds: float = 1.0) -> list[torch.Tensor]:
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return [(0.3 + 0.1 * i) * torch.sin(2 * torch.pi * freq * (1 + 0.02 * i) * t) for i in range(n)]


def test_slot_admits_one_owner_at_a_time():
    slot = TrainingSlot()
    assert slot.acquire("a") and not slot.acquire("b")
    assert slot.owner == "a"
    slot.release("b")  # not the owner: nothing happens
    assert slot.owner == "a"
    slot.release("a")
    assert slot.owner is None and slot.acquire("b")


def test_own_dataset_assigns_every_class_to_folds_and_skips_empty_classes():
    ds = to_dataset({"low": tone_clips(200, 6), "high": tone_clips(3000, 5), "empty": []})
    assert ds.classes == ["low", "high"]
    assert len(ds) == 11 and len(ds.waves) == 11
    held = ds.select(folds=[1])
    assert sorted(c.label for c in held.clips) == [0, 0, 1]  # round-robin: examples 0 and 5 of "low"
    with pytest.raises(ValueError, match="two classes"):
        to_dataset({"only": tone_clips(200)})


@pytest.mark.parametrize("name", ["../../etc/passwd", "/tmp/x", "..", "a/b\\c", "  ", ".hidden"])
def test_checkpoint_names_never_escape_the_folder(name):
    stem = checkpoint_stem(name)
    assert stem.parent == CHECKPOINT_DIR.resolve()
    assert not stem.name.startswith(".") and "/" not in stem.name


def test_safe_name_keeps_readable_names():
    assert safe_name("my clap model") == "my-clap-model"
    assert safe_name("ünïcode!!") == "n-code"
    assert safe_name("") == "model"


@pytest.mark.slow  # two tiny trainings with three filter measurements
def test_training_job_runs_releases_the_slot_and_reports_events(tmp_path):
    slot = TrainingSlot()
    ds = to_dataset({"low": tone_clips(200), "high": tone_clips(3000)})
    # No page polls here, so the abandoned-run timeout must not fire on a slow machine.
    job = TrainingJob(ds, None, tiny_config(epochs=2), "unit test", slot=slot, out_dir=tmp_path, heartbeat_timeout=3600)
    other = TrainingJob(ds, None, tiny_config(epochs=1, filters_every=0), "other", slot=slot, out_dir=tmp_path / "o")
    assert job.start()
    assert not other.start()  # busy: the second run is refused, not queued
    job.join(600)
    s = job.snapshot()
    assert s.status == "done" and slot.owner is None
    spent = job.elapsed
    time.sleep(0.05)
    assert 0 < spent == job.elapsed and job.eta() is None  # the clock stops when the run does
    assert [h["epoch"] for h in s.history] == [1, 2]
    assert [e for e, _ in s.snapshots] == [0, 1, 2]  # the initial filters, then one snapshot per epoch
    assert s.latest is not None and s.latest.response.shape[0] == 40
    assert s.fraction == 1.0 and len(s.batch_losses) == 2
    assert job.result is not None and job.result.classes == ["low", "high"]
    assert (tmp_path / "unit-test.safetensors").is_file()  # saved to disk too: not lost with the browser
    # The finished run stays findable by its token, holding its model but no momentum or training data.
    assert find_run(job.token) is job
    assert not job.trainer.opt.state and job.trainer.train_ds is None
    assert other.start()  # the slot is free again
    other.join(120)


def test_a_failing_run_reports_the_error_and_frees_the_server(tmp_path):
    slot = TrainingSlot()
    ds = to_dataset({"low": tone_clips(200), "high": tone_clips(3000)})
    ds.waves = [torch.zeros(0) for _ in ds.waves]  # nothing usable: Trainer.run raises
    job = TrainingJob(ds, None, tiny_config(), "broken", slot=slot, out_dir=tmp_path)
    assert job.start()
    job.join(60)
    s = job.snapshot()
    assert s.status == "failed" and "no usable training clips" in s.error
    assert slot.owner is None


def test_an_abandoned_run_stops_itself_and_keeps_its_model(tmp_path):
    slot = TrainingSlot()
    ds = to_dataset({"low": tone_clips(200), "high": tone_clips(3000)})
    job = TrainingJob(ds, None, tiny_config(epochs=500, filters_every=0), "abandoned", slot=slot, out_dir=tmp_path,
                      heartbeat_timeout=0.5)
    time.sleep(0.6)  # nobody polls: the page is gone
    assert job.start()
    job.join(120)
    s = job.snapshot()
    assert s.status == "stopped" and "nobody was watching" in s.message
    assert len(s.history) < 500 and slot.owner is None
    assert job.result is not None


def test_frequency_response_is_measured_once_per_model_object(monkeypatch):
    import gc
    import weakref

    from envnet import session

    calls = []
    monkeypatch.setattr(session, "frequency_response", lambda m: calls.append(m) or object())
    m1, m2 = build_model(n_classes=2, fc_width=64), build_model(n_classes=2, fc_width=64)
    a = cached_frequency_response(m1)
    assert cached_frequency_response(m1) is a and len(calls) == 1
    assert cached_frequency_response(m2) is not a and len(calls) == 2
    calls.clear()
    gone = weakref.ref(m2)
    del m2
    gc.collect()
    # A dropped model does not stay alive in the cache (counting entries would also count other tests'
    # models, which their AppTest sessions release at their own pace).
    assert gone() is None and m1 in session._fr_cache


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


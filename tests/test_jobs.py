"""One training per server, and background runs that report their events, always release the server,
stop themselves when abandoned and stay findable by token."""

from __future__ import annotations

import time

import pytest
import torch
from tonedata import tiny_config, tone_clips

from envnet.jobs import StreamCap, TrainingJob, TrainingSlot, find_run
from envnet.recordings import to_dataset


def test_slot_admits_one_owner_at_a_time():
    slot = TrainingSlot()
    assert slot.acquire("a") and not slot.acquire("b")
    assert slot.owner == "a"
    slot.release("b")  # not the owner: nothing happens
    assert slot.owner == "a"
    slot.release("a")
    assert slot.owner is None and slot.acquire("b")


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


# ---- live microphone streams (pages/live.py) ----


def test_stream_cap_refuses_over_the_limit_and_takes_back_stale_leases() -> None:
    cap = StreamCap(2, stale_after=0.2)
    assert cap.acquire("a") and cap.acquire("b")
    assert cap.acquire("a")  # renewing is not a second stream
    assert not cap.acquire("c") and cap.full_for("c") and not cap.full_for("a")
    cap.release("a")
    assert cap.acquire("c") and cap.active() == 2
    time.sleep(0.3)  # b and c stop renewing: a closed tab
    assert cap.active() == 0 and cap.acquire("d")


def test_training_queue_keeps_places_and_gives_the_slot_to_the_first_in_line():
    slot = TrainingSlot(queue_timeout=60)
    assert slot.acquire("job-a", "alice")
    assert slot.join("bob") == 1 and slot.join("carol") == 2 and slot.join("bob") == 1  # joining twice: one place
    slot.release("job-a")
    assert not slot.acquire("job-c", "carol")  # free, but bob is first in line
    assert not slot.acquire("job-x")  # nor someone who never queued
    assert slot.acquire("job-b", "bob") and slot.position("bob") is None
    assert slot.position("carol") == 1 and slot.waiting == 1
    slot.leave("carol")
    assert slot.waiting == 0
    slot.release("job-b")
    assert slot.acquire("job-d", "dave")  # nobody waiting: anyone may start


def test_a_queued_visitor_who_went_away_loses_the_place():
    slot = TrainingSlot(queue_timeout=0.2)
    slot.join("gone")
    time.sleep(0.3)
    assert slot.waiting == 0 and slot.acquire("job", "someone")


def test_the_first_in_line_who_does_not_start_passes_the_turn_on():
    slot = TrainingSlot(queue_timeout=60, turn_timeout=0.2)
    assert slot.acquire("job-a")
    slot.join("bob")
    slot.join("carol")
    assert slot.turn_left("bob") is None  # the slot is taken: nobody's turn yet
    slot.release("job-a")
    assert 0 < slot.turn_left("bob") <= 0.2 and slot.turn_left("carol") is None
    time.sleep(0.3)  # bob's page is open but nobody presses Start
    assert slot.position("bob") is None and slot.position("carol") == 1
    assert slot.turn_left("carol") > 0.1  # carol's turn starts when bob's ends, with the full time
    assert not slot.acquire("job-b", "bob") and slot.acquire("job-c", "carol")
    assert slot.waiting == 0 and slot.turn_left("carol") is None

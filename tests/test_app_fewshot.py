"""The Train page's few-shot recipe through AppTest: a recording session split into examples, a background
class, Train in seconds with held-out scores, and many visitors training at the same time."""

from __future__ import annotations

import io
import threading

import numpy as np
import soundfile as sf
from apptools import APP, TIMEOUT, titles
from streamlit.testing.v1 import AppTest
from test_segment import click_times, clicks_recording

from envnet import recordings
from envnet.audio import load_audio
from envnet.jobs import SLOT

SR = 16_000


def wav_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), SR, format="WAV")
    return buf.getvalue()


def tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.5 * np.sin(2 * np.pi * freq * t)


def own_examples() -> recordings.OwnClasses:
    own = recordings.OwnClasses()
    rng = np.random.default_rng(0)
    for i in range(4):
        own.add("hum", f"hum{i}", load_audio(wav_bytes(tone(150 * (1 + 0.1 * i)))))
        own.add("whistle", f"whistle{i}", load_audio(wav_bytes(tone(2500 * (1 + 0.05 * i)))))
        hiss = rng.standard_normal(SR) * 0.3
        own.add("hiss", f"hiss{i}", load_audio(wav_bytes(hiss)))
    return own


def open_train(own: recordings.OwnClasses | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if own is not None:
        at.session_state["own_classes"] = own
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_recording_session_is_split_into_playable_removable_examples():
    at = open_train()
    at.text_input(key="own_new_class").set_value("knock")
    at.button(key="own_add_class").click().run()
    times = click_times(8, seed=5)
    session = clicks_recording(times, seconds=9.0, seed=5).numpy()
    rec = next(w for w in at.audio_input if w.label.startswith("Record a session of “knock”"))
    rec.set_value(("session.wav", wav_bytes(session), "audio/wav")).run()
    assert not at.exception and not at.error
    assert any(f"split into {len(times)} examples" in s.value for s in at.success)
    assert any(c.value.startswith(f"knock: {len(times)} examples") for c in at.caption)
    assert len(at.get("audio")) >= len(times)  # one player per example
    remove = [b for b in at.button if b.label == "Remove" and b.key.startswith("own_rm_clip_")]
    remove[0].click().run()
    assert any(c.value.startswith(f"knock: {len(times) - 1} examples") for c in at.caption)
    # The background class is offered; its recording (no events) is cut into window-sized pieces.
    at.button(key="own_add_background").click().run()
    room = next(w for w in at.audio_input if w.label.startswith("Record 10 s of the room"))
    noise = 0.01 * np.random.default_rng(1).standard_normal(10 * SR)
    room.set_value(("room.wav", wav_bytes(noise), "audio/wav")).run()
    assert not at.exception and not at.error
    assert any(c.value.startswith("background: 7 examples") for c in at.caption)  # 10 s in 1.5 s pieces


def test_train_gives_a_model_in_seconds_with_held_out_scores():
    at = open_train(own_examples())
    assert "Start training" not in [b.label for b in at.button]  # the whole network is under Advanced
    at.text_input(key="fs_name").set_value("my-three")
    at.button(key="fs_train").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("“my-three” is trained" in s.value for s in at.success)
    assert any("right** on 12 held-out examples" in m.value for m in at.markdown)
    assert any(t.startswith("Held-out examples") for t in titles(at))  # the confusion matrix
    assert "my-three (trained here)" in at.selectbox(key="model_key").options
    assert at.selectbox(key="model_key").value.startswith("session:trained-fewshot")


def test_near_chance_is_said_plainly(monkeypatch):
    from envnet import fewshot

    own = recordings.OwnClasses()
    rng = np.random.default_rng(3)
    for cls in ("a", "b"):
        for i in range(3):
            own.add(cls, f"{cls}{i}", load_audio(wav_bytes(0.3 * rng.standard_normal(SR))))  # the same noise
    monkeypatch.setattr(fewshot.FewShotResult, "near_chance", property(lambda self: True))
    at = open_train(own)
    at.button(key="fs_train").click().run()
    assert not at.exception
    assert any("close to guessing" in w.value for w in at.warning)


def test_few_shot_needs_no_slot_and_each_model_stays_with_its_visitor():
    """A whole class at once: another visitor's whole-network training holds the server's one slot, yet
    few-shot trainings go ahead, and each visitor sees only their own model."""
    assert SLOT.acquire("a whole-network training")
    try:
        visitors = [open_train(own_examples()) for _ in range(2)]
        for i, at in enumerate(visitors):
            assert not at.button(key="fs_train").disabled
            at.text_input(key="fs_name").set_value(f"visitor-{i}")
            at.button(key="fs_train").click().run()
            assert not at.exception and not at.error
    finally:
        SLOT.release("a whole-network training")
    for i, at in enumerate(visitors):
        options = at.selectbox(key="model_key").options
        assert f"visitor-{i} (trained here)" in options
        assert not any(o.startswith(f"visitor-{1 - i} ") for o in options)


def test_many_few_shot_trainings_run_at_once_within_the_bound(monkeypatch):
    """The page's call, from many sessions' threads at once: all finish; at most FEW_SHOT_SLOTS run together."""
    from envnet import fewshot, limits

    running, peak, lock = [0], [0], threading.Lock()
    real = fewshot.train_few_shot

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    own = own_examples()
    examples = {n: [e.wave for e in c.examples] for n, c in own.classes.items()}
    results, errors = [], []

    def visitor(i: int) -> None:
        try:
            keys = {n: [f"{i}-{e.id}" for e in c.examples] for n, c in own.classes.items()}  # private caches
            with limits.few_shot_slot():
                results.append(counted(examples, keys=keys))
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors and len(results) == 6
    assert 1 <= peak[0] <= limits.FEW_SHOT_SLOTS
    assert all(r.accuracy >= 0.9 for r in results)

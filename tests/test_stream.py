"""Live streaming (envnet/stream.py): frames from a microphone in, the same learned and mel columns and the
same prediction out as the batch path gives for the same samples, at a cost per hop that does not grow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, tiny_model
from torch.nn import functional as F

from envnet import stream as st_
from envnet.audio import resample
from envnet.model import N_FRAMES, POOL, SAMPLE_RATE, WINDOW
from envnet.predict import predict
from envnet.spectra import MEL_PAD, learned_spectrogram, mel_frames, mel_spectrogram
from envnet.stream import (
    LiveStream,
    Ring,
    SpectrogramStream,
    StreamResampler,
    mixdown,
    rtc_configuration,
)

TOL = 1e-5


def sound(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Noise plus a tone plus clicks: energy in every band and sharp onsets, like a room with a clap."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.2 * rng.uniform(-1, 1, t.size) + 0.3 * np.sin(2 * np.pi * 700 * t)
    x[:: sr // 4] += 0.5
    return np.clip(x, -1, 1).astype(np.float32)


def chunks(x: np.ndarray, seed: int = 1, lo: int = 1, hi: int = 2000):
    """Random-sized pieces, down to a single sample: hops must not depend on how audio is cut."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(x):
        n = int(rng.integers(lo, hi))
        yield x[i: i + n]
        i += n


@pytest.fixture(scope="module")
def model():
    return tiny_model()


# ---- pieces -------------------------------------------------------------------------------------


def test_mixdown_int16_interleaved_and_float_planar() -> None:
    left = np.array([1000, -2000, 32767], np.int16)
    right = np.array([3000, 2000, -32768], np.int16)
    packed = np.stack([left, right], 1).reshape(1, -1)  # PyAV's packed s16 stereo: (1, n × channels)
    np.testing.assert_allclose(mixdown(packed, 2), (left.astype(np.float32) + right) / 2 / 32768)
    planar = np.stack([left, right]).astype(np.float32) / 32768
    np.testing.assert_allclose(mixdown(planar, 2, planar=True), (left.astype(np.float32) + right) / 2 / 32768)
    assert mixdown(np.array([[0.25, -0.5]], np.float32), 1).tolist() == [0.25, -0.5]


def test_ring_keeps_the_newest_items_in_order() -> None:
    r = Ring(5, rows=2)
    r.extend(np.arange(6).reshape(2, 3))
    r.extend(np.arange(100, 108).reshape(2, 4))
    assert len(r) == 5 and r.total == 7
    assert r.last(5)[0].tolist() == [2, 100, 101, 102, 103]
    assert r.last(2)[1].tolist() == [106, 107]
    r.extend(np.zeros((2, 0)))
    assert r.total == 7
    r.clear(at=40)
    assert len(r) == 0 and r.last(3).shape == (2, 0) and r.total == 40


@pytest.mark.parametrize("sr", [48_000, 44_100, 16_000])
def test_stream_resampler_equals_the_batch_resampler(sr: int) -> None:
    x = sound(2.0, sr)
    rs = StreamResampler(sr)
    out = np.concatenate([rs(c) for c in chunks(x)])
    batch = resample(torch.from_numpy(x), sr).numpy()
    # Only the newest block (1 output sample at 48 kHz, 160 at 44.1 kHz) and the kernel's reach are pending.
    assert len(batch) - 200 <= len(out) <= len(batch)
    np.testing.assert_allclose(out, batch[: len(out)], atol=1e-6)


# ---- the front end ------------------------------------------------------------------------------


def test_learned_and_mel_columns_equal_the_batch_path(model) -> None:
    x = sound(3.3, SAMPLE_RATE)
    spec = SpectrogramStream(model)
    parts = [spec.push(c) for c in chunks(x, hi=700)]
    learned = np.concatenate([p[0] for p in parts], 1)
    mel = np.concatenate([p[1] for p in parts], 1)
    assert learned.shape == mel.shape == (40, spec.frames)
    assert spec.frames == (len(x) - 287) // POOL + 1  # every column whose samples have all arrived
    wave = torch.from_numpy(x)
    # The whole stream as one clip, batch: mel_spectrogram's framing (113 zeros in front), every column.
    whole = mel_frames(F.pad(wave, (MEL_PAD, MEL_PAD))).numpy()
    np.testing.assert_allclose(mel, whole[:, : spec.frames], atol=TOL)
    # Every 1.5 s window of the stream, batch, as Classify computes it.
    for k in (0, 1, 17, 40, spec.frames - N_FRAMES):
        win = wave[POOL * k: POOL * k + WINDOW]
        np.testing.assert_allclose(learned[:, k: k + N_FRAMES], learned_spectrogram(model, win).numpy(),
                                   atol=TOL, rtol=TOL)
        # A window cut from a longer recording pads its two edge mel frames with zeros; all others match.
        lo = 0 if k == 0 else 1
        np.testing.assert_allclose(mel[:, k + lo: k + N_FRAMES - 1], mel_spectrogram(win).numpy()[:, lo:-1],
                                   atol=TOL)


def test_each_hop_computes_only_its_new_columns(model, monkeypatch) -> None:
    """The work per hop is its new samples plus a fixed context, however long the stream has run."""
    seen: list[int] = []
    real = st_.learned_spectrogram

    def spy(m, wave):
        seen.append(wave.numel())
        return real(m, wave)

    monkeypatch.setattr(st_, "learned_spectrogram", spy)
    spec = SpectrogramStream(model)
    hop = 4000  # 0.25 s
    for c in chunks(sound(20.0, SAMPLE_RATE), lo=hop, hi=hop + 1):
        spec.push(c)
    assert len(seen) == 80
    assert max(seen) <= hop + POOL + 14  # 25 new columns (+1 at a boundary) and the 14-sample context
    assert sum(seen) <= spec.frames * POOL + 14 * len(seen)  # no sample is convolved twice
    assert len(spec._tail) < hop + 400  # the carried samples stay bounded too


# ---- a live stream, end to end ------------------------------------------------------------------


def webrtc_frames(x48: np.ndarray, n: int = 960):
    """What aiortc hands over: 20 ms of packed int16 stereo at 48 kHz, (1, 2 × 960) per frame."""
    pcm = np.round(np.clip(x48, -1, 32767 / 32768) * 32768).astype(np.int16)
    for i in range(0, len(pcm), n):
        f = pcm[i: i + n]
        yield np.stack([f, f], 1).reshape(1, -1)


def test_live_stream_matches_predict_on_the_same_samples(model) -> None:
    x48 = sound(2.6, 48_000, seed=3)
    live = LiveStream(model, TINY_CLASSES)
    views = []
    for i, frame in enumerate(webrtc_frames(x48)):
        live.push_frame(frame, 48_000, channels=2)
        if i % 12 == 11:  # the page updates about four times a second
            views.append(live.update())
    view = live.update()
    assert views[0].prediction is None  # under 1.5 s: nothing to classify yet
    mono = np.round(np.clip(x48, -1, 32767 / 32768) * 32768).astype(np.int16).astype(np.float32) / 32768
    wave16 = resample(torch.from_numpy(mono), 48_000)
    got = int(round(view.seconds * SAMPLE_RATE))
    np.testing.assert_allclose(live.wave.last(got), wave16[:got].numpy(), atol=1e-6)
    pred = view.prediction
    start = pred.starts[0]
    assert start == POOL * (view.first_frame + view.learned.shape[1] - N_FRAMES)
    window = wave16[start: start + WINDOW]
    assert window.numel() == WINDOW
    batch = predict(model, window, TINY_CLASSES, n_crops=1)
    np.testing.assert_allclose(pred.probs.numpy(), batch.probs.numpy(), atol=TOL)
    assert pred.label == batch.label
    np.testing.assert_allclose(view.learned[:, -N_FRAMES:], learned_spectrogram(model, window).numpy(),
                               atol=TOL, rtol=TOL)
    # Capture takes the newest 1.5 s, which Classify then analyses as one window.
    cap = live.capture()
    assert cap.numel() == WINDOW
    np.testing.assert_allclose(cap.numpy(), wave16[got - WINDOW: got].numpy(), atol=1e-6)
    assert -40 < view.level_db < 0 and view.arrived > 0


def test_history_is_bounded_and_scrolls(model) -> None:
    live = LiveStream(model, TINY_CLASSES, history_seconds=2.0)
    x = sound(7.0, SAMPLE_RATE)
    for c in chunks(x, lo=4000, hi=4001):
        live.push(c, SAMPLE_RATE)
        view = live.update()
    assert view.learned.shape == view.mel.shape == (40, 200)
    assert view.first_frame == live._spec.frames - 200
    assert live.wave._buf.size == 200 * POOL + WINDOW  # fixed memory, whatever the stream's length


def test_columns_that_heard_only_silence_are_flagged_for_the_page(model) -> None:
    # A microphone gone quiet: the learned columns there are the layers' biases alone, which the page's map,
    # scaled to its loudest cell, drew bright. The view flags them (the page draws them as zeros, as Classify
    # draws a silent window); the columns themselves still equal the batch path's.
    x = np.concatenate([sound(1.0, SAMPLE_RATE), np.zeros(2 * SAMPLE_RATE, np.float32), sound(1.0, SAMPLE_RATE, seed=2)])
    live = LiveStream(model, TINY_CLASSES)
    for c in chunks(x, lo=500, hi=3000):
        live.push(c, SAMPLE_RATE)
        view = live.update()
    n = view.learned.shape[1]
    expect = [np.abs(x[POOL * g: POOL * g + POOL + 14]).max() < 1e-4 for g in range(view.first_frame, view.first_frame + n)]
    np.testing.assert_array_equal(view.silent, expect)
    assert 180 < view.silent.sum() < 200  # the 2 s gap is 200 columns, less the two edges' context
    assert not view.silent[:90].any() and not view.silent[-90:].any()
    s = POOL * view.first_frame
    batch = learned_spectrogram(model, torch.from_numpy(x[s: s + POOL * n + 14])).numpy()
    np.testing.assert_allclose(view.learned, batch, atol=TOL, rtol=TOL)


def test_a_silent_microphone_is_heard_as_silence_not_as_a_class() -> None:
    # The shipped model maps digital silence to its biases (0.24-0.76 everywhere), not to zeros, and Live
    # called a muted microphone "sneezing (58%)". The verdict now comes from the window's samples.
    model = tiny_model(seed=2)
    with torch.no_grad():
        model.conv2[1].bias.fill_(0.5)
    model.eval()
    live = LiveStream(model, TINY_CLASSES)
    live.push(np.zeros(2 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    view = live.update()
    assert view.learned[:, -N_FRAMES:].min() > 0.4  # the biases: nothing in the map says "silence"
    assert view.prediction.verdict.kind == "silence"
    live.push(sound(0.2, SAMPLE_RATE), SAMPLE_RATE)  # a sound within the last 1.5 s: classified again
    assert live.update().prediction.verdict.kind in ("class", "unsure")


def test_switching_model_recomputes_the_learned_history(model) -> None:
    other = tiny_model(seed=5)
    live = LiveStream(model, TINY_CLASSES, history_seconds=2.0)
    x = sound(3.0, SAMPLE_RATE)
    live.push(x, SAMPLE_RATE)
    before = live.update()
    live.set_model(other, TINY_CLASSES)
    after = live.update()
    assert after.first_frame == before.first_frame and after.learned.shape == before.learned.shape
    s = POOL * after.first_frame
    expect = learned_spectrogram(other, torch.from_numpy(x[s: s + POOL * after.learned.shape[1] + 14])).numpy()
    np.testing.assert_allclose(after.learned, expect, atol=TOL, rtol=TOL)
    assert not np.allclose(after.learned, before.learned)
    np.testing.assert_allclose(after.mel, before.mel)  # the mel map does not depend on the model
    with pytest.raises(ValueError, match="class names"):
        live.set_model(other, ["a", "b"])


def test_a_stalled_page_drops_old_audio_instead_of_growing(model) -> None:
    live = LiveStream(model, TINY_CLASSES, max_pending_seconds=1.0)
    for c in chunks(sound(4.0, 48_000), lo=960, hi=961):
        live.push(c, 48_000)
    view = live.update()
    assert 2.9 <= view.dropped_seconds <= 3.1
    assert 0.9 <= view.seconds <= 1.01  # a fresh recording from the audio that was kept


# ---- deployment ---------------------------------------------------------------


def test_ice_servers_come_from_the_environment() -> None:
    assert rtc_configuration({}) == {"iceServers": []}
    turn = [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]
    assert rtc_configuration({"ENVNET_ICE_SERVERS": __import__("json").dumps(turn)}) == {"iceServers": turn}
    assert rtc_configuration({"ENVNET_ICE_SERVERS": '{"iceServers": [{"urls": "stun:s.org:3478"}]}'}) == {
        "iceServers": [{"urls": "stun:s.org:3478"}]}
    assert rtc_configuration({"ENVNET_ICE_SERVERS": "auto"}) is None
    with pytest.raises(ValueError, match="not valid JSON"):
        rtc_configuration({"ENVNET_ICE_SERVERS": "[{urls: stun}"})
    with pytest.raises(ValueError, match="urls"):
        rtc_configuration({"ENVNET_ICE_SERVERS": '[{"url": "stun:x"}]'})

"""Prediction: per-window softmax, averaged over windows; top-k; odd but valid clips give valid answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, encode, sine, square, tiny_model

from envnet.audio import EmptyAudioError, load_audio
from envnet.model import SAMPLE_RATE, WINDOW, build_model
from envnet.predict import Prediction, predict, window_probabilities


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_clip_probabilities_are_the_mean_of_window_softmaxes(model) -> None:
    wave = torch.from_numpy(sine(500, 4.0)) + 0.05 * torch.randn(4 * SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
    pred = predict(model, wave, TINY_CLASSES)
    assert pred.window_probs.shape == (10, 3)
    torch.testing.assert_close(pred.window_probs.sum(1), torch.ones(10))
    torch.testing.assert_close(pred.probs, pred.window_probs.mean(0))
    # …and each row really is the softmax of the model's logits for that window.
    s = pred.starts[3]
    with torch.no_grad():
        logits = model(wave[s : s + WINDOW].unsqueeze(0))
    torch.testing.assert_close(pred.window_probs[3], torch.softmax(logits, -1)[0])


def test_sparse_clicks_are_a_sound_in_every_window_not_silence(model) -> None:
    # 1 ms clicks every 0.25 s: under 10 % of a window's 10 ms frames are loud, and the timeline called every
    # window silent while the clip's verdict named a class. Only loud frames at a stretch's edge (the next
    # sound's) leave it silent.
    clicks = torch.zeros(3 * SAMPLE_RATE)
    for t in range(0, clicks.numel(), SAMPLE_RATE // 4):
        clicks[t + 50: t + 66] = 0.9
    pred = predict(model, clicks, TINY_CLASSES, hop=SAMPLE_RATE // 2)
    assert pred.verdict.kind != "silence"
    assert [v.kind for v in pred.window_verdicts] == [pred.verdict.kind] * len(pred.starts)
    # Three seconds of silence between two sounds: the windows in the middle stay silence.
    tone = torch.from_numpy(sine(500, 1.0))
    gap = torch.cat([tone, torch.zeros(3 * SAMPLE_RATE), tone])
    kinds = [v.kind for v in predict(model, gap, TINY_CLASSES, hop=SAMPLE_RATE // 2).window_verdicts]
    assert "silence" in kinds and kinds[0] != "silence" and kinds[-1] != "silence"


def test_top_k_is_sorted_and_clamped(model) -> None:
    pred = Prediction(["a", "b", "c"], torch.tensor([0.2, 0.5, 0.3]), torch.tensor([[0.2, 0.5, 0.3]]), [0])
    assert pred.top(2) == [("b", 0.5), ("c", pytest.approx(0.3))]
    assert [c for c, _ in pred.top(10)] == ["b", "c", "a"]  # more than there are classes: all of them
    assert len(pred.top(0)) == 1
    assert pred.label == "b"


def test_sliding_mode_gives_a_timeline(model) -> None:
    wave = torch.from_numpy(sine(500, 3.0))
    pred = predict(model, wave, TINY_CLASSES, hop=SAMPLE_RATE // 4)
    assert pred.starts[0] == 0 and pred.starts[-1] == wave.numel() - WINDOW
    assert pred.window_probs.shape == (len(pred.starts), 3)
    assert pred.starts[1] / SAMPLE_RATE == pytest.approx(0.25)


def test_short_clip_start_is_negative_padding(model) -> None:
    pred = predict(model, torch.from_numpy(sine(500, 0.5)), TINY_CLASSES)
    assert pred.starts == [-(WINDOW - 8000) // 2]


def test_class_count_must_match(model) -> None:
    with pytest.raises(ValueError, match="2 class names for a model with 3 outputs"):
        predict(model, torch.zeros(100), ["a", "b"])


def test_window_probabilities_batches_without_changing_results(model) -> None:
    x = torch.randn(5, WINDOW, generator=torch.Generator().manual_seed(1))
    together = window_probabilities(model, x)
    alone = torch.cat([window_probabilities(model, x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone)


def _valid(pred: Prediction, other: bool = False) -> None:
    assert torch.isfinite(pred.probs).all() and torch.isfinite(pred.window_probs).all()
    if other:  # the rest is the "none of these" output's
        assert 0 <= float(pred.probs.sum()) <= 1 + 1e-5
    else:
        assert float(pred.probs.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(pred.probs.min()) >= 0


@pytest.mark.parametrize(
    "name, samples, sr",
    [
        ("all zero", np.zeros(16_000, np.float32), 16_000),
        ("10 ms", sine(440, 0.01), 16_000),
        ("full-scale square", square(200, 2.0, 44_100), 44_100),
        ("DC offset", np.full(24_000, 0.7, np.float32) + 0.01 * sine(440, 1.5), 16_000),
        ("5 ms", sine(440, 0.005), 16_000),
    ],
)
def test_odd_clips_give_valid_predictions(model, name: str, samples: np.ndarray, sr: int) -> None:
    wave = load_audio(encode(samples, sr, subtype="PCM_16"))
    assert torch.isfinite(wave).all() and float(wave.abs().max()) <= 1.0
    _valid(predict(model, wave, TINY_CLASSES))


def test_a_clip_too_short_to_be_a_sound_is_refused_with_its_length() -> None:
    # A 1-sample file was "0.00 s" on Classify and got a class.
    with pytest.raises(EmptyAudioError, match=r"lasts 0.062 ms: too short to be a sound \(at least 5 ms\)"):
        load_audio(encode(np.array([0.5], np.float32), 16_000, subtype="PCM_16"))


def test_full_scale_square_stays_within_range_after_resampling() -> None:
    # Resampling a square wave overshoots (Gibbs); the loader scales the peak back to 1.
    wave = load_audio(encode(square(200, 1.0, 44_100), 44_100, subtype="FLOAT"))
    assert float(wave.abs().max()) == pytest.approx(1.0, abs=1e-6)


def test_shipped_model_is_deterministic() -> None:
    from envnet.checkpoint import default_checkpoint, load

    ckpt = load(default_checkpoint())
    wave = torch.from_numpy(sine(700, 2.0))
    a, b = predict(ckpt.model, wave, ckpt.classes), predict(ckpt.model, wave, ckpt.classes)
    assert torch.equal(a.window_probs, b.window_probs)
    _valid(a, other=ckpt.model.config.other)


def test_none_of_these_is_what_the_classes_leave():
    """A model with the "none of these" output: its probability is what the classes' probabilities leave
    (the pages show it beside the top classes); a model without it leaves nothing."""
    torch.manual_seed(0)
    wave = 0.3 * torch.randn(2 * SAMPLE_RATE)
    with_other = predict(build_model(n_classes=3, fc_width=64, other=True), wave, ["a", "b", "c"])
    assert 0 < with_other.none_of_these == pytest.approx(1 - float(with_other.probs.sum()))
    without = predict(build_model(n_classes=3, fc_width=64), wave, ["a", "b", "c"])
    assert without.none_of_these == pytest.approx(0.0, abs=1e-6)

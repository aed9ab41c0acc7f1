"""The verdict (a class, unsure, or silence), its calibration in the model card, and long recordings as
segments: with a few-shot model trained on generated sounds, and with the shipped model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tonedata import KINDS, made_sound

from envnet import checkpoint, examples, verdict
from envnet.audio import windows
from envnet.fewshot import train_few_shot
from envnet.model import SAMPLE_RATE, build_model, inference
from envnet.predict import SEGMENT_HOP, predict

SR = SAMPLE_RATE


@pytest.fixture(scope="module")
def few_shot():
    """Whistles, buzzes and knocks, 6 examples each: a model that knows exactly these three sounds."""
    rng = np.random.default_rng(0)
    return train_few_shot({k: [made_sound(k, rng) for _ in range(6)] for k in KINDS})


def test_a_model_trained_on_generated_sounds_names_them(few_shot):
    rng = np.random.default_rng(1)
    for kind in KINDS:
        for _ in range(2):
            v = predict(few_shot.model, made_sound(kind, rng), few_shot.classes).verdict
            assert (v.kind, v.label) == ("class", kind)
            assert v.text.startswith(f"{kind} (")


def test_it_is_unsure_of_sounds_it_never_learned_and_calls_silence_silence(few_shot):
    rule = few_shot.model.calibration
    assert rule.method == "max-probability" and 0.5 < rule.threshold < 1
    assert rule.figures["n_known"] == 18 and rule.figures["known_kept"] >= verdict.KEEP
    # No sweep: from 50 Hz to 7.5 kHz it glides through the whistles' 1.8-2.4 kHz, and "whistle" is a fair
    # answer for it (it is 87 % with the shipped trunk, against a threshold of 86 %).
    others = {"white noise": examples.noise(2.0), "pink noise": examples.noise(2.0, colour="pink"),
              "chord": examples.chord(), "tone 440 Hz": examples.tone(440.0, 2 * SR)}
    for name, wave in others.items():
        v = predict(few_shot.model, wave, few_shot.classes).verdict
        assert v.kind == "unsure", (name, v)
        assert v.text.startswith("This doesn't sound like any of the 3 sounds I know; closest: ")
    for silent in (torch.zeros(2 * SR), 1e-6 * torch.randn(2 * SR)):
        assert predict(few_shot.model, silent, few_shot.classes).verdict.kind == "silence"


def test_the_rule_travels_in_the_model_card(few_shot, tmp_path):
    checkpoint.save(tmp_path / "mine", few_shot.model, few_shot.card("mine"))
    loaded = checkpoint.load(tmp_path / "mine")
    assert loaded.card["verdict"]["threshold"] == pytest.approx(few_shot.model.calibration.threshold)
    assert loaded.model.calibration == few_shot.model.calibration
    # An invalid rule in an uploaded card means no unsure verdicts, not a crash.
    for bad in ({"method": "x", "threshold": 7}, {"threshold": "high"}, ["not", "a", "dict"], None):
        assert verdict.Calibration.from_card(bad) is None


def test_segments_of_a_recording_of_three_sounds(few_shot):
    rng = np.random.default_rng(2)
    parts = [("whistle", made_sound("whistle", rng, 3.0)), ("silence", torch.zeros(2 * SR)),
             ("buzz", made_sound("buzz", rng, 3.0)), ("knocks", made_sound("knocks", rng, 3.0))]
    clip = torch.cat([w for _, w in parts])
    pred = predict(few_shot.model, clip, few_shot.classes, hop=SEGMENT_HOP)
    segs = pred.segments()
    assert [s.verdict for s in segs] == [name for name, _ in parts]
    truth = np.cumsum([0] + [len(w) / SR for _, w in parts])
    for s, start, end in zip(segs, truth[:-1], truth[1:], strict=True):
        assert abs(s.start - start) <= 0.75 and abs(s.end - end) <= 0.75, (s, start, end)
    assert segs[0].start == 0 and segs[-1].end == pytest.approx(len(clip) / SR)
    assert all(a.end == b.start for a, b in zip(segs, segs[1:], strict=False))  # no gaps, no overlaps
    assert segs[1].p is None and all(s.p > 0.5 for s in segs if s.verdict != "silence")


def test_silent_ends_of_a_recording_are_silence_segments(few_shot):
    rng = np.random.default_rng(3)
    clip = torch.cat([torch.zeros(SR), made_sound("buzz", rng, 4.0), torch.zeros(3 * SR)])
    segs = predict(few_shot.model, clip, few_shot.classes, hop=SEGMENT_HOP).segments()
    assert [s.verdict for s in segs] == ["silence", "buzz", "silence"]
    assert segs[0].end == pytest.approx(1.0, abs=0.02) and segs[2].start == pytest.approx(5.0, abs=0.02)


def test_a_prediction_hands_back_the_windows_it_heard():
    model = build_model(n_classes=3, fc_width=16).eval()
    wave = torch.cat([torch.zeros(SR), 0.5 * torch.randn(4 * SR), torch.zeros(SR)])
    pred = predict(model, wave, ["a", "b", "c"], hop=SR // 2)
    batch, starts = windows(wave, hop=SR // 2)
    assert starts == pred.starts and starts[0] == SR  # the silent second is trimmed, times stay the clip's
    for i in (0, len(starts) - 1):
        assert torch.equal(pred.window(i), batch[i])
    with inference(model):
        again = torch.softmax(model(batch), -1)
    torch.testing.assert_close(pred.window_probs, again, rtol=1e-4, atol=1e-5)


def test_inference_restores_training_mode_even_after_an_error():
    model = build_model(n_classes=3, fc_width=16).train()
    with pytest.raises(RuntimeError), inference(model):
        assert not model.training and not torch.is_grad_enabled()
        raise RuntimeError("boom")
    assert model.training


def test_other_output_learns_where_unknown_sounds_go(tmp_path):
    """add_other_output: the classes' rows start from the model's own (same answers before fine-tuning), the
    new output learns to take the unknown sounds, and the model saves and loads with it."""
    from tonedata import memory_dataset

    torch.manual_seed(0)
    model = build_model(n_classes=3, fc_width=32, dropout=0.0).eval()  # untrained: random but fixed features
    ds = memory_dataset(per_class=4, seconds=1.6)
    names = ds.classes
    # Clicks, chords and sweeps: none of its classes (low tone, high tone, noise).
    unknown = [w for i, w in enumerate(verdict.unknown_sounds(18, seconds=1.6)) if i % 6 in (2, 3, 4)]
    known_f, unknown_f = verdict.pooled_windows(model, ds.waves), verdict.pooled_windows(model, unknown)
    untrained = verdict.add_other_output(model, known_f, ds.labels.tolist(), unknown_f, epochs=0)
    assert untrained.config.other and untrained.fc7.out_features == 4
    with inference(model), inference(untrained):
        x, _ = windows(ds.waves[0])
        torch.testing.assert_close(untrained(x)[:, :3], model(x))
    other = verdict.add_other_output(model, known_f, ds.labels.tolist(), unknown_f, epochs=40, lr=1e-2, other_weight=1.0)

    def left_for_classes(m, waves):
        return float(torch.stack([predict(m, w, names).probs.sum() for w in waves]).mean())

    assert left_for_classes(other, unknown) < left_for_classes(untrained, unknown) - 0.5
    assert left_for_classes(other, ds.waves) > 0.9 > 0.1 > left_for_classes(other, unknown)
    checkpoint.save(tmp_path / "o", other, checkpoint.make_card(other, names, "tiny-other"), half=False)
    again = checkpoint.load(tmp_path / "o").model
    torch.testing.assert_close(predict(again, unknown[0], names).probs, predict(other, unknown[0], names).probs)


def test_a_card_whose_weights_lack_the_other_output_is_refused(tmp_path):
    model = build_model(n_classes=3, fc_width=16)
    card = checkpoint.make_card(model, ["a", "b", "c"], "liar")
    card["architecture"]["other"] = True
    checkpoint.save(tmp_path / "liar", model, card, half=False)
    with pytest.raises(checkpoint.CheckpointError, match="3 classes and 'none of these'"):
        checkpoint.load(tmp_path / "liar")
    card["architecture"]["other"] = "yes"
    with pytest.raises(checkpoint.CheckpointError, match="other='yes'"):
        checkpoint.card_from_bytes(__import__("json").dumps(card))


def test_the_shipped_model_is_unsure_of_the_demo_sounds():
    """The issue's examples: the 3 kHz tone was crying_baby 94 %, the clicks crackling_fire 96 %, the chord
    helicopter 84 %, white noise rain 75 %, the 440 Hz tone helicopter 59 %. (Pink noise may well sound
    like rain.)"""
    ck = checkpoint.load(checkpoint.default_checkpoint())
    for name in ("Tone 440 Hz", "Tone 3 kHz", "Clicks (4 per second)", "White noise", "C major chord"):
        v = predict(ck.model, examples.DEMO_SOUNDS[name](), ck.classes).verdict
        assert v.kind == "unsure", (name, v)
    assert predict(ck.model, torch.zeros(2 * SR), ck.classes).verdict.kind == "silence"


def test_the_cut_off_is_said_rounded_down_and_a_closest_class_only_when_it_is_close():
    # 99.57 % said as "100%" would make a 99.7 % answer look below it.
    assert verdict.Calibration("max-probability", 0.9957, {}).cutoff == "99.5%"
    assert verdict.Calibration("max-probability", 0.5, {}).cutoff == "50%"
    classes = ["dog", "rain"]
    rule = verdict.Calibration("other-output", 0.6, {})
    assert "closest: dog (40%)" in verdict.judge(torch.tensor([0.4, 0.1]), classes, rule, silent=False).text
    far = verdict.judge(torch.tensor([0.001, 0.0005]), classes, rule, silent=False)
    assert far.kind == "unsure" and "closest" not in far.text and "none of them comes close" in far.text

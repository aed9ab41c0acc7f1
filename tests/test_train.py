"""The training loop: it learns, reports events, stops cleanly, resumes exactly, is reproducible."""

from __future__ import annotations

import json

import pytest
import torch
from tonedata import CLASSES, memory_dataset

from envnet import checkpoint, verdict
from envnet.evaluate import evaluate
from envnet.train import TrainConfig, Trainer

# Tiny runs: 6 clips, 2 batches of 3 per epoch, a narrow classifier, no filter snapshots unless asked.
TINY = dict(batch_size=3, fc_width=16, filters_every=0, eval_every=1000)


def tiny_trainer(out=None, epochs: int = 2, callbacks=(), **kw) -> Trainer:
    cfg = TrainConfig(epochs=epochs, **{**TINY, **kw})
    return Trainer(memory_dataset(per_class=2, seconds=0.5), None, cfg, out=out, callbacks=list(callbacks))


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Two epochs in one go, and what was saved."""
    out = tmp_path_factory.mktemp("straight") / "run"
    t = tiny_trainer(out)
    t.run()
    return t, out


@pytest.mark.slow
def test_short_run_on_tones_learns():
    """3 classes (low tone, high tone, noise), 8 clips each: loss falls and held-out clips are
    recognised far above chance (1/3)."""
    train = memory_dataset(per_class=8, seed=0)
    held_out = memory_dataset(per_class=3, seed=1)
    # dropout off and small batches: BatchNorm's running statistics need enough steps to settle; lr 0.005
    # because at 0.01 these 24 clips diverge in epoch 5 in fp32 (the default on CPUs without native bf16)
    cfg = TrainConfig(epochs=6, batch_size=4, fc_width=64, dropout=0.0, filters_every=0, seed=0, lr=0.005)
    losses = []
    trainer = Trainer(train, None, cfg, callbacks=[lambda e: losses.append(e["train_loss"]) if e["kind"] == "epoch" else None])
    model = trainer.run()
    assert len(losses) == 6
    assert losses[-1] < 0.5 * losses[0], losses
    assert trainer.history[-1]["train_acc"] >= 0.8
    result = evaluate(model, held_out, n_crops=3)
    assert result["accuracy"] >= 0.6, result["confusion"]


def test_events_in_order_with_their_keys(tmp_path, monkeypatch):
    import numpy as np

    from envnet import spectra, train

    # the real measurement with 8 tones instead of 96: the same event, a tenth of the time
    monkeypatch.setattr(train, "frequency_response", lambda m: spectra.frequency_response(m, np.geomspace(100, 4000, 8)))
    events = []
    t = tiny_trainer(tmp_path / "run", epochs=2, callbacks=[events.append], filters_every=2)
    t.val_ds = memory_dataset(per_class=1, seed=3, seconds=0.3)
    t.config.eval_every = 2
    t.run()
    kinds = [e["kind"] for e in events]
    assert kinds == ["start", "filters", "epoch_start", "batch", "batch", "epoch", "epoch_start", "batch", "batch",
                     "epoch", "filters", "checkpoint", "end"]
    start, end = events[0], events[-1]
    assert start["epochs"] == 2 and start["n_train"] == 6 and start["n_val"] == 3 and start["classes"] == CLASSES
    assert start["start_epoch"] == 0 and start["config"]["batch_size"] == 3
    assert (events[2]["epoch"], events[2]["n_batches"]) == (1, 2)  # epoch_start: the batch count before any batch
    batch = events[3]
    assert {"epoch", "batch", "n_batches", "loss", "lr", "elapsed"} <= batch.keys()
    assert (batch["epoch"], batch["batch"], batch["n_batches"]) == (1, 1, 2)
    first, second = events[5], events[9]
    assert {"epoch", "lr", "train_loss", "train_acc", "seconds", "epochs", "elapsed"} <= first.keys()
    assert "val_acc" not in first and {"val_acc", "val_loss"} <= second.keys()  # evaluated every 2nd epoch
    assert 0 <= second["val_acc"] <= 1
    filt = events[1]
    assert filt["response"].response.shape == (40, 8) and sorted(filt["response"].order.tolist()) == list(range(40))
    assert events[-2]["path"].endswith("run.safetensors") and events[-2]["epoch"] == 2
    assert end["stopped"] is False and end["epoch"] == 2 and len(end["history"]) == 2


def test_stop_ends_after_the_current_batch_and_keeps_the_last_state(tmp_path):
    events = []

    def stop_in_epoch_2(e):
        events.append(e)
        if e["kind"] == "batch" and e["epoch"] == 2 and e["batch"] == 1:
            t.stop()

    t = tiny_trainer(tmp_path / "run", epochs=4, callbacks=[stop_in_epoch_2])
    t.run()
    batches = [(e["epoch"], e["batch"]) for e in events if e["kind"] == "batch"]
    assert batches == [(1, 1), (1, 2), (2, 1)]
    assert events[-1]["kind"] == "end" and events[-1]["stopped"] is True and events[-1]["epoch"] == 1
    state = json.loads((tmp_path / "run.state.json").read_text())
    assert state["epoch"] == 1 and len(state["history"]) == 1  # the half epoch is not recorded
    ckpt = checkpoint.load(tmp_path / "run")
    assert ckpt.classes == CLASSES and ckpt.card["recipe"]["epochs_completed"] == 1


def test_stop_then_resume_equals_an_unbroken_run(tmp_path, straight):
    unbroken, _ = straight

    def stop_mid_epoch_2(e):
        if e["kind"] == "batch" and e["epoch"] == 2 and e["batch"] == 1:
            first.stop()

    first = tiny_trainer(tmp_path / "run", callbacks=[stop_mid_epoch_2])
    first.run()
    assert first.epoch == 1
    second = tiny_trainer(tmp_path / "run")
    assert second.resume() and second.epoch == 1
    second.run()
    assert second.epoch == 2 and [h["epoch"] for h in second.history] == [1, 2]
    assert [h["train_loss"] for h in second.history] == [h["train_loss"] for h in unbroken.history]
    assert_same(weights(second.model), weights(unbroken.model))
    for p_resumed, p_unbroken in zip(second.model.parameters(), unbroken.model.parameters(), strict=True):
        assert torch.equal(second.opt.state[p_resumed]["momentum_buffer"], unbroken.opt.state[p_unbroken]["momentum_buffer"])


def test_seed_fixes_the_initial_weights_and_the_run(straight):
    assert_same(weights(tiny_trainer().model), weights(tiny_trainer().model))
    other = weights(tiny_trainer(seed=1).model)
    assert not torch.equal(other["conv1.0.weight"], weights(tiny_trainer().model)["conv1.0.weight"])
    # the global random state of the caller is left alone
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_trainer()
    assert torch.equal(torch.rand(3), expected)


def test_resume_without_state_and_with_other_classes(tmp_path, straight):
    _, out = straight
    assert tiny_trainer(tmp_path / "nothing").resume() is False
    ds = memory_dataset(per_class=2, seconds=0.5)
    ds.classes = ["a", "b", "c"]
    with pytest.raises(checkpoint.CheckpointError, match="other classes"):
        Trainer(ds, None, TrainConfig(epochs=2, **TINY), out=out).resume()


def test_saved_checkpoint_and_card(straight):
    trainer, out = straight
    ckpt = checkpoint.load(out)
    assert ckpt.classes == CLASSES and ckpt.card["architecture"]["fc_width"] == 16
    assert ckpt.card["recipe"]["epochs_completed"] == 2 and ckpt.card["recipe"]["lr"] == 0.01
    assert ckpt.card["data"]["n_train"] == 6 and len(ckpt.card["history"]) == 2
    assert ckpt.card["metrics"]["train_loss"] == trainer.history[-1]["train_loss"]
    # float16 storage: the weights match the trained ones to half precision
    for k, v in trainer.model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(ckpt.model.state_dict()[k], v.float(), rtol=2e-3, atol=1e-4)


def test_lr_schedule():
    c = TrainConfig(epochs=100, lr=0.01)
    assert [c.lr_at(e) for e in (0, 49)] == [0.01, 0.01]
    assert c.lr_at(50) == pytest.approx(0.001) and c.lr_at(74) == pytest.approx(0.001)
    assert c.lr_at(75) == pytest.approx(0.0001) and c.lr_at(99) == pytest.approx(0.0001)
    w = TrainConfig(epochs=10, lr=0.1, warmup_epochs=3)
    assert [round(w.lr_at(e), 6) for e in range(4)] == [0.025, 0.05, 0.075, 0.1]
    assert w.lr_at(5) == pytest.approx(0.01)  # ceil(0.5 · 10) = 5: the first drop
    odd = TrainConfig(epochs=3, lr=1.0)
    assert [odd.lr_at(e) for e in range(3)] == pytest.approx([1.0, 1.0, 0.1])  # drops at ceil(1.5)=2 and ceil(2.25)=3


def test_init_features_copies_the_feature_block(straight):
    source, out = straight
    fresh = tiny_trainer(seed=5)
    tuned = tiny_trainer(seed=5, init_features=str(out))
    src = checkpoint.load(out).model.state_dict()
    for k, v in tuned.model.state_dict().items():
        if k.startswith(("conv1.", "conv2.")):
            assert torch.equal(v, src[k].to(v.dtype)), k
        else:
            assert torch.equal(v, fresh.model.state_dict()[k]), k  # the rest starts fresh
    assert not torch.equal(fresh.model.conv1[0].weight, tuned.model.conv1[0].weight)


def test_init_weights_starts_every_layer_from_a_checkpoint(straight):
    _, out = straight
    src = checkpoint.load(out).model.state_dict()
    cont = tiny_trainer(seed=7, init_weights=str(out))
    for k, v in cont.model.state_dict().items():
        assert torch.equal(v, src[k].to(v.dtype)), k


def test_init_weights_refuses_a_checkpoint_of_another_width(straight):
    _, out = straight
    with pytest.raises(checkpoint.CheckpointError, match="classifier width"):
        tiny_trainer(init_weights=str(out), fc_width=32)


def test_bc_training_runs_with_soft_labels():
    t = tiny_trainer(epochs=1, bc=True)
    t.run()
    row = t.history[-1]
    assert torch.isfinite(torch.tensor(row["train_loss"])) and row["train_loss"] > 0


def test_augmented_training_runs_and_draws_other_crops():
    plain, augmented = tiny_trainer(epochs=1, seed=4), tiny_trainer(epochs=1, seed=4, augment=True)
    plain.run()
    augmented.run()
    assert augmented.history[-1]["train_loss"] != plain.history[-1]["train_loss"]
    assert torch.isfinite(torch.tensor(augmented.history[-1]["train_loss"]))


def test_no_usable_clips_is_a_clear_error():
    ds = memory_dataset(per_class=1, seconds=0.1)
    ds.waves = [torch.zeros(0) for _ in ds.waves]
    with pytest.raises(ValueError, match="no usable training clips"):
        Trainer(ds, None, TrainConfig(epochs=1, **TINY)).run()


def test_the_batch_never_exceeds_the_clips():
    from envnet.train import clamp_batch, suggested_batch

    assert clamp_batch(32, 13) == 13 and clamp_batch(8, 100) == 8 and clamp_batch(0, 5) == 1
    assert suggested_batch(13) == 4  # about four updates per epoch, not one batch of 32 over 13 clips
    assert suggested_batch(3) == 3 and suggested_batch(1000) == 32
    assert all(suggested_batch(n) <= n for n in range(1, 200))


def test_the_verdict_rule_after_a_run_is_the_one_its_held_out_clips_give(monkeypatch):
    """The final validation pass's scores set the threshold without classifying the clips again, and give
    exactly the rule calibrating from scratch gives."""
    cfg = TrainConfig(epochs=1, **TINY)
    held_out = memory_dataset(per_class=2, seconds=0.5, seed=1)
    trainer = Trainer(memory_dataset(per_class=2, seconds=0.5), held_out, cfg)
    classified = []
    real_scores = verdict.scores
    monkeypatch.setattr(verdict, "scores", lambda m, waves, c: classified.append(len(waves)) or real_scores(m, waves, c))
    model = trainer.run()
    assert classified == [30]  # the generated unknown sounds only: the held-out clips' scores came from validation
    again = verdict.calibrate(model, trainer.train_ds.classes, [w for w in held_out.waves if w.numel()],
                              known_from="held-out clips")
    assert model.calibration == again

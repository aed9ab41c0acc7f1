"""10-crop evaluation (known answers from a model with fixed outputs), `evaluate --json` and `crossval`."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from tonedata import CLASSES, memory_dataset, write_class_folders, write_esc50

from envnet import checkpoint, cli
from envnet.audio import windows
from envnet.data import load_waves, read_esc50
from envnet.evaluate import clip_probabilities, evaluate
from envnet.model import EnvNetConfig, build_model
from envnet.predict import predict


class Constant(torch.nn.Module):
    """Always the same logits: predictions whose accuracy and confusion are known in advance."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float32))
        self.config = EnvNetConfig(n_classes=len(logits))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_evaluate_known_answer():
    ds = memory_dataset(per_class=2, seconds=0.2)  # labels 0,0,1,1,2,2
    result = evaluate(Constant([0.0, 3.0, 0.0]), ds, n_crops=2)
    assert result["accuracy"] == pytest.approx(1 / 3) and result["n_clips"] == 6
    assert result["per_class"] == {"low": 0.0, "high": 1.0, "noise": 0.0}
    assert result["confusion"] == [[0, 2, 0], [0, 2, 0], [0, 2, 0]]
    p_true = torch.softmax(torch.tensor([0.0, 3.0, 0.0]), 0)
    expected_loss = -(2 * torch.log(p_true[0]) + 2 * torch.log(p_true[1]) + 2 * torch.log(p_true[2])) / 6
    assert result["loss"] == pytest.approx(float(expected_loss), rel=1e-5)


def test_clip_probabilities_average_over_crops():
    model = build_model(n_classes=3, fc_width=16).eval()
    ds = memory_dataset(per_class=1, seconds=2.0)
    probs = clip_probabilities(model, ds.waves, n_crops=4)
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(1), torch.ones(3))
    with torch.inference_mode():
        manual = torch.softmax(model(windows(ds.waves[1], n_crops=4)[0]), -1).mean(0)
    torch.testing.assert_close(probs[1], manual, rtol=1e-4, atol=1e-5)


def test_evaluate_scores_exactly_what_predict_tells_a_user(tmp_path):
    """One path: evaluate's accuracy is the share of clips whose `predict` label is right, clip by clip,
    including clips with silent ends (trimmed by both) and clips shorter than a window."""
    model = build_model(n_classes=3, fc_width=16).eval()
    ds = memory_dataset(per_class=3, seconds=2.0)
    ds.waves[0] = torch.cat([torch.zeros(16_000), ds.waves[0], torch.zeros(8_000)])
    ds.waves[4] = ds.waves[4][:8_000]
    result = evaluate(model, ds)
    labels = [predict(model, w, ds.classes).label for w in ds.waves]
    right = sum(label == ds.classes[y] for label, y in zip(labels, ds.labels.tolist(), strict=True))
    assert result["accuracy"] == pytest.approx(right / len(ds.waves))
    for w in ds.waves:
        torch.testing.assert_close(clip_probabilities(model, [w])[0], predict(model, w, ds.classes).probs)
    predicted = [[sum(1 for lab, y in zip(labels, ds.labels.tolist(), strict=True) if y == t and lab == ds.classes[p])
                  for p in range(3)] for t in range(3)]
    assert result["confusion"] == predicted


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    root = write_class_folders(tmp_path_factory.mktemp("folders"), per_class=2, seconds=0.3)
    model = build_model(n_classes=3, fc_width=16)
    stem = tmp_path_factory.mktemp("ckpt") / "tiny"
    checkpoint.save(stem, model, checkpoint.make_card(model, sorted(CLASSES), "tiny"), half=False)
    return root, stem


def test_cli_evaluate_json(folder_data, capsys):
    root, stem = folder_data
    code = cli.main(["evaluate", "--data", str(root), "--folds", "1", "--checkpoint", str(stem), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accuracy", "n_clips", "per_class", "confusion"}
    assert out["n_clips"] == 3 and set(out["per_class"]) == set(CLASSES)
    assert sum(map(sum, out["confusion"])) == 3 and all(sum(row) == 1 for row in out["confusion"])
    diag = sum(out["confusion"][i][i] for i in range(3))
    assert out["accuracy"] == pytest.approx(diag / 3)
    # the same numbers as the library gives for the same checkpoint and clips
    from envnet.data import load_waves, read_dataset

    ds = load_waves(read_dataset(root), cache_dir=None).select(folds=[1])
    assert evaluate(checkpoint.load(stem).model, ds)["confusion"] == out["confusion"]


def test_cli_evaluate_rejects_other_classes_and_empty_folds(folder_data, tmp_path, capsys):
    root, stem = folder_data
    esc = write_esc50(tmp_path / "esc", per_class_per_fold=1, folds=(1,), seconds=0.1)
    assert cli.main(["evaluate", "--data", str(esc), "--checkpoint", str(stem)]) == 3
    assert "differ from the checkpoint's" in capsys.readouterr().err
    assert cli.main(["evaluate", "--data", str(root), "--folds", "9", "--checkpoint", str(stem)]) == 3
    assert "no clips in folds [9]" in capsys.readouterr().err


def test_cli_crossval_json(folder_data, capsys, tmp_path):
    root, _ = folder_data
    code = cli.main(["crossval", "--data", str(root), "--folds", "1,2", "--epochs", "1", "--batch-size", "3",
                     "--fc-width", "16", "--out", str(tmp_path / "cv"), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["fold"] for f in out["folds"]] == [1, 2]
    # each fold trains on the other listed fold only, and is tested on its own 3 clips
    assert all(f["n_train"] == 3 and f["n_clips"] == 3 for f in out["folds"])
    accs = [f["accuracy"] for f in out["folds"]]
    assert out["mean"] == pytest.approx(statistics.fmean(accs)) and out["std"] == pytest.approx(statistics.stdev(accs))
    for k in (1, 2):
        card = checkpoint.load(tmp_path / "cv" / f"fold{k}").card
        assert card["data"]["train_folds"] == [3 - k]


def test_cli_crossval_text_and_bad_folds(folder_data, capsys):
    root, _ = folder_data
    assert cli.main(["crossval", "--data", str(root), "--folds", "1,7"]) == 3
    assert "not in the data" in capsys.readouterr().err
    assert cli.main(["crossval", "--data", str(root), "--folds", "1"]) == 3
    assert "at least two folds" in capsys.readouterr().err


@pytest.mark.slow
def test_default_checkpoint_on_real_esc10(esc10_dir, capsys):
    """The shipped model's classes match ESC-10's and evaluate runs end to end on real clips (fold 4).
    Accuracy is not asserted: the checkpoint may still be a placeholder."""
    ckpt = checkpoint.load(checkpoint.default_checkpoint())
    ds = read_esc50(esc10_dir, "esc10")
    assert ckpt.classes == ds.classes
    few = ds.select(folds=[4])
    few.clips = few.clips[::16]  # 5 clips keep it quick
    result = evaluate(ckpt.model, load_waves(few), n_crops=2)
    assert result["n_clips"] == 5 and 0 <= result["accuracy"] <= 1


@pytest.mark.slow
def test_predict_on_held_out_clips_reproduces_the_cards_accuracy(esc10_dir, capsys):
    """What a user gets is what the card says: `envnet predict --json` over the validation twin's held-out
    fold 4 gives exactly the accuracy in its card, and the verdict keeps as many of those known sounds
    confident as the card says its threshold was chosen to keep."""
    stem = checkpoint.CHECKPOINT_DIR / "envnet-esc10-fold4val"
    card = checkpoint.load(stem).card

    ds = read_esc50(esc10_dir, "esc10").select(folds=[4])
    assert cli.main(["predict", *[str(c.path) for c in ds.clips], "--checkpoint", str(stem), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    right = sum(r["top"][0]["label"] == ds.classes[c.label] for r, c in zip(rows, ds.clips, strict=True))
    assert len(rows) == card["metrics"]["validation"]["n_clips"] == 80
    assert right / len(rows) == pytest.approx(card["metrics"]["validation"]["accuracy"], abs=1e-6)
    confident = sum(not r["unsure"] for r in rows) / len(rows)
    assert confident >= card["verdict"]["figures"]["known_kept"] == 0.85

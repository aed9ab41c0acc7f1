"""10-crop evaluation (known answers from a model with fixed outputs), `evaluate --json` and `crossval`."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from tonedata import CLASSES, memory_dataset, write_class_folders, write_esc50

from envnet import checkpoint, cli
from envnet.evaluate import clip_probabilities, evaluate
from envnet.model import build_model


class Constant(torch.nn.Module):
    """Always the same logits: predictions whose accuracy and confusion are known in advance."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float32))

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
    from envnet.data import eval_windows

    with torch.inference_mode():
        manual = torch.softmax(model(eval_windows(ds.waves[1], 4)), -1).mean(0)
    torch.testing.assert_close(probs[1], manual, rtol=1e-4, atol=1e-5)


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
    from envnet.data import load_waves, read_esc50

    ds = read_esc50(esc10_dir, "esc10")
    assert ckpt.classes == ds.classes
    few = ds.select(folds=[4])
    few.clips = few.clips[::16]  # 5 clips keep it quick
    result = evaluate(ckpt.model, load_waves(few), n_crops=2)
    assert result["n_clips"] == 5 and 0 <= result["accuracy"] <= 1

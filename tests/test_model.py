"""EnvNet's shapes (24014 → 24007 → 24000 → 150 → 40×150), parameter counts, registry and determinism."""

from __future__ import annotations

import pytest
import torch
from conftest import sine, tiny_model

from envnet.model import N_BANDS, N_FRAMES, WINDOW, EnvNet, EnvNetConfig, build_model, layer_walkthrough
from envnet.predict import predict

EXPECTED_SHAPES = {
    "input": (1, 24014),
    "conv1": (40, 24007),
    "conv2": (40, 24000),
    "pool2": (40, 150),
    "transpose": (1, 40, 150),
    "conv3": (50, 33, 138),
    "pool3": (50, 11, 46),
    "conv4": (50, 11, 42),
    "pool4": (50, 11, 14),
    "flatten": (7700,),
}


def test_walkthrough_shapes_match_the_paper() -> None:
    rows = layer_walkthrough(tiny_model(n_classes=5, fc_width=32))
    shapes = {r["layer"]: r["shape"] for r in rows}
    for layer, shape in EXPECTED_SHAPES.items():
        assert shapes[layer] == shape, layer
    assert shapes["fc5"] == shapes["fc6"] == (32,)
    assert shapes["fc7"] == (5,)
    assert [r["layer"] for r in rows] == [*EXPECTED_SHAPES, "fc5", "fc6", "fc7"]
    assert all(isinstance(r["what"], str) and r["what"] for r in rows)


def test_feature_block_directly() -> None:
    model = tiny_model()
    x = torch.randn(2, WINDOW)
    h1 = model.conv1(x.unsqueeze(1))
    h2 = model.conv2(h1)
    assert (h1.shape, h2.shape) == ((2, 40, 24007), (2, 40, 24000))
    spec = model.features(x)
    assert spec.shape == (2, N_BANDS, N_FRAMES) == (2, 40, 150)
    assert model.classify(spec).shape == (2, 3)
    assert model(x).shape == (2, 3)


def test_features_are_pooled_conv2_outputs() -> None:
    # Frame i is the max over conv2 outputs 160i … 160i+159: the learned spectrogram's time axis is 10 ms.
    model = tiny_model()
    x = torch.randn(1, WINDOW)
    with torch.no_grad():
        h = model.conv2(model.conv1(x.unsqueeze(1)))
        spec = model.features(x)
    torch.testing.assert_close(spec[0, :, 7], h[0, :, 7 * 160 : 8 * 160].amax(-1))


def test_window_of_the_wrong_length_fails_loudly() -> None:
    with pytest.raises(RuntimeError):
        tiny_model()(torch.randn(1, WINDOW + 1600))  # 1.6 s gives 160 frames: fc5 no longer fits


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts() -> None:
    w, c = 64, 7
    model = build_model(n_classes=c, fc_width=w)
    conv = {"conv1": 40 * 8 + 80, "conv2": 40 * 40 * 8 + 80, "conv3": 50 * 8 * 13 + 100, "conv4": 50 * 50 * 5 + 100}
    for name, n in conv.items():
        assert _params(getattr(model, name)) == n, name
    assert _params(model.fc5) == 7700 * w + w
    assert _params(model.fc6) == w * w + w
    assert _params(model.fc7) == w * c + c
    assert _params(model) == sum(conv.values()) + 7700 * w + w + w * w + w + w * c + c
    walk = {r["layer"]: r["params"] for r in layer_walkthrough(model)}
    assert sum(walk.values()) == _params(model)


def test_default_is_the_papers_width() -> None:
    cfg = EnvNetConfig()
    assert (cfg.fc_width, cfg.n_classes, cfg.dropout) == (4096, 10, 0.5)
    # 31,180 in the convolutions + BatchNorm; fc5 31,543,296; fc6 16,781,312; fc7 40,970
    assert _params(build_model()) == 48_396_758


def test_registry_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'.*envnet"):
        build_model("resnet")
    assert isinstance(build_model("envnet", n_classes=2, fc_width=8), EnvNet)


def test_config_round_trips_through_a_dict() -> None:
    cfg = EnvNetConfig(n_classes=4, fc_width=12, dropout=0.25)
    d = cfg.to_dict()
    assert d["arch"] == "envnet"
    assert build_model(**{k: v for k, v in d.items() if k != "arch"}).config == cfg  # as checkpoint.py builds it


def test_predictions_are_deterministic_in_eval_mode_even_from_train_mode() -> None:
    model = tiny_model()
    model.train()  # dropout and batch statistics on: predict must switch them off itself
    wave = torch.from_numpy(sine(440, 3.0))
    a = predict(model, wave, ["a", "b", "c"])
    b = predict(model, wave, ["a", "b", "c"])
    assert torch.equal(a.probs, b.probs) and torch.equal(a.window_probs, b.window_probs)
    assert model.training  # and restores the mode it found
    # In train mode the same input gives different outputs: the check above is not vacuous.
    x = torch.randn(2, WINDOW)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))

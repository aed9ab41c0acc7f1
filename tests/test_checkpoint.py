"""Checkpoints: safetensors + JSON card round trips, float16 storage, atomic writes, and every kind of
bad checkpoint (pickle, truncated, wrong shapes, lying card, bad JSON, missing files) refused clearly,
without ever running code from the file."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLASSES, sine, tiny_model

from envnet import checkpoint
from envnet.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    checkpoint_stem,
    from_bytes,
    list_checkpoints,
    load,
    make_card,
    safe_name,
    save,
)
from envnet.model import SAMPLE_RATE, WINDOW
from envnet.predict import predict


def clips() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.from_numpy(sine(300, 2.0)),
        torch.from_numpy(sine(3000, 1.0, amplitude=0.9)),
        0.3 * torch.randn(3 * SAMPLE_RATE, generator=g),
        torch.zeros(SAMPLE_RATE),
    ]


def saved(tmp_path: Path, name: str = "m", half: bool = False, fc_width: int = 16, **extra) -> tuple[Path, object]:
    model = tiny_model(fc_width=fc_width)
    stem = tmp_path / name
    save(stem, model, make_card(model, TINY_CLASSES, name, **extra), half=half)
    return stem, model


def expect_error(*words: str):
    """Context: a CheckpointError whose message contains every word (case-insensitive)."""

    class _Ctx:
        def __enter__(self):
            self.raises = pytest.raises(CheckpointError)
            self.info = self.raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.raises.__exit__(*exc)
            message = str(self.info.value).lower()
            for w in words:
                assert w.lower() in message, str(self.info.value)
            return handled

    return _Ctx()


# ---- round trips ---------------------------------------------------------------------------------------

def test_round_trip_gives_identical_predictions(tmp_path) -> None:
    stem, model = saved(tmp_path, esc50_targets=[0, 1, 2], metrics={"val_acc": 0.5})
    ckpt = load(stem)
    assert ckpt.classes == TINY_CLASSES and ckpt.name == "m"
    assert not ckpt.model.training
    for wave in clips():
        a = predict(model, wave, TINY_CLASSES)
        b = predict(ckpt.model, wave, ckpt.classes)
        assert torch.equal(a.probs, b.probs)
    # Either file's path, or the stem, names the same checkpoint.
    assert load(stem.with_suffix(".safetensors")).card == load(str(stem) + ".json").card == ckpt.card


def test_model_card_contents(tmp_path) -> None:
    stem, _ = saved(tmp_path, esc50_targets=[0, 1, 2], recipe={"epochs": 3}, data="generated tones")
    card = json.loads(stem.with_suffix(".json").read_text())
    assert card["architecture"] == {"n_classes": 3, "fc_width": 16, "dropout": 0.5, "other": False, "arch": "envnet"}
    assert card["classes"] == TINY_CLASSES and card["esc50_targets"] == [0, 1, 2]
    assert card["sample_rate"] == SAMPLE_RATE and card["window_samples"] == WINDOW
    assert card["recipe"] == {"epochs": 3} and card["data"] == "generated tones"
    assert card["format"] == "envnet-checkpoint/1" and card["created"].startswith("20")


def test_make_card_refuses_the_wrong_number_of_classes() -> None:
    with expect_error("2 class names", "3 outputs"):
        make_card(tiny_model(), ["a", "b"], "x")


def test_float16_storage_keeps_predictions_and_halves_the_size(tmp_path) -> None:
    full, model = saved(tmp_path, "full", half=False, fc_width=64)
    half, _ = saved(tmp_path, "half", half=True, fc_width=64)
    ratio = half.with_suffix(".safetensors").stat().st_size / full.with_suffix(".safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    a, b = load(full).model, load(half).model
    assert b.fc5.weight.dtype == torch.float32  # stored small, computed in float32
    for wave in clips():
        pa, pb = predict(a, wave, TINY_CLASSES), predict(b, wave, TINY_CLASSES)
        assert pa.label == pb.label
        assert float((pa.probs - pb.probs).abs().max()) < 1e-2
        assert float((pa.window_probs - pb.window_probs).abs().max()) < 1e-2


def test_shipped_checkpoint_loads_and_predicts() -> None:
    ckpt = load(checkpoint.default_checkpoint())
    assert len(ckpt.classes) == ckpt.model.config.n_classes == 10
    assert "dog" in ckpt.classes
    assert ckpt.model.config.other and ckpt.model.calibration.method == "other-output"
    p = predict(ckpt.model, torch.from_numpy(sine(440, 2.0)), ckpt.classes)
    # A pure tone is none of the ten: nearly all its probability goes to "none of these", and it is unsure.
    assert 0 <= float(p.probs.sum()) < 0.5 and p.verdict.kind == "unsure"


# ---- atomic writes -------------------------------------------------------------------------------------

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_failed_write_leaves_the_old_file_and_no_temp_files(tmp_path, monkeypatch) -> None:
    stem, model = saved(tmp_path)
    before = stem.with_suffix(".safetensors").read_bytes()
    real_fdopen = os.fdopen

    class HalfWriter:
        """A file that writes half of what it is given, then fails, like a full disk."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data: bytes) -> int:
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    other = tiny_model(seed=5)
    with pytest.raises(OSError, match="No space"):
        save(stem, other, make_card(other, TINY_CLASSES, "m"), half=False)
    assert stem.with_suffix(".safetensors").read_bytes() == before
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    assert torch.equal(load(stem).model.fc7.weight, model.fc7.weight)


def test_failed_rename_leaves_the_old_file(tmp_path, monkeypatch) -> None:
    stem, _ = saved(tmp_path)
    before = stem.with_suffix(".safetensors").read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt  # even an interrupt (BaseException) must not leave a temp file behind

    monkeypatch.setattr(checkpoint.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save(stem, tiny_model(seed=3), make_card(tiny_model(seed=3), TINY_CLASSES, "m"))
    assert stem.with_suffix(".safetensors").read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_saved_files_are_readable_by_others(tmp_path) -> None:
    stem, _ = saved(tmp_path)
    assert stem.with_suffix(".safetensors").stat().st_mode & 0o044 == 0o044


# ---- bad checkpoints: each refused with a message --------------------------------------------------------

def _files(stem: Path) -> tuple[bytes, bytes]:
    return stem.with_suffix(".safetensors").read_bytes(), stem.with_suffix(".json").read_bytes()


class _Trap:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_is_refused_without_being_unpickled(tmp_path, protocol: int) -> None:
    stem, _ = saved(tmp_path)
    target = tmp_path / "pwned"
    payload = pickle.dumps({"fc7.weight": _Trap(target)}, protocol=protocol)
    pickle.loads(payload)  # the trap works…
    assert target.exists()
    target.unlink()
    stem.with_suffix(".safetensors").write_bytes(payload)
    with expect_error("pickle", "only .safetensors"):
        load(stem)
    assert not target.exists()  # …but loading the checkpoint never sprang it


def test_torch_save_file_is_refused_without_being_unpickled(tmp_path) -> None:
    stem, model = saved(tmp_path)
    target = tmp_path / "pwned"
    sd = dict(model.state_dict())
    sd["trap"] = _Trap(target)
    torch.save(sd, stem.with_suffix(".safetensors"))
    with expect_error("pickle", "PyTorch"):
        load(stem)
    assert not target.exists()


def test_truncated_safetensors(tmp_path) -> None:
    stem, _ = saved(tmp_path)
    weights, card = _files(stem)
    for cut in (4, 100, len(weights) // 2, len(weights) - 1):
        with expect_error("not a readable .safetensors"):
            from_bytes(weights[:cut], card)


def test_wrong_shapes_are_named(tmp_path) -> None:
    stem, _ = saved(tmp_path, fc_width=128)
    weights, card = _files(stem)
    lie = json.loads(card)
    lie["architecture"]["fc_width"] = 64
    with expect_error("do not fit", "fc5.weight", "(128, 7700)", "(64, 7700)"):
        from_bytes(weights, json.dumps(lie))


def test_card_that_lies_about_classes(tmp_path) -> None:
    stem, _ = saved(tmp_path)
    weights, card = _files(stem)
    lie = json.loads(card)
    lie["classes"] = ["a", "b", "c", "d", "e"]  # 5 names; the architecture still says 3 outputs
    with expect_error("5 classes", "3 outputs"):
        from_bytes(weights, json.dumps(lie))
    del lie["architecture"]["n_classes"]  # now only the weights can tell
    with expect_error("3 outputs", "5 classes"):
        from_bytes(weights, json.dumps(lie))


@pytest.mark.parametrize(
    "card, words",
    [
        (b"{not json", ["not valid JSON"]),
        (b"\xff\xfe\x00garbage", ["not valid JSON"]),
        (b"[1, 2, 3]", ["JSON object"]),
        (b'{"classes": ["a", "b", "c"]}', ["architecture"]),
        (b'{"architecture": {"fc_width": 16}}', ["classes"]),
        (b'{"architecture": {"fc_width": 16}, "classes": "abc"}', ["classes", "list"]),
        (b'{"architecture": {"arch": "resnet"}, "classes": ["a", "b", "c"]}', ["unknown architecture"]),
        (b'{"architecture": {"fc_width": 16}, "classes": ["a", "b", "c"], "sample_rate": 44100}', ["44100"]),
        # A card is untrusted: a huge width must be refused before gigabytes are allocated.
        (b'{"architecture": {"fc_width": 100000000}, "classes": ["a", "b", "c"]}', ["fc_width", "4096"]),
        (b'{"architecture": {"fc_width": "wide"}, "classes": ["a", "b", "c"]}', ["fc_width"]),
        (b'{"architecture": {"fc_width": 16.5}, "classes": ["a", "b", "c"]}', ["whole number"]),
        (b'{"architecture": {"fc_width": 16, "dropout": 2}, "classes": ["a", "b", "c"]}', ["dropout"]),
        (b'{"architecture": {"fc_width": 16, "depth": 3}, "classes": ["a", "b", "c"]}', ["cannot be built"]),
    ],
)
def test_bad_cards(tmp_path, card: bytes, words: list[str]) -> None:
    stem, _ = saved(tmp_path)
    weights, _ = _files(stem)
    with expect_error(*words):
        from_bytes(weights, card)


def test_missing_files(tmp_path) -> None:
    stem, _ = saved(tmp_path)
    with expect_error("does not exist", "nothing.safetensors"):
        load(tmp_path / "nothing")
    stem.with_suffix(".json").unlink()
    with expect_error("does not exist", "m.json"):
        load(stem)


def test_not_safetensors_at_all(tmp_path) -> None:
    stem, _ = saved(tmp_path)
    _, card = _files(stem)
    with expect_error("not a readable .safetensors"):
        from_bytes(b"hello, I am text", card)
    with expect_error("not a readable .safetensors"):
        from_bytes(b"", card)


def test_card_as_a_dict_is_validated_too(tmp_path) -> None:
    stem, _ = saved(tmp_path)
    weights, card = _files(stem)
    assert from_bytes(weights, json.loads(card)).classes == TINY_CLASSES
    with expect_error("5 classes"):
        from_bytes(weights, {**json.loads(card), "classes": list("abcde")})


# ---- the registry ---------------------------------------------------------------------------------------

def test_list_checkpoints_default_first_and_skips_broken(tmp_path) -> None:
    for name in ("zeta", "alpha", checkpoint.DEFAULT_NAME):
        saved(tmp_path, name)
    broken_card, _ = saved(tmp_path, "broken-card")
    broken_card.with_suffix(".json").write_text("{oops")
    truncated, _ = saved(tmp_path, "truncated")
    w = truncated.with_suffix(".safetensors")
    w.write_bytes(w.read_bytes()[:-100])
    pickled, _ = saved(tmp_path, "pickled")
    pickled.with_suffix(".safetensors").write_bytes(pickle.dumps({"a": 1}))
    lonely, _ = saved(tmp_path, "no-weights")
    lonely.with_suffix(".safetensors").unlink()
    (tmp_path / "notes.json").write_text('{"hello": 1}')

    found = list_checkpoints(tmp_path)
    assert [name for name, _, _ in found] == [checkpoint.DEFAULT_NAME, "alpha", "zeta"]
    name, stem, card = found[1]
    assert stem == tmp_path / "alpha" and card["classes"] == TINY_CLASSES
    for _name, stem, _ in found:
        load(stem)  # everything listed really loads


def test_the_shipped_folder_lists_the_default_first() -> None:
    found = list_checkpoints()
    assert found and found[0][0] == checkpoint.DEFAULT_NAME


@pytest.mark.parametrize("name", ["../../etc/passwd", "/tmp/x", "..", "a/b\\c", "  ", ".hidden"])
def test_checkpoint_names_never_escape_the_folder(name):
    stem = checkpoint_stem(name)
    assert stem.parent == CHECKPOINT_DIR.resolve()
    assert not stem.name.startswith(".") and "/" not in stem.name


def test_safe_name_keeps_readable_names():
    assert safe_name("my clap model") == "my-clap-model"
    assert safe_name("ünïcode!!") == "n-code"
    assert safe_name("") == "model"

"""Checkpoints: weights in safetensors (no pickle, so loading one cannot run code) + a JSON model card.

A checkpoint NAME is two files side by side: NAME.safetensors and NAME.json.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from envnet.model import SAMPLE_RATE, WINDOW, EnvNet, build_model

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_NAME = "envnet-esc10"
MAX_BYTES = 200 * 1024 * 1024  # refuse absurd uploads before parsing them
ARCH_LIMITS = {"n_classes": (2, 1000), "fc_width": (1, 8192), "dropout": (0.0, 0.99)}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message that says what does not fit."""


@dataclass
class Checkpoint:
    model: EnvNet
    card: dict

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def name(self) -> str:
        return str(self.card.get("name", "unnamed"))


def make_card(model: EnvNet, classes: list[str], name: str, **extra) -> dict:
    """The model card: what the weights are, what they were trained on and how well they do."""
    if len(classes) != model.config.n_classes:
        raise CheckpointError(f"{len(classes)} class names for a model with {model.config.n_classes} outputs")
    card = {
        "name": name,
        "architecture": model.config.to_dict(),
        "classes": list(classes),
        "sample_rate": SAMPLE_RATE,
        "window_samples": WINDOW,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": "envnet-checkpoint/1",
    }
    card.update(extra)
    return card


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; checkpoints are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def paths(stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def state_bytes(model: EnvNet, half: bool = True) -> bytes:
    """safetensors bytes; float16 halves the size and leaves predictions unchanged (tests check it)."""
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point() and "running_" not in k:
            v = v.half()
        sd[k] = v.contiguous()
    return st_save(sd)


def save(stem: str | Path, model: EnvNet, card: dict, half: bool = True) -> Path:
    """Write NAME.safetensors then NAME.json, each atomically. Returns the weights' path."""
    weights, card_path = paths(stem)
    _atomic_write(weights, state_bytes(model, half))
    _atomic_write(card_path, json.dumps(card, indent=2).encode())
    return weights


def card_from_bytes(data: bytes | str) -> dict:
    try:
        card = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"the model card is not valid JSON ({e})") from e
    if not isinstance(card, dict):
        raise CheckpointError("the model card must be a JSON object")
    for key in ("architecture", "classes"):
        if key not in card:
            raise CheckpointError(f"the model card has no {key!r}")
    classes = card["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise CheckpointError("the model card's 'classes' must be a list of at least two names")
    arch = card["architecture"]
    if not isinstance(arch, dict) or arch.get("arch", "envnet") != "envnet":
        raise CheckpointError(f"unknown architecture in the model card: {arch!r}")
    for key, (lo, hi) in ARCH_LIMITS.items():
        # A card is untrusted input: an absurd width would allocate gigabytes before any shape check.
        v = arch.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi):
            raise CheckpointError(f"the model card's architecture has {key}={v!r}; expected a number in [{lo}, {hi}]")
        if key != "dropout" and v is not None and v != int(v):
            raise CheckpointError(f"the model card's architecture has {key}={v!r}; expected a whole number")
    if arch.get("n_classes", len(classes)) != len(classes):
        raise CheckpointError(
            f"the model card lists {len(classes)} classes but its architecture has {arch.get('n_classes')} outputs"
        )
    if card.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise CheckpointError(f"sample rate {card.get('sample_rate')} Hz; EnvNet here runs at {SAMPLE_RATE} Hz")
    return card


def from_bytes(weights: bytes, card_data: bytes | str | dict) -> Checkpoint:
    """Build and validate a model from the two files' contents (used for uploads and for disk)."""
    card = card_data if isinstance(card_data, dict) else card_from_bytes(card_data)
    if isinstance(card_data, dict):
        card_from_bytes(json.dumps(card))
    if len(weights) > MAX_BYTES:
        raise CheckpointError(f"the weights file is {len(weights) / 1e6:.0f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB")
    try:
        sd = st_load(weights)  # safetensors parses a JSON header and raw tensors: nothing can execute
    except (SafetensorError, Exception) as e:  # truncated or not safetensors at all
        # Diagnosed only after the parse fails: a valid safetensors header length can start with 0x80 too.
        if weights[:1] == b"\x80" or weights[:2] == b"PK":
            raise CheckpointError(
                "this is a pickle/PyTorch (.pt/.pth) file, which can run code when loaded, so it is refused; "
                "only .safetensors weights are accepted"
            ) from e
        raise CheckpointError(f"the weights are not a readable .safetensors file ({e})") from e
    arch = {k: v for k, v in card["architecture"].items() if k != "arch"}
    arch.setdefault("n_classes", len(card["classes"]))
    try:
        model = build_model("envnet", **arch)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the model card's architecture cannot be built: {e}") from e
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [f"{k}: file {tuple(sd[k].shape)}, model {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    problems = []
    if "fc7.weight" in sd and sd["fc7.weight"].dim() == 2 and sd["fc7.weight"].shape[0] != len(card["classes"]):
        problems.append(f"the weights have {sd['fc7.weight'].shape[0]} outputs but the card lists "
                        f"{len(card['classes'])} classes")
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append("shapes that do not fit: " + "; ".join(wrong[:5]))
    if problems:
        raise CheckpointError("the weights do not fit the model card's architecture — " + " | ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()})
    model.eval()
    return Checkpoint(model, card)


def load(stem: str | Path) -> Checkpoint:
    weights, card_path = paths(stem)
    for p in (weights, card_path):
        if not p.is_file():
            raise CheckpointError(f"{p} does not exist (a checkpoint is NAME.safetensors + NAME.json)")
    return from_bytes(weights.read_bytes(), card_path.read_bytes())


def _check_header(weights: Path) -> None:
    """Cheap sanity check of a .safetensors file (header only), so the picker skips broken files."""
    with open(weights, "rb") as f:
        head = f.read(8)
        size = os.fstat(f.fileno()).st_size
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or 8 + n > size:
            raise CheckpointError(f"{weights.name} is not a complete .safetensors file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{weights.name} has an unreadable header") from e
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (AttributeError, KeyError, TypeError, IndexError, ValueError) as e:
        raise CheckpointError(f"{weights.name} has a malformed header") from e
    if 8 + n + max(ends, default=0) > size:
        raise CheckpointError(f"{weights.name} is truncated")


def list_checkpoints(folder: str | Path = CHECKPOINT_DIR) -> list[tuple[str, Path, dict]]:
    """(name, stem path, card) for every readable checkpoint in a folder, the default first."""
    found = []
    for card_path in sorted(Path(folder).glob("*.json")):
        if not card_path.with_suffix(".safetensors").is_file():
            continue
        try:
            card = card_from_bytes(card_path.read_bytes())
            _check_header(card_path.with_suffix(".safetensors"))
        except (CheckpointError, OSError):
            continue
        found.append((card_path.stem, card_path.with_suffix(""), card))
    found.sort(key=lambda t: (t[0] != DEFAULT_NAME, t[0]))
    return found


def default_checkpoint() -> Path:
    return CHECKPOINT_DIR / DEFAULT_NAME

"""Checkpoints: weights in safetensors (no pickle, so loading one cannot run code) + a JSON model card.

A checkpoint NAME is two files side by side: NAME.safetensors and NAME.json. A run that can be resumed
also keeps its training state beside them: NAME.state.safetensors (+ NAME.state.json for people).

Both files may come from a stranger (an upload on a public server), so everything is checked before any
memory is spent on it: the card's size, nesting and every field's type; the class names; and the tensors'
names, dtypes and shapes, read from the safetensors header, against a model built on the meta device.
"""

from __future__ import annotations

import json
import math
import os
import re
import site
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from envnet import atomic, limits
from envnet.model import SAMPLE_RATE, WINDOW, EnvNet, build_model
from envnet.verdict import Calibration


def _checkpoint_dir() -> Path:
    """Where the shipped models are: $ENVNET_CHECKPOINTS if set; the checkout's checkpoints/ (running from
    the repository, or installed with pip install -e); else the copy `pip install .` put under share/."""
    if env := os.environ.get("ENVNET_CHECKPOINTS"):
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parent.parent / "checkpoints"
    if checkout.is_dir():
        return checkout
    for prefix in (sys.prefix, site.getuserbase()):  # pip install . / pip install --user .
        installed = Path(prefix) / "share" / "envnet-sound-lab" / "checkpoints"
        if installed.is_dir():
            return installed
    return checkout  # missing: load() says so, naming this folder


CHECKPOINT_DIR = _checkpoint_dir()
DEFAULT_NAME = "envnet-esc10"
# The largest weights file the app needs: a full-width (fc 4096) model in float16, as the library and the
# Train page save it, is 93 MB for 50 classes and 105 MB for 1000. Larger files are refused unparsed.
MAX_BYTES = 128 * 1024 * 1024
MAX_CARD_BYTES = 1_000_000  # a real card is a few kB (40 kB with a 2000-epoch history)
MAX_CARD_DEPTH = 16  # nesting levels of a card's JSON; ours uses 4
MAX_HEADER_BYTES = 1 << 20  # the safetensors header (JSON); ours is about 3 kB
# fc_width 4096 is the paper's and the widest the app trains: with 1000 classes that is a 200 MB model in
# float32, the most one upload can make the server hold.
ARCH_LIMITS = {"n_classes": (2, 1000), "fc_width": (1, 4096), "dropout": (0.0, 0.99)}
MAX_NAME_CHARS = 64
# Class and model names are shown to every visitor of a shared model: letters of any script, digits, spaces
# and a little punctuation, nothing that markdown or HTML would turn into a link, an image or formatting.
_NAME_OK = re.compile(r"[^\W_]|[ _.,'&+()/-]")
NAME_RULE = "letters, digits, spaces and _ . , ' & + ( ) / -"
FLOAT_DTYPES = {"F16", "BF16", "F32"}  # weights as the library saves them; int8 would quadruple in memory
_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "I64": "int64"}
STATE_KEY = "envnet_state"  # safetensors metadata entry holding a saved state's epoch, history and config


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


def _write(path: Path, data: bytes, exclusive: bool = False) -> None:
    try:
        atomic.write(path, data, exclusive)
    except FileExistsError:
        raise CheckpointError(f"a checkpoint called {path.stem!r} already exists") from None


# ---- names and paths ----------------------------------------------------------------------------

_NAME = re.compile(r"[^A-Za-z0-9_-]+")
RESERVED_PREFIX = "envnet"  # shipped models' names: no visitor's shared model may pass for one


def safe_name(name: str, fallback: str = "model") -> str:
    """A file-name-safe version of a user's text: letters, digits, _ and - only. No dots: NAME.v2 would
    otherwise read as NAME with a suffix, and a leading dot would hide the file."""
    cleaned = _NAME.sub("-", name.strip()).strip("-")[:64].strip("-")
    return cleaned or fallback


def checkpoint_stem(name: str, folder: Path = CHECKPOINT_DIR) -> Path:
    """NAME → folder/NAME for a visitor's shared model, refusing anything that would land outside the
    folder or take a shipped model's name (any name starting with "envnet")."""
    stem = (folder / safe_name(name)).resolve()
    if stem.parent != folder.resolve():
        raise CheckpointError(f"{name!r} is not a valid checkpoint name")
    if stem.name.lower().startswith(RESERVED_PREFIX):
        raise CheckpointError(f"names starting with “{RESERVED_PREFIX}” are kept for the shipped models; "
                                         "choose another name")
    return stem


def paths(stem: str | Path) -> tuple[Path, Path]:
    """NAME → NAME.safetensors, NAME.json. Suffixes are appended, never substituted: "a.v2" is not "a"."""
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def state_bytes(model: EnvNet, half: bool = True) -> bytes:
    """safetensors bytes; float16 halves the size and leaves predictions unchanged (tests check it)."""
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point() and "running_" not in k:
            v = v.half()
        sd[k] = v.contiguous()
    return st_save(sd)


def save(stem: str | Path, model: EnvNet, card: dict, half: bool = True, exclusive: bool = False) -> Path:
    """Write NAME.safetensors then NAME.json, each atomically. Returns the weights' path.

    exclusive: never replace an existing checkpoint. The check and the write are one step (a hard link
    that fails when the name exists), so two visitors saving the same name at once cannot both win."""
    weights, card_path = paths(stem)
    if not exclusive:
        _write(weights, state_bytes(model, half))
        _write(card_path, json.dumps(card, indent=2).encode())
        return weights
    _write(card_path, json.dumps(card, indent=2).encode(), exclusive=True)  # the card first: it claims the name
    try:
        _write(weights, state_bytes(model, half), exclusive=True)
    except BaseException:
        card_path.unlink(missing_ok=True)
        raise
    return weights


# ---- training state: what a stopped run needs to continue exactly -----------------------------------


def state_paths(stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    return stem.with_name(stem.name + ".state.safetensors"), stem.with_name(stem.name + ".state.json")


def save_training_state(stem: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        info: dict) -> None:
    """Full-precision weights, each parameter's momentum and the run's bookkeeping (`info`), atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, p in model.named_parameters():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            tensors[f"momentum.{name}"] = buf.detach().cpu().contiguous()
    weights, meta = state_paths(stem)
    text = json.dumps(info)
    # The bookkeeping also rides inside the weights file, so one atomic rename commits both: a kill
    # between the two writes cannot pair new weights with an old epoch count. The .json is for people.
    _write(weights, st_save(tensors, metadata={STATE_KEY: text}))
    _write(meta, text.encode())


def load_training_state(stem: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        check=lambda info: None) -> dict | None:
    """Put a saved state into `model` and `optimizer`; returns its `info`, or None when there is none.
    `check(info)` may raise to refuse a state before anything is changed."""
    weights, meta = state_paths(stem)
    if not weights.is_file():
        return None
    try:
        with safe_open(str(weights), "pt") as f:
            embedded = (f.metadata() or {}).get(STATE_KEY)
        info = json.loads(embedded) if embedded else json.loads(meta.read_text())
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"the saved training state {weights} cannot be read ({e})") from e
    check(info)
    tensors = load_file(str(weights))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for name, p in model.named_parameters():
        if f"momentum.{name}" in tensors:
            optimizer.state[p]["momentum_buffer"] = tensors[f"momentum.{name}"].to(p.device)
    return info


# ---- validation: a card and weights may come from a stranger ------------------------------------------


def name_problem(name: object, what: str = "name") -> str | None:
    """Why `name` cannot be a class or model name, or None when it can."""
    if not isinstance(name, str):
        return f"the {what} {name!r} is not text"
    if not name.strip():
        return f"a {what} is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"the {what} {_quoted(name[:20])}… is {len(name)} characters long; at most {MAX_NAME_CHARS} are allowed"
    bad = sorted({c for c in name if not _NAME_OK.match(c)})
    if bad:
        shown = " ".join(_quoted(c) for c in bad[:8])
        return f"the {what} {_quoted(name[:40])} has characters that are not allowed ({shown}); use {NAME_RULE}"
    return None


def _quoted(text: str) -> str:
    """“text” as a person typed it; only what does not print is escaped (a Python repr doubled every backslash)."""
    return "“" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in text) + "”"


def _depth(value: object) -> int:
    """Nesting depth of parsed JSON, without recursion (a hostile card can nest 100,000 levels deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if d > MAX_CARD_DEPTH:
                break
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_fields(card: dict) -> None:
    """Every field the app reads or shows has the type it expects: a card that passes cannot crash a page."""
    def fail(msg: str) -> None:
        raise CheckpointError(f"the model card's {msg}")

    if "name" in card and (p := name_problem(card["name"], "model name")):
        fail(p)
    for key in ("note", "description", "created", "format", "trained_in"):
        if key in card and not (isinstance(card[key], str) and len(card[key]) <= 4000):
            fail(f"{key!r} must be text of at most 4000 characters")
    for key in ("sample_rate", "window_samples"):
        if key in card and not (isinstance(card[key], int) and not isinstance(card[key], bool)):
            fail(f"{key!r} must be a whole number, not {card[key]!r}")
    for key in ("metrics", "recipe", "data"):
        if card.get(key) is not None and not isinstance(card[key], dict):
            fail(f"{key!r} must be an object (or absent), not {type(card[key]).__name__}")
    metrics = card.get("metrics") or {}
    for key in ("val_acc", "train_acc", "val_loss", "train_loss"):  # the numbers the app formats
        if key in metrics and not _number(metrics[key]):
            fail(f"metrics.{key} must be a number, not {str(metrics[key])[:40]!r}")
        if key.endswith("_acc") and key in metrics and not 0 <= metrics[key] <= 1:
            fail(f"metrics.{key} must be between 0 and 1, not {metrics[key]!r}")
    best = metrics.get("best")
    if best is not None and not (isinstance(best, dict) and all(_number(x) for x in best.values())):
        fail("metrics.best must hold numbers")
    data = card.get("data") or {}
    if "source" in data and not isinstance(data["source"], str):
        fail("data.source must be text")
    for key in ("n_train", "n_val"):
        if key in data and not (isinstance(data[key], int) and not isinstance(data[key], bool)):
            fail(f"data.{key} must be a whole number, not {data[key]!r}")
    if card.get("history") is not None and not (
        isinstance(card["history"], list) and all(isinstance(h, dict) for h in card["history"])
    ):
        fail("history must be a list of objects")
    for key in ("targets", "esc50_targets"):
        v = card.get(key)
        if v is not None and not (isinstance(v, list) and all(x is None or isinstance(x, int) for x in v)):
            fail(f"{key} must be a list of whole numbers")


def card_from_bytes(data: bytes | str) -> dict:
    if len(data) > MAX_CARD_BYTES:
        raise CheckpointError(f"the model card is {len(data) / 1e6:.1f} MB; the limit is {MAX_CARD_BYTES / 1e6:g} MB")
    try:
        card = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"the model card is not valid JSON ({e})") from e
    except RecursionError as e:
        raise CheckpointError(f"the model card is nested too deeply (at most {MAX_CARD_DEPTH} levels)") from e
    if not isinstance(card, dict):
        raise CheckpointError("the model card must be a JSON object")
    if _depth(card) > MAX_CARD_DEPTH:
        raise CheckpointError(f"the model card is nested too deeply (at most {MAX_CARD_DEPTH} levels)")
    for key in ("architecture", "classes"):
        if key not in card:
            raise CheckpointError(f"the model card has no {key!r}")
    classes = card["classes"]
    hi = ARCH_LIMITS["n_classes"][1]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise CheckpointError("the model card's 'classes' must be a list of at least two names")
    if len(classes) > hi:
        # The class count sizes the last layer even when the architecture does not say n_classes.
        raise CheckpointError(f"the model card lists {len(classes):,} classes; at most {hi:,} are allowed")
    for c in classes:
        if p := name_problem(c, "class name"):
            raise CheckpointError(f"the model card's {p}")
    if len(set(classes)) != len(classes):
        raise CheckpointError("the model card lists the same class name twice")
    _check_fields(card)
    arch = card["architecture"]
    if not isinstance(arch, dict) or arch.get("arch", "envnet") != "envnet":
        raise CheckpointError(f"unknown architecture in the model card: {repr(arch)[:100]}")
    for key, (lo, hi) in ARCH_LIMITS.items():
        # A card is untrusted input: an absurd width would allocate gigabytes before any shape check.
        v = arch.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi):
            raise CheckpointError(f"the model card's architecture has {key}={v!r}; expected a number in [{lo}, {hi}]")
        if key != "dropout" and v is not None and v != int(v):
            raise CheckpointError(f"the model card's architecture has {key}={v!r}; expected a whole number")
    if not isinstance(arch.get("other", False), bool):
        raise CheckpointError(f"the model card's architecture has other={arch.get('other')!r}; expected true or false")
    if arch.get("n_classes", len(classes)) != len(classes):
        raise CheckpointError(
            f"the model card lists {len(classes)} classes but its architecture has {arch.get('n_classes')} outputs"
        )
    if card.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise CheckpointError(f"sample rate {card.get('sample_rate')} Hz; EnvNet here runs at {SAMPLE_RATE} Hz")
    return card


def _header(weights: bytes) -> dict:
    """The safetensors header (tensor name → dtype, shape, offsets), read without touching the tensors."""
    n = int.from_bytes(weights[:8], "little") if len(weights) >= 8 else -1
    if n <= 0 or n > MAX_HEADER_BYTES or 8 + n > len(weights):
        raise ValueError("no complete safetensors header")
    header = json.loads(weights[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return {k: v for k, v in header.items() if k != "__metadata__"}


def _check_tensors(header: dict, arch: dict, n_classes: int) -> None:
    """Names, dtypes and shapes from the header against the model the card describes, built on the meta
    device (shapes only, no memory): nothing is allocated for a file that does not fit."""
    n_outputs = n_classes + int(arch.get("other", False))
    try:
        with torch.device("meta"):
            expected = build_model("envnet", **arch).state_dict()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the model card's architecture cannot be built: {e}") from e
    problems, wrong, dtypes = [], [], set()
    for k, info in header.items():
        if k not in expected:
            continue
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise CheckpointError(f"the weights file's header is malformed at {k!r}")
        shape, want = tuple(info["shape"]), expected[k]
        if shape != tuple(want.shape):
            wrong.append(f"{k}: file {shape}, model {tuple(want.shape)}")
        if want.is_floating_point() and info.get("dtype") not in FLOAT_DTYPES:
            dtypes.add(str(info.get("dtype")))
        elif not want.is_floating_point() and info.get("dtype") != "I64":
            dtypes.add(str(info.get("dtype")))
    fc7 = header.get("fc7.weight")
    if isinstance(fc7, dict) and isinstance(fc7.get("shape"), list) and len(fc7["shape"]) == 2 \
            and fc7["shape"][0] != n_outputs:
        problems.append(f"the weights have {fc7['shape'][0]} outputs but the card lists {n_classes} classes"
                        + (" and 'none of these'" if n_outputs > n_classes else ""))
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append("shapes that do not fit: " + "; ".join(wrong[:5]))
    if dtypes:
        problems.append(f"weights stored as {', '.join(sorted(dtypes))}; only float16, bfloat16 and float32 "
                        "weights are accepted")
    if problems:
        raise CheckpointError("the weights do not fit the model card's architecture — " + " | ".join(problems))


def _refuse_unreadable(weights: bytes, e: Exception) -> CheckpointError:
    # Diagnosed only after the parse fails: a valid safetensors header length can start with 0x80 too.
    if weights[:1] == b"\x80" or weights[:2] == b"PK":
        return CheckpointError(
            "this is a pickle/PyTorch (.pt/.pth) file, which can run code when loaded, so it is refused; "
            "only .safetensors weights are accepted"
        )
    return CheckpointError(f"the weights are not a readable .safetensors file ({e})")


def from_bytes(weights: bytes, card_data: bytes | str | dict) -> Checkpoint:
    """Build and validate a model from the two files' contents (used for uploads and for disk)."""
    if isinstance(card_data, dict):
        try:
            card_from_bytes(json.dumps(card_data))
        except (RecursionError, TypeError, ValueError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"the model card cannot be stored as JSON ({type(e).__name__})") from e
        card = card_data
    else:
        card = card_from_bytes(card_data)
    if len(weights) > MAX_BYTES:
        raise CheckpointError(f"the weights file is {len(weights) / 1e6:.0f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB")
    try:
        header = _header(weights)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _refuse_unreadable(weights, e) from e
    arch = {k: v for k, v in card["architecture"].items() if k != "arch"}
    arch.setdefault("n_classes", len(card["classes"]))
    _check_tensors(header, arch, len(card["classes"]))
    with limits.heavy_work("this model", CheckpointError):
        try:
            sd = st_load(weights)  # safetensors parses a JSON header and raw tensors: nothing can execute
        except (SafetensorError, Exception) as e:  # truncated or not safetensors at all
            raise _refuse_unreadable(weights, e) from e
        try:
            model = build_model("envnet", **arch)
            model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in sd.items()})
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"the model card's architecture cannot be built: {e}") from e
        except (MemoryError, RuntimeError) as e:  # a failed allocation surfaces as a RuntimeError in torch
            raise CheckpointError(f"the model could not be built on this server ({e})") from e
    model.calibration = Calibration.from_card(card.get("verdict"))
    model.eval()
    return Checkpoint(model, card)


def load(stem: str | Path) -> Checkpoint:
    weights, card_path = paths(stem)
    for p in (weights, card_path):
        if not p.is_file():
            hint = (" The shipped models are in the repository's checkpoints/ folder: install with pip install . "
                    "from a clone, or set ENVNET_CHECKPOINTS to that folder."
                    if Path(stem).resolve().parent == CHECKPOINT_DIR.resolve() else "")
            raise CheckpointError(f"{p} does not exist (a checkpoint is NAME.safetensors + NAME.json).{hint}")
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


_listing: dict[Path, tuple[int, list[tuple[str, Path, dict]]]] = {}
_listing_lock = threading.Lock()


def list_checkpoints(folder: str | Path = CHECKPOINT_DIR) -> list[tuple[str, Path, dict]]:
    """(name, stem path, card) for every readable checkpoint in a folder, the default first.

    Cached by the folder's modification time: the app lists on every rerun of every visitor, and every
    write here (atomic or exclusive) ends in a rename or a link, which changes that time."""
    folder = Path(folder)
    try:
        mtime = folder.stat().st_mtime_ns
    except OSError:
        return []
    key = folder.resolve()
    with _listing_lock:
        hit = _listing.get(key)
    if hit is not None and hit[0] == mtime:
        return list(hit[1])
    found = []
    for card_path in sorted(folder.glob("*.json")):
        weights = card_path.with_suffix(".safetensors")
        if not weights.is_file():
            continue
        try:
            if card_path.stat().st_size > MAX_CARD_BYTES:
                continue
            card = card_from_bytes(card_path.read_bytes())
            _check_header(weights)
        except (CheckpointError, OSError):
            continue
        found.append((card_path.stem, card_path.with_suffix(""), card))
    found.sort(key=lambda t: (t[0] != DEFAULT_NAME, t[0]))
    with _listing_lock:
        _listing[key] = (mtime, found)
    return list(found)


def default_checkpoint() -> Path:
    return CHECKPOINT_DIR / DEFAULT_NAME

"""A classroom's own sounds: named classes of short examples, recorded or uploaded in the browser.

They live in a browser session, so a reload would lose them: `to_zip` saves them as a zip of class
folders (CLASS/NAME.wav), the layout `envnet.data.read_class_folders` reads, so the same zip also trains
headless (`python -m envnet train --data FOLDER` after unzipping), and `from_zip` brings them back.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import torch

from envnet.audio import AUDIO_EXTENSIONS, AudioError, load_audio, to_wav_bytes
from envnet.checkpoint import name_problem
from envnet.data import Clip, Dataset
from envnet.model import SAMPLE_RATE

Examples = dict[str, list[tuple[str, torch.Tensor]]]  # class name → [(example name, 16 kHz wave)]
# to_zip also takes a wave already encoded as WAV bytes (a page keeps them for its players): no second encode.
SavedExamples = dict[str, list[tuple[str, "torch.Tensor | bytes"]]]

MAX_FILES = 1000
MAX_TOTAL_SECONDS = 10 * 60  # decoded audio kept in memory per zip (and per session, see pages/train.py)
# What the app can use from one zip is MAX_TOTAL_SECONDS of sound; stored as 48 kHz stereo float32 (the
# bulkiest common recording) that is 230 MB, so a zip claiming to unpack to more is refused unread. One
# member may hold a minute of that (23 MB), with room for headers and other layouts.
MAX_UNPACKED_BYTES = 256 << 20
MAX_MEMBER_BYTES = 32 << 20


def to_zip(examples: SavedExamples) -> bytes:
    """CLASS/NAME.wav for every example, 16-bit PCM at 16 kHz; names made unique within a class.
    Stored, not deflated: PCM barely compresses, and deflating minutes of it kept visitors waiting."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for cls, items in examples.items():
            folder = _safe_part(cls, "class")
            used: set[str] = set()
            for i, (name, wave) in enumerate(items):
                stem = _safe_part(PurePosixPath(name).stem, f"example-{i + 1}")
                unique, n = stem, 1
                while unique in used:
                    n += 1
                    unique = f"{stem}-{n}"
                used.add(unique)
                zf.writestr(f"{folder}/{unique}.wav", wave if isinstance(wave, bytes) else to_wav_bytes(wave))
    return buf.getvalue()


def from_zip(data: bytes, trim: bool = True) -> tuple[Examples, list[str]]:
    """Class folders from a zip (any depth: the folder holding the file names its class), decoded to
    16 kHz. Returns the examples and one message per file that could not be used; raises ValueError
    when the zip itself cannot be used."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"this is not a zip file ({e})") from e
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and not _hidden(m.filename)]
        if len(members) > MAX_FILES:
            raise ValueError(f"the zip holds {len(members)} files; at most {MAX_FILES} are read")
        if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
            raise ValueError(f"the zip would unpack to more than {MAX_UNPACKED_BYTES >> 20} MB; it was not read")
        examples: Examples = {}
        problems = []
        total = 0  # samples decoded so far
        for m in members:  # in the order they were saved: classes and examples keep their order
            path = PurePosixPath(m.filename)
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue  # READMEs, CSVs and the like are not examples
            if len(path.parts) < 2:
                problems.append(f"{m.filename}: not inside a class folder")
                continue
            if problem := name_problem(path.parent.name, "class name"):  # it would end up in a model card
                problems.append(f"{m.filename}: {problem}")
                continue
            if m.file_size > MAX_MEMBER_BYTES:
                problems.append(f"{m.filename}: {m.file_size / 2**20:.0f} MB unpacked; one file may be at most "
                                f"{MAX_MEMBER_BYTES >> 20} MB")
                continue
            if total >= MAX_TOTAL_SECONDS * SAMPLE_RATE:
                problems.append(f"{m.filename} and the rest: over {describe_seconds(MAX_TOTAL_SECONDS)} of sound, not loaded")
                break
            try:
                # load_audio checks the rate, channels and length from the header before decoding, then
                # decodes in blocks, mixing down as it goes: memory stays near the mono result.
                wave = load_audio(zf.read(m), trim=trim)
            except (AudioError, zipfile.BadZipFile, OSError, RuntimeError) as e:  # RuntimeError: encrypted
                problems.append(f"{m.filename}: {e}")
                continue
            total += wave.numel()
            examples.setdefault(path.parent.name, []).append((path.name, wave))
    if not examples:
        raise ValueError("no sound files inside class folders were found in the zip"
                         + (f" ({len(problems)} could not be used)" if problems else ""))
    return examples, problems


def to_dataset(examples: dict[str, list[torch.Tensor]], n_folds: int = 5) -> Dataset:
    """Named classes → 16 kHz waves → a Dataset with its waves loaded. Folds go round-robin within each
    class so that any fold, held out, contains every class that has enough examples."""
    classes = [c for c, waves in examples.items() if any(w.numel() for w in waves)]
    if len(classes) < 2:
        raise ValueError("name at least two classes and give each at least one example")
    clips, waves = [], []
    for label, c in enumerate(classes):
        for i, w in enumerate(x for x in examples[c] if x.numel()):
            clips.append(Clip(Path(f"<session>/{c}/{i}.wav"), label, i % n_folds + 1))
            waves.append(w)
    return Dataset(clips, classes, [None] * len(classes), "your own recordings", waves)


def describe_seconds(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"


def _safe_part(name: str, fallback: str) -> str:
    """One path component: no separators, no leading dots, so unzipping cannot write outside its folder."""
    cleaned = "".join("-" if ch in '/\\:*?"<>|' or ord(ch) < 32 else ch for ch in name).strip().lstrip(".")
    return cleaned[:80] or fallback


def _hidden(name: str) -> bool:
    """macOS's __MACOSX/ resource forks and dot-files, which every zip made on a Mac carries."""
    return any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(name).parts)

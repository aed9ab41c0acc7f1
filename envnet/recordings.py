"""A classroom's own sounds: named classes of short examples, recorded or uploaded in the browser.

`OwnClasses` holds them for one visitor: classes added by name, examples checked (not silent, within a
budget of sound per visitor), a zip out and in, and a Dataset to train on. They live in a browser session,
so a reload would lose them: `to_zip` saves them as a zip of class folders (CLASS/NAME.wav), the layout
`envnet.data.read_class_folders` reads, so the same zip also trains headless (`python -m envnet train
--data FOLDER` after unzipping), and `from_zip` brings them back.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch

from envnet import segment
from envnet.audio import AUDIO_EXTENSIONS, AudioError, is_silent, load_audio, to_wav_bytes
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
MIN_EXAMPLE_SAMPLES = SAMPLE_RATE // 20  # 50 ms: shorter is a click, not an example of a sound
BACKGROUND = "background"  # the class of "none of my sounds": the room, recorded
LONG_UPLOAD = 4.0  # seconds: an uploaded file longer than this is a session, split into examples


def _new_id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass(eq=False)
class Example:
    name: str
    wave: torch.Tensor  # 16 kHz mono
    id: str = field(default_factory=_new_id)  # stable across renames and reorders: a widget key
    _wav: bytes | None = None

    @property
    def seconds(self) -> float:
        return self.wave.numel() / SAMPLE_RATE

    @property
    def wav(self) -> bytes:
        """WAV bytes for a player and for the zip, encoded once (a page redraws on every click)."""
        if self._wav is None:
            self._wav = to_wav_bytes(self.wave)
        return self._wav


@dataclass(eq=False)
class OwnClass:
    examples: list[Example] = field(default_factory=list)
    id: str = field(default_factory=_new_id)


class OwnClasses:
    """One visitor's named classes of examples, at most MAX_TOTAL_SECONDS of sound in all (memory per
    visitor on a shared server). Refusals raise ValueError with a message meant for the visitor."""

    def __init__(self) -> None:
        self.classes: dict[str, OwnClass] = {}
        self._zip: tuple[tuple, bytes] | None = None  # (what it held, the zip): rebuilt only after a change

    def add_class(self, name: str) -> OwnClass:
        name = name.strip()
        if not name:
            raise ValueError("Type a name for the class first.")
        if problem := name_problem(name, "class name"):  # it ends up in the model card
            raise ValueError(problem[0].upper() + problem[1:] + ".")
        same = [c for c in self.classes if c.casefold() == name.casefold()]  # "Dog" and "dog" would be one sound
        if same:
            raise ValueError(f"There is already a class called “{same[0]}”.")
        return self.classes.setdefault(name, OwnClass())

    def remove_class(self, name: str) -> None:
        self.classes.pop(name, None)

    def remove(self, class_name: str, example: Example) -> None:
        self.classes[class_name].examples.remove(example)

    @property
    def held_samples(self) -> int:
        return sum(e.wave.numel() for c in self.classes.values() for e in c.examples)

    def add(self, class_name: str, name: str, wave: torch.Tensor) -> Example:
        """Keep an example (the class is made if new): refused when silent, shorter than 50 ms or over budget."""
        if wave.numel() < MIN_EXAMPLE_SAMPLES or is_silent(wave):
            raise ValueError("it is silent or shorter than 50 ms.")
        if self.held_samples + wave.numel() > MAX_TOTAL_SECONDS * SAMPLE_RATE:
            raise ValueError(budget_message())
        example = Example(name, wave)
        self.classes.setdefault(class_name, OwnClass()).examples.append(example)
        return example

    def add_session(self, class_name: str, wave: torch.Tensor, background: bool = False,
                    steady: bool = False) -> list[Example]:
        """A recording of one sound made again and again, split at its events (envnet.segment) into
        examples "take 1", "take 2", …; a background recording is cut into window-sized pieces instead, and
        so is a `steady` one (a file of rain or a fan: no events to find). Raises ValueError when no example
        could be found or kept."""
        segs = segment.split_background(wave) if background else segment.split_examples(wave)
        if not segs and steady:
            segs = segment.split_background(wave)
        if not segs:
            raise ValueError("no separate sounds were found in it: make the sound several times with a "
                             "short pause between, louder than the room.")
        start = len(self.classes.get(class_name, OwnClass()).examples)
        added = []
        for k, piece in enumerate(segment.cut(wave, segs)):
            try:
                added.append(self.add(class_name, f"take {start + k + 1}", piece))
            except ValueError as e:
                if str(e) == budget_message():
                    if not added:
                        raise
                    break
        if not added:
            raise ValueError("every piece it was split into was too short or silent.")
        return added

    def add_file(self, class_name: str, name: str, data: bytes, session: bool = False) -> list[Example]:
        """Decode and keep a sound file: one example, or, for a recording session or a file longer than
        LONG_UPLOAD, one per sound in it (add_session); a long file of one steady sound, in window-sized pieces
        (it was refused as "no separate sounds"). ValueError (AudioError included) when nothing is kept."""
        wave = load_audio(data, trim=not session)  # a session's pauses are where it is split: keep them
        if session or wave.numel() > LONG_UPLOAD * SAMPLE_RATE:
            # A session is asked for as a sound made again and again: without events it is the room, refused.
            return self.add_session(class_name, wave, background=class_name == BACKGROUND, steady=not session)
        return [self.add(class_name, name, wave)]

    def to_zip(self) -> bytes:
        """CLASS/NAME.wav for every example (see `to_zip` below), kept until the examples change."""
        content = tuple((n, tuple(e.id for e in c.examples)) for n, c in self.classes.items())
        if self._zip is None or self._zip[0] != content:
            self._zip = (content, to_zip({n: [(e.name, e.wav) for e in c.examples] for n, c in self.classes.items()}))
        return self._zip[1]

    def load_zip(self, data: bytes) -> tuple[int, int, list[str]]:
        """Add the examples of a saved zip: (examples added, classes in the zip, one message per problem).
        Raises ValueError when the zip itself cannot be used."""
        loaded, problems = from_zip(data)
        added, over_budget = 0, 0
        for class_name, items in loaded.items():
            self.classes.setdefault(class_name, OwnClass())
            for name, wave in items:
                try:
                    self.add(class_name, name, wave)
                    added += 1
                except ValueError as e:
                    if str(e) == budget_message():
                        over_budget += 1
                    else:
                        problems.append(f"{name}: {e}")
        if over_budget:
            problems.insert(0, f"{over_budget} example(s) not added: {budget_message()}")
        return added, len(loaded), problems

    def to_dataset(self, holdout: int = 0) -> tuple[Dataset, Dataset | None]:
        """The examples as a Dataset; with holdout=N every Nth example of each class is held out for
        validation: (train, held out), held out None when no class has N examples."""
        ds = to_dataset({n: [e.wave for e in c.examples] for n, c in self.classes.items()}, n_folds=holdout or 5)
        if not holdout:
            return ds, None
        held = ds.select(folds=[holdout])
        return (ds.select(exclude=[holdout]), held) if len(held) else (ds, None)


def budget_message() -> str:
    return (f"this session already holds {describe_seconds(MAX_TOTAL_SECONDS)} of examples. "
            "Remove some first.")


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
    return Dataset(clips, classes, [None] * len(classes), "your own examples", waves)


def describe_seconds(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"


def _safe_part(name: str, fallback: str) -> str:
    """One path component: no separators, no leading dots, so unzipping cannot write outside its folder."""
    cleaned = "".join("-" if ch in '/\\:*?"<>|' or ord(ch) < 32 else ch for ch in name).strip().lstrip(".")
    return cleaned[:80] or fallback


def _hidden(name: str) -> bool:
    """macOS's __MACOSX/ resource forks and dot-files, which every zip made on a Mac carries."""
    return any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(name).parts)

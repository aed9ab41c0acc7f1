"""Datasets: ESC-50/ESC-10 layout or one folder per class → 16 kHz waveforms (decoded once, cached),
random training crops, 10-crop test windows, and between-class (BC) mixing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from envnet import atomic
from envnet.audio import AUDIO_EXTENSIONS, AudioError, load_audio
from envnet.model import SAMPLE_RATE, WINDOW

CACHE_DIR = Path(os.environ.get("ENVNET_CACHE", Path.home() / ".cache" / "envnet"))


@dataclass
class Clip:
    path: Path
    label: int
    fold: int
    target: int | None = None  # ESC-50's id, when known


@dataclass
class Dataset:
    """Clips and their class names; `waves` are filled by `load_waves`."""

    clips: list[Clip]
    classes: list[str]
    targets: list[int | None] = field(default_factory=list)  # ESC-50 ids per class, where known
    source: str = ""
    waves: list[torch.Tensor] = field(default_factory=list, repr=False)

    def select(self, folds: list[int] | None = None, exclude: list[int] | None = None) -> Dataset:
        keep = [
            i for i, c in enumerate(self.clips)
            if (folds is None or c.fold in folds) and (exclude is None or c.fold not in exclude)
        ]
        return Dataset(
            [self.clips[i] for i in keep], self.classes, self.targets, self.source,
            [self.waves[i] for i in keep] if self.waves else [],
        )

    def relabel(self, classes: list[str]) -> Dataset:
        """The same clips with their classes in another order (same names), e.g. a model's."""
        if sorted(classes) != sorted(self.classes):
            raise ValueError(f"{classes} are not the dataset's classes {self.classes}")
        new = {i: classes.index(c) for i, c in enumerate(self.classes)}
        order = [self.classes.index(c) for c in classes]
        clips = [Clip(c.path, new[c.label], c.fold, c.target) for c in self.clips]
        targets = [self.targets[i] for i in order] if self.targets else []
        return Dataset(clips, list(classes), targets, self.source, list(self.waves))

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([c.label for c in self.clips], dtype=torch.long)

    @property
    def folds(self) -> list[int]:
        return sorted({c.fold for c in self.clips})

    def __len__(self) -> int:
        return len(self.clips)


def read_esc50(root: str | Path, subset: str = "esc50") -> Dataset:
    """ESC-50's layout: ROOT/audio/*.wav|ogg and ROOT/meta/esc50.csv. subset 'esc10' keeps its 10 classes."""
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found: expected ESC-50's layout (audio/ and meta/esc50.csv)")
    with open(meta, newline="") as f:
        rows = list(csv.DictReader(f))
    if subset == "esc10":
        rows = [r for r in rows if r.get("esc10", "").strip().lower() == "true"]
        if not rows:
            raise ValueError(f"{meta} lists no ESC-10 clips: choose the ESC-50 subset for this folder")
    elif subset != "esc50":
        raise ValueError(f"unknown subset {subset!r}; use esc50 or esc10")
    targets = sorted({int(r["target"]) for r in rows})
    names = {int(r["target"]): r["category"] for r in rows}
    index = {t: i for i, t in enumerate(targets)}
    clips = [
        Clip(root / "audio" / r["filename"], index[int(r["target"])], int(r["fold"]), int(r["target"]))
        for r in rows
        if (root / "audio" / r["filename"]).is_file()
    ]
    if not clips:
        raise FileNotFoundError(f"no audio files from {meta} were found in {root / 'audio'}")
    return Dataset(clips, [names[t] for t in targets], list(targets), f"{subset} at {root}")


def read_class_folders(root: str | Path, n_folds: int = 5, seed: int = 0) -> Dataset:
    """ROOT/CLASS_NAME/*.wav …: a teacher's own sounds. Folds are assigned deterministically
    (round-robin over a seeded shuffle within each class) so every fold holds every class."""
    root = Path(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    clips: list[Clip] = []
    classes: list[str] = []
    for d in class_dirs:
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            continue
        label = len(classes)
        classes.append(d.name)
        random.Random(f"{seed}:{d.name}").shuffle(files)
        clips += [Clip(p, label, i % n_folds + 1) for i, p in enumerate(files)]
    if len(classes) < 2:
        raise FileNotFoundError(f"{root}: need at least two class folders containing audio files")
    return Dataset(clips, classes, [None] * len(classes), f"class folders at {root}")


def is_esc50(folder: Path) -> bool:
    """Whether a folder is in ESC-50's layout: meta/esc50.csv and audio/."""
    return (folder / "meta" / "esc50.csv").is_file() and (folder / "audio").is_dir()


def read_dataset(root: str | Path, subset: str | None = None) -> Dataset:
    root = Path(root)
    if is_esc50(root):
        return read_esc50(root, subset or "esc50")
    return read_class_folders(root)


def _cache_path(path: Path, cache_dir: Path, trim: bool = True) -> Path:
    st = path.stat()
    # Untrimmed waves get their own key (trimmed ones keep the original key, so existing caches stay valid).
    mode = "" if trim else "|untrimmed"
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SAMPLE_RATE}{mode}".encode()).hexdigest()
    return cache_dir / "waves" / f"{key[:20]}.npy"


def load_waves(ds: Dataset, cache_dir: Path | None = CACHE_DIR, trim: bool = True, progress=None) -> Dataset:
    """Decode every clip to 16 kHz once; later runs read the cached float32 .npy files."""
    waves = []
    for i, clip in enumerate(ds.clips):
        cached = _cache_path(clip.path, cache_dir, trim) if cache_dir else None
        if cached is not None and cached.is_file():
            wave = torch.from_numpy(np.load(cached))
        else:
            try:
                wave = load_audio(clip.path, trim=trim, max_seconds=None)
            except AudioError:
                wave = torch.zeros(0)
            if cached is not None:
                npy = io.BytesIO()
                np.save(npy, wave.numpy())
                atomic.write(cached, npy.getvalue())
        waves.append(wave)
        if progress:
            progress(i + 1, len(ds.clips))
    ds.waves = waves
    return ds


# ---- crops -------------------------------------------------------------------------------------


def random_crop(wave: torch.Tensor, gen: torch.Generator, length: int = WINDOW, tries: int = 3) -> torch.Tensor:
    """The papers' training crop: pad half a window each side, take a random window.
    A few retries avoid near-silent crops, which carry no label information."""
    padded = torch.nn.functional.pad(wave, (length // 2, length // 2))
    peak = float(wave.abs().max()) if wave.numel() else 0.0
    crop = padded[:length]
    for _ in range(tries):
        start = int(torch.randint(0, padded.numel() - length + 1, (1,), generator=gen))
        crop = padded[start : start + length]
        if peak == 0 or float(crop.abs().max()) >= 0.2 * peak:
            break
    return crop


def stretch(wave: torch.Tensor, factor: float) -> torch.Tensor:
    """The sound played `factor` times slower (longer and lower; < 1: faster), resampled with linear
    interpolation as EnvNet-v2 does."""
    n = wave.numel()
    if n < 2:
        return wave
    pos = torch.arange(max(1, round(n * factor)), dtype=torch.float64) / factor
    i0 = pos.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    frac = (pos - i0).to(wave.dtype)
    return wave[i0] * (1 - frac) + wave[i1] * frac


def random_scale(wave: torch.Tensor, gen: torch.Generator, max_factor: float = 1.25) -> torch.Tensor:
    """EnvNet-v2's time-stretch augmentation: `stretch` by a log-uniform factor in [1/max, max]."""
    if wave.numel() < 2 or max_factor <= 1:
        return wave
    log_max = math.log(max_factor)
    return stretch(wave, math.exp(float(torch.empty(1).uniform_(-log_max, log_max, generator=gen))))


def random_gain(wave: torch.Tensor, gen: torch.Generator, max_db: float = 6.0) -> torch.Tensor:
    """A uniform random gain in ±max_db decibels (EnvNet-v2's other augmentation)."""
    db = float(torch.empty(1).uniform_(-max_db, max_db, generator=gen))
    return wave * 10 ** (db / 20)


# ---- between-class learning (Tokozume, Ushiku & Harada, ICLR 2018) ------------------------------


def _a_weighting(freqs: torch.Tensor, min_db: float = -80.0) -> torch.Tensor:
    f2 = freqs.double() ** 2
    f2[0] = 1.0  # avoid log(0); DC gets min_db below
    weight = (
        2.0 + 20.0 * (torch.log10(torch.tensor(12194.0**2)) + 2 * torch.log10(f2)
        - torch.log10(f2 + 12194**2) - torch.log10(f2 + 20.6**2)
        - 0.5 * torch.log10(f2 + 107.7**2) - 0.5 * torch.log10(f2 + 737.9**2))
    )
    weight[0] = min_db
    return weight.clamp(min=min_db).float()


def sound_gain(wave: torch.Tensor, sr: int = SAMPLE_RATE, n_fft: int = 1024, min_db: float = -80.0) -> float:
    """Peak A-weighted loudness in dB over frames, as BC learning uses to mix perceptually."""
    if wave.numel() < n_fft:
        wave = torch.nn.functional.pad(wave, (0, n_fft - wave.numel()))
    frames = wave.unfold(0, n_fft, n_fft // 2)
    spec = torch.fft.rfft(frames * torch.hann_window(n_fft, periodic=False), dim=-1).abs() ** 2
    a = 10 ** (_a_weighting(torch.fft.rfftfreq(n_fft, 1 / sr)) / 10)
    g = (spec * a).sum(-1).clamp(min=10 ** (min_db / 10))
    return float(10 * torch.log10(g).max())


def bc_mix(s1: torch.Tensor, s2: torch.Tensor, r: float, g1: float | None = None, g2: float | None = None) -> torch.Tensor:
    """Mix two sounds so that s1 is perceived with ratio r: t = 1 / (1 + 10^((g1-g2)/20) (1-r)/r),
    normalised by sqrt(t² + (1-t)²) to keep the energy of a mix of two independent sounds."""
    g1 = sound_gain(s1) if g1 is None else g1
    g2 = sound_gain(s2) if g2 is None else g2
    r = min(max(r, 1e-6), 1 - 1e-6)
    t = 1.0 / (1.0 + 10 ** ((g1 - g2) / 20.0) * (1 - r) / r)
    return (s1 * t + s2 * (1 - t)) / math.sqrt(t**2 + (1 - t) ** 2)


def bc_batch(
    crops: torch.Tensor, labels: torch.Tensor, n_classes: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair each crop with a random crop of another class and mix: (mixed waves, soft labels summing to 1)."""
    n = crops.shape[0]
    perm = torch.randperm(n, generator=gen)
    out, soft = torch.empty_like(crops), torch.zeros(n, n_classes)
    gains = [sound_gain(c) for c in crops]
    for i in range(n):
        j = int(perm[i])
        if labels[j] == labels[i]:  # find any partner of another class, if the batch has one
            others = torch.nonzero(labels != labels[i]).flatten()
            if others.numel():
                j = int(others[torch.randint(0, others.numel(), (1,), generator=gen)])
        r = float(torch.rand(1, generator=gen))
        out[i] = bc_mix(crops[i], crops[j], r, gains[i], gains[j])
        soft[i, labels[i]] += r
        soft[i, labels[j]] += 1 - r
    return out, soft

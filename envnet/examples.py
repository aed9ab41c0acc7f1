"""Demo sounds the app can always offer (no dataset needed), and the dataset clips it can find locally."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from envnet.data import CACHE_DIR, is_esc50, read_dataset
from envnet.model import SAMPLE_RATE
from envnet.spectra import tone

DURATION = 3.0  # seconds: two windows' worth, so the timeline has something to show


def _t(seconds: float = DURATION) -> torch.Tensor:
    return torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE


def sweep(f0: float = 50.0, f1: float = 7500.0, seconds: float = DURATION, amplitude: float = 0.5) -> torch.Tensor:
    """Exponential sweep: equal time per octave, as the ear (and a log axis) reads it."""
    t = _t(seconds)
    k = torch.log(torch.tensor(f1 / f0, dtype=torch.float64))
    phase = 2 * torch.pi * f0 * seconds / k * (torch.exp(t / seconds * k) - 1)
    return (amplitude * torch.sin(phase)).float()


def clicks(rate: float = 4.0, seconds: float = DURATION, amplitude: float = 0.8) -> torch.Tensor:
    """Short decaying bursts `rate` times a second, like a clock ticking."""
    n = int(seconds * SAMPLE_RATE)
    out = torch.zeros(n)
    gen = torch.Generator().manual_seed(1)
    burst = torch.randn(200, generator=gen) * torch.exp(-torch.arange(200) / 30.0)
    burst = amplitude * burst / burst.abs().max()
    for s in range(0, n - 200, int(SAMPLE_RATE / rate)):
        out[s : s + 200] += burst
    return out


def noise(seconds: float = DURATION, amplitude: float = 0.3, colour: str = "white") -> torch.Tensor:
    """White noise, or pink (power falling 3 dB per octave, like rain or a waterfall)."""
    gen = torch.Generator().manual_seed(0)
    n = int(seconds * SAMPLE_RATE)
    w = torch.randn(n, generator=gen)
    if colour == "pink":
        spec = torch.fft.rfft(w)
        f = torch.arange(spec.numel()).clamp(min=1).float()
        w = torch.fft.irfft(spec / f.sqrt(), n=n)
    return (amplitude * w / w.abs().max()).float()


def chord(freqs: tuple[float, ...] = (262.0, 330.0, 392.0), seconds: float = DURATION) -> torch.Tensor:
    return sum(tone(f, int(seconds * SAMPLE_RATE), 0.5 / len(freqs)) for f in freqs)


DEMO_SOUNDS: dict[str, Callable[[], torch.Tensor]] = {
    "Tone 440 Hz": lambda: tone(440.0, int(DURATION * SAMPLE_RATE)),
    "Tone 3 kHz": lambda: tone(3000.0, int(DURATION * SAMPLE_RATE)),
    "Sweep 50 Hz → 7.5 kHz": sweep,
    "Clicks (4 per second)": clicks,
    "White noise": noise,
    "Pink noise": lambda: noise(colour="pink"),
    "C major chord": chord,
}


def dataset_roots() -> list[Path]:
    """Folders in ESC-50's layout that are present on this machine: $ENVNET_DATA, the download cache
    (envnet.data.CACHE_DIR, searched two levels deep) and ../shared/data beside the repository."""
    candidates: list[Path] = []
    if os.environ.get("ENVNET_DATA"):
        candidates.append(Path(os.environ["ENVNET_DATA"]))
    for base in (CACHE_DIR, Path(__file__).resolve().parents[2] / "shared" / "data"):
        if base.is_dir():
            subdirs = sorted(p for p in base.iterdir() if p.is_dir())
            # Not into a dataset's own folders: every page run calls this, and audio/ holds thousands of clips.
            candidates += [base, *subdirs, *sorted(q for p in subdirs if not is_esc50(p) for q in p.iterdir()
                                                   if q.is_dir())]
    seen, found = set(), []
    for c in candidates:
        try:
            key = c.resolve()
        except OSError:
            continue
        if key not in seen and is_esc50(c):
            seen.add(key)
            found.append(c)
    return found


def clips_by_class(root: str | Path, subset: str | None = None, per_class: int = 8, *,
                   known: Sequence[str] = (), train_folds: Sequence[int] = ()) -> dict[str, list[tuple[Path, bool]]]:
    """Up to `per_class` clips for each class of a dataset (ESC-50 layout or class folders), each with whether
    a model that knows the classes `known` and trained on folds `train_folds` of this dataset heard it in
    training. Clips it never heard come first, so examples show how the model does on new sounds."""
    ds = read_dataset(root, subset)
    out: dict[str, list[tuple[Path, bool]]] = {c: [] for c in ds.classes}
    for clip in ds.clips:
        name = ds.classes[clip.label]
        out[name].append((clip.path, name in known and clip.fold in train_folds))
    return {c: sorted(items, key=lambda t: t[1])[:per_class] for c, items in out.items()}

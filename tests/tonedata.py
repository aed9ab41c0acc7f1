"""Tiny generated datasets for the data/training tests: three classes that a network can tell apart
within a few epochs (a low tone, a high tone, white noise), in memory or written in either layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from envnet.data import Clip, Dataset
from envnet.train import TrainConfig

SR = 16_000
CLASSES = ["low", "high", "noise"]


def tone_clip(kind: int, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    if kind == 0:
        x = np.sin(2 * np.pi * rng.uniform(250, 350) * t + rng.uniform(0, 6.3))
    elif kind == 1:
        x = np.sin(2 * np.pi * rng.uniform(2500, 3500) * t + rng.uniform(0, 6.3))
    else:
        x = np.clip(rng.standard_normal(t.size) / 3, -1, 1)
    return (x * rng.uniform(0.3, 0.9)).astype(np.float32)


def memory_dataset(per_class: int, seed: int = 0, fold: int = 1, seconds: float = 1.0) -> Dataset:
    """A Dataset with waves already loaded (no files): the fastest way to feed the Trainer."""
    rng = np.random.default_rng(seed)
    clips, waves = [], []
    for label in range(len(CLASSES)):
        for i in range(per_class):
            clips.append(Clip(Path(f"{CLASSES[label]}_{seed}_{i}.wav"), label, fold))
            waves.append(torch.from_numpy(tone_clip(label, rng, seconds)))
    return Dataset(clips, list(CLASSES), [None] * len(CLASSES), "generated tones", waves)


def write_class_folders(root: Path, per_class: int, seed: int = 0, seconds: float = 1.0) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sf.write(root / name / f"{name}{i:02d}.wav", tone_clip(label, rng, seconds), SR)
    return root


# ESC-50 ids for the generated classes: any distinct ids do, these mimic real ESC-10 ones.
ESC_TARGETS = {"low": 0, "high": 1, "noise": 10}


def write_esc50(root: Path, per_class_per_fold: int = 1, folds: tuple[int, ...] = (1, 2, 3, 4, 5),
                seed: int = 0, seconds: float = 1.0, extra_esc50_only: bool = True) -> Path:
    """ESC-50's layout: ROOT/audio/*.wav and ROOT/meta/esc50.csv, whose esc10 column marks the
    generated classes; with extra_esc50_only, one more class ('hum', ESC-50 only) is added."""
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    classes = [(name, ESC_TARGETS[name], label, True) for label, name in enumerate(CLASSES)]
    if extra_esc50_only:
        classes.append(("hum", 42, 0, False))
    rows = []
    for fold in folds:
        for name, target, kind, esc10 in classes:
            for i in range(per_class_per_fold):
                fname = f"{fold}-{target:03d}{i}-A-{target}.wav"
                sf.write(root / "audio" / fname, tone_clip(kind, rng, seconds), SR)
                rows.append({"filename": fname, "fold": fold, "target": target, "category": name,
                             "esc10": str(esc10), "src_file": f"{target:03d}{i}", "take": "A"})
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def tone_clips(freq: float, n: int = 3, seconds: float = 1.0) -> list[torch.Tensor]:
    """n slightly different tones of one pitch, as a user's own recordings of one class might be."""
    t = torch.arange(int(seconds * SR)) / SR
    return [(0.3 + 0.1 * i) * torch.sin(2 * torch.pi * freq * (1 + 0.02 * i) * t) for i in range(n)]


def tiny_config(**overrides) -> TrainConfig:
    """Settings that finish in seconds: two epochs, small batches, a narrow classifier, fp32."""
    base = dict(epochs=2, batch_size=8, fc_width=64, eval_every=1, filters_every=1, bf16=False)
    base.update(overrides)
    return TrainConfig(**base)


def made_sound(kind: str, rng: np.random.Generator, seconds: float | None = None) -> torch.Tensor:
    """One example of a generated sound class, different every time (pitch, length, loudness, noise)."""
    seconds = rng.uniform(0.6, 1.4) if seconds is None else seconds
    t = np.arange(int(seconds * SR)) / SR
    if kind == "whistle":  # a high tone with vibrato
        f = rng.uniform(1800, 2400)
        x = np.sin(2 * np.pi * f * t + 3 * np.sin(2 * np.pi * 5 * t))
    elif kind == "buzz":  # a low square wave
        f = rng.uniform(90, 140)
        x = np.sign(np.sin(2 * np.pi * f * t))
    elif kind == "knocks":  # decaying noise bursts, three in a second-long example
        x = np.zeros_like(t)
        for k in range(3 if seconds < 1.5 else int(seconds / 0.2)):
            i = int((0.05 + 0.18 * (k % 3) + 0.6 * (k // 3)) * SR)  # groups of three
            if i >= len(x):
                break
            n = min(int(0.05 * SR), len(x) - i)
            x[i : i + n] += rng.standard_normal(n) * np.exp(-np.arange(n) / (0.01 * SR))
    else:
        raise ValueError(kind)
    x = rng.uniform(0.2, 0.7) * x / np.abs(x).max() + 0.005 * rng.standard_normal(len(t))
    return torch.from_numpy(x.astype(np.float32))


KINDS = ["whistle", "buzz", "knocks"]

"""A clip → per-window class probabilities → the clip's probabilities (softmax mean) → top-k."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envnet.audio import pad_to_window, window_starts
from envnet.fast import inference_model
from envnet.model import WINDOW, EnvNet

BATCH = 32  # windows per forward pass: bounds memory for long clips


@dataclass
class Prediction:
    classes: list[str]
    probs: torch.Tensor  # (classes,) mean over windows
    window_probs: torch.Tensor  # (n_windows, classes)
    starts: list[int]  # each window's first sample in the clip (negative when a short clip was padded)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        k = max(1, min(k, len(self.classes)))
        p, i = self.probs.topk(k)
        return [(self.classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist(), strict=False)]

    @property
    def label(self) -> str:
        return self.classes[int(self.probs.argmax())]


def window_probabilities(model: EnvNet, batch: torch.Tensor) -> torch.Tensor:
    """(n, 24014) windows → (n, classes) softmax, in eval mode, BATCH windows at a time."""
    fast = inference_model(model)  # BN folded, channels-last: same probabilities, faster (envnet/fast.py)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = torch.cat([torch.softmax(fast(batch[i : i + BATCH]), -1) for i in range(0, len(batch), BATCH)])
    model.train(was_training)
    return out


def predict(
    model: EnvNet, wave: torch.Tensor, classes: list[str], *, n_crops: int | None = 10, hop: int | None = None
) -> Prediction:
    """Classify a 16 kHz mono clip: 10 evenly spaced windows (the papers' test), or every `hop` samples.

    Windows are cut BATCH at a time, so a long recording with a small hop never holds all its
    windows in memory at once (a 10-minute clip at a 0.1 s hop would otherwise need ~0.5 GB).
    """
    if len(classes) != model.config.n_classes:
        raise ValueError(f"{len(classes)} class names for a model with {model.config.n_classes} outputs")
    padded = pad_to_window(wave.float(), WINDOW)
    offset = (padded.numel() - wave.numel()) // 2
    starts = window_starts(padded.numel(), WINDOW, n_crops=n_crops, hop=hop)
    fast = inference_model(model)  # BN folded, channels-last: same probabilities, faster (envnet/fast.py)
    was_training = model.training
    model.eval()
    parts = []
    with torch.inference_mode():
        for i in range(0, len(starts), BATCH):
            batch = torch.stack([padded[s : s + WINDOW] for s in starts[i : i + BATCH]])
            parts.append(torch.softmax(fast(batch), -1))
    model.train(was_training)
    wp = torch.cat(parts)
    return Prediction(list(classes), wp.mean(0), wp, [s - offset for s in starts])


def predict_spectrogram(model: EnvNet, spec: torch.Tensor, classes: list[str], *, start: int = 0) -> Prediction:
    """One learned 40 × 150 spectrogram → the Prediction that predict() gives for the window it came from.

    Only the classifier half runs: a live stream computes the front end column by column (envnet/stream.py)
    and must not pay for it again four times a second."""
    if len(classes) != model.config.n_classes:
        raise ValueError(f"{len(classes)} class names for a model with {model.config.n_classes} outputs")
    fast = inference_model(model)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        wp = torch.softmax(fast.classify(spec.float().reshape(1, *spec.shape[-2:])), -1)
    model.train(was_training)
    return Prediction(list(classes), wp[0], wp, [start])

"""Held-out accuracy the papers' way (class probabilities averaged over 10 crops of each clip), through `predict`."""

from __future__ import annotations

import torch

from envnet.data import Dataset
from envnet.model import EnvNet
from envnet.predict import predict


def clip_probabilities(model: EnvNet, waves: list[torch.Tensor], n_crops: int = 10) -> torch.Tensor:
    """(n_clips, classes): each clip's class probabilities exactly as `predict` gives them to a user, so
    the accuracy on a model card is the accuracy of the app and the CLI."""
    names = [str(i) for i in range(model.config.n_classes)]  # evaluate scores by output index
    if not waves:
        return torch.zeros(0, len(names))
    return torch.stack([predict(model, w, names, n_crops=n_crops).probs for w in waves])


def evaluate(model: EnvNet, ds: Dataset, n_crops: int = 10) -> dict:
    """accuracy, n_clips, per_class {name: accuracy}, confusion [true][predicted], loss (mean NLL), and
    scores: each non-empty clip's top class probability, the verdict's score (envnet.verdict.scores)."""
    keep = [i for i, w in enumerate(ds.waves) if w.numel()]
    labels = ds.labels[keep]
    probs = clip_probabilities(model, [ds.waves[i] for i in keep], n_crops)
    n = len(ds.classes)
    confusion = torch.zeros(n, n, dtype=torch.long)
    if len(keep):
        pred = probs.argmax(1)
        confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
        loss = float(-torch.log(probs[torch.arange(len(keep)), labels].clamp(min=1e-12)).mean())
    else:
        loss = float("nan")
    totals = confusion.sum(1)
    per_class = {
        c: (float(confusion[i, i] / totals[i]) if totals[i] else None) for i, c in enumerate(ds.classes)
    }
    return {
        "accuracy": float(confusion.diag().sum() / max(1, len(keep))),
        "n_clips": len(keep),
        "loss": loss,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "classes": list(ds.classes),
        "scores": probs.max(1).values if len(keep) else torch.zeros(0),
    }

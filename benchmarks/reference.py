"""The plain reference: EnvNet written the obvious way, as in the seed blog post, to measure against.

Everything here is deliberately default: nn.Conv2d with (1, 8) kernels on (batch, 1, 1, 24014) input,
BatchNorm2d, ReLU, fp32, a new torchaudio resample on every call, one forward over the 10 windows. It
loads the same weights as envnet.model.EnvNet (the library's Conv1d weights (40, 1, 8) become (40, 1, 1, 8)),
so the two can be compared number for number.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import nn

SAMPLE_RATE = 16_000
WINDOW = 24_014


class ReferenceEnvNet(nn.Module):
    def __init__(self, n_classes: int = 10, fc_width: int = 4096):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 40, (1, 8), bias=False)
        self.bn1 = nn.BatchNorm2d(40)
        self.conv2 = nn.Conv2d(40, 40, (1, 8), bias=False)
        self.bn2 = nn.BatchNorm2d(40)
        self.pool2 = nn.MaxPool2d((1, 160))
        self.conv3 = nn.Conv2d(1, 50, (8, 13), bias=False)
        self.bn3 = nn.BatchNorm2d(50)
        self.pool3 = nn.MaxPool2d(3)
        self.conv4 = nn.Conv2d(50, 50, (1, 5), bias=False)
        self.bn4 = nn.BatchNorm2d(50)
        self.pool4 = nn.MaxPool2d((1, 3))
        self.fc5 = nn.Linear(50 * 11 * 14, fc_width)
        self.fc6 = nn.Linear(fc_width, fc_width)
        self.fc7 = nn.Linear(fc_width, n_classes)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1, 1, 24014) → (batch, classes) logits."""
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        h = self.pool2(h)  # (batch, 40, 1, 150)
        h = h.transpose(1, 2)  # (batch, 1, 40, 150): the learned spectrogram as an image
        h = self.pool3(self.relu(self.bn3(self.conv3(h))))
        h = self.pool4(self.relu(self.bn4(self.conv4(h))))
        h = h.flatten(1)
        h = self.dropout(self.relu(self.fc5(h)))
        h = self.dropout(self.relu(self.fc6(h)))
        return self.fc7(h)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1, 1, 24014) → (batch, 40, 150) learned spectrogram."""
        h = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        return self.pool2(h)[:, :, 0]


_RENAME = {"conv1.0": "conv1", "conv1.1": "bn1", "conv2.0": "conv2", "conv2.1": "bn2",
           "conv3.0": "conv3", "conv3.1": "bn3", "conv4.0": "conv4", "conv4.1": "bn4"}


def from_library(model: nn.Module) -> ReferenceEnvNet:
    """A ReferenceEnvNet holding exactly the weights of an envnet.model.EnvNet, in eval mode."""
    ref = ReferenceEnvNet(model.config.n_outputs, model.config.fc_width)
    ref.n_classes = model.config.n_classes  # a "none of these" output is not a class
    sd = {}
    for k, v in model.state_dict().items():
        prefix, _, rest = k.rpartition(".")
        name = f"{_RENAME.get(prefix, prefix)}.{rest}"
        if name in ("conv1.weight", "conv2.weight"):
            v = v.unsqueeze(2)  # (out, in, 8) → (out, in, 1, 8)
        sd[name] = v.float()
    ref.load_state_dict(sd)
    return ref.eval()


def decode(data: bytes) -> torch.Tensor:
    """WAV/FLAC/OGG bytes → mono float32 at 16 kHz, resampling with a kernel built on every call."""
    audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    wave = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))
    if sr != SAMPLE_RATE:
        wave = AF.resample(wave, sr, SAMPLE_RATE)
    peak = float(wave.abs().max()) if wave.numel() else 0.0
    return wave / peak if peak > 1.0 else wave


def ten_windows(wave: torch.Tensor, n_crops: int = 10) -> torch.Tensor:
    """The same 10 evenly spaced windows as envnet.audio.windows (short clips centred in zeros)."""
    if wave.numel() < WINDOW:
        missing = WINDOW - wave.numel()
        wave = torch.nn.functional.pad(wave, (missing // 2, missing - missing // 2))
    last = wave.numel() - WINDOW
    starts = sorted({round(i * last / (n_crops - 1)) for i in range(n_crops)}) if last > 0 else [0]
    return torch.stack([wave[s : s + WINDOW] for s in starts])


def window_probabilities(model: ReferenceEnvNet, batch: torch.Tensor) -> torch.Tensor:
    """(n, 24014) → (n, classes) softmax (the classes' share of it): one fp32 forward under no_grad."""
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(batch[:, None, None, :]), dim=-1)[:, : getattr(model, "n_classes", None)]


def classify(model: ReferenceEnvNet, data: bytes, classes: list[str], k: int = 5) -> list[tuple[str, float]]:
    """Bytes → top-k (label, probability): decode, resample, 10 windows, forward, softmax mean."""
    probs = window_probabilities(model, ten_windows(decode(data))).mean(0)
    p, i = probs.topk(min(k, len(classes)))
    return [(classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist(), strict=True)]


def train(data_root: str, epochs: int = 3, fc_width: int = 1024, batch: int = 64, folds=(1, 2, 3, 4),
          seed: int = 0) -> list[float]:
    """The plain training loop: ESC-10 clips decoded and resampled with torchaudio, one random 1.5 s crop
    per clip per epoch, Nesterov SGD at lr 0.01, fp32, batches of 64. Returns each epoch's mean loss."""
    root = Path(data_root)
    with open(root / "meta" / "esc50.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["esc10"].strip().lower() == "true" and int(r["fold"]) in folds
                and (root / "audio" / r["filename"]).is_file()]
    targets = sorted({int(r["target"]) for r in rows})
    waves = [decode((root / "audio" / r["filename"]).read_bytes()) for r in rows]
    labels = torch.tensor([targets.index(int(r["target"])) for r in rows])
    torch.manual_seed(seed)
    model = ReferenceEnvNet(len(targets), fc_width)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(waves))
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            crops = []
            for j in idx.tolist():
                w = torch.nn.functional.pad(waves[j], (WINDOW // 2, WINDOW // 2))
                s = int(torch.randint(0, w.numel() - WINDOW + 1, (1,)))
                crops.append(w[s : s + WINDOW])
            loss = torch.nn.functional.cross_entropy(model(torch.stack(crops)[:, None, None, :]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(order))
    return losses


def step_seconds(repeats: int, fc_width: int = 1024, batch: int = 64, warmup: int = 1) -> list[float]:
    """Seconds per training step of the plain loop above on one batch of random 1.5 s crops of 5 s clips (the
    same shapes as ESC-10's), each step timed alone after `warmup` untimed ones."""
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.randn(batch, 1, 1, WINDOW, generator=g)
    labels = torch.randint(0, 10, (batch,), generator=g)
    model = ReferenceEnvNet(10, fc_width)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


if __name__ == "__main__":
    # python benchmarks/reference.py train DATA [EPOCHS]: the whole-process baseline
    # python benchmarks/reference.py step REPEATS: training steps, in a process of its own (PyTorch's defaults)
    if len(sys.argv) >= 3 and sys.argv[1] == "train":
        print(train(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3))
    elif len(sys.argv) >= 3 and sys.argv[1] == "step":
        print(json.dumps(step_seconds(int(sys.argv[2]))))

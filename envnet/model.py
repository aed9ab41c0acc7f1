"""EnvNet (Tokozume & Harada, ICASSP 2017), read top to bottom.

    raw 16 kHz audio, 1 × 24,014 samples
    conv(1,8) 40 → conv(1,8) 40 → maxpool(1,160)     = 40 × 150 learned "spectrogram"
    conv(8,13) 50 → maxpool 3 → conv(1,5) 50 → maxpool(1,3) → fc → fc → classes

The first two layers only ever slide along time, so they are written as Conv1d: the same weights as
the paper's (1, k) Conv2d, stored as (out, in, k), and several times faster on a CPU (benchmarks/).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from envnet.train_ops import band_conv, conv_bn_fold, conv_bn_pool

SAMPLE_RATE = 16_000
WINDOW = 24_014  # 1.5 s plus the 14 samples the two 8-tap convolutions eat: 24014 → 24007 → 24000
N_BANDS = 40
N_FRAMES = 150
POOL = 160  # 24000 / 160 = 150 frames, i.e. 10 ms per frame like a spectrogram's hop


@dataclass
class EnvNetConfig:
    """Everything needed to rebuild the architecture; it is saved in every model card."""

    n_classes: int = 10
    fc_width: int = 4096  # the paper's; smaller widths suit small datasets and keep checkpoints small
    dropout: float = 0.5
    # One more output after the classes: "none of these", trained on sounds outside them (envnet/verdict.py).
    other: bool = False
    arch: str = field(default="envnet", init=False)

    @property
    def n_outputs(self) -> int:
        return self.n_classes + int(self.other)

    def to_dict(self) -> dict:
        return asdict(self)



class ConvBNReLU(nn.Sequential):
    def __init__(self, conv: nn.Module, channels: int, dims: int):
        bn = nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
        super().__init__(conv, bn, nn.ReLU(inplace=True))


class EnvNet(nn.Module):
    def __init__(self, config: EnvNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = config or EnvNetConfig(**kwargs)
        c = self.config
        # No bias before BatchNorm: BN's shift makes it redundant.
        self.conv1 = ConvBNReLU(nn.Conv1d(1, N_BANDS, 8, bias=False), N_BANDS, 1)
        self.conv2 = ConvBNReLU(nn.Conv1d(N_BANDS, N_BANDS, 8, bias=False), N_BANDS, 1)
        self.conv3 = ConvBNReLU(nn.Conv2d(1, 50, (8, 13), bias=False), 50, 2)
        self.conv4 = ConvBNReLU(nn.Conv2d(50, 50, (1, 5), bias=False), 50, 2)
        self.fc5 = nn.Linear(50 * 11 * 14, c.fc_width)
        self.fc6 = nn.Linear(c.fc_width, c.fc_width)
        self.fc7 = nn.Linear(c.fc_width, c.n_outputs)
        self.calibration = None  # the verdict's rule from the model card (envnet.verdict.Calibration)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 24014) raw audio → (batch, 40, 150) learned spectrogram: band × frame."""
        (conv1, bn1, relu1), (conv2, bn2, _) = self.conv1, self.conv2
        x = x.unsqueeze(1)
        # While BatchNorm learns in fp32, the same sums in fewer passes over the big activations
        # (envnet.train_ops). conv2's ReLU runs after the max-pool: the two commute exactly (forward and
        # gradients), and the pooled tensor is 160× smaller.
        rewrite = torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
        if rewrite and bn1.training:
            h = relu1(conv_bn_fold(x, conv1.weight, bn1))
        else:
            h = self.conv1(x)
        if rewrite and bn2.training:
            return F.relu_(conv_bn_pool(h, conv2.weight, bn2, POOL))
        return F.relu_(F.max_pool1d(bn2(conv2(h)), POOL))

    def classify(self, spec: torch.Tensor) -> torch.Tensor:
        """(batch, 40, 150) learned spectrogram → (batch, outputs) logits."""
        return self.head(self.pooled(spec))

    def pooled(self, spec: torch.Tensor) -> torch.Tensor:
        """(batch, 40, 150) learned spectrogram → (batch, 7700) pooled conv4 maps, fc5's input."""
        conv, bn, relu = self.conv3
        h = relu(bn(band_conv(spec, conv.weight)))  # the 40 bands are the image's rows
        h = F.max_pool2d(h, 3)
        h = self.conv4(h)
        return F.max_pool2d(h, (1, 3)).flatten(1)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """fc5 → fc6 → fc7 on pooled conv4 maps."""
        p = self.config.dropout if self.training else 0.0
        h = F.dropout(F.relu(self.fc5(h)), p)
        h = F.dropout(F.relu(self.fc6(h)), p)
        return self.fc7(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def build_model(name: str = "envnet", **kwargs) -> EnvNet:
    """A tiny registry, so checkpoints name their architecture and the app can list what exists."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](EnvNetConfig(**kwargs))


MODELS = {"envnet": EnvNet}


@contextmanager
def inference(model: nn.Module):
    """Eval mode and no autograd inside the block; the model's own mode comes back after, even on error."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def layer_walkthrough(model: EnvNet) -> list[dict]:
    """Each stage's name, output shape and parameter count for one window, as the app shows them.

    Shapes are read off a real forward pass, so they stay true if the model changes.
    """
    rows: list[dict] = []

    def add(name: str, what: str, t: torch.Tensor, module: nn.Module | None = None) -> torch.Tensor:
        params = sum(p.numel() for p in module.parameters()) if module is not None else 0
        rows.append({"layer": name, "what": what, "shape": tuple(t.shape[1:]), "params": params})
        return t

    with inference(model):
        x = add("input", "1.5 s of raw audio at 16 kHz", torch.zeros(1, 1, WINDOW))
        x = add("conv1", "40 filters × 8 taps, BatchNorm, ReLU", model.conv1(x), model.conv1)
        x = add("conv2", "40 filters × 8 taps × 40 channels, BatchNorm, ReLU", model.conv2(x), model.conv2)
        x = add("pool2", "max over 160 samples (10 ms)", F.max_pool1d(x, POOL))
        x = add("transpose", "bands become rows: the 40 × 150 learned spectrogram", x.unsqueeze(1))
        x = add("conv3", "50 filters of 8 bands × 13 frames, BatchNorm, ReLU", model.conv3(x), model.conv3)
        x = add("pool3", "max over 3 × 3", F.max_pool2d(x, 3))
        x = add("conv4", "50 filters of 1 × 5, BatchNorm, ReLU", model.conv4(x), model.conv4)
        x = add("pool4", "max over 1 × 3", F.max_pool2d(x, (1, 3)))
        x = add("flatten", "50 × 11 × 14 numbers", x.flatten(1))
        x = add("fc5", f"fully connected, {model.config.fc_width} units, ReLU, dropout", model.fc5(x), model.fc5)
        x = add("fc6", f"fully connected, {model.config.fc_width} units, ReLU, dropout", model.fc6(x), model.fc6)
        what = "one score per class" + (" and one for 'none of these'" if model.config.other else "")
        add("fc7", f"{what} (softmax gives probabilities)", model.fc7(x), model.fc7)
    return rows

"""Inference speed-ups that keep the results equal: an eval-only copy of EnvNet built once per weights.

What it changes, each measured in benchmarks/ (see benchmarks/README.md for the numbers):
- BatchNorm is folded into the convolution before it (eval mode's BN is an affine map per channel).
- The two first layers run as (1, 8) Conv2d on channels-last tensors: for inference oneDNN's 2-D
  kernel is about twice as fast as Conv1d on these long, thin inputs (Conv1d stays the faster choice
  for training's backward pass, which is why envnet.model keeps it).
- Overlapping windows of one clip share their pass through the first two layers (`window_features`).
- Everything runs under inference_mode, in fp32. bf16 autocast is faster still (~1.4× more) but keeps
  only 8 mantissa bits: probabilities move by 2e-5 on the placeholder checkpoint, more than the 1e-5
  tolerance of tests/test_fast_path.py, and more on confident trained models, so it is not used.

`inference_model(model)` returns the fast copy, cached per model and rebuilt automatically when the
model's weights change (training, load_state_dict), so callers never see stale weights.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from envnet.model import N_BANDS, N_FRAMES, POOL, WINDOW, EnvNet


def _fold(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of one convolution that equals conv followed by eval-mode BatchNorm."""
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    w = conv.weight.detach().float() * scale.view(-1, *[1] * (conv.weight.dim() - 1))
    b = bn.bias.detach().float() - bn.running_mean.float() * scale
    if conv.bias is not None:
        b = b + conv.bias.detach().float() * scale
    return w, b


def _conv2d(w: torch.Tensor, b: torch.Tensor) -> nn.Conv2d:
    if w.dim() == 3:  # a Conv1d's (out, in, k) is a (1, k) Conv2d's (out, in, 1, k)
        w = w.unsqueeze(2)
    conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), bias=True)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    return conv


class FastEnvNet(nn.Module):
    """EnvNet for inference only: same outputs as EnvNet.eval() to float rounding (~1e-8), ~2× faster."""

    def __init__(self, model: EnvNet):
        super().__init__()
        self.config = model.config
        self.conv1 = _conv2d(*_fold(model.conv1[0], model.conv1[1]))
        self.conv2 = _conv2d(*_fold(model.conv2[0], model.conv2[1]))
        self.conv3 = _conv2d(*_fold(model.conv3[0], model.conv3[1]))
        self.conv4 = _conv2d(*_fold(model.conv4[0], model.conv4[1]))
        self.fc5 = _copy_linear(model.fc5)
        self.fc6 = _copy_linear(model.fc6)
        self.fc7 = _copy_linear(model.fc7)
        self.to(memory_format=torch.channels_last)
        self.eval()
        self.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 24014) raw audio → (batch, 40, 150) learned spectrogram."""
        h = x.float()[:, None, None, :].contiguous(memory_format=torch.channels_last)
        h = F.relu_(self.conv1(h))
        # ReLU commutes with max-pooling, so it runs on the 160× smaller pooled tensor.
        h = F.relu_(F.max_pool2d(self.conv2(h), (1, POOL)))  # (batch, 40, 1, 150)
        return h.reshape(h.shape[0], N_BANDS, -1)

    def window_features(self, samples: torch.Tensor, starts: Sequence[int]) -> torch.Tensor:
        """(n, 40, 150): `features` of the windows samples[s : s + WINDOW], equal to it for the windows stacked.

        conv1 and conv2 have no padding, so a window's activations are a slice of those of any stretch that holds
        it. Overlapping windows (predict's ten crops of a 5 s clip, a timeline's, few-shot's) therefore share one
        pass through these two layers, most of the model's work, instead of one pass each; windows that overlap
        no other are stacked into one batch, as `features` takes them. Memory stays that of a batch of n windows.
        """
        if not len(starts):
            return torch.empty(0, N_BANDS, N_FRAMES)
        if min(starts) < 0 or max(starts) + WINDOW > len(samples):
            raise ValueError(f"windows of {WINDOW} samples at {min(starts)}…{max(starts)} do not fit in {len(samples)} samples")
        runs: list[list[int]] = []  # indices of windows that each overlap the one before
        for i, s in enumerate(starts):
            if runs and starts[runs[-1][-1]] <= s < starts[runs[-1][-1]] + WINDOW:
                runs[-1].append(i)
            else:
                runs.append([i])
        out: list[torch.Tensor | None] = [None] * len(starts)
        alone = [r[0] for r in runs if len(r) == 1]
        if alone:
            out_alone = self.features(torch.stack([samples[starts[i] : starts[i] + WINDOW] for i in alone]))
            for i, f in zip(alone, out_alone, strict=True):
                out[i] = f
        span = N_FRAMES * POOL  # conv2's outputs that a window's max-pool reads
        for run in (r for r in runs if len(r) > 1):
            a = starts[run[0]]
            h = samples[a : starts[run[-1]] + WINDOW].float()[None, None, None, :].contiguous(memory_format=torch.channels_last)
            y = self.conv2(F.relu_(self.conv1(h)))
            for i in run:
                o = starts[i] - a
                out[i] = F.relu_(F.max_pool2d(y[..., o : o + span], (1, POOL))).reshape(N_BANDS, -1)
        return torch.stack(out)

    def classify(self, spec: torch.Tensor) -> torch.Tensor:
        """(batch, 40, 150) learned spectrogram → (batch, outputs) logits."""
        return self.head(self.pooled(spec))

    def pooled(self, spec: torch.Tensor) -> torch.Tensor:
        """(batch, 40, 150) learned spectrogram → (batch, 7700) pooled conv4 maps, fc5's input."""
        h = F.relu_(self.conv3(spec.unsqueeze(1)))
        h = F.max_pool2d(h, 3)
        h = F.relu_(self.conv4(h))
        return F.max_pool2d(h, (1, 3)).contiguous().flatten(1)  # flatten in EnvNet's (C, H, W) order

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """Pooled conv4 maps → fc6 activations, the embedding few-shot heads are fitted on."""
        return F.relu_(self.fc6(F.relu_(self.fc5(h))))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc7(self.embed(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def _copy_linear(fc: nn.Linear) -> nn.Linear:
    out = nn.Linear(fc.in_features, fc.out_features)
    with torch.no_grad():
        out.weight.copy_(fc.weight.float())
        out.bias.copy_(fc.bias.float())
    return out


def _fingerprint(model: nn.Module) -> tuple:
    # Every in-place update (optimizer steps, BN statistics, load_state_dict) bumps a tensor's version.
    return tuple((t.data_ptr(), t._version) for t in model.state_dict().values())


_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, FastEnvNet]] = weakref.WeakKeyDictionary()


def fuse(model: EnvNet) -> FastEnvNet:
    """A new FastEnvNet holding `model`'s weights (BN folded), on the CPU, in eval mode."""
    if not isinstance(model, EnvNet):
        raise TypeError(f"fuse() needs an envnet.model.EnvNet, not {type(model).__name__}")
    return FastEnvNet(model)


def inference_model(model: EnvNet) -> nn.Module:
    """The fastest equal-results model for `model`: its fused CPU copy, cached while the weights stay put.

    Models on another device, or not plain EnvNets, are returned as they are.
    """
    if not isinstance(model, EnvNet) or any(p.device.type != "cpu" for p in model.parameters()):
        return model
    key = _fingerprint(model)
    hit = _cache.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    fast = fuse(model)
    _cache[model] = (key, fast)
    return fast

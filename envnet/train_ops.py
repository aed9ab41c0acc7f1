"""Training-time forms of EnvNet's first layers: the same sums as conv → BatchNorm → ReLU → pool, in fewer
passes over the largest activations, (batch, 40, 24000) floats each.

`envnet.model` uses them while training in fp32 with autograd on; evaluation, bf16 autocast and the inference
copy (`envnet.fast`) keep the plain layers. Outputs, running statistics and gradients equal the plain layers'
to float rounding (tests/test_train_ops.py). What they saved on the AVX2 EPYC is in benchmarks/README.md
("Training's first layers rewritten").
- conv1 + BatchNorm: the batch statistics come from the audio, so BatchNorm becomes conv1's weight and bias
  (`conv_bn_fold`), and conv1's weight gradient is one batched product (`_Conv1`).
- conv2 + BatchNorm + max-pool: BatchNorm is applied after the pool (`conv_bn_pool`).
- conv3 over its 8 bands as channels (`band_conv`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_fold(x: torch.Tensor, weight: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """bn(conv1d(x, weight)) in training, for a one-channel (batch, 1, length) input, as one convolution with a
    bias. conv1 is linear in each window of `taps` samples, so the batch's per-channel mean and variance of its
    output follow from the windows' mean and taps × taps covariance, which come from the input, 40 times
    smaller than the output. Autograd differentiates through them: that is BatchNorm's gradient."""
    taps = weight.shape[-1]
    mean_x, cov = _window_moments(x[:, 0].double(), taps)
    n = x.shape[0] * (x.shape[-1] - taps + 1)
    w = weight.reshape(len(weight), taps).double()
    mean = (w @ mean_x).to(x.dtype)
    var = ((w @ cov) * w).sum(1).to(x.dtype)
    _update_running(bn, mean, var, n)
    scale = bn.weight / torch.sqrt(var + bn.eps)
    return _Conv1.apply(x, weight * scale[:, None, None], bn.bias - mean * scale)


def _window_moments(x: torch.Tensor, taps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (taps,) and covariance (taps, taps) of every `taps`-sample window of the (batch, length) rows,
    from one product of the signal with itself per lag instead of a copy of every window."""
    length = x.shape[1]
    span = length - taps + 1  # windows per row

    def window_sums(per_sample: torch.Tensor, count: int) -> torch.Tensor:
        """Sums of per_sample[j : j + span] for j < count: each tap position's values over all windows."""
        c = F.pad(per_sample.cumsum(0), (1, 0))
        j = torch.arange(count)
        return c[j + span] - c[j]

    n = x.shape[0] * span
    mean = window_sums(x.sum(0), taps) / n
    second = torch.empty(taps, taps, dtype=x.dtype)
    for lag in range(taps):
        s = window_sums((x[:, : length - lag] * x[:, lag:]).sum(0), taps - lag) / n  # E[x_j x_{j+lag}]
        idx = torch.arange(taps - lag)
        second[idx, idx + lag] = s
        second[idx + lag, idx] = s
    return mean, second - torch.outer(mean, mean)


class _Conv1(torch.autograd.Function):
    """conv1d of a one-channel input with a bias; the weight's gradient as one batched product with the input's
    windows (a strided view), under half oneDNN's time for this shape."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return F.conv1d(x, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        windows = x[:, 0].unfold(1, weight.shape[-1], 1)  # (batch, positions, taps)
        dw = torch.bmm(dy, windows).sum(0).unsqueeze(1) if need_w else None
        dx = F.conv_transpose1d(dy, weight) if need_x else None
        return dx, dw, dy.sum((0, 2)) if need_b else None


def conv_bn_pool(h: torch.Tensor, weight: torch.Tensor, bn: nn.BatchNorm1d, pool: int) -> torch.Tensor:
    """max_pool1d(bn(conv1d(h, weight)), pool) in training, with BatchNorm applied after the pool: the
    (batch, channels, length) activation is centred in place and never normalised, and the pool's zero-filled
    gradient is never written."""
    return _ConvBNPool.apply(h, weight, bn.weight, bn.bias, bn, pool)


class _ConvBNPool(torch.autograd.Function):
    """A BatchNorm channel is an affine map, so it commutes with the max-pool once its scale is positive:
    channels with a negative scale are computed with their filter negated (exact in floating point). The
    statistics still come from the whole activation, and so does the gradient through them, which is an
    affine function of the centred activation per channel plus the pooled positions' own terms."""

    @staticmethod
    def forward(ctx, h, weight, gamma, beta, bn, pool):
        sign = torch.where(gamma >= 0, 1.0, -1.0).to(gamma.dtype)
        w = weight * sign[:, None, None]
        y = F.conv1d(h, w)
        n = y.shape[0] * y.shape[2]
        mean = y.sum((0, 2)) / n
        y.sub_(mean[:, None])  # in place: a new tensor this size costs more than the arithmetic
        var = torch.linalg.vector_norm(y, dim=2).square().sum(0) / n
        _update_running(bn, sign * mean, var, n)
        pooled, where = F.max_pool1d(y, pool, return_indices=True)
        rstd = (var + bn.eps).rsqrt()
        normed = pooled * rstd[:, None]
        ctx.save_for_backward(h, w, y, where, normed, rstd, gamma, sign)
        ctx.mark_non_differentiable(where)
        return normed * gamma.abs()[:, None] + beta[:, None]

    @staticmethod
    def backward(ctx, grad):
        h, w, y, where, normed, rstd, gamma, sign = ctx.saved_tensors
        n = y.shape[0] * y.shape[2]
        d_normed = grad * gamma.abs()[:, None]  # nonzero only at the pooled positions
        m1 = d_normed.sum((0, 2)) / n
        m2 = (d_normed * normed).sum((0, 2)) / n
        # BatchNorm's backward, rstd * (d_normed - m1 - y * rstd * m2), as a + b * y plus the pooled positions
        dy = torch.addcmul((-rstd * m1)[:, None], (-rstd * rstd * m2)[:, None], y)
        dy.scatter_add_(2, where, d_normed * rstd[:, None])
        dh = F.conv_transpose1d(dy, w) if ctx.needs_input_grad[0] else None
        dw = torch.nn.grad.conv1d_weight(h, w.shape, dy) * sign[:, None, None] if ctx.needs_input_grad[1] else None
        return dh, dw, (grad * normed).sum((0, 2)) * sign, grad.sum((0, 2)), None, None


def _update_running(bn: nn.BatchNorm1d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """BatchNorm's running statistics as training mode updates them (unbiased variance)."""
    with torch.no_grad():
        bn.num_batches_tracked += 1
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - m).add_(m * mean.detach())
        bn.running_var.mul_(1 - m).add_(m * n / (n - 1) * var.detach())


def band_conv(spec: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """conv3, the (8, 13) convolution of the one-channel 40 × 150 map, computed with each output row's 8
    input bands as 8 input channels of a (1, 13) convolution, channels-last. The same sums; oneDNN's
    backward for a single input channel is slow: conv3's forward + backward took half the time this way.
    (batch, 40, 150) → (batch, 50, 33, 138)."""
    k = weight.shape[2]
    rows = spec.shape[1] - k + 1
    shifted = torch.stack([spec[:, i : i + rows] for i in range(k)], 1)  # (batch, 8, 33, 150)
    return F.conv2d(shifted.contiguous(memory_format=torch.channels_last), weight.transpose(1, 2))

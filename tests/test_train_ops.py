"""Training's faster forms of EnvNet's layers give the plain layers' outputs, running statistics and gradients."""

import copy

import pytest
import torch
from torch import nn

from envnet.model import N_BANDS, N_FRAMES, POOL, WINDOW, build_model
from envnet.train_ops import band_conv, conv_bn_fold, conv_bn_pool


def _batchnorms(channels: int) -> tuple[nn.BatchNorm1d, nn.BatchNorm1d]:
    """Two equal BatchNorms, about half their scales negative, with running statistics already moved."""
    a, b = nn.BatchNorm1d(channels), nn.BatchNorm1d(channels)
    with torch.no_grad():
        a.weight.uniform_(-1, 1)
        a.bias.uniform_(-0.5, 0.5)
        a.running_mean.uniform_(-0.1, 0.1)
    b.load_state_dict(a.state_dict())
    return a, b


def _assert_same(got, want, got_params, want_params, grad_out, bns) -> None:
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.detach().abs().max()))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bns[0], name), getattr(bns[1], name))
    got_grads = torch.autograd.grad(got, got_params, grad_out)
    want_grads = torch.autograd.grad(want, want_params, grad_out)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))


def test_conv_bn_fold_is_conv1_and_batchnorm_with_the_same_gradients() -> None:
    """conv1's BatchNorm statistics from the audio's window moments: audio with an offset, as some recordings
    have, and a quiet one."""
    torch.manual_seed(0)
    x = torch.randn(3, 1, WINDOW) * torch.tensor([0.3, 0.01, 0.1])[:, None, None] + 0.05
    conv = nn.Conv1d(1, N_BANDS, 8, bias=False)
    bns = _batchnorms(N_BANDS)
    grad_out = torch.randn(3, N_BANDS, WINDOW - 7)
    _assert_same(conv_bn_fold(x, conv.weight, bns[0]), bns[1](conv(x)),
                 (conv.weight, bns[0].weight, bns[0].bias), (conv.weight, bns[1].weight, bns[1].bias), grad_out, bns)


def test_conv_bn_pool_is_conv2_batchnorm_and_pool_with_the_same_gradients() -> None:
    torch.manual_seed(0)
    h = torch.relu(torch.randn(3, N_BANDS, WINDOW - 7)).requires_grad_()
    conv = nn.Conv1d(N_BANDS, N_BANDS, 8, bias=False)
    bns = _batchnorms(N_BANDS)
    grad_out = torch.randn(3, N_BANDS, N_FRAMES)
    _assert_same(conv_bn_pool(h, conv.weight, bns[0], POOL), nn.functional.max_pool1d(bns[1](conv(h)), POOL),
                 (h, conv.weight, bns[0].weight, bns[0].bias), (h, conv.weight, bns[1].weight, bns[1].bias),
                 grad_out, bns)


def test_band_conv_is_conv3_with_the_same_gradients() -> None:
    torch.manual_seed(0)
    spec = torch.rand(2, N_BANDS, N_FRAMES, requires_grad=True)
    weight = torch.randn(50, 1, 8, 13, requires_grad=True)
    grad_out = torch.randn(2, 50, 33, 138)
    got, want = band_conv(spec, weight), nn.functional.conv2d(spec.unsqueeze(1), weight)
    torch.testing.assert_close(got, want)
    got_grads = torch.autograd.grad(got, (spec, weight), grad_out)
    want_grads = torch.autograd.grad(want, (spec, weight), grad_out)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_a_training_step_matches_the_plain_layers(training: bool) -> None:
    """The whole model: loss, every parameter's gradient and BatchNorm's running statistics as with the plain
    conv → BatchNorm → ReLU → pool; in eval mode the plain layers run. In float64, so that no max-pool sees a
    near-tie that float rounding breaks one way in one path and the other way in the other."""
    torch.manual_seed(0)
    fast = build_model(n_classes=3, fc_width=32, dropout=0.0).double()
    plain = copy.deepcopy(fast)
    # The paper's order: conv → BatchNorm → ReLU, then pool (training pools conv2 before its ReLU: they commute).
    plain.features = lambda x: nn.functional.max_pool1d(plain.conv2(plain.conv1(x.unsqueeze(1))), POOL)
    x, y = torch.randn(4, WINDOW, dtype=torch.float64) * 0.1, torch.tensor([0, 1, 2, 0])
    losses = []
    for m in (fast, plain):
        m.train(training)
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), b in zip(fast.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-9 * float(b.grad.abs().max()), msg=name)
    for (name, a), b in zip(fast.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_bf16_autocast_keeps_the_plain_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 training (CPUs with native bf16) runs BatchNorm in fp32 under autocast; the rewrites would not."""
    import envnet.model

    def refuse(*args):
        raise AssertionError("a training-time rewrite ran under bf16 autocast")

    monkeypatch.setattr(envnet.model, "conv_bn_fold", refuse)
    monkeypatch.setattr(envnet.model, "conv_bn_pool", refuse)
    model = build_model(n_classes=3, fc_width=32).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, WINDOW) * 0.1).float().sum().backward()
    with pytest.raises(AssertionError, match="rewrite ran"):  # and fp32 training does use them
        model(torch.randn(2, WINDOW) * 0.1)

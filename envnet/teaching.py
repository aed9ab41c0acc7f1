"""Small pieces of arithmetic the "How it works" page explains, kept here so they are tested."""

from __future__ import annotations


def conv_output_length(length: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """How many outputs a 1-D convolution (or pooling) produces: ⌊(L + 2p − d(k − 1) − 1) / s⌋ + 1.

    Returns 0 when the kernel does not fit even once, rather than a negative count.
    """
    if kernel < 1 or stride < 1 or padding < 0 or dilation < 1 or length < 0:
        raise ValueError("kernel, stride and dilation must be ≥ 1, length and padding ≥ 0")
    span = dilation * (kernel - 1) + 1
    if length + 2 * padding < span:
        return 0
    return (length + 2 * padding - span) // stride + 1


def format_shape(shape: tuple[int, ...]) -> str:
    return " × ".join(str(int(s)) for s in shape)

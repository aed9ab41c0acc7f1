"""What one server lets its visitors use, in one place: a public server (ENVNET_PUBLIC set, as in the Docker
image) is shared by everyone, so no single visitor may take its memory, CPU or disk.

Per-file limits live beside the code they guard (audio.MAX_SECONDS, checkpoint.MAX_BYTES, ...); this module
holds what spans files: the public-mode switch, per-session caps, and the server-wide bound on heavy work.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Decoding a clip, resampling it and building an uploaded model each hold a few hundred MB at most; at most
# HEAVY_SLOTS of them run at once in one server process, the others wait up to HEAVY_WAIT seconds.
HEAVY_SLOTS = 2
HEAVY_WAIT = 60.0

MAX_SESSION_MODELS = 3  # trained or uploaded models one browser session holds; adding a fourth drops the oldest

# Training on a public server: a run stops itself after this long, with what it has learned.
PUBLIC_MAX_EPOCHS = 200
PUBLIC_MAX_TRAIN_SECONDS = 20 * 60

# Few-shot trainings (envnet/fewshot.py) take seconds, so visitors need not queue for the one training slot;
# at most this many run at once (each embeds its examples on the CPU), the others wait their turn.
FEW_SHOT_SLOTS = 3
FEW_SHOT_WAIT = 120.0

_heavy = threading.BoundedSemaphore(HEAVY_SLOTS)
_few_shot = threading.BoundedSemaphore(FEW_SHOT_SLOTS)


def public() -> bool:
    """True on a public server (read on every call, so tests and a running server can switch it)."""
    return os.environ.get("ENVNET_PUBLIC", "").strip().lower() not in ("", "0", "false", "no")


class ServerBusyError(RuntimeError):
    """Too many visitors' files are being decoded or loaded at this moment."""


@contextmanager
def heavy_work(what: str, error: type[Exception] = ServerBusyError, wait: float | None = None) -> Iterator[None]:
    """Hold one of the server's HEAVY_SLOTS while decoding, resampling or building a model; raise `error`
    with a message for the visitor when none frees up in time."""
    if not _heavy.acquire(timeout=HEAVY_WAIT if wait is None else wait):
        raise error(f"the server is busy with other visitors' files; {what} was not processed. Try again shortly.")
    try:
        yield
    finally:
        _heavy.release()


@contextmanager
def few_shot_slot(wait: float | None = None) -> Iterator[None]:
    """Hold one of FEW_SHOT_SLOTS while a few-shot model is fitted; ServerBusyError if none frees up in time."""
    if not _few_shot.acquire(timeout=FEW_SHOT_WAIT if wait is None else wait):
        raise ServerBusyError("the server is busy with other visitors' trainings; try again in a moment.")
    try:
        yield
    finally:
        _few_shot.release()

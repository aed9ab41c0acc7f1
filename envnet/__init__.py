"""EnvNet Sound Lab: end-to-end environmental sound classification from raw audio.

    from envnet import load_audio, load_checkpoint, predict
    ckpt = load_checkpoint()               # the shipped ESC-10 model
    pred = predict(ckpt.model, load_audio("dog.wav"), ckpt.classes)
    pred.top(3)
"""

import os

# Tensors of 2 MB and more in 2 MB pages (PyTorch's THP_MEM_ALLOC_ENABLE; Linux with transparent huge pages in
# "madvise" or "always" mode, a no-op elsewhere). A training step allocates several (batch, 40, 24000)
# activations, and faulting them in 4 KB pages at a time made a step 1.7-1.9 times as long at batch 64 on the
# AVX2 EPYC (benchmarks/README.md). PyTorch reads it at its first allocation, so it is
# set before anything here imports torch; a value the user set, 0 included, is kept. `cpu.memory_pages` says
# which applies.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from envnet.audio import AudioError, load_audio, windows  # noqa: E402
from envnet.checkpoint import Checkpoint, CheckpointError, default_checkpoint, list_checkpoints  # noqa: E402
from envnet.checkpoint import load as _load  # noqa: E402
from envnet.checkpoint import save as save_checkpoint  # noqa: E402
from envnet.model import SAMPLE_RATE, WINDOW, EnvNet, EnvNetConfig, build_model, layer_walkthrough  # noqa: E402
from envnet.predict import Prediction, predict  # noqa: E402
from envnet.spectra import frequency_response, learned_spectrogram, mel_frequency_response, mel_spectrogram  # noqa: E402


def load_checkpoint(path=None) -> Checkpoint:
    """A checkpoint by stem or path; the shipped default when none is given."""
    return _load(path or default_checkpoint())


__all__ = [
    "SAMPLE_RATE", "WINDOW", "AudioError", "Checkpoint", "CheckpointError", "EnvNet", "EnvNetConfig",
    "Prediction", "build_model", "default_checkpoint", "frequency_response", "layer_walkthrough",
    "learned_spectrogram", "list_checkpoints", "load_audio", "load_checkpoint", "mel_frequency_response",
    "mel_spectrogram", "predict", "save_checkpoint", "windows",
]

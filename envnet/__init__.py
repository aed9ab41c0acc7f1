"""EnvNet Sound Lab: end-to-end environmental sound classification from raw audio.

    from envnet import load_audio, load_checkpoint, predict
    ckpt = load_checkpoint()               # the shipped ESC-10 model
    pred = predict(ckpt.model, load_audio("dog.wav"), ckpt.classes)
    pred.top(3)
"""

from envnet.audio import AudioError, load_audio, windows
from envnet.checkpoint import Checkpoint, CheckpointError, default_checkpoint, list_checkpoints
from envnet.checkpoint import load as _load
from envnet.checkpoint import save as save_checkpoint
from envnet.model import SAMPLE_RATE, WINDOW, EnvNet, EnvNetConfig, build_model, layer_walkthrough
from envnet.predict import Prediction, predict
from envnet.spectra import frequency_response, learned_spectrogram, mel_frequency_response, mel_spectrogram


def load_checkpoint(path=None) -> Checkpoint:
    """A checkpoint by stem or path; the shipped default when none is given."""
    return _load(path or default_checkpoint())


__all__ = [
    "SAMPLE_RATE", "WINDOW", "AudioError", "Checkpoint", "CheckpointError", "EnvNet", "EnvNetConfig",
    "Prediction", "build_model", "default_checkpoint", "frequency_response", "layer_walkthrough",
    "learned_spectrogram", "list_checkpoints", "load_audio", "load_checkpoint", "mel_frequency_response",
    "mel_spectrogram", "predict", "save_checkpoint", "windows",
]

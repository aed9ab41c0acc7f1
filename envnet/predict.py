"""A clip → per-window class probabilities → the clip's probabilities (mean over windows) → a verdict.

The one inference path: `predict` serves the CLI, every page, `evaluate` and training's validation, so
the accuracy on a model card is the accuracy a user gets. Windows come from `audio.prepare` (silence
trimmed, short clips centred) and run through the model's fused inference copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from envnet.audio import SILENCE_THRESHOLD, TRIM, prepare, window_starts
from envnet.fast import FastEnvNet, inference_model
from envnet.model import SAMPLE_RATE, WINDOW, EnvNet, inference
from envnet.verdict import Calibration, Verdict, judge

BATCH = 32  # windows per forward pass: bounds memory for long clips
SEGMENT_HOP = SAMPLE_RATE // 2  # windows every 0.5 s for a long recording's segments and timeline
SEGMENTS_AFTER = 4 * WINDOW  # past four windows' length (6 s), a recording is summarised as segments
BLUR = 2  # windows (1 s at SEGMENT_HOP) of "unsure" where one sound changes into another
NOT_CLASSES = {"unsure", "silence"}


@dataclass(frozen=True)
class Segment:
    """A stretch of a recording with one verdict: a class, "unsure" or "silence"."""

    start: float  # seconds
    end: float
    verdict: str
    p: float | None  # the mean top-class probability over its windows; None for silence

    def to_json(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "verdict": self.verdict,
                "prob": None if self.p is None else round(self.p, 4)}


@dataclass
class Prediction:
    classes: list[str]
    probs: torch.Tensor  # (classes,) each class's probability, mean over windows
    window_probs: torch.Tensor  # (n_windows, classes)
    starts: list[int]  # each window's first sample in the clip as given (negative when a short clip was padded)
    verdict: Verdict | None = None
    samples: torch.Tensor = field(default_factory=lambda: torch.zeros(0), repr=False)  # cut from (audio.prepare)
    shift: int = 0  # window at clip sample s = samples[s + shift :][:WINDOW]
    kept: tuple[int, int] = (0, 0)  # the part of the clip left after trimming its silent ends: (first, end)
    length: int = 0  # the clip's length in samples, as given
    window_verdicts: list[Verdict] = field(default_factory=list)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        k = max(1, min(k, len(self.classes)))
        p, i = self.probs.topk(k)
        return [(self.classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist(), strict=False)]

    @property
    def label(self) -> str:
        return self.classes[int(self.probs.argmax())]

    @property
    def none_of_these(self) -> float:
        """What the classes leave: the "none of these" output's probability (0 for a model without one)."""
        return max(0.0, 1.0 - float(self.probs.sum()))

    @property
    def unsure(self) -> bool:
        return self.verdict is not None and self.verdict.kind == "unsure"

    def window(self, i: int) -> torch.Tensor:
        """Window i exactly as the model heard it."""
        s = self.starts[i] + self.shift
        return self.samples[s : s + WINDOW]

    def segments(self) -> list[Segment]:
        """The recording as stretches of one verdict each, from its windows (`regions`): runs of one verdict
        merged; one window between two runs of the same verdict joins them; and up to BLUR windows of
        "unsure" between two classes are shared out between them, because a window that straddles the
        change from one sound to the next hears both and is sure of neither."""
        if not self.starts:
            return []
        edges = self.regions()
        names = [v.name for v in self.window_verdicts]
        for i in range(1, len(names) - 1):
            if names[i - 1] == names[i + 1] != names[i]:
                names[i] = names[i - 1]
        runs: list[list] = []  # [first window, last window, name]
        for i, name in enumerate(names):
            if runs and runs[-1][2] == name:
                runs[-1][1] = i
            else:
                runs.append([i, i, name])
        for k in range(1, len(runs) - 1):
            before, run, after = runs[k - 1], runs[k], runs[k + 1]
            if run[2] == "unsure" and run[1] - run[0] < BLUR and {before[2], after[2]}.isdisjoint(NOT_CLASSES):
                half = (run[1] - run[0] + 1) // 2
                before[1] = run[0] + half - 1
                run[0], run[2] = run[0] + half, after[2]
        out: list[Segment] = []
        for first, last, name in runs:
            if first > last:
                continue
            p = None if name == "silence" else float(self.window_probs[first : last + 1].max(1).values.mean())
            if out and out[-1].verdict == name:
                prev = out.pop()
                first_s, p = prev.start * SAMPLE_RATE, p if prev.p is None else (prev.p + p) / 2
            else:
                first_s = edges[first]
            out.append(Segment(first_s / SAMPLE_RATE, edges[last + 1] / SAMPLE_RATE, name, p))
        start, end = self.kept
        if start > 0:
            out.insert(0, Segment(0.0, start / SAMPLE_RATE, "silence", None))
        if end < self.length:
            out.append(Segment(end / SAMPLE_RATE, self.length / SAMPLE_RATE, "silence", None))
        return _merge_silence(out)

    def regions(self) -> list[float]:
        """Sample edges of the stretch each window speaks for: window i covers edges[i] to edges[i + 1],
        the samples nearer its centre than any other window's, within the clip's kept (trimmed) part."""
        first, last = self.kept
        centres = [s + WINDOW / 2 for s in self.starts]
        inner = [min(last, max(first, (a + b) / 2)) for a, b in zip(centres, centres[1:], strict=False)]
        return [first, *inner, last]


def _merge_silence(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s in segments:
        if out and out[-1].verdict == s.verdict == "silence":
            out[-1] = Segment(out[-1].start, s.end, "silence", None)
        else:
            out.append(s)
    return out


def class_probabilities(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Softmax over every output; the classes' share. With a "none of these" output the class
    probabilities of an unknown sound sum to well under 1: that is what makes it unsure."""
    return torch.softmax(logits.float(), -1)[..., :n_classes]


def window_probabilities(model: EnvNet, x: torch.Tensor, starts: Sequence[int] | None = None) -> torch.Tensor:
    """(n, classes) class probabilities of windows: the rows of an (n, 24014) batch, or with `starts` the windows
    x[s : s + WINDOW] of a clip's samples. BATCH windows at a time, through the model's fused inference copy
    (BN folded, channels-last, overlapping windows computed once: the same probabilities, faster; envnet/fast.py)."""
    if starts is None:
        if x.dim() != 2 or x.shape[1] != WINDOW:  # rows of another length would be cut across, not refused
            raise ValueError(f"need an (n, {WINDOW}) batch of windows, got shape {tuple(x.shape)}")
        x, starts = x.reshape(-1), range(0, x.numel(), WINDOW)
    fast = inference_model(model)
    device = next(model.parameters()).device  # training's validation may run on a GPU
    n = model.config.n_classes
    out = []
    with inference(model):
        for i in range(0, len(starts), BATCH):
            part = starts[i : i + BATCH]
            if isinstance(fast, FastEnvNet):
                logits = fast.classify(fast.window_features(x, part))
            else:
                logits = fast(torch.stack([x[s : s + WINDOW] for s in part]).to(device))
            out.append(class_probabilities(logits, n).cpu())
    return torch.cat(out) if out else torch.empty(0, n)


def predict(
    model: EnvNet,
    wave: torch.Tensor,
    classes: list[str],
    *,
    n_crops: int | None = 10,
    hop: int | None = None,
    calibration: Calibration | None = None,
) -> Prediction:
    """Classify a 16 kHz mono clip: 10 evenly spaced windows (the papers' test), or every `hop` samples.

    The verdict uses `calibration`, or the model's own (from its card). Windows are cut BATCH at a time,
    so a long recording with a small hop never holds all its windows in memory at once.
    """
    n = model.config.n_classes
    if len(classes) != n:
        raise ValueError(f"{len(classes)} class names for a model with {n} outputs")
    calibration = calibration or getattr(model, "calibration", None)
    wave = wave.float()
    samples, shift, kept = prepare(wave)
    starts = window_starts(samples.numel(), WINDOW, n_crops=n_crops, hop=hop)
    wp = window_probabilities(model, samples, starts)
    probs = wp.mean(0)
    clip_peak = float(wave.abs().max()) if wave.numel() else 0.0
    pred = Prediction(list(classes), probs, wp, [s - shift for s in starts],
                      judge(probs, classes, calibration, clip_peak < SILENCE_THRESHOLD), samples, shift, kept,
                      wave.numel())
    # A window is silence when the stretch it speaks for is: 90 % of its 10 ms frames below the threshold that
    # trims a clip's ends, and any louder ones at its edges (so a bark of 0.1 s counts, clicks in the middle
    # count, and a stretch's edge touching the next sound does not).
    quiet = max(SILENCE_THRESHOLD, TRIM * clip_peak)
    edges = [round(e) for e in pred.regions()]
    pred.window_verdicts = [judge(p, classes, calibration, _mostly_quiet(wave[a:b], quiet))
                            for p, a, b in zip(wp, edges[:-1], edges[1:], strict=True)]
    return pred


def _mostly_quiet(stretch: torch.Tensor, quiet: float, frame: int = SAMPLE_RATE // 100, edge: int = 5) -> bool:
    if stretch.numel() < frame:
        return stretch.numel() == 0 or float(stretch.abs().max()) < quiet
    loud = stretch[: stretch.numel() // frame * frame].abs().view(-1, frame).amax(1) >= quiet
    return float(loud.float().mean()) <= 0.1 and not bool(loud[edge:-edge].any())


def predict_spectrogram(model: EnvNet, spec: torch.Tensor, classes: list[str], *, start: int = 0,
                        silent: bool = False) -> Prediction:
    """One learned 40 × 150 spectrogram → the Prediction that predict() gives for the window it came from.

    Only the classifier half runs: a live stream computes the front end column by column (envnet/stream.py)
    and must not pay for it again four times a second. `silent`: the window's audio is digital silence
    (audio.is_silent). The map cannot tell: a trained model's map of silence is its biases, not zeros."""
    n = model.config.n_classes
    if len(classes) != n:
        raise ValueError(f"{len(classes)} class names for a model with {n} outputs")
    fast = inference_model(model)
    with inference(model):
        wp = class_probabilities(fast.classify(spec.float().reshape(1, *spec.shape[-2:])), n)
    verdict = judge(wp[0], classes, getattr(model, "calibration", None), silent=silent)
    return Prediction(list(classes), wp[0], wp, [start], verdict, torch.zeros(0), 0, (0, WINDOW),
                      WINDOW, [verdict])

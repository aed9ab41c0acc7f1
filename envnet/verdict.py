"""Not one of my classes: every prediction's verdict (a class, unsure, or silence) and its calibration.

A classifier must pick among its classes, so a sound it never learned still gets a top class, often a
confident one. The verdict adds two honest answers:
- **silence**: nothing to classify (a clip whose peak is below digital silence; in a long recording, a
  stretch quieter than 1 % of its loudest moment, the same rule that trims a clip's ends);
- **unsure**: it does not sound like any class the model knows. The score is the highest class
  probability, averaged over the windows (`Prediction.probs.max()`); below the model's threshold the
  answer is unsure.

The rule lives in the model card under "verdict" (`Calibration`): the method, the threshold and the
figures measured when it was chosen. Two methods, one score:
- "other-output": fc7 has one more output, "none of these" (`EnvNetConfig.other`), fine-tuned together
  with fc5 and fc6 on sounds outside the classes and generated sounds (`add_other_output`). An unknown
  sound then puts its probability there, and no class keeps a high one. The shipped model uses it.
- "max-probability": any model as it is. Its own held-out clips set the threshold (KEEP of them keep a
  confident answer); generated tones, noise and clicks measure how many unknowns are flagged.
Measured figures are in benchmarks/README.md ("Unsure").
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F

from envnet import examples
from envnet.audio import prepare, window_starts
from envnet.fast import inference_model
from envnet.model import SAMPLE_RATE, EnvNet, inference

KEEP = 0.9  # calibrating from a model's own held-out clips: this share of them keeps a confident answer
HOP = SAMPLE_RATE // 2  # windows every 0.5 s when fine-tuning the "other" output


@dataclass(frozen=True)
class Verdict:
    kind: str  # "class", "unsure" or "silence"
    label: str  # the top class (the closest one when unsure)
    p: float  # its probability
    n_classes: int

    @property
    def name(self) -> str:
        """What `predict --json` calls it: the class, "unsure" or "silence"."""
        return self.label if self.kind == "class" else self.kind

    @property
    def text(self) -> str:
        if self.kind == "silence":
            return "This is silent (or nearly): there is nothing loud enough to classify."
        if self.kind == "unsure":
            closest = f"closest: {self.label} ({self.p:.0%})" if self.p >= 0.005 else "none of them comes close"
            return f"This doesn't sound like any of the {self.n_classes} sounds I know; {closest}"
        return f"{self.label} ({self.p:.0%})"


@dataclass(frozen=True)
class Calibration:
    method: str  # "other-output" or "max-probability"
    threshold: float  # a class is named when its probability reaches this; below it, unsure
    figures: dict  # what it gave when it was chosen: known kept, unknown flagged, how measured

    def to_card(self) -> dict:
        return asdict(self)

    @property
    def cutoff(self) -> str:
        """The threshold as a percentage, rounded down: an answer shown as passing it does pass it (a cut-off of
        99.57 % shown as "100%" would make a 99.7 % answer look below it)."""
        return f"{math.floor(self.threshold * 1000) / 10:g}%"

    @classmethod
    def from_card(cls, entry) -> Calibration | None:
        """The card's "verdict" entry, or None where there is none or it is not a valid one (cards are
        untrusted: an invalid rule means no unsure verdicts, never a crash)."""
        if not isinstance(entry, dict):
            return None
        t, method = entry.get("threshold"), entry.get("method")
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0 or not isinstance(method, str):
            return None
        figures = entry.get("figures")
        return cls(method[:40], float(t), figures if isinstance(figures, dict) else {})


def judge(probs: torch.Tensor, classes: Sequence[str], calibration: Calibration | None, silent: bool) -> Verdict:
    """The verdict on one clip's (or window's) class probabilities."""
    p, i = probs.max(-1)
    label, p = classes[int(i)], float(p)
    if silent:
        return Verdict("silence", label, p, len(classes))
    unsure = calibration is not None and p < calibration.threshold
    return Verdict("unsure" if unsure else "class", label, p, len(classes))


# ---- calibration --------------------------------------------------------------------------------


def unknown_sounds(n: int = 60, seed: int = 0, seconds: float = 3.0) -> list[torch.Tensor]:
    """Sounds that are none of anyone's classes: tones, white and pink noise, clicks, chords, sweeps and
    gated tones at random pitches, rates and levels."""
    g = torch.Generator().manual_seed(seed)

    def rnd(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand(1, generator=g))

    length = int(seconds * SAMPLE_RATE)
    out = []
    for i in range(n):
        k = i % 6
        if k == 0:
            w = examples.tone(math.exp(rnd(math.log(60), math.log(7000))), length, rnd(0.05, 0.8))
        elif k == 1:
            w = examples.noise(seconds, rnd(0.05, 0.8), colour=("white", "pink")[i // 6 % 2])
            w = w[torch.randperm(w.numel(), generator=g)]  # a fresh draw, not the demo's seeded one
        elif k == 2:
            w = examples.clicks(rnd(1, 12), seconds, rnd(0.1, 0.9))
        elif k == 3:
            w = examples.chord(tuple(rnd(100, 2000) for _ in range(3)), seconds)
        elif k == 4:
            w = examples.sweep(rnd(40, 500), rnd(1000, 7900), seconds, rnd(0.1, 0.8))
        else:
            gate = torch.rand(length // 800, generator=g).repeat_interleave(800) > 0.5  # 50 ms on or off
            w = examples.tone(rnd(80, 1000), length, 0.3) * gate
        out.append(w.float())
    return out


def scores(model: EnvNet, waves: Sequence[torch.Tensor], classes: Sequence[str]) -> torch.Tensor:
    """Each clip's verdict score through the app's own path (predict): its top class probability."""
    from envnet.predict import predict  # predict imports this module for the verdict

    return torch.tensor([float(predict(model, w, list(classes)).probs.max()) for w in waves])


def choose_threshold(known: torch.Tensor, keep: float = KEEP) -> float:
    """The score that keeps `keep` of the known clips confident (the highest such threshold)."""
    if not len(known):
        return 0.0
    k = sorted(known.tolist())
    return float(k[min(len(k) - 1, int(math.floor((1 - keep) * len(k))))])


def figures(known: torch.Tensor, unknown: torch.Tensor, threshold: float) -> dict:
    """Known kept confident and unknown flagged at a threshold, and how well the score separates them."""
    out = {"known_kept": float((known >= threshold).float().mean()) if len(known) else None,
           "unknown_flagged": float((unknown < threshold).float().mean()) if len(unknown) else None,
           "n_known": len(known), "n_unknown": len(unknown)}
    if len(known) and len(unknown):
        out["auroc"] = float((known[:, None] > unknown[None, :]).float().mean()
                             + 0.5 * (known[:, None] == unknown[None, :]).float().mean())
    return out


def calibrate(model: EnvNet, classes: Sequence[str], known: Sequence[torch.Tensor] | torch.Tensor, *,
              keep: float = KEEP, unknown: Sequence[torch.Tensor] | None = None,
              known_from: str = "held-out clips") -> Calibration:
    """A max-probability rule for any model: the threshold from its `known` clips (or their `scores`, when a
    validation pass has just measured them), the flagged share from `unknown` sounds (generated ones unless
    given)."""
    unknown = unknown_sounds(30) if unknown is None else unknown
    k = known if isinstance(known, torch.Tensor) else scores(model, known, classes)
    u = scores(model, unknown, classes)
    t = choose_threshold(k, keep=keep)
    figs = figures(k, u, t) | {"known": known_from, "unknown": "generated tones, noise, clicks, chords, sweeps"}
    return Calibration("other-output" if model.config.other else "max-probability", t, figs)


# ---- the "other" output -------------------------------------------------------------------------


def pooled_windows(model: EnvNet, waves: Sequence[torch.Tensor], hop: int = HOP) -> list[torch.Tensor]:
    """Each clip's windows every `hop` samples (the one windowing) → (n, 7700) pooled conv4 maps: fc5's
    input. The convolutions stay frozen, so they run once per clip, not once per epoch."""
    fast = inference_model(model)
    out = []
    with inference(model):
        for w in waves:
            samples, _, _ = prepare(w)
            starts = window_starts(samples.numel(), hop=hop)
            out.append(torch.cat([fast.pooled(fast.window_features(samples, starts[i : i + 32]))
                                  for i in range(0, len(starts), 32)]))
    return out


def add_other_output(
    model: EnvNet,
    known: Sequence[torch.Tensor],
    labels: Sequence[int],
    unknown: Sequence[torch.Tensor],
    *,
    epochs: int = 20,
    lr: float = 1e-4,
    other_weight: float = 0.3,
    seed: int = 0,
) -> EnvNet:
    """A copy of `model` with a "none of these" output: fc5, fc6 and a new fc7 (the classes' rows start
    from the old ones, the new row from zero) fine-tuned on windows of known clips (their labels) and of
    unknown sounds (the new output), with the convolutions frozen. `known` and `unknown` are each clip's
    `pooled_windows`, computed once, so several fits share one pass of the convolutions.

    Recipe (chosen on the validation twin, held-out classes; benchmarks/README.md "Unsure"): Adam lr 1e-4,
    dropout as trained, batches of 128 windows, 20 epochs; the unknown windows together weigh `other_weight`
    × the known ones, so the new output does not swallow the classes.
    """
    if model.config.other:
        raise ValueError("this model already has a 'none of these' output")
    n = model.config.n_classes
    x = torch.cat(list(known) + list(unknown))
    y = torch.cat([torch.full((len(f),), int(c)) for f, c in zip(known, labels, strict=True)]
                  + [torch.full((len(f),), n) for f in unknown])
    n_known, n_unknown = int((y < n).sum()), int((y == n).sum())
    weight = torch.ones(n + 1)
    weight[n] = other_weight * n_known / max(1, n_unknown)

    new = EnvNet(dataclasses.replace(model.config, other=True))
    state = copy.deepcopy(model.state_dict())
    w7, b7 = state.pop("fc7.weight"), state.pop("fc7.bias")
    state["fc7.weight"] = torch.cat([w7.float(), torch.zeros(1, w7.shape[1])])
    state["fc7.bias"] = torch.cat([b7.float(), torch.zeros(1)])
    new.load_state_dict(state)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for m in (new.fc5, new.fc6, new.fc7) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    new.train()  # dropout in fc5 and fc6 as in training; the frozen convolutions do not run here
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 128):
                idx = order[i : i + 128]
                loss = F.cross_entropy(new.head(x[idx]), y[idx], weight=weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
    return new.eval()

"""Your own classes in seconds: the shipped EnvNet as a frozen embedding and a small head fitted on top.

Recipe (measured in benchmarks/README.md, "Few-shot"):
- Every example is cut into windows every 0.25 s (at most MAX_WINDOWS, the loudest part of a long one);
  each window goes through the trained trunk, conv1 … conv4, and fc5 and fc6, once as recorded and once
  altered (`altered_windows`: 12 dB quieter, 15 % slower or 15 % faster, in turn). The fc6 activations are
  cached per example id, so retraining after adding one example embeds only that one.
- The head is a new fc7, a multinomial logistic regression fitted by L-BFGS on the windows' fc6 vectors
  (standardised; the standardisation is folded into fc7's weights), with an L2 penalty. It takes well
  under a second for a few hundred windows.
- The result is an ordinary EnvNet: the trunk's conv and fc5/fc6 weights and the new fc7, so the
  Classify page, the CLI, the verdict and `python -m envnet evaluate` use it like any other model.
- Held-out examples are scored on their windows as recorded, as `predict` hears a clip; the altered
  copies are for training only.
- Held-out accuracy comes from fitting again without the held-out examples (a fold split where each class
  has at least 3 examples, leave-one-out below that); the saved model is fitted on every example.

Few-shot fits are cheap, so many visitors may run them at once; `limits.few_shot_slot` bounds how many.
"""

from __future__ import annotations

import copy
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from envnet import checkpoint, verdict
from envnet.audio import prepare, window_starts
from envnet.data import stretch
from envnet.fast import inference_model
from envnet.model import SAMPLE_RATE, WINDOW, EnvNet, build_model, inference

HOP = SAMPLE_RATE // 4  # windows every 0.25 s: a 1.5 s clip gives 1, a 5 s clip 15
MAX_WINDOWS = 16  # per example: bounds the embedding cost and memory of a long example
LOUD = 0.1  # windows with less than this fraction of the example's loudest window's energy are not used
# Each window is also learned altered, so that a few examples stand for more ways the sound can come back:
# - 12 dB quieter: EnvNet hears level (nothing normalises it), and predict's crops include the quiet
#   stretches that the examples' loud windows leave out; a test clip 6 dB quieter cost a few-shot model 7 points;
# - 15 % slower or faster (EnvNet-v2's stretch): the same knock or clap is never made at quite the same pace.
# The three take turns from window to window, so an example costs two passes through the trunk, not four.
# Over 1,200 esc50-more draws, accuracy through predict rose 81.5 → 84.5 % with the quieter copies alone and
# by about 0.4 more with the turns (benchmarks/README.md, "Few-shot").
QUIETER = 0.25
STRETCH = 1.15
CACHE_ITEMS = 2000  # cached examples per embedder (each 2 × ≤ 16 × fc_width floats: 128 KB at width 1024)


# ---- the embedding ------------------------------------------------------------------------------


Windows = tuple[torch.Tensor, list[int]]  # samples, and the starts of windows in them (FastEnvNet.window_features)


def example_windows(wave: torch.Tensor) -> Windows:
    """One example's samples (after `prepare`) and its windows every HOP; quiet ones dropped, at most MAX_WINDOWS."""
    samples, _, _ = prepare(wave.float())
    starts = window_starts(samples.numel(), hop=HOP)
    energy = torch.stack([samples[s : s + WINDOW].pow(2).mean() for s in starts])
    if float(energy.max()) > 0:
        keep = (energy >= LOUD * energy.max()).tolist()
        starts, energy = [s for s, k in zip(starts, keep, strict=True) if k], energy[keep]
    if len(starts) > MAX_WINDOWS:  # the loudest stretch: a long example's windows around its peak
        centre = int(energy.argmax())
        lo = min(max(0, centre - MAX_WINDOWS // 2), len(starts) - MAX_WINDOWS)
        starts = starts[lo : lo + MAX_WINDOWS]
    return samples, starts


def altered_windows(wave: torch.Tensor, recorded: Windows) -> list[Windows]:
    """A second copy of each of `example_windows(wave)` (`recorded`): window i 12 dB quieter, 15 % slower or 15 %
    faster for i mod 3 = 0, 1, 2; a stretched window is the i-th of the stretched example's own windows. Grouped
    by how they are altered, so that each group's overlapping windows share their first layers."""
    samples, starts = recorded
    out = []
    for turn, (altered, own) in enumerate([(samples * QUIETER, starts), example_windows(stretch(wave, STRETCH)),
                                           example_windows(stretch(wave, 1 / STRETCH))]):
        picked = [own[min(i, len(own) - 1)] for i in range(turn, len(starts), 3)]
        if picked:
            out.append((altered, picked))
    return out


class Embedder:
    """fc6 activations of a trained EnvNet for each window of an example, cached per example key.

    Thread-safe: one embedder is shared by every session of a server (the trunk is the same for all), and
    keys are chosen by the caller to be unique per example (the app uses each example's random id).
    """

    def __init__(self, model: EnvNet, max_items: int = CACHE_ITEMS):
        self.model = model.eval()
        self.max_items = max_items
        self._cache: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def windows(self, samples: torch.Tensor, starts: Sequence[int]) -> torch.Tensor:
        """(n, fc_width) post-ReLU fc6 activations of the windows samples[s : s + WINDOW], through the fast
        inference copy."""
        fast = inference_model(self.model)
        outs = []
        with inference(self.model):
            for i in range(0, len(starts), 32):
                outs.append(fast.embed(fast.pooled(fast.window_features(samples, starts[i : i + 32]))))
        return torch.cat(outs) if outs else torch.empty(0, self.model.config.fc_width)

    def example(self, wave: torch.Tensor, key: Hashable | None = None) -> torch.Tensor:
        """(2, n_windows, fc_width) for one example: [0] its windows as recorded, [1] their altered copies
        (grouped by alteration, not in window order); computed once per key."""
        if key is not None:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
        recorded = example_windows(wave)
        emb = torch.cat([self.windows(*w) for w in [recorded, *altered_windows(wave, recorded)]])
        emb = emb.unflatten(0, (2, len(recorded[1])))
        if key is not None:
            with self._lock:
                self._cache[key] = emb
                while len(self._cache) > self.max_items:
                    self._cache.popitem(last=False)
        return emb


_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


def default_embedder() -> Embedder:
    """The shipped model's embedder, built once per process."""
    stem = str(checkpoint.default_checkpoint())
    with _embedders_lock:
        if stem not in _embedders:
            _embedders[stem] = Embedder(checkpoint.load(stem).model)
        return _embedders[stem]


# ---- the head -----------------------------------------------------------------------------------


@dataclass
class FewShotConfig:
    # L2 penalty on the standardised weights. Not 0.01: as accurate without the altered copies (83.1 vs 83.3
    # % over 600 esc50-more draws for 0.01 and 1.0) and L-BFGS needs many more steps. With the altered
    # copies 0.5 scored about 0.4 points above 1.0 through predict's crops (1,200 draws)
    # (benchmarks/README.md, "Few-shot").
    l2: float = 0.5
    max_iter: int = 100  # L-BFGS iterations


def fit_head(feats: torch.Tensor, labels: torch.Tensor, n_classes: int,
             config: FewShotConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on (n, d) features → fc7's (classes, d) weight and (classes,) bias.

    Features are standardised for the fit (fc6 units differ in scale by orders of magnitude); the weights
    returned already include that scaling, so they apply to raw fc6 activations.
    """
    c = config or FewShotConfig()
    x = feats.float()
    mu, sd = x.mean(0), x.std(0, unbiased=False) + 1e-3
    z = (x - mu) / sd
    # Each class weighs the same however many windows its examples gave.
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1).float()
    weight = (1.0 / counts)[labels]
    weight = weight / weight.sum()
    w = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=c.max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (F.cross_entropy(z @ w.T + b, labels, reduction="none") * weight).sum() + c.l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    return w / sd, b - (w * (mu / sd)).sum(1)


def fit_examples(embeddings: list[torch.Tensor], labels: list[int], n_classes: int,
                 config: FewShotConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`fit_head` on examples as `Embedder.example` gives them (both copies' windows), one label each."""
    xs = [e.flatten(0, 1) for e in embeddings]
    ys = [torch.full((len(x),), y) for x, y in zip(xs, labels, strict=True)]
    return fit_head(torch.cat(xs), torch.cat(ys), n_classes, config)


def head_probabilities(emb: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(n_windows, fc_width) fc6 windows → (classes,) the fitted fc7's probabilities, averaged over the windows
    as `predict` averages its crops."""
    return torch.softmax(emb @ weight.T + bias, -1).mean(0)


def build_few_shot_model(trunk: EnvNet, weight: torch.Tensor, bias: torch.Tensor) -> EnvNet:
    """An EnvNet with the trunk's layers up to fc6 and the fitted fc7."""
    cfg = trunk.config
    model = build_model(n_classes=weight.shape[0], fc_width=cfg.fc_width, dropout=cfg.dropout)
    state = {k: v for k, v in copy.deepcopy(trunk.state_dict()).items() if not k.startswith("fc7.")}
    state["fc7.weight"], state["fc7.bias"] = weight.clone(), bias.clone()
    model.load_state_dict(state)
    return model.eval()


# ---- the recipe ---------------------------------------------------------------------------------


def calibrate(emb: Embedder, weight: torch.Tensor, bias: torch.Tensor, known: list[float]) -> verdict.Calibration | None:
    """The verdict's threshold from held-out examples' top probabilities (verdict.KEEP of them stay
    confident), and how many generated tones, noises and clicks it flags. Without held-out examples there is
    no honest threshold: no rule (a rule of 0 % read "not sure when no class reaches 0%" and never fired)."""
    if not known:
        return None
    unknown = torch.tensor([float(head_probabilities(emb.example(w, ("unknown-sound", i))[0], weight, bias).max())
                            for i, w in enumerate(_unknown_sounds())])
    k = torch.tensor(known)
    t = verdict.choose_threshold(k)
    how = {"known": "held-out examples (fits without them)", "unknown": "generated tones, noise, clicks, chords, sweeps"}
    return verdict.Calibration("max-probability", t, verdict.figures(k, unknown, t) | how)


@functools.cache
def _unknown_sounds() -> list[torch.Tensor]:
    return verdict.unknown_sounds(12, seconds=2.0)  # 3 windows each: a few hundred ms to embed, once


def holdout_plan(counts: list[int], n_folds: int = 5) -> list[list[tuple[int, int]]]:
    """Which (class, example index) pairs each evaluation round holds out.

    - Every class has at least 3 examples: `n_folds` rounds (fewer if no class has that many examples),
      example i of each class held out in round i mod rounds — each example held out exactly once.
    - Some class has 2: leave-one-out, one round per example, classes with one example never held out
      (a class with no training example left cannot be predicted).
    - No class has more than one example: no held-out evaluation at all ([]).
    """
    if max(counts, default=0) < 2:
        return []
    if min(counts) >= 3:
        rounds = min(n_folds, max(counts))
        return [[(c, i) for c, n in enumerate(counts) for i in range(n) if i % rounds == r] for r in range(rounds)]
    return [[(c, i)] for c, n in enumerate(counts) if n >= 2 for i in range(n)]


@dataclass
class FewShotResult:
    model: EnvNet
    classes: list[str]
    accuracy: float | None  # held out, over examples; None when nothing could be held out
    per_class: dict[str, float | None]
    confusion: list[list[int]]  # rows: true class, columns: predicted; held-out examples only
    n_held_out: int
    seconds: dict[str, float] = field(default_factory=dict)  # "embed", "fit", "total"

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classes)

    @property
    def near_chance(self) -> bool:
        """Held-out accuracy within 20 points of guessing: the model learned little worth trusting."""
        return self.accuracy is not None and self.accuracy < self.chance + 0.2

    def card(self, name: str, **extra) -> dict:
        return checkpoint.make_card(
            self.model, self.classes, name,
            recipe={"kind": "few-shot", "head": "fc7 logistic regression on fc6 windows", "hop": HOP,
                    "max_windows": MAX_WINDOWS, "altered": {"quieter": QUIETER, "stretch": STRETCH},
                    "trunk": checkpoint.DEFAULT_NAME},
            verdict=self.model.calibration.to_card() if self.model.calibration else None,
            metrics={"held_out_accuracy": self.accuracy, "per_class": self.per_class, "confusion": self.confusion,
                     "n_held_out": self.n_held_out, "seconds": self.seconds},
            **extra,
        )


def train_few_shot(
    examples: dict[str, list[torch.Tensor]],
    *,
    keys: dict[str, list[Hashable]] | None = None,
    embedder: Embedder | None = None,
    config: FewShotConfig | None = None,
    evaluate: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> FewShotResult:
    """Class name → 16 kHz example waves → a trained EnvNet, with held-out scores.

    `keys` (same shape as `examples`) names each example for the embedding cache; without it every
    example is embedded afresh. `progress(done, total)` is called after each example is embedded.
    """
    classes = [c for c, ws in examples.items() if any(w.numel() for w in ws)]
    if len(classes) < 2:
        raise ValueError("name at least two classes and give each at least one example")
    emb = embedder or default_embedder()
    t0 = time.perf_counter()
    per_class: list[list[torch.Tensor]] = []
    total = sum(len(examples[c]) for c in classes)
    done = 0
    for c in classes:
        items = []
        for i, w in enumerate(examples[c]):
            if w.numel():
                key = keys[c][i] if keys else None
                items.append(emb.example(w, key))
            done += 1
            if progress:
                progress(done, total)
        per_class.append(items)
    t_embed = time.perf_counter() - t0

    def fit(skip: set[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        kept = [(e, c) for c, items in enumerate(per_class) for i, e in enumerate(items) if (c, i) not in skip]
        return fit_examples([e for e, _ in kept], [c for _, c in kept], len(classes), config)

    n = len(classes)
    confusion = [[0] * n for _ in range(n)]
    plan = holdout_plan([len(items) for items in per_class]) if evaluate else []
    known = []  # held-out examples' top probability: the verdict's threshold comes from these
    for held in plan:
        w, b = fit(set(held))
        for c, i in held:
            probs = head_probabilities(per_class[c][i][0], w, b)  # held out: its windows as recorded
            confusion[c][int(probs.argmax())] += 1
            known.append(float(probs.max()))
    w, b = fit(set())
    t_fit = time.perf_counter() - t0 - t_embed
    n_held = sum(map(sum, confusion))
    per = {cl: (confusion[k][k] / sum(confusion[k]) if sum(confusion[k]) else None) for k, cl in enumerate(classes)}
    acc = sum(confusion[k][k] for k in range(n)) / n_held if n_held else None
    model = build_few_shot_model(emb.model, w, b)
    model.calibration = calibrate(emb, w, b, known)
    return FewShotResult(model, classes, acc, per, confusion, n_held,
                         {"embed": t_embed, "fit": t_fit, "total": time.perf_counter() - t0})

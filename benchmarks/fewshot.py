"""Few-shot training (envnet/fewshot.py) on sounds the shipped model never heard: held-out accuracy over many
random draws of 4 classes, and the time from pressing Train to a model.

    python benchmarks/fewshot.py                      # both sections on ../shared/data/esc50-more
    python benchmarks/fewshot.py --only accuracy --draws 500 --json

Data: ESC-50's layout or one folder per class; by default ../shared/data/esc50-more (20 classes outside
ESC-10, 8 clips each). Trunk: the shipped model, or --trunk STEM. The shipped model since issue 11 learned a
"none of these" output from every esc50-more class, so for a held-out accuracy pass a trunk that never heard
them, e.g. the ESC-10-only model of commit 17bcb44:
    git show 17bcb44:checkpoints/envnet-esc10.json > /tmp/old/envnet-esc10.json   # and .safetensors
    python benchmarks/fewshot.py --only accuracy --trunk /tmp/old/envnet-esc10

accuracy: each draw picks 4 classes at random and, per class, 5 clips to train on and 3 to test (a random
  split each draw). Every clip is embedded once (its fc6 windows as recorded and altered, cached by path, as the app
  caches by example id); each draw fits the head (envnet.fewshot.fit_examples) on its 20 clips. Reported,
  mean ± standard deviation over draws (and the worst draw):
  - `windows`: the test clip's windows through the fitted head, probabilities averaged (how the recipe scores
    its own held-out examples);
  - `predict`: what envnet.predict answers with the EnvNet the recipe builds (the path of the Classify page
    and the CLI): the head on the clip's 10 crops, cut by the same function and embedded once per clip. On
    the first --predict-draws draws envnet.predict itself runs too, and how often it agrees is reported;
  - `class_mean`: the baseline the issue measured, nearest class mean of the clip-averaged fc6 (cosine).
time: 4 random classes × 5 clips, as after pressing Train on a server that has the trunk loaded: nothing
  embedded yet, envnet.fewshot.train_few_shot with its held-out evaluation, exactly what the page runs. Once
  with the 5 s clips and once with the loudest second of each (a recording session's examples are about
  1 s); --repeats draws each, median reported; each draw both in a worker thread (as the app runs it) and in
  the main thread (as the CLI does). The trunk's load on a fresh server is timed on its own.
class (--only class): --visitors visitors press Train at the same moment on one server, each with their own
  4 classes x 5 one-second examples (threads, limits.few_shot_slot, one shared embedder): when the last has
  its model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import bench  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench import log, machine  # noqa: E402

from envnet import checkpoint, limits  # noqa: E402
from envnet.audio import prepare, window_starts  # noqa: E402
from envnet.data import load_waves, read_dataset  # noqa: E402
from envnet.fewshot import (  # noqa: E402
    QUIETER,
    STRETCH,
    Embedder,
    build_few_shot_model,
    default_embedder,
    fit_examples,
    head_probabilities,
    train_few_shot,
)
from envnet.model import SAMPLE_RATE, WINDOW  # noqa: E402
from envnet.predict import predict  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "esc50-more"
WAYS, SHOTS, TESTS = 4, 5, 3  # classes per draw, training clips per class, test clips per class


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values),
            "draws": len(values)}


def loudest(wave: torch.Tensor, seconds: float = 1.0) -> torch.Tensor:
    """The loudest `seconds` of a clip (by energy), as a recording session's split would keep."""
    n = int(seconds * SAMPLE_RATE)
    if wave.numel() <= n:
        return wave
    energy = torch.cat([torch.zeros(1), wave.double().pow(2).cumsum(0)])
    start = int((energy[n:] - energy[:-n]).argmax())
    return wave[start : start + n]


def draw(rng: np.random.Generator, labels: np.ndarray) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]:
    """WAYS classes; per class SHOTS (clip, k) pairs to train on and TESTS to test, k the class's place."""
    usable = [c for c in np.unique(labels) if (labels == c).sum() >= SHOTS + TESTS]
    if len(usable) < WAYS:
        raise SystemExit(f"need {WAYS} classes with {SHOTS + TESTS} clips each, found {len(usable)}")
    classes = [int(c) for c in rng.choice(usable, WAYS, replace=False)]
    train, test = [], []
    for k, c in enumerate(classes):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        train += [(int(i), k) for i in idx[:SHOTS]]
        test += [(int(i), k) for i in idx[SHOTS : SHOTS + TESTS]]
    return classes, train, test


def bench_accuracy(ds, emb: Embedder, draws: int, predict_draws: int, seed: int) -> dict:
    labels = ds.labels.numpy()
    t0 = time.perf_counter()
    feats = [emb.example(w, key=("fewshot-bench", str(c.path))) for c, w in zip(ds.clips, ds.waves, strict=True)]
    embed_s = time.perf_counter() - t0
    log(f"embedded {len(feats)} clips in {embed_s:.1f} s")
    crops = []  # predict's 10 crops of each clip, embedded once
    for w in ds.waves:
        samples, _, _ = prepare(w)
        crops.append(emb.windows(samples, window_starts(samples.numel())))
    means = [torch.nn.functional.normalize(f[0].mean(0), dim=0) for f in feats]
    rng = np.random.default_rng(seed)
    acc = {"windows": [], "predict": [], "class_mean": []}
    agree = []  # the cached crops' answer against envnet.predict's own, on the first predict_draws draws
    t0 = time.perf_counter()
    for d in range(draws):
        classes, train, test = draw(rng, labels)
        w, b = fit_examples([feats[i] for i, _ in train], [k for _, k in train], WAYS)
        said = {i: int(head_probabilities(crops[i], w, b).argmax()) for i, _ in test}  # what predict answers
        acc["windows"].append(np.mean([int(head_probabilities(feats[i][0], w, b).argmax()) == k for i, k in test]))
        acc["predict"].append(np.mean([said[i] == k for i, k in test]))
        centres = torch.stack([torch.stack([means[i] for i, kk in train if kk == k]).mean(0) for k in range(WAYS)])
        acc["class_mean"].append(np.mean([int((centres @ means[i]).argmax()) == k for i, k in test]))
        if d < predict_draws:
            names = [ds.classes[c] for c in classes]
            model = build_few_shot_model(emb.model, w, b)
            agree += [predict(model, ds.waves[i], names).label == names[said[i]] for i, _ in test]
    out = {"ways": WAYS, "shots": SHOTS, "tests_per_class": TESTS, "altered": {"quieter": QUIETER, "stretch": STRETCH},
           "embed_all_s": embed_s, "draws_s": time.perf_counter() - t0}
    for name, values in acc.items():
        out[name] = summary([float(v) for v in values])
        log(f"{name:10s} {100 * out[name]['mean']:5.1f} % ± {100 * out[name]['std']:4.1f} "
            f"(worst draw {100 * out[name]['min']:.0f} %, {out[name]['draws']} draws)")
    out["draws_at_least_85"] = {k: float(np.mean([a >= 0.85 for a in acc[k]])) for k in ("windows", "predict")}
    if agree:
        out["predict_agrees"] = float(np.mean(agree))
        log(f"envnet.predict gave the cached crops' answer for {sum(agree)} of {len(agree)} test clips")
    return out


def bench_time(ds, emb: Embedder, repeats: int, seed: int) -> dict:
    """Each draw is trained twice, interleaved: in a worker thread, as the app runs it (Streamlit runs every
    page in a script thread), and in the main thread, as `python -m envnet train --few-shot` runs it."""
    labels = ds.labels.numpy()
    rng = np.random.default_rng(seed + 1)
    out = {}
    for what, cut in (("5s_clips", lambda w: w), ("1s_examples", loudest)):
        runs: dict[str, list[dict]] = {"worker_thread": [], "main_thread": []}
        for _ in range(repeats):
            classes, train, _ = draw(rng, labels)
            examples = {ds.classes[c]: [cut(ds.waves[i]) for i, k in train if k == kk] for kk, c in enumerate(classes)}
            for where in runs:
                got = {}

                def once(examples=examples, got=got) -> None:
                    fresh = Embedder(emb.model)  # nothing cached: every example embedded, as on a first Train
                    t0 = time.perf_counter()
                    r = train_few_shot(examples, embedder=fresh)
                    got.update({"total_s": time.perf_counter() - t0, **{f"{k}_s": v for k, v in r.seconds.items()},
                                "held_out_accuracy": r.accuracy})

                if where == "main_thread":
                    once()
                else:
                    t = threading.Thread(target=once)
                    t.start()
                    t.join()
                runs[where].append(got)
        out[what] = {where: {"median_total_s": statistics.median(r["total_s"] for r in rs),
                             "median_embed_s": statistics.median(r["embed_s"] for r in rs), "runs": rs}
                     for where, rs in runs.items()}
        for where, o in out[what].items():
            log(f"train {what:11s} in the {where.replace('_', ' '):13s}: {o['median_total_s']:.1f} s median of "
                f"{repeats} (embedding {o['median_embed_s']:.1f} s)")
    return out


def bench_class(ds, emb: Embedder, visitors: int, seed: int) -> dict:
    """`visitors` press Train at the same moment, each with their own 4 classes x 5 one-second examples, on
    one server: a thread each (as Streamlit runs sessions), through limits.few_shot_slot and the shared
    embedder, each example embedded under its visitor's own key (nobody reuses another's cache)."""
    labels = ds.labels.numpy()
    rng = np.random.default_rng(seed + 2)
    work = []
    for _ in range(visitors):
        classes, train, _ = draw(rng, labels)
        work.append({ds.classes[c]: [loudest(ds.waves[i]) for i, k in train if k == kk]
                     for kk, c in enumerate(classes)})
    finished: list[float | None] = [None] * visitors
    errors: list[str] = []
    t0 = time.perf_counter()

    def visit(v: int) -> None:
        try:
            with limits.few_shot_slot():
                train_few_shot(work[v], embedder=emb,
                               keys={c: [("class-bench", v, c, i) for i in range(len(ws))] for c, ws in work[v].items()})
            finished[v] = time.perf_counter() - t0
        except Exception as e:  # a visitor told the server is busy: counted, not fatal
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=visit, args=(v,)) for v in range(visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = sorted(f for f in finished if f is not None)
    out = {"visitors": visitors, "slots": limits.FEW_SHOT_SLOTS, "all_done_s": max(done) if done else None,
           "median_done_s": statistics.median(done) if done else None, "failed": errors}
    log(f"{visitors} visitors at once: all trained after {out['all_done_s']:.1f} s "
        f"(median {out['median_done_s']:.1f} s), {len(errors)} failed")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="ESC-50 layout or class folders (default: %(default)s)")
    ap.add_argument("--only", choices=["accuracy", "time", "class"],
                    help="one section (default: accuracy and time)")
    ap.add_argument("--visitors", type=int, default=30, help="visitors training at once in 'class' (default: %(default)s)")
    ap.add_argument("--draws", type=int, default=200, help="random 4-class draws for accuracy (default: %(default)s)")
    ap.add_argument("--predict-draws", type=int, default=10,
                    help="of those, how many also run envnet.predict itself, to check the cached crops (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed trainings per example length (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trunk", help="checkpoint stem to embed with (default: the shipped model)")
    ap.add_argument("--json", action="store_true", help="results as JSON on stdout")
    args = ap.parse_args(argv)
    bench._out = sys.stderr if args.json else sys.stdout  # the log lines; stdout carries the JSON
    results: dict = {"machine": machine(), "data": args.data, "trunk": args.trunk or "shipped"}
    t0 = time.perf_counter()
    emb = Embedder(checkpoint.load(args.trunk).model) if args.trunk else default_embedder()  # loaded once per server
    results["trunk_load_s"] = time.perf_counter() - t0
    ds = load_waves(read_dataset(args.data))
    t0 = time.perf_counter()
    emb.windows(torch.zeros(WINDOW), [0])  # builds the fused inference copy, as cpu.warm_up does on a server's start
    results["warm_up_s"] = time.perf_counter() - t0
    results["clips"], results["classes"] = len(ds), len(ds.classes)
    if args.only in (None, "time"):
        results["time"] = bench_time(ds, emb, args.repeats, args.seed)
    if args.only in (None, "accuracy"):
        results["accuracy"] = bench_accuracy(ds, emb, args.draws, args.predict_draws, args.seed)
    if args.only == "class":
        results["class"] = bench_class(ds, emb, args.visitors, args.seed)
    results["loadavg_at_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

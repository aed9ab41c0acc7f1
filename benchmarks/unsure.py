"""Unsure: how often the verdict flags sounds a model never learned, and the shipped models' recipe for it.

    python benchmarks/unsure.py --data ../shared/data --base /tmp/base --out /tmp/unsure   # measure + build
    python benchmarks/unsure.py --data ../shared/data --base /tmp/base --splits 1 --seeds 0 --no-build

--base: the two models before the extra output (the shipped ones have it already, and fine-tuning starts
from the models as trained). They are in the first commit:
    mkdir -p /tmp/base && for f in envnet-esc10 envnet-esc10-fold4val; do for e in json safetensors; do
      git show b9d3974:checkpoints/$f.$e > /tmp/base/$f.$e; done; done

1. Held-out measurement with the validation twin (ESC-10 folds 1-3). For each split, 10 of esc50-more's 20
   classes (chosen at random) and generated sounds train the "none of these" output
   (envnet.verdict.add_other_output), once per training seed: a split's figure moves by 5-10 points with
   the seed alone, so one seed proves little. The known clips held out are fold 4, the unknown ones the
   OTHER 10 classes, which nothing was trained on. The threshold keeps --keep of fold 4 confident. The plain
   twin's top probability (no extra output) is measured the same way, for comparison.
2. The shipped models (unless --no-build): the twin and the full model (folds 1-4), each given the extra
   output trained on all 20 classes and the generated sounds, with the first seed; the threshold keeps
   --keep of fold 4 confident with the built twin (fold 4 is held out for it). Written to --out with updated cards: architecture,
   verdict, and accuracy re-measured through predict.

Every score comes from envnet.predict.predict, the path the app and the CLI use.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envnet import checkpoint, verdict  # noqa: E402
from envnet.data import load_waves, read_esc50  # noqa: E402
from envnet.evaluate import evaluate  # noqa: E402


def log(*a) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def measure(model, classes, known, unknown, keep) -> tuple[float, dict]:
    k, u = verdict.scores(model, known, classes), verdict.scores(model, unknown, classes)
    t = verdict.choose_threshold(k, keep)
    return t, verdict.figures(k, u, t) | {"curve": {str(q): verdict.figures(k, u, verdict.choose_threshold(k, q))
                                                    for q in (0.85, 0.875, 0.9, 0.95)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data", help="folder with esc10/ and esc50-more/ (default %(default)s)")
    ap.add_argument("--out", default="/tmp/unsure", help="where results and built checkpoints go (default %(default)s)")
    ap.add_argument("--splits", type=int, default=3, help="random class splits to measure (default %(default)s)")
    ap.add_argument("--base", required=True,
                    help="folder with the two models before the extra output (see above)")
    ap.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs (default %(default)s)")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds per split, comma-separated (default %(default)s)")
    ap.add_argument("--keep", type=float, default=0.85,
                    help="share of held-out known clips kept confident (default %(default)s)")
    ap.add_argument("--no-build", action="store_true", help="measure only; do not build the shipped models")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ENVNET_THREADS", "2")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    seeds = [int(x) for x in args.seeds.split(",")]
    base_dir = Path(args.base)
    twin = checkpoint.load(base_dir / "envnet-esc10-fold4val")
    if twin.model.config.other:
        log(f"the models in {base_dir} already have the extra output: pass --base with the models before it "
            "(see this script's docstring)")
        return 2
    classes = twin.classes

    esc = load_waves(read_esc50(data / "esc10", "esc10"))
    more = load_waves(read_esc50(data / "esc50-more", "esc50"))
    generated = verdict.unknown_sounds(60, seed=0)
    folds = [c.fold for c in esc.clips]
    train = [i for i, f in enumerate(folds) if f != 4]
    held = [i for i, f in enumerate(folds) if f == 4]
    log(f"{len(esc)} ESC-10 clips, {len(more)} unknown clips of {len(more.classes)} classes, {len(generated)} generated")

    t0 = time.time()
    known_f = verdict.pooled_windows(twin.model, [esc.waves[i] for i in train])
    more_f = verdict.pooled_windows(twin.model, more.waves)
    gen_f = verdict.pooled_windows(twin.model, generated)
    log(f"twin features: {time.time() - t0:.0f} s")
    known_held = [esc.waves[i] for i in held]
    labels = [int(esc.labels[i]) for i in train]

    results = {"keep": args.keep, "epochs": args.epochs, "seeds": seeds, "splits": []}
    for split in range(args.splits):
        rng = random.Random(split)
        seen = set(rng.sample(range(len(more.classes)), len(more.classes) // 2))
        ua = [i for i in range(len(more)) if int(more.labels[i]) in seen]
        ub = [i for i in range(len(more)) if int(more.labels[i]) not in seen]
        unknown_held = [more.waves[i] for i in ub]
        _, plain = measure(twin.model, classes, known_held, unknown_held, args.keep)
        for seed in seeds:
            t0 = time.time()
            model = verdict.add_other_output(twin.model, known_f, labels, [more_f[i] for i in ua] + gen_f,
                                             epochs=args.epochs, seed=seed)
            fit_s = time.time() - t0
            t, figs = measure(model, classes, known_held, unknown_held, args.keep)
            acc = evaluate(model, esc.select(folds=[4]))["accuracy"]
            row = {"split": split, "seed": seed, "trained_unknown_classes": sorted(more.classes[c] for c in seen),
                   "held_out_unknown_classes": sorted(more.classes[c] for c in set(range(len(more.classes))) - seen),
                   "threshold": t, "other_output": figs, "fold4_accuracy": acc, "plain_max_probability": plain,
                   "fit_seconds": fit_s}
            results["splits"].append(row)
            log(f"split {split} seed {seed}: t={t:.3f} kept {figs['known_kept']:.3f} flagged "
                f"{figs['unknown_flagged']:.3f} auroc {figs['auroc']:.3f} acc {acc:.3f} | plain flagged "
                f"{plain['unknown_flagged']:.3f} auroc {plain['auroc']:.3f} | fit {fit_s:.0f} s")
            (out / "results.json").write_text(json.dumps(results, indent=1))
    rows = results["splits"]
    mean = lambda f: sum(f(r) for r in rows) / len(rows)  # noqa: E731
    results["summary"] = {"known_kept": mean(lambda r: r["other_output"]["known_kept"]),
                          "unknown_flagged": mean(lambda r: r["other_output"]["unknown_flagged"]),
                          "auroc": mean(lambda r: r["other_output"]["auroc"]),
                          "fold4_accuracy": mean(lambda r: r["fold4_accuracy"]),
                          "plain_unknown_flagged": mean(lambda r: r["plain_max_probability"]["unknown_flagged"]),
                          "plain_auroc": mean(lambda r: r["plain_max_probability"]["auroc"]),
                          "per_seed_unknown_flagged": {
                              s: sum(r["other_output"]["unknown_flagged"] for r in rows if r["seed"] == s)
                              / args.splits for s in seeds}}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    log("summary", results["summary"])
    if args.no_build:
        return 0

    s = results["summary"]
    rule = {
        "method": "other-output",
        "figures": {
            "known_kept": round(s["known_kept"], 4), "unknown_flagged": round(s["unknown_flagged"], 4),
            "auroc": round(s["auroc"], 4),
            "without_the_extra_output": {"unknown_flagged": round(s["plain_unknown_flagged"], 4),
                                         "auroc": round(s["plain_auroc"], 4)},
            "how": (f"validation twin (ESC-10 folds 1-3) with the extra output trained on 10 of esc50-more's 20 "
                    f"classes and {len(generated)} generated sounds; held out: ESC-10 fold 4 (80 clips, known) and "
                    f"the other 10 classes (80 clips, unknown); mean of {args.splits} random class splits × "
                    f"{len(seeds)} training seeds; threshold keeps {args.keep:.1%} of fold 4 confident in each. "
                    f"The threshold itself: the {args.keep:.1%}-keeping threshold of the built twin (extra output "
                    f"trained on all 20 classes) on fold 4"),
            "command": (f"python benchmarks/unsure.py --data ../shared/data --base BASE --epochs {args.epochs} "
                        f"--splits {args.splits} --seeds {args.seeds}"),
        },
    }
    recipe = {"unknowns": f"esc50-more's 20 classes (160 clips) and {len(generated)} generated sounds "
                          "(envnet.verdict.unknown_sounds)", "epochs": args.epochs, "lr": 1e-4,
              "seed": seeds[0], "trained": "fc5, fc6, fc7 (convolutions frozen)",
              "windows": "every 0.5 s of each trimmed clip"}
    for name, keep_folds in (("envnet-esc10-fold4val", [1, 2, 3]), ("envnet-esc10", [1, 2, 3, 4])):
        base = checkpoint.load(base_dir / name)
        idx = [i for i, f in enumerate(folds) if f in keep_folds]
        t0 = time.time()
        kf = known_f if name == "envnet-esc10-fold4val" else verdict.pooled_windows(base.model, [esc.waves[i] for i in idx])
        uf = (more_f + gen_f) if name == "envnet-esc10-fold4val" else verdict.pooled_windows(base.model, more.waves + generated)
        model = verdict.add_other_output(base.model, kf, [int(esc.labels[i]) for i in idx], uf, epochs=args.epochs,
                                         seed=seeds[0])
        log(f"{name}: built in {time.time() - t0:.0f} s")
        card = copy.deepcopy(base.card)
        card["architecture"] = model.config.to_dict()
        card["verdict"] = rule
        card["other_output"] = recipe
        card["data"]["preprocessing"] = ("16 kHz mono; leading/trailing silence (below 1 % of the peak) trimmed; "
                                         "clips shorter than a window centred in zeros (envnet.audio.prepare)")
        if name == "envnet-esc10-fold4val":
            # Rounded down: rounded to nearest, the clip that sets it could fall just below its own threshold.
            t = verdict.choose_threshold(verdict.scores(model, known_held, classes), args.keep)
            rule["threshold"] = math.floor(t * 1e4) / 1e4
            ev = evaluate(model, esc.select(folds=[4]))
            validation = {k: ev[k] for k in ("accuracy", "n_clips", "per_class", "confusion")}
            card["metrics"]["validation"] = card["metrics"].get("validation", {}) | validation
            results["twin_fold4"] = ev["accuracy"]
        else:
            card["metrics"]["validation"] = card["metrics"].get("validation", {}) | validation
            ev = evaluate(model, esc.select(folds=[1, 2, 3, 4]))
            card["metrics"]["train_folds_accuracy"]["accuracy"] = ev["accuracy"]
        log(f"{name}: accuracy {ev['accuracy']:.4f}")
        checkpoint.save(out / name, model, card)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

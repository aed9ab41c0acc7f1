"""python -m envnet predict|inspect|train|evaluate|crossval|download

Exit codes: 0 ok, 2 bad arguments, 3 bad input file (the message goes to stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from envnet import checkpoint, cpu, download, plots
from envnet.audio import AudioError, TooLongError, load_audio, windows
from envnet.data import load_waves, read_dataset, read_esc50
from envnet.evaluate import evaluate
from envnet.fewshot import train_few_shot
from envnet.model import SAMPLE_RATE
from envnet.predict import SEGMENT_HOP, predict
from envnet.spectra import frequency_response, learned_spectrogram, mel_spectrogram
from envnet.train import TrainConfig, Trainer, resolve_device

EXIT_OK, EXIT_USAGE, EXIT_INPUT = 0, 2, 3


class InputError(Exception):
    """Bad input file or data: exit code 3."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default ("off" for a flag) unless its text already states one;
    an option whose default is None says in words what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.required or not action.option_strings
                or action.default in (None, argparse.SUPPRESS)):
            return text
        return f"{text} (default: {'off' if action.default is False else '%(default)s'})"


def _checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="checkpoint stem or .safetensors path (default: the shipped model)")


def _load_checkpoint(path: str | None):
    try:
        return checkpoint.load(path or checkpoint.default_checkpoint())
    except checkpoint.CheckpointError as e:
        raise InputError(str(e)) from e


def _load_audio(path: str, max_seconds: float | None = 60.0):
    try:
        return load_audio(path, max_seconds=max_seconds or None)
    except TooLongError as e:
        raise InputError(f"{e} (--max-seconds 0 lifts the limit)") from e
    except AudioError as e:
        raise InputError(str(e)) from e


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more, not {text}")
    return value


def _max_seconds_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-seconds", type=_seconds, default=60.0, metavar="S",
                   help="refuse clips longer than this, in seconds; 0 = no limit")


def cmd_predict(args: argparse.Namespace) -> int:
    ckpt = _load_checkpoint(args.checkpoint)
    status = EXIT_OK
    for f in args.files:
        try:
            wave = _load_audio(f, args.max_seconds)
        except InputError as e:
            print(f"envnet: {e}", file=sys.stderr)
            status = EXIT_INPUT
            continue
        pred = predict(ckpt.model, wave, ckpt.classes)
        segments = predict(ckpt.model, wave, ckpt.classes, hop=SEGMENT_HOP).segments() if args.segments else None
        top = [{"label": c, "prob": round(p, 6)} for c, p in pred.top(args.top_k)]
        if args.json:
            row = {"file": f, "verdict": pred.verdict.name, "unsure": pred.unsure, "top": top,
                   "windows": len(pred.starts)}
            if segments is not None:
                row["segments"] = [s.to_json() for s in segments]
            print(json.dumps(row))
            continue
        print(f"{f}: {pred.verdict.text}  [top: " + ", ".join(f"{t['label']} {t['prob']:.1%}" for t in top)
              + f"; {len(pred.starts)} windows]")
        for s in segments or []:
            p = "" if s.p is None else f" ({s.p:.0%})"
            print(f"  {s.start:7.2f}–{s.end:7.2f} s  {s.verdict}{p}")
    return status


def cmd_inspect(args: argparse.Namespace) -> int:
    """Both 40 × 150 spectrograms of a clip's windows as .npy, and an HTML page showing one pair.

    learned.npy and mel.npy hold every window predict would use, shape (n_windows, 40, 150) (the 10
    evenly spaced crops; 1 window for clips up to 1.5 s). The HTML shows the loudest window unless
    --window picks another; it embeds plotly.js, so it opens offline.
    """
    ckpt = _load_checkpoint(args.checkpoint)
    wave = _load_audio(args.file, args.max_seconds)
    batch, starts = windows(wave)
    if args.window is not None and not 0 <= args.window < len(starts):
        print(f"envnet: --window {args.window} is out of range: this clip has {len(starts)} window(s), "
              f"numbered 0–{len(starts) - 1}", file=sys.stderr)
        return EXIT_USAGE
    learned = learned_spectrogram(ckpt.model, batch).numpy()
    mel = mel_spectrogram(batch).numpy()
    shown = int(batch.pow(2).mean(1).argmax()) if args.window is None else args.window
    order = frequency_response(ckpt.model).order if args.sort_filters else None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "learned.npy", learned.astype(np.float32))
        np.save(out / "mel.npy", mel.astype(np.float32))
        figs = plots.spectrogram_pair(torch.from_numpy(learned[shown]), torch.from_numpy(mel[shown]),
                                      start_sample=max(starts[shown], 0), order=order)
        start_s = starts[shown] / SAMPLE_RATE
        # 0-based like --window and the JSON's shown_window, so the three always name the same window.
        heading = (f"{Path(args.file).name}: window {shown} (windows 0–{len(starts) - 1}), from {start_s:.2f} s "
                   f"({ckpt.name})")
        (out / "spectrograms.html").write_text(plots.figures_html(figs, heading), encoding="utf-8")
    except OSError as e:
        print(f"envnet: cannot write to {out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(json.dumps({
        "file": args.file, "windows": len(starts), "starts_s": [round(s / SAMPLE_RATE, 4) for s in starts],
        "shown_window": shown, "learned": str(out / "learned.npy"), "mel": str(out / "mel.npy"),
        "html": str(out / "spectrograms.html"), "shape": list(learned.shape),
    }))
    return EXIT_OK


def _read_data(args: argparse.Namespace):
    try:
        ds = read_dataset(args.data, args.subset)
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e)) from e
    bar = tqdm(total=len(ds), desc="decoding", unit="clip", disable=not sys.stderr.isatty() and not args.progress)

    def progress(i: int, n: int) -> None:
        bar.update(1)

    load_waves(ds, progress=progress)
    bar.close()
    return ds


def _train_config(args: argparse.Namespace):
    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, bc=args.bc, augment=args.augment,
        fc_width=args.fc_width,
        seed=args.seed, eval_every=args.eval_every, filters_every=0, device=args.device,
        warmup_epochs=args.warmup, bf16=False if args.fp32 else True if args.bf16 else "auto", init_features=args.init_features,
        init_weights=args.init_weights,
    )


def cmd_train_few_shot(args: argparse.Namespace) -> int:
    """The Train page's default recipe: the shipped model as a frozen embedding and a new fc7 (envnet/fewshot.py)."""
    ds = _read_data(args)
    examples = {c: [w for cl, w in zip(ds.clips, ds.waves, strict=True) if cl.label == k]
                for k, c in enumerate(ds.classes)}
    try:
        result = train_few_shot(examples)
    except ValueError as e:
        raise InputError(str(e)) from e
    card = result.card(Path(args.out).name, command="python -m envnet " + " ".join(sys.argv[1:]),
                       data={"source": ds.source, "n_train": len(ds)})
    try:
        path = checkpoint.save(args.out, result.model, card)
    except OSError as e:
        print(f"envnet: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"saved {path}", file=sys.stderr)
    print(json.dumps({"checkpoint": str(path), "classes": result.classes, "held_out_accuracy": result.accuracy,
                      "n_held_out": result.n_held_out, "per_class": result.per_class,
                      "confusion": result.confusion, "seconds": {k: round(v, 3) for k, v in result.seconds.items()}}))
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    if args.few_shot:
        return cmd_train_few_shot(args)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"envnet: {e}", file=sys.stderr)
        return EXIT_USAGE
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if ddp:  # launched by torchrun: one process per GPU (NCCL) or per CPU worker (gloo)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ds = _read_data(args)
    val_folds = args.val_folds
    train_ds = ds.select(exclude=val_folds) if val_folds else ds
    val_ds = ds.select(folds=val_folds) if val_folds else None
    if len(train_ds) == 0:
        raise InputError(f"no training clips left after holding out folds {val_folds}")
    rank = dist.get_rank() if ddp else 0
    bar = tqdm(total=args.epochs, desc="training", unit="epoch", disable=rank != 0)
    if args.log and rank == 0:
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    log = open(args.log, "a") if args.log and rank == 0 else None

    def on_event(e: dict) -> None:
        if e["kind"] == "epoch":
            bar.update(1)
            shown = {k: round(v, 4) for k, v in e.items() if k in ("train_loss", "train_acc", "val_acc", "lr")}
            bar.set_postfix(shown)
            if log:
                log.write(json.dumps({k: v for k, v in e.items() if k != "kind"}) + "\n")
                log.flush()
        elif e["kind"] == "checkpoint":
            tqdm.write(f"saved {e['path']}")

    trainer = Trainer(train_ds, val_ds, _train_config(args), out=args.out, callbacks=[on_event],
                      card_extra={"command": "python -m envnet " + " ".join(sys.argv[1:])})
    if rank == 0 and trainer.device.type == "cpu" and trainer.config.bf16 == "auto":
        tqdm.write(f"precision {cpu.plan().reasons['train']}")
    if args.resume and trainer.resume():
        bar.update(trainer.epoch)
        tqdm.write(f"resumed at epoch {trainer.epoch}")
    signal.signal(signal.SIGINT, lambda *_: trainer.stop())
    trainer.run()
    bar.close()
    if trainer.history and rank == 0:
        print(json.dumps(trainer.history[-1]))
    if ddp:
        dist.barrier()  # rank 0 may still be writing the checkpoint; leave together
        dist.destroy_process_group()
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    ckpt = _load_checkpoint(args.checkpoint)
    ds = _read_data(args)
    if ds.classes != ckpt.classes and sorted(ds.classes) == sorted(ckpt.classes):
        # Class folders are read in name order; a model trained in the app keeps the order its classes were made.
        ds = ds.relabel(ckpt.classes)
    if ds.classes != ckpt.classes:
        raise InputError(f"the data's classes {ds.classes} differ from the checkpoint's {ckpt.classes}")
    if args.folds:
        ds = ds.select(folds=args.folds)
    if len(ds) == 0:
        raise InputError(f"no clips in folds {args.folds}")
    result = evaluate(ckpt.model, ds)
    if args.json:
        print(json.dumps({k: result[k] for k in ("accuracy", "n_clips", "per_class", "confusion")}))
    else:
        print(f"accuracy {result['accuracy']:.1%} on {result['n_clips']} clips (10-crop)")
        for c, a in result["per_class"].items():
            print(f"  {c:<16} {'-' if a is None else f'{a:.0%}'}")
        print("confusion (rows: true, columns: predicted)")
        for row in result["confusion"]:
            print("  " + " ".join(f"{v:3d}" for v in row))
    return EXIT_OK


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="ESC-50 layout (audio/, meta/esc50.csv) or one folder per class")
    p.add_argument("--subset", choices=["esc50", "esc10"], default=None,
                   help="which classes of ESC-50's layout (default: esc50, all 50)")
    p.add_argument("--progress", action="store_true", help="show progress bars even when not on a terminal")


def _train_options(p: argparse.ArgumentParser) -> None:
    """The recipe's options, shared by train and crossval."""
    p.add_argument("--epochs", type=int, default=100, help="passes over the training clips")
    p.add_argument("--batch-size", type=int, default=64, help="clips per optimizer step")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate, divided by 10 at 50 %% and 75 %% of the epochs")
    p.add_argument("--warmup", type=int, default=0, help="epochs of linear lr warm-up")
    p.add_argument("--bc", action="store_true", help="between-class learning")
    p.add_argument("--augment", action="store_true", help="random time-stretch (x0.8-1.25) and gain (+-6 dB) per crop")
    p.add_argument("--fc-width", type=int, default=1024, help="units in each fully connected layer (the paper: 4096)")
    p.add_argument("--seed", type=int, default=0, help="fixes the initial weights, crops and mixes")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="auto = cuda when available")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp32", action="store_true", help="train in float32 (default: bf16 only where this CPU/GPU "
                      "computes it natively and faster, see envnet/cpu.py)")
    prec.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast even where it is slow")
    p.add_argument("--init-features", default=None,
                   help="start conv1/conv2 from this checkpoint (default: random initial weights)")
    p.add_argument("--init-weights", default=None,
                   help="start every layer from this checkpoint (same classes and width): train longer with a fresh "
                        "schedule (default: random initial weights)")


def cmd_crossval(args: argparse.Namespace) -> int:
    ds = _read_data(args)
    folds = args.folds or ds.folds
    unknown = sorted(set(folds) - set(ds.folds))
    if unknown:
        raise InputError(f"folds {unknown} are not in the data (it has folds {ds.folds})")
    if len(folds) < 2:
        raise InputError("cross-validation needs at least two folds")
    args.eval_every = args.epochs  # no validation passes during training: each fold is evaluated once, after
    results = []
    for k in folds:
        train_ds = ds.select(folds=[f for f in folds if f != k])
        test_ds = ds.select(folds=[k])
        bar = tqdm(total=args.epochs, desc=f"fold {k}", unit="epoch", disable=not sys.stderr.isatty() and not args.progress)
        try:
            trainer = Trainer(train_ds, None, _train_config(args), out=Path(args.out) / f"fold{k}" if args.out else None,
                              callbacks=[lambda e, bar=bar: bar.update(1) if e["kind"] == "epoch" else None],
                              card_extra={"command": "python -m envnet " + " ".join(sys.argv[1:])})
        except ValueError as e:
            print(f"envnet: {e}", file=sys.stderr)
            return EXIT_USAGE
        model = trainer.run()
        bar.close()
        r = evaluate(model, test_ds)
        results.append({"fold": k, "n_train": len(train_ds), **{key: r[key] for key in ("accuracy", "n_clips", "per_class", "confusion")}})
        if not args.json:
            print(f"fold {k}: accuracy {r['accuracy']:.1%} on {r['n_clips']} clips (trained on {len(train_ds)})", flush=True)
    accs = [r["accuracy"] for r in results]
    mean, std = statistics.fmean(accs), statistics.stdev(accs)
    if args.json:
        print(json.dumps({"folds": results, "mean": mean, "std": std}))
    else:
        print(f"mean {mean:.1%} ± {std:.1%} (sample standard deviation over {len(accs)} folds)")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    try:
        root = download.download(args.dataset, args.root, url=args.url, sha256=args.sha256, progress=not args.quiet)
        ds = read_esc50(root, download.SOURCES[args.dataset].subset)
    except (download.DownloadError, FileNotFoundError) as e:
        raise InputError(str(e)) from e
    subset = " --subset esc10" if args.dataset == "esc10" else ""
    print(f"{args.dataset}: {len(ds)} clips, {len(ds.classes)} classes, folds {ds.folds} in", file=sys.stderr)
    print(root)
    print(f"train with: python -m envnet train --data {root}{subset} --val-folds 4 --out checkpoints/NAME", file=sys.stderr)
    return EXIT_OK


def _folds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"folds must be numbers like '4' or '4,5', not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m envnet", description="EnvNet: environmental sound classification from raw audio.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify audio files")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, OGG, MP3, …)")
    _checkpoint_arg(p)
    p.add_argument("--top-k", type=_positive_int, default=3, metavar="K", help="how many classes to show (default 3)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per file: "verdict" (a class, "unsure" or "silence"), "unsure", "top"')
    p.add_argument("--segments", action="store_true",
                   help="also list the recording's stretches (start–end, verdict) from windows every 0.5 s")
    _max_seconds_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("inspect", help="learned and mel spectrograms of a clip (.npy + HTML)",
                       description=cmd_inspect.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="an audio file")
    _checkpoint_arg(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for learned.npy, mel.npy, spectrograms.html")
    p.add_argument("--window", type=int, default=None, metavar="I", help="which window the HTML shows, 0-based as in the JSON (default: the loudest)")
    p.add_argument("--sort-filters", action="store_true",
                   help="stack the learned rows by centre frequency (measures the filters: a few seconds)")
    _max_seconds_arg(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("train", help="train EnvNet on a dataset")
    _data_args(p)
    p.add_argument("--val-folds", type=_folds, default=None,
                   help="folds held out for validation, e.g. 4 (default: none; train on every fold)")
    _train_options(p)
    p.add_argument("--eval-every", type=int, default=5, help="epochs between validation passes")
    p.add_argument("--out", required=True, help="checkpoint stem, e.g. checkpoints/mymodel")
    p.add_argument("--few-shot", action="store_true",
                   help="the Train page's recipe for a few examples per class: the shipped model as a frozen "
                        "embedding and a new last layer, fitted in seconds (ignores the training options)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state.* if present")
    # --log-file too: under torchrun, a bare --log is taken for an abbreviation of torchrun's own --log-* options
    p.add_argument("--log", "--log-file", dest="log", default=None, help="append one JSON line per epoch to this file (default: no log)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="10-crop accuracy of a checkpoint on a dataset (every clip unless --folds)")
    _data_args(p)
    p.add_argument("--folds", type=_folds, default=None, help="folds to evaluate on, e.g. 4 or 4,5 (default: all)")
    _checkpoint_arg(p)
    p.add_argument("--json", action="store_true", help="one JSON object: accuracy, per_class, confusion")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("crossval", help="k-fold cross-validation: train on k-1 folds, test on the one left out")
    _data_args(p)
    p.add_argument("--folds", type=_folds, default=None, help="folds to rotate through, e.g. 1,2,3,4 (default: all)")
    _train_options(p)
    p.add_argument("--out", default=None, help="folder for each fold's checkpoint (fold1, fold2, …) (default: not saved)")
    p.add_argument("--json", action="store_true", help="one object: folds (accuracy, per_class, confusion), mean, std")
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("download", help="fetch ESC-50 (or its ESC-10 subset) into the cache")
    p.add_argument("dataset", choices=["esc50", "esc10"], help="esc10 is read from ESC-50's archive")
    p.add_argument("--root", default=None, help="where to put it (default: $ENVNET_CACHE or ~/.cache/envnet)")
    p.add_argument("--url", default=None, help="a mirror of ESC-50's GitHub zip (default: GitHub's)")
    p.add_argument("--sha256", default=None, help="expected sha256 of the archive (default: not checked; GitHub's archive changes with the repository)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_download)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on bad arguments
    try:
        return args.func(args)
    except InputError as e:
        print(f"envnet: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("envnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `python -m envnet evaluate … | head`: the reader left; that is not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK

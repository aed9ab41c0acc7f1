"""`python -m envnet`: help everywhere, predict's JSON, inspect's files, and the exit codes
(0 ok, 2 bad arguments, 3 bad input file with a message on stderr and no traceback)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLASSES, sine, write_audio

from envnet import checkpoint
from envnet.audio import load_audio, windows
from envnet.cli import HelpFormatter, build_parser, main
from envnet.model import build_model
from envnet.predict import predict
from envnet.spectra import learned_spectrogram, mel_spectrogram

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a fresh interpreter, from the repository root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "envnet", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    corrupt = d / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # a wav header cut off mid-chunk
    return {
        "long": write_audio(d / "tone3s.wav", sine(500, 3.0)),
        "short": write_audio(d / "tone1s.flac", sine(2000, 1.0, 44_100), 44_100),
        "corrupt": corrupt,
        "missing": d / "missing.wav",
    }


def subcommands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return list(sub.choices)


# ---- help and argument errors (exit 2) -------------------------------------------------------------------

def test_the_documented_subcommands_exist() -> None:
    assert {"predict", "inspect", "train", "evaluate"} <= set(subcommands())


@pytest.mark.parametrize("command", [None, *subcommands()])
def test_help_everywhere(command: str | None, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"] if command is None else [command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m envnet")
    if command is not None:
        assert command in out.splitlines()[0]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fly"],
        ["predict"],
        ["predict", "x.wav", "--top-k", "0"],
        ["predict", "x.wav", "--top-k", "three"],
        ["predict", "x.wav", "--max-seconds", "-1"],
        ["inspect", "x.wav"],  # --out is required
        ["inspect", "a.wav", "b.wav", "--out", "d"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


# ---- predict ---------------------------------------------------------------------------------------------

def test_predict_json_one_object_per_file(tiny_checkpoint, clips, capsys) -> None:
    files = [str(clips["long"]), str(clips["short"])]
    assert main(["predict", *files, "--checkpoint", str(tiny_checkpoint), "--top-k", "2", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    objs = [json.loads(line) for line in lines]
    assert [o["file"] for o in objs] == files
    assert [o["windows"] for o in objs] == [10, 1]
    ckpt = checkpoint.load(tiny_checkpoint)
    for o, f in zip(objs, files, strict=True):
        assert set(o) == {"file", "verdict", "unsure", "top", "windows"}
        assert len(o["top"]) == 2 and all(set(t) == {"label", "prob"} for t in o["top"])
        # The same numbers as the library gives.
        expected = predict(ckpt.model, load_audio(f), ckpt.classes).top(2)
        assert [t["label"] for t in o["top"]] == [c for c, _ in expected]
        np.testing.assert_allclose([t["prob"] for t in o["top"]], [p for _, p in expected], atol=1e-6)


def test_predict_json_gives_the_verdict_and_segments(tmp_path, capsys) -> None:
    """--json says "verdict" and "unsure"; --segments lists the recording's stretches, silence included."""
    from envnet.verdict import Calibration

    model = build_model(n_classes=3, fc_width=16).eval()
    card = checkpoint.make_card(model, list(TINY_CLASSES), "strict", verdict=Calibration("max-probability", 0.99, {}).to_card())
    checkpoint.save(tmp_path / "strict", model, card, half=False)
    f = write_audio(tmp_path / "gap.wav", np.concatenate([sine(500, 3.0), np.zeros(48_000, np.float32), sine(900, 3.0)]))
    assert main(["predict", str(f), "--checkpoint", str(tmp_path / "strict"), "--json", "--segments"]) == 0
    o = json.loads(capsys.readouterr().out)
    assert (o["verdict"], o["unsure"]) == ("unsure", True)  # an untrained model is never 99 % sure
    segs = o["segments"]
    assert segs[0]["start"] == 0 and segs[-1]["end"] == pytest.approx(9.0, abs=1e-3)
    silent = [s for s in segs if s["verdict"] == "silence"]
    assert len(silent) == 1 and silent[0]["prob"] is None
    assert silent[0]["start"] == pytest.approx(3.0, abs=0.5) and silent[0]["end"] == pytest.approx(6.0, abs=0.5)
    silence = write_audio(tmp_path / "silence.wav", np.zeros(32_000, np.float32))
    assert main(["predict", str(silence), "--checkpoint", str(tmp_path / "strict"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "silence"


def test_predict_text_output(tiny_checkpoint, clips, capsys) -> None:
    assert main(["predict", str(clips["long"]), "--checkpoint", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{clips['long']}: ") and "; 10 windows]" in out
    assert sum(c in out for c in TINY_CLASSES) == 3 and "%" in out


def test_predict_reports_bad_files_and_still_does_the_good_ones(tiny_checkpoint, clips, capsys) -> None:
    files = [str(clips["corrupt"]), str(clips["short"]), str(clips["missing"])]
    assert main(["predict", *files, "--checkpoint", str(tiny_checkpoint), "--json"]) == 3
    captured = capsys.readouterr()
    assert [json.loads(x)["file"] for x in captured.out.splitlines()] == [str(clips["short"])]
    err = captured.err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("envnet: corrupt.wav: could not decode audio")
    assert err[1].startswith("envnet: ") and "missing.wav: no such file" in err[1]


def test_max_seconds(tiny_checkpoint, clips, capsys) -> None:
    ck = ["--checkpoint", str(tiny_checkpoint)]
    assert main(["predict", str(clips["long"]), *ck, "--max-seconds", "2"]) == 3
    err = capsys.readouterr().err
    assert "3.0 s long; the limit is 2 s" in err and "--max-seconds 0" in err
    assert main(["predict", str(clips["long"]), *ck, "--max-seconds", "0"]) == 0  # 0: no limit


@pytest.mark.parametrize("problem", ["missing", "truncated", "pickle", "bad card"])
def test_bad_checkpoint_exits_3(tiny_checkpoint, clips, tmp_path, capsys, problem: str) -> None:
    stem = tmp_path / "broken"
    weights = tiny_checkpoint.with_suffix(".safetensors").read_bytes()
    card = tiny_checkpoint.with_suffix(".json").read_text()
    if problem != "missing":
        stem.with_suffix(".safetensors").write_bytes(
            {"truncated": weights[: len(weights) // 3], "pickle": b"\x80\x04K\x01.", "bad card": weights}[problem])
        stem.with_suffix(".json").write_text("{" if problem == "bad card" else card)
    assert main(["predict", str(clips["long"]), "--checkpoint", str(stem)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("envnet: ") and len(err.splitlines()) == 1
    assert {"missing": "does not exist", "truncated": "not a readable .safetensors", "pickle": "pickle",
            "bad card": "not valid JSON"}[problem] in err


# ---- inspect ---------------------------------------------------------------------------------------------

def test_inspect_writes_both_spectrograms_and_html(tiny_checkpoint, clips, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["inspect", str(clips["long"]), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    learned, mel = np.load(out / "learned.npy"), np.load(out / "mel.npy")
    assert learned.shape == mel.shape == (10, 40, 150) and summary["shape"] == [10, 40, 150]
    assert learned.dtype == mel.dtype == np.float32
    # The files hold exactly what the library computes for predict's ten windows.
    batch, starts = windows(load_audio(clips["long"]))
    ckpt = checkpoint.load(tiny_checkpoint)
    np.testing.assert_allclose(learned, learned_spectrogram(ckpt.model, batch).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mel, mel_spectrogram(batch).numpy(), rtol=1e-5, atol=1e-4)
    assert summary["windows"] == 10 and summary["starts_s"][-1] == pytest.approx(starts[-1] / 16_000, abs=1e-4)
    html = (out / "spectrograms.html").read_text()
    assert "Learned spectrogram" in html and "Mel spectrogram" in html
    # plotly.js is embedded (megabytes), not fetched from a CDN: the page works offline.
    assert len(html) > 1_000_000
    assert not bool(re.search(r"<script[^>]+src=", html))


def test_inspect_window_choice(tiny_checkpoint, clips, tmp_path, capsys) -> None:
    ck = ["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path)]
    # A tone that grows louder late (a quiet start is kept; silence would be trimmed): the loudest window is the last.
    late = write_audio(tmp_path / "late.wav", np.concatenate([0.05 * sine(800, 2.0), sine(800, 1.5)]))
    assert main(["inspect", str(late), *ck]) == 0
    assert json.loads(capsys.readouterr().out)["shown_window"] == 9
    assert main(["inspect", str(late), *ck, "--window", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["shown_window"] == 2
    # The page names the window as --window and the JSON do (0-based), never as another number.
    assert "window 2 (windows 0–9)" in (tmp_path / "spectrograms.html").read_text()
    assert main(["inspect", str(clips["short"]), *ck, "--window", "1"]) == 2
    assert "has 1 window(s)" in capsys.readouterr().err


def test_inspect_sorted_filters_and_silence(tiny_checkpoint, tmp_path, capsys) -> None:
    quiet = write_audio(tmp_path / "quiet.wav", np.zeros(8000, np.float32))
    out = tmp_path / "out"
    args = ["inspect", str(quiet), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--sort-filters"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [1, 40, 150]
    assert np.isfinite(np.load(out / "learned.npy")).all() and np.isfinite(np.load(out / "mel.npy")).all()
    assert "filter (by centre frequency)" in (out / "spectrograms.html").read_text()


def test_inspect_bad_input_exits_3(tiny_checkpoint, clips, tmp_path, capsys) -> None:
    for f in ("corrupt", "missing"):
        assert main(["inspect", str(clips[f]), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path)]) == 3
        assert capsys.readouterr().err.startswith("envnet: ")
    assert not (tmp_path / "learned.npy").exists()


def test_inspect_unwritable_out(tiny_checkpoint, clips, tmp_path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["inspect", str(clips["short"]), "--checkpoint", str(tiny_checkpoint), "--out", str(blocker)]) == 1
    assert "cannot write to" in capsys.readouterr().err


# ---- as a subprocess, the way people run it ----------------------------------------------------------------

def test_subprocess_exit_codes_and_no_traceback(tiny_checkpoint, clips) -> None:
    r = run("predict", str(clips["short"]), str(clips["corrupt"]), "--checkpoint", str(tiny_checkpoint), "--json")
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["file"] == str(clips["short"])
    assert "corrupt.wav: could not decode audio" in r.stderr and "Traceback" not in r.stderr

    r = run("predict", "--top-k", "0", str(clips["short"]))
    assert r.returncode == 2 and "at least 1" in r.stderr


def test_every_option_of_every_command_says_what_it_does_and_its_default() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{label} has no help text"
            if action.option_strings and not action.required:
                shown = HelpFormatter(name)._get_help_string(action)
                assert "default" in shown, f"{label} does not say its default: {shown!r}"
        assert "%(default)" not in text and "(default: None)" not in text, name


def test_subprocess_help() -> None:
    r = run("--help")
    assert r.returncode == 0 and "predict" in r.stdout and "inspect" in r.stdout


def test_subprocess_predict_with_the_shipped_model(clips) -> None:
    r = run("predict", str(clips["long"]), "--json", "--top-k", "10")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    card = json.loads(checkpoint.default_checkpoint().with_suffix(".json").read_text())
    assert sorted(t["label"] for t in obj["top"]) == sorted(card["classes"])
    # The rest goes to its "none of these" output: a tone is none of the ten sounds.
    assert 0 <= sum(t["prob"] for t in obj["top"]) < 0.5 and obj["verdict"] == "unsure"
    assert obj["windows"] == 10


def test_cli_module_never_imports_streamlit() -> None:
    code = "import sys, envnet.cli, envnet.plots; print('streamlit' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.stdout.strip() == "False", r.stderr



def test_train_with_bc_and_augmentation_records_the_recipe(tmp_path, monkeypatch):
    from tonedata import write_class_folders

    monkeypatch.setenv("ENVNET_CACHE", str(tmp_path / "cache"))
    data = write_class_folders(tmp_path / "data", per_class=2, seconds=0.3)
    out = tmp_path / "aug"
    assert main(["train", "--data", str(data), "--epochs", "1", "--batch-size", "3", "--fc-width", "16",
                     "--bc", "--augment", "--out", str(out)]) == 0
    recipe = checkpoint.load(out).card["recipe"]
    assert recipe["augment"] is True and recipe["bc"] is True

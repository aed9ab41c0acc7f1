"""The benchmark suite stays runnable from its one command: it imports against the current library, its
accuracy guard agrees with the plain reference, and it prints machine-readable results. (Its timings
are measurements, not assertions: see benchmarks/README.md.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from envnet.model import build_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("envnet_bench", ROOT / "benchmarks" / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_accuracy_guard_runs_and_reports_json(bench, monkeypatch, tmp_path, capsys):
    torch.manual_seed(0)
    small = build_model(n_classes=3, fc_width=32).eval()
    monkeypatch.setattr(bench, "load_model", lambda: (small, ["a", "b", "c"], "small test model"))
    monkeypatch.setattr(bench, "ESC10", tmp_path / "absent")  # no real clips: the synthetic checks only
    assert bench.main(["--only", "accuracy", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["model"] == "small test model"
    assert results["machine"]["cores"] >= 1
    acc = results["accuracy"]
    assert acc["clip_5s_max_abs_diff"] < acc["tolerance"]
    assert acc["random_windows_max_abs_diff"] < acc["tolerance"]


def test_unknown_section_is_refused(bench):
    with pytest.raises(SystemExit) as e:
        bench.main(["--only", "warp-speed"])
    assert e.value.code == 2

"""The benchmark suite stays runnable from its one command: it imports against the current library, its
accuracy guard agrees with the plain reference, and it prints machine-readable results. (Its timings
are measurements, not assertions: see benchmarks/README.md.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from envnet import checkpoint
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


def test_plan_section_says_which_path_each_kind_of_cpu_takes(bench, capsys):
    assert bench.main(["--only", "plan", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    plan = results["plan"]
    assert plan["with_native_bf16"]["train_precision"] == "bf16"
    assert plan["without_native_bf16"]["train_precision"] == "fp32"
    assert plan["this_machine"]["inference_precision"] == "fp32"
    here = results["machine"]["cpu_path"]
    assert here["train_precision"] == "fp32" or here["cpu"]["native_bf16"]  # bf16 only where native
    assert here["reasons"]["train"]


def test_targets_compare_what_was_measured(bench):
    rows = bench.targets({"classify": {"clips": {"5s": {"speedup": 2.4}}},
                          "browser": {"targets": {"upload_s": 1.5}, "upload_s": {"median": 2.0}}})
    assert [(r["what"].split()[0], r["met"]) for r in rows] == [("classify", True), ("browser:", False)]


def test_live_benchmark_runs_and_reports_cost_per_second(capsys):
    spec = importlib.util.spec_from_file_location("envnet_bench_live", ROOT / "benchmarks" / "live.py")
    live = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(live)
    assert live.main(["--only", "library", "--lengths", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    lib = results["library"]
    assert lib["3s"]["cpu_ms_per_audio_s"] > 0 and lib["3s"]["update"]["n"] >= 1
    assert lib["batch_per_update"]["update"]["median"] > 0
    assert lib["draw"]["cpu_ms_per_update"] > 0 and lib["draw"]["bytes_per_update"] > 10_000  # two map images


def test_fewshot_benchmark_runs_on_class_folders_and_reports_accuracy_and_time(tmp_path, monkeypatch, capsys):
    """A quick run on generated classes (4 tone pitches + noise, 8 clips each) with a tiny trunk."""
    import numpy as np
    import soundfile as sf
    from conftest import tiny_model

    from envnet.fewshot import Embedder

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16_000
    for c, freq in enumerate([200, 500, 1200, 3000, 0]):
        folder = tmp_path / f"class{c}"
        folder.mkdir()
        for i in range(8):
            tone = 0.4 * np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t) if freq else 0.3 * rng.standard_normal(8000)
            sf.write(folder / f"{i}.wav", tone + 0.01 * rng.standard_normal(8000), 16_000)
    spec = importlib.util.spec_from_file_location("envnet_bench_fewshot", ROOT / "benchmarks" / "fewshot.py")
    fewshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fewshot)
    monkeypatch.setattr(fewshot, "default_embedder", lambda: Embedder(tiny_model(fc_width=32)))
    assert fewshot.main(["--data", str(tmp_path), "--draws", "3", "--predict-draws", "1", "--repeats", "1",
                         "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["clips"] == 40 and results["classes"] == 5
    acc = results["accuracy"]
    assert acc["windows"]["draws"] == acc["predict"]["draws"] == acc["class_mean"]["draws"] == 3
    assert acc["predict_agrees"] == 1.0  # the cached crops answer as envnet.predict itself does
    assert all(0 <= acc[k]["min"] <= acc[k]["mean"] <= 1 for k in ("windows", "predict", "class_mean"))
    for what in ("5s_clips", "1s_examples"):
        run = results["time"][what]["worker_thread"]["runs"][0]
        assert run["total_s"] >= run["embed_s"] > 0 and 0 <= run["held_out_accuracy"] <= 1
    assert fewshot.main(["--data", str(tmp_path), "--only", "class", "--visitors", "4", "--json"]) == 0
    crowd = json.loads(capsys.readouterr().out)["class"]
    assert crowd["failed"] == [] and 0 < crowd["median_done_s"] <= crowd["all_done_s"]


def test_fewshot_benchmark_embeds_with_the_trunk_it_is_given(tmp_path, monkeypatch, capsys):
    """--trunk: held-out accuracy needs a trunk that never heard the classes, not the shipped one."""
    import numpy as np
    import soundfile as sf
    from conftest import tiny_model

    from envnet import checkpoint

    rng = np.random.default_rng(1)
    for c in range(4):
        (tmp_path / "data" / f"class{c}").mkdir(parents=True)
        for i in range(8):
            tone = 0.4 * np.sin(2 * np.pi * 300 * (c + 1) * np.arange(8000) / 16_000)
            sf.write(tmp_path / "data" / f"class{c}" / f"{i}.wav", tone + 0.01 * rng.standard_normal(8000), 16_000)
    trunk = tiny_model(fc_width=24)
    checkpoint.save(tmp_path / "trunk", trunk, checkpoint.make_card(trunk, ["a", "b", "c"], "trunk"))
    spec = importlib.util.spec_from_file_location("envnet_bench_fewshot_trunk", ROOT / "benchmarks" / "fewshot.py")
    fewshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fewshot)

    def shipped():
        raise AssertionError("the shipped trunk was used although --trunk was given")

    monkeypatch.setattr(fewshot, "default_embedder", shipped)
    assert fewshot.main(["--data", str(tmp_path / "data"), "--only", "accuracy", "--draws", "2", "--predict-draws",
                         "0", "--trunk", str(tmp_path / "trunk"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["trunk"] == str(tmp_path / "trunk")
    assert results["accuracy"]["predict"]["draws"] == 2 and "predict_agrees" not in results["accuracy"]


def test_unsure_benchmark_refuses_models_that_already_have_the_extra_output(tmp_path, capsys):
    """Fine-tuning the "none of these" output again on top of the shipped one would stack two recipes: the
    benchmark builds only from the models as trained, and says where they are."""
    spec = importlib.util.spec_from_file_location("envnet_unsure", ROOT / "benchmarks" / "unsure.py")
    unsure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unsure)
    assert unsure.main(["--base", str(checkpoint.CHECKPOINT_DIR), "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "already have the extra output" in capsys.readouterr().err

"""EnvNet Sound Lab benchmarks: the library's paths side by side with the plain reference (reference.py).

    python benchmarks/bench.py            # everything, about 1.5 minutes on 2 idle cores
    python benchmarks/bench.py --quick    # fewer repeats
    python benchmarks/bench.py --json     # results as JSON on stdout (the table goes to stderr)
    python benchmarks/bench.py --only classify,accuracy

Every figure is the median over repeated runs with its spread (interquartile range and min-max); the
library and the reference are run interleaved (A B A B …) so that a busy machine slows both alike and
the ratio stays meaningful. Sections: classify, train, accuracy, candidates, app.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

# envnet first: it turns PyTorch's 2 MB pages on before anything allocates a tensor, as in the library's own use
import envnet  # noqa: E402, F401

# isort: split
import numpy as np  # noqa: E402
import reference as R  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import torchaudio.transforms as T  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from envnet import checkpoint, cpu  # noqa: E402
from envnet.audio import load_audio, windows  # noqa: E402
from envnet.data import CACHE_DIR, _cache_path, load_waves, random_crop, read_esc50  # noqa: E402
from envnet.fast import _fold, fuse, inference_model  # noqa: E402
from envnet.model import WINDOW, build_model  # noqa: E402
from envnet.predict import predict, window_probabilities  # noqa: E402
from envnet.spectra import learned_spectrogram, mel_spectrogram  # noqa: E402

ESC10 = ROOT.parent / "shared" / "data" / "esc10"
HELD_OUT = "envnet-esc10-fold4val"  # trained on folds 1-3 only
SECTIONS = ("plan", "classify", "train", "accuracy", "candidates", "app", "process", "browser")
DEFAULT_SECTIONS = ("plan", "classify", "train", "accuracy", "candidates", "app")  # process, browser: minutes


_out = sys.stdout  # the table; it moves to stderr when --json takes stdout


def log(msg: str = "") -> None:
    print(msg, file=_out, flush=True)


# ---- measuring -----------------------------------------------------------------------------------


def interleaved(cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each case, the cases taking turns so that load spikes hit them alike."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def stats(ts: list[float], scale: float = 1e3) -> dict:
    """Median, quartiles, min and max (in ms by default)."""
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return {"median": statistics.median(ts) * scale, "q1": q[0] * scale, "q3": q[2] * scale,
            "min": min(ts) * scale, "max": max(ts) * scale, "n": len(ts)}


def fmt(s: dict, unit: str = "ms") -> str:
    return f"{s['median']:8.1f} {unit} [IQR {s['q1']:.1f}-{s['q3']:.1f}, range {s['min']:.1f}-{s['max']:.1f}]"


def proc_kb(field: str, pid: int | str = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_growth_mb(fn: Callable[[], object]) -> float | None:
    """How far resident memory rose above its level before `fn` (peak RSS, Linux's VmHWM, reset first)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back first, or it hides the next peak
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = proc_kb("VmRSS")
    fn()
    peak = proc_kb("VmHWM")
    return None if before is None or peak is None else (peak - before) / 1024


def machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "loadavg_at_start": load,
            "cpu_path": cpu.describe()}


# ---- inputs --------------------------------------------------------------------------------------


def synth_clip(seconds: float, sr: int = 44_100, seed: int = 0) -> bytes:
    """A deterministic 16-bit WAV: a gliding tone, a hum and bursts of noise, so windows differ."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    glide = 0.3 * np.sin(2 * np.pi * (300 + 400 * t / max(seconds, 1e-9)) * t)
    hum = 0.1 * np.sin(2 * np.pi * 120 * t)
    bursts = (np.sin(2 * np.pi * 0.7 * t) > 0.6) * rng.normal(0, 0.2, n)
    buf = io.BytesIO()
    sf.write(buf, np.clip(glide + hum + bursts, -1, 1).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def load_model() -> tuple[torch.nn.Module, list[str], str]:
    stem = checkpoint.default_checkpoint()
    try:
        ck = checkpoint.load(stem)
        return ck.model.eval(), ck.classes, f"{stem.name} (fc_width {ck.model.config.fc_width})"
    except checkpoint.CheckpointError:
        torch.manual_seed(0)
        return build_model(n_classes=10, fc_width=1024).eval(), [f"c{i}" for i in range(10)], "random fc_width 1024"


# ---- sections ------------------------------------------------------------------------------------


def bench_classify(model, classes, ref, repeats: int) -> dict:
    out: dict = {"clips": {}}
    for seconds in (5.0, 1.5, 30.0, 60.0):
        data = synth_clip(seconds)
        cases = {
            "reference": lambda d=data: R.classify(ref, d, classes),
            "library": lambda d=data: predict(model, load_audio(d), classes).top(5),
        }
        reps = repeats if seconds <= 5 else max(3, repeats // 2)
        ts = interleaved(cases, reps)
        row = {k: stats(v) for k, v in ts.items()}
        row["speedup"] = row["reference"]["median"] / row["library"]["median"]
        row["peak_mb"] = {k: peak_growth_mb(fn) for k, fn in cases.items()}
        out["clips"][f"{seconds:g}s"] = row
        log(f"  classify {seconds:>4g} s clip: reference {fmt(row['reference'])}")
        log(f"  {'':22}library   {fmt(row['library'])}  ×{row['speedup']:.2f}; peak growth MB "
            f"ref {row['peak_mb']['reference']}, lib {row['peak_mb']['library']}")
    # where the 5 s clip's time goes, in the library
    data = synth_clip(5.0)
    wave = load_audio(data)
    parts = interleaved({
        "decode+resample": lambda: load_audio(data),
        "windows+forward+softmax": lambda: predict(model, wave, classes),
        "reference decode+resample": lambda: R.decode(data),
    }, repeats)
    out["parts_5s"] = {k: stats(v) for k, v in parts.items()}
    for k, v in out["parts_5s"].items():
        log(f"  5 s parts: {k:28} {fmt(v)}")
    # learned + mel spectrograms of one window
    w = wave[:WINDOW]

    def ref_spectra():
        with torch.no_grad():
            learned = ref.features(w[None, None, None, :])
            mel = torch.nn.Sequential(T.MelSpectrogram(16_000, n_fft=400, hop_length=160, n_mels=40, center=False),
                                      T.AmplitudeToDB())(F.pad(w, (113, 113)))
        return learned, mel

    ts = interleaved({"reference": ref_spectra,
                      "library": lambda: (learned_spectrogram(model, w), mel_spectrogram(w)),
                      "fast features": lambda: (inference_model(model).features(w[None]), mel_spectrogram(w))},
                     repeats)
    out["spectrograms"] = {k: stats(v) for k, v in ts.items()}
    for k, v in out["spectrograms"].items():
        log(f"  learned+mel spectrogram, {k:14} {fmt(v)}")
    return out


def bench_train(repeats: int, fc_width: int = 1024, batch: int = 64, with_bf16: bool = False) -> dict:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    waves = [0.3 * torch.randn(80_000, generator=gen) for _ in range(batch)]  # cached 5 s clips, as ESC-10's
    labels = torch.randint(0, 10, (batch,), generator=gen)
    x = torch.stack([random_crop(wv, gen) for wv in waves])

    def stepper(model, shape, bf16):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        model.train()

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x.view(shape))
            loss = F.cross_entropy(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    plan = cpu.plan()
    cases = {
        "reference fp32": stepper(R.ReferenceEnvNet(10, fc_width), (batch, 1, 1, WINDOW), False),
        "library fp32": stepper(build_model(n_classes=10, fc_width=fc_width), (batch, WINDOW), False),
    }
    # bf16 where it is emulated takes minutes a step and is never chosen: timed only on request there
    if plan.cpu.native_bf16 or with_bf16:
        cases["library bf16"] = stepper(build_model(n_classes=10, fc_width=fc_width), (batch, WINDOW), True)
    ts = interleaved(cases, repeats)
    crops = interleaved({"crops": lambda: torch.stack([random_crop(wv, gen) for wv in waves])}, repeats)["crops"]
    out: dict = {"batch": batch, "fc_width": fc_width, "crop_batch": stats(crops)}
    steps_per_epoch = -(-320 // batch)
    ref_ws = None
    for name, v in ts.items():
        s = stats(v, scale=1.0)
        ws = batch / s["median"]
        ref_ws = ref_ws or ws
        epoch = steps_per_epoch * (s["median"] + statistics.median(crops))
        out[name] = {"step_s": s, "windows_per_s": ws, "speedup": ws / ref_ws, "epoch_320_clips_s": epoch}
        log(f"  train {name:24} step {fmt(s, 's')}  {ws:6.1f} windows/s ×{ws / ref_ws:.2f}  "
            f"epoch of 320 clips ≈ {epoch:.1f} s")
    chosen = "library bf16" if plan.train_bf16 else "library fp32"
    out["memory"] = plan.reasons["memory"]
    log(f"  the steps above share this process and its memory: {plan.reasons['memory']}")
    # The plain reference as anyone runs it, in a process of its own with PyTorch's defaults (4 KB pages here):
    # the reference of the issue's figures. Its steps are timed before and after the in-process ones.
    plain = stats(sorted(_plain_reference_steps(repeats // 2 + 1) + _plain_reference_steps(repeats // 2 + 1)),
                  scale=1.0)
    ws = batch / plain["median"]
    out["reference fp32, plain process"] = {"step_s": plain, "windows_per_s": ws, "speedup": ws / ref_ws}
    log(f"  train {'reference fp32, plain process':24} step {fmt(plain, 's')}  {ws:6.1f} windows/s "
        "(its own process, PyTorch's defaults: 4 KB pages)")
    speedup = out[chosen]["windows_per_s"] / ws
    out["chosen"] = {"case": chosen, "reason": plan.reasons["train"], "speedup": speedup,
                     "speedup_same_process": out[chosen]["speedup"]}
    log(f"  this machine trains as '{chosen}' (TrainConfig.bf16='auto'): ×{speedup:.2f} the plain reference, "
        f"×{out[chosen]['speedup']:.2f} the reference run in this process (code against code); "
        f"{plan.reasons['train']}")
    log(f"  crops for one batch of 64 (data loading from cached waves): {fmt(out['crop_batch'])}")
    if ESC10.is_dir():
        out["decode_vs_cache"] = _decode_vs_cache()
    return out


def _plain_reference_steps(repeats: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    r = subprocess.run([sys.executable, str(HERE / "reference.py"), "step", str(repeats)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _decode_vs_cache(n: int = 8) -> dict:
    """Why decoded waves are cached: decoding ogg + resampling vs reading the cached .npy."""
    ds = read_esc50(ESC10, "esc10")
    clips = ds.clips[:n]
    cached = [_cache_path(c.path, CACHE_DIR) for c in clips]
    t0 = time.perf_counter()
    for c in clips:
        load_audio(c.path, trim=True, max_seconds=None)
    decode = (time.perf_counter() - t0) / n
    out = {"decode_per_clip_ms": decode * 1e3}
    if all(p.is_file() for p in cached):
        t0 = time.perf_counter()
        for p in cached:
            np.load(p)
        out["cached_per_clip_ms"] = (time.perf_counter() - t0) / n * 1e3
    log(f"  data: decode+resample per ESC-10 clip {out['decode_per_clip_ms']:.1f} ms; cached .npy "
        f"{out.get('cached_per_clip_ms', float('nan')):.2f} ms (×{len(ds)} clips per first epoch)")
    return out


def bench_accuracy(model, classes, ref) -> dict:
    out: dict = {"tolerance": 1e-5}
    data = synth_clip(5.0)
    wave = load_audio(data)
    lib = predict(model, wave, classes).probs
    ref_probs = R.window_probabilities(ref, R.ten_windows(R.decode(data))).mean(0)
    out["clip_5s_max_abs_diff"] = float((lib - ref_probs).abs().max())
    gen = torch.Generator().manual_seed(1)
    x = 0.3 * torch.randn(16, WINDOW, generator=gen)
    out["random_windows_max_abs_diff"] = float((window_probabilities(model, x) - R.window_probabilities(ref, x))
                                               .abs().max())
    log(f"  probabilities, library vs reference: 5 s clip {out['clip_5s_max_abs_diff']:.2e}, "
        f"16 noise windows {out['random_windows_max_abs_diff']:.2e} (tolerance {out['tolerance']:.0e})")
    if not ESC10.is_dir():
        log(f"  ESC-10 not found at {ESC10}: fold-4 accuracy skipped")
        return out
    # Held-out accuracy needs a model that never saw fold 4: the default's twin trained on folds 1-3.
    stem = checkpoint.CHECKPOINT_DIR / HELD_OUT
    if not stem.with_suffix(".safetensors").is_file():
        log(f"  {stem} not found: fold-4 accuracy skipped")
        return out
    held = checkpoint.load(stem)
    held_model, held_ref = held.model.eval(), R.from_library(held.model)
    ds = read_esc50(ESC10, "esc10").select([4])
    load_waves(ds)
    labels = torch.as_tensor(ds.labels)
    lib_p, ref_p = [], []
    t_lib = t_ref = 0.0
    for wave in ds.waves:
        crops, _ = windows(wave)  # the app's windows (envnet.audio.prepare)
        t0 = time.perf_counter()
        lib_p.append(window_probabilities(held_model, crops).mean(0))
        t1 = time.perf_counter()
        ref_p.append(R.window_probabilities(held_ref, crops).mean(0))
        t_lib += t1 - t0
        t_ref += time.perf_counter() - t1
    lib_p, ref_p = torch.stack(lib_p), torch.stack(ref_p)
    out["fold4"] = f4 = {
        "checkpoint": HELD_OUT,
        "n_clips": len(labels),
        "accuracy_in_card": ((held.card.get("metrics") or {}).get("validation") or {}).get("accuracy"),
        "accuracy_library": float((lib_p.argmax(1) == labels).float().mean()),
        "accuracy_reference": float((ref_p.argmax(1) == labels).float().mean()),
        "max_abs_diff": float((lib_p - ref_p).abs().max()),
        "same_predictions": int((lib_p.argmax(1) == ref_p.argmax(1)).sum()),
        "seconds_library": t_lib, "seconds_reference": t_ref,
    }
    log(f"  fold 4, held out ({HELD_OUT}, {f4['n_clips']} clips, 10 crops): accuracy library "
        f"{f4['accuracy_library']:.3f}, reference {f4['accuracy_reference']:.3f}, card {f4['accuracy_in_card']}; "
        f"same top-1 on {f4['same_predictions']}; max |Δp| {f4['max_abs_diff']:.2e}; {t_lib:.1f} s vs {t_ref:.1f} s")
    return out


def _fold_conv1d(model):
    """BatchNorm folded into the library's own Conv1d layers, without channels-last (one step of fast.py)."""
    m = copy.deepcopy(model).eval()
    for block in (m.conv1, m.conv2, m.conv3, m.conv4):
        w, b = _fold(block[0], block[1])
        block[0].weight = torch.nn.Parameter(w)
        block[0].bias = torch.nn.Parameter(b)
        block[1] = torch.nn.Identity()
    return m


def bench_candidates(model, ref, repeats: int, compile_: bool) -> dict:
    """Forward of 10 windows, each candidate speed-up alone, with its probability difference to the reference."""
    gen = torch.Generator().manual_seed(2)
    x = 0.3 * torch.randn(10, WINDOW, generator=gen)
    fast = fuse(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q8 = torch.ao.quantization.quantize_dynamic(fuse(model), {torch.nn.Linear}, dtype=torch.qint8)
    folded = _fold_conv1d(model)
    ref_cl = copy.deepcopy(ref).to(memory_format=torch.channels_last)
    threads = torch.get_num_threads()

    def one_thread():
        torch.set_num_threads(1)
        try:
            return fast(x)
        finally:
            torch.set_num_threads(threads)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fast(x).float()

    cases: dict[str, Callable[[], torch.Tensor]] = {
        "reference (Conv2d, BN, fp32, no_grad)": lambda: ref(x[:, None, None]),
        "reference + channels-last": lambda: ref_cl(x[:, None, None].contiguous(memory_format=torch.channels_last)),
        "library EnvNet (Conv1d)": lambda: model(x),
        "Conv1d + BN folded": lambda: folded(x),
        "fast: Conv2d channels-last + BN folded": lambda: fast(x),
        "fast, 1 thread": one_thread,
        "fast + bf16 autocast": bf16,
        "fast + int8 dynamic fc": lambda: q8(x),
    }
    extra: dict = {}
    if compile_:
        t0 = time.perf_counter()
        compiled = torch.compile(fuse(model))
        with torch.inference_mode():
            compiled(x)
        extra["torch.compile seconds to first result"] = time.perf_counter() - t0
        cases["fast + torch.compile"] = lambda: compiled(x)
    with torch.inference_mode():
        expected = torch.softmax(ref(x[:, None, None]), -1)
        diffs = {k: float((torch.softmax(fn().float(), -1) - expected).abs().max()) for k, fn in cases.items()}
        ts = interleaved(cases, repeats)
    base = statistics.median(ts[next(iter(cases))])
    out = {k: {**stats(v), "speedup": base / statistics.median(v), "max_abs_diff": diffs[k]} for k, v in ts.items()}
    out.update(extra)
    for k, v in out.items():
        if isinstance(v, dict):
            log(f"  {k:40} {fmt(v)} ×{v['speedup']:.2f}  max |Δp| {v['max_abs_diff']:.1e}")
        else:
            log(f"  {k}: {v:.1f}")
    return out


def bench_app(timeout: float = 120.0) -> dict:
    """`streamlit run serve.py` (as `make run` and the Space start it) → server healthy → Classify page
    rendered → one classification.

    A visitor's browser is already running, so Chromium (when installed) is launched first and its own
    start-up is reported apart; the clock for the app starts at `streamlit run`."""
    if not (ROOT / "serve.py").is_file():
        log("  serve.py not found: app section skipped")
        return {"skipped": "serve.py not found"}
    chromium = Path("/usr/bin/chromium")
    out: dict = {}
    with contextlib.ExitStack() as stack:
        page = None
        if chromium.exists():
            from playwright.sync_api import sync_playwright

            t = time.perf_counter()
            pw = stack.enter_context(sync_playwright())
            browser = pw.chromium.launch(executable_path=str(chromium), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
            stack.callback(browser.close)
            page = browser.new_page()
            page.goto("about:blank")
            out["browser_launch_s"] = time.perf_counter() - t
        else:
            out["browser"] = "no /usr/bin/chromium: page readiness and RSS after a classification not measured"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "streamlit", "run", "serve.py", "--server.headless", "true", "--server.port",
               str(port), "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        stack.callback(_stop_server, proc)
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                return {"skipped": f"streamlit exited with code {proc.returncode}"}
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        else:
            return {"skipped": f"server not healthy within {timeout:.0f} s"}
        out["server_healthy_s"] = time.perf_counter() - t0
        out["rss_mb_idle_server"] = (proc_kb("VmRSS", proc.pid) or 0) / 1024
        if page is not None:
            page.goto(url)
            page.get_by_text("Classify a sound").first.wait_for(timeout=timeout * 1000)
            out["classify_page_ready_s"] = time.perf_counter() - t0
            # One classification, as a visitor makes it: the Example source classifies a generated demo sound.
            try:
                t1 = time.perf_counter()
                page.get_by_text("Example", exact=True).first.click()
                page.get_by_text("Best guess:").first.wait_for(timeout=timeout * 1000)
                out["example_click_to_result_s"] = time.perf_counter() - t1
            except Exception as e:  # the page's wording may change; the readiness figure still stands
                out["first_classification"] = f"not detected ({type(e).__name__}: {str(e)[:80]})"
            out["rss_mb_after_classification"] = (proc_kb("VmRSS", proc.pid) or 0) / 1024
            out["peak_rss_mb"] = (proc_kb("VmHWM", proc.pid) or 0) / 1024
    for k, v in out.items():
        log(f"  app {k}: {v:.2f}" if isinstance(v, float) else f"  app {k}: {v}")
    return out


# A CPU with native bf16, as the earlier Xeon runs measured it (benchmarks/README.md: a training step of
# 64 windows 1.41 s in bf16, 3.18 s in fp32), to show what the same logic picks there.
NATIVE_BF16_EXAMPLE = (cpu.CpuInfo("Intel(R) Xeon(R) Processor (AVX-512 BF16)",
                                   frozenset({"avx2", "avx512f", "avx512_bf16"}), "AVX512", 2),
                       {"fp32": 3180.0, "bf16": 1410.0})
EMULATED_BF16_EXAMPLE = cpu.CpuInfo("AMD EPYC (AVX2)", frozenset({"avx", "avx2", "fma"}), "AVX2", 2)


def bench_plan() -> dict:
    """Which path this machine takes and why, and what the same logic picks with and without native bf16."""
    here = cpu.plan()
    out = {"this_machine": here.summary(),
           "with_native_bf16": cpu.choose(*NATIVE_BF16_EXAMPLE).summary(),
           "without_native_bf16": cpu.choose(EMULATED_BF16_EXAMPLE).summary()}
    c = here.cpu
    log(f"  this CPU: {c.model}, {c.cores} cores, torch kernels {c.capability}, SIMD flags "
        f"{' '.join(c.summary()['simd_flags'])}; native bf16: {'yes' if c.native_bf16 else 'no'}")
    for name, plan in (("this machine", here.summary()), ("a CPU with native bf16", out["with_native_bf16"]),
                       ("a CPU without native bf16", out["without_native_bf16"])):
        log(f"  {name:26} trains {plan['train_precision']}, infers {plan['inference_precision']}: "
            f"{plan['reasons']['train']}")
    return out


def bench_process(epochs: int = 3, fc_width: int = 1024, timeout: float = 1800.0) -> dict:
    """Whole processes, start-up included: `python -m envnet train` on ESC-10 folds 1-4 against the plain
    reference's loop (reference.train), each `epochs` epochs at fc_width, run one after the other.

    The library turns PyTorch's 2 MB pages on when imported (envnet/__init__.py); the plain reference, written
    as anyone would, runs with 4 KB pages. It is also run with 2 MB pages, so that the library's own code is
    compared on equal terms ("speedup_same_pages")."""
    if not ESC10.is_dir():
        log(f"  ESC-10 not found at {ESC10}: whole-process training skipped")
        return {"skipped": f"{ESC10} not found"}
    out: dict = {"epochs": epochs, "fc_width": fc_width}
    reference = [sys.executable, str(HERE / "reference.py"), "train", str(ESC10), str(epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "reference": (reference, "0"),
            "reference_2mb_pages": (reference, "1"),
            "library": ([sys.executable, "-m", "envnet", "train", "--data", str(ESC10), "--subset", "esc10",
                         "--epochs", str(epochs), "--fc-width", str(fc_width), "--eval-every", "1000",
                         "--out", str(Path(tmp) / "m")], None),  # None: as a user starts it, envnet decides
        }
        # the library's first run decodes ESC-10 into its waveform cache; later runs (and this one's second
        # process, if any) read it. Fill it first so both sides are timed doing the same job each time.
        load_waves(read_esc50(ESC10, "esc10"))
        for name, (cmd, pages) in runs.items():
            env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
            if pages is not None:
                env["THP_MEM_ALLOC_ENABLE"] = pages
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
            out[name] = {"seconds": time.perf_counter() - t0, "rc": r.returncode}
            if r.returncode:
                out[name]["stderr"] = r.stderr[-500:]
            log(f"  {name:19} {' '.join(cmd[1:4])} …: {out[name]['seconds']:.1f} s (exit {r.returncode})")
    if all(out[k]["rc"] == 0 for k in runs):
        out["speedup"] = out["reference"]["seconds"] / out["library"]["seconds"]
        out["speedup_same_pages"] = out["reference_2mb_pages"]["seconds"] / out["library"]["seconds"]
        log(f"  whole process, {epochs} epochs: library ×{out['speedup']:.2f} the reference "
            f"(×{out['speedup_same_pages']:.2f} the reference with 2 MB pages too)")
    return out


def bench_browser(repeats: int) -> dict:
    # Imported here, not at the top: benchmarks/live.py imports this module and then needs the name
    # `browser` for the tests' package (tests/browser), which a top-level import would shadow.
    import browser

    return browser.run(repeats, log=log)


def targets(results: dict) -> list[dict]:
    """The issue's targets next to what this run measured (only what it measured)."""
    rows = []

    def add(what, got, goal, unit="×", higher=True):
        if got is not None:
            rows.append({"what": what, "measured": got, "target": goal, "unit": unit,
                         "met": got >= goal if higher else got <= goal})

    cl = results.get("classify", {}).get("clips", {}).get("5s")
    add("classify a 5 s clip vs reference", cl and cl["speedup"], 2.0)
    tr = results.get("train", {}).get("chosen")
    add("training step (the chosen path) vs the plain reference", tr and tr["speedup"], 1.5)
    pr = results.get("process", {})
    add("whole-process training, 3 epochs, vs reference", pr.get("speedup"), 1.5)
    br = results.get("browser", {})
    for key, label in (("upload_s", "browser: upload 5 s clip → results drawn"),
                       ("slider_s", "browser: slider move → redrawn"), ("click_s", "browser: timeline click → redrawn"),
                       ("first_page_after_healthy_s", "browser: fresh server → first page (once it answers)")):
        v = br.get(key)
        add(label, v["median"] if isinstance(v, dict) else v, br.get("targets", {}).get(key), "s", higher=False)
    return rows


def _stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


# ---- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                    help=f"comma-separated sections of: {', '.join(SECTIONS)} (default: {', '.join(DEFAULT_SECTIONS)})")
    ap.add_argument("--all", action="store_true", help="every section, the slow process and browser ones too")
    ap.add_argument("--bf16", action="store_true", help="time bf16 training even where it is emulated (slow)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 5 quick, 15 full)")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile (about a minute to compile)")
    args = ap.parse_args(argv)
    global _out
    _out = sys.stderr if args.json else sys.stdout
    only = list(SECTIONS) if args.all else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    repeats = args.repeats or (5 if args.quick else 15)
    results: dict = {"machine": machine(), "repeats": repeats, "quick": args.quick}
    model, classes, desc = load_model()
    ref = R.from_library(model)
    results["model"] = desc
    m = results["machine"]
    log(f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), load average "
        f"{m['loadavg_at_start']}; model {desc}; {repeats} repeats, interleaved")
    t_start = time.perf_counter()
    for section in SECTIONS:
        if section not in only:
            continue
        log(f"\n[{section}]")
        if section == "plan":
            results[section] = bench_plan()
        elif section == "process":
            results[section] = bench_process()
        elif section == "browser":
            results[section] = bench_browser(max(3, repeats // 3))
        elif section == "classify":
            results[section] = bench_classify(model, classes, ref, repeats)
        elif section == "train":
            results[section] = bench_train(max(3, repeats // 3), with_bf16=args.bf16)
        elif section == "accuracy":
            results[section] = bench_accuracy(model, classes, ref)
        elif section == "candidates":
            results[section] = bench_candidates(model, ref, repeats, args.compile)
        elif section == "app":
            results[section] = bench_app()
    results["targets"] = targets(results)
    if results["targets"]:
        log("\n[targets]")
        for t in results["targets"]:
            cmp = "≥" if t["unit"] == "×" else "≤"
            got = f"×{t['measured']:.2f}" if t["unit"] == "×" else f"{t['measured']:.2f} s"
            goal = f"×{t['target']}" if t["unit"] == "×" else f"{t['target']} s"
            log(f"  {t['what']:50} {got:>9}  target {cmp} {goal:7} {'met' if t['met'] else 'NOT met'}")
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - t_start
    log(f"\ndone in {results['seconds']:.0f} s; load average at end {results['machine']['loadavg_at_end']}")
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The live microphone path: what it costs per second of audio, and how long a sound takes to reach the screen.

    python benchmarks/live.py                # library cost + the browser measurement (about 1.5 minutes)
    python benchmarks/live.py --only library # the library alone (about 20 s)
    python benchmarks/live.py --only gc      # Streamlit's collection after each run, before and after gc.freeze
    python benchmarks/live.py --json         # results as JSON on stdout

library: envnet.stream.LiveStream fed as the Live page feeds it (20 ms frames of 48 kHz packed int16 stereo,
  an update every 10 frames = 0.2 s, the page's interval), with the shipped model, for streams of 10, 60 and 300 s. Reported: CPU
  time per second of audio (the thread's own CPU clock, so other work on the machine does not count) and the
  wall time of one update (what the page waits for). Beside it, the batch alternative the stream replaces:
  at each update, the last 1.5 s window's learned + mel spectrograms and prediction from scratch.
gc: the full garbage collection Streamlit runs after every script run, a fragment's included (five times a
  second on the Live page), with the server's modules and the shipped model loaded, before and after the
  gc.freeze() that the server's warm-up now does (pages/_ui.py).
browser: `streamlit run app.py`, Debian's Chromium with a fake microphone playing a generated clip, the Live
  page, Start. Every time a new learned map is on screen (its element appears, its image is decoded and the
  next frame painted) the page's clock is compared with the element's data-arrived, the server's time.time()
  when the newest audio in it arrived from WebRTC, and data-drawn, when the page drew it: browser and server
  share this machine's clock, so the differences are arrival → drawn → pixels on screen. The oldest audio in
  a redraw (it arrived just after the previous redraw's newest) waited one update interval more. Also: how
  often the maps redraw, the server process's CPU and the browser main thread's long tasks while streaming.
  Not measured: microphone → server (browser capture, Opus encoding in 20 ms frames, loopback, aiortc's
  jitter buffer), which has no shared timestamp to read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import bench  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench import fmt, log, machine, stats  # noqa: E402

from envnet import load_checkpoint, plots  # noqa: E402
from envnet.audio import resample  # noqa: E402
from envnet.model import WINDOW  # noqa: E402
from envnet.predict import predict  # noqa: E402
from envnet.spectra import learned_spectrogram, mel_spectrogram  # noqa: E402
from envnet.stream import LiveStream  # noqa: E402

FRAMES_PER_UPDATE = 10  # 0.2 s: the page's UPDATE_EVERY


def frames(seconds: float, seed: int = 0):
    """20 ms frames as aiortc hands them over: packed s16 stereo at 48 kHz, (1, 1920)."""
    rng = np.random.default_rng(seed)
    t = np.arange(960) / 48_000
    for i in range(int(seconds * 50)):
        x = 0.3 * np.sin(2 * np.pi * (300 + 20 * (i % 50)) * (t + i * 0.02)) + 0.05 * rng.standard_normal(960)
        pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
        yield np.stack([pcm, pcm], 1).reshape(1, -1)


def bench_library(lengths=(10, 60, 300)) -> dict:
    ck = load_checkpoint()
    out = {"model": ck.name, "frames_per_update": FRAMES_PER_UPDATE}
    for seconds in lengths:
        live = LiveStream(ck.model, ck.classes)
        walls, cpu0 = [], time.thread_time()
        for i, f in enumerate(frames(seconds)):
            live.push_frame(f, 48_000, 2)
            if i % FRAMES_PER_UPDATE == FRAMES_PER_UPDATE - 1:
                t = time.perf_counter()
                live.update()
                walls.append(time.perf_counter() - t)
        cpu = time.thread_time() - cpu0  # pushing (mixdown) included: the audio thread's share too
        steady = walls[10:] or walls  # the first updates build the fused model and caches
        out[f"{seconds}s"] = {"cpu_ms_per_audio_s": 1e3 * cpu / seconds, "update": stats(steady)}
        log(f"stream of {seconds:4d} s: CPU {1e3 * cpu / seconds:6.1f} ms per second of audio; "
            f"one update {fmt(stats(steady))}")
    # What the page adds per update: both maps as PNG images in HTML and the top-classes bars, from the last
    # stream's full 6 s history; the bytes are what travels to the browser.
    view, n = live.update(), 50
    cpu0 = time.thread_time()
    for _ in range(n):
        maps = plots.live_maps_html(view.learned, view.mel, first_frame=view.first_frame, order=np.arange(40),
                                    centres=np.geomspace(50, 7500, 40), arrived=1.0, drawn=1.0)
        bars = plots.top_classes_html(view.prediction.top(5), view.prediction.verdict.text)
    draw_ms = 1e3 * (time.thread_time() - cpu0) / n
    out["draw"] = {"cpu_ms_per_update": draw_ms, "bytes_per_update": len(maps) + len(bars)}
    log(f"drawing one update (two map images in HTML + the bars): CPU {draw_ms:.1f} ms, "
        f"{(len(maps) + len(bars)) / 1e3:.0f} kB to the browser")
    # The batch alternative: recompute the last window's maps and answer at every update.
    pcm = np.concatenate([f.reshape(-1, 2)[:, 0] for f in frames(3)]).astype(np.float32) / 32768
    wave = resample(torch.from_numpy(pcm), 48_000)
    win = wave[-WINDOW:]
    n = 20
    with torch.inference_mode():
        torch.set_num_threads(1)  # as the stream runs (envnet.stream._one_thread)
        learned_spectrogram(ck.model, win), predict(ck.model, win, ck.classes, n_crops=1)
        walls = []
        for _ in range(n):
            t = time.perf_counter()
            learned_spectrogram(ck.model, win)
            mel_spectrogram(win)
            predict(ck.model, win, ck.classes, n_crops=1)
            walls.append(time.perf_counter() - t)
    per_s = statistics.median(walls) * (50 / FRAMES_PER_UPDATE)
    out["batch_per_update"] = {"update": stats(walls), "cpu_ms_per_audio_s_estimate": 1e3 * per_s}
    log(f"batch alternative (last window from scratch each update): {fmt(stats(walls))}, "
        f"≈ {1e3 * per_s:.0f} ms per second of audio")
    return out


# Every time the page shows a new learned map (a new element carrying the server's data-arrived), wait until
# its image is decoded and the next frame is painted, then note the page's clock beside data-arrived. Also the
# main thread's long tasks (over 50 ms), to see how busy drawing keeps the browser.
ON_SCREEN_JS = """
() => {
  window.__live = [];
  window.__long = [];
  const seen = new Set();
  const check = () => {
    document.querySelectorAll('.envnet-map[data-kind="learned"]').forEach(el => {
      const arrived = parseFloat(el.dataset.arrived);
      if (!(arrived > 0) || seen.has(arrived)) return;
      seen.add(arrived);
      const heard = (parseInt(el.dataset.firstFrame) + parseInt(el.dataset.columns)) * 0.01;
      const img = el.querySelector('img');
      (img ? img.decode().catch(() => {}) : Promise.resolve()).then(() => requestAnimationFrame(
        () => setTimeout(() => window.__live.push([Date.now() / 1000, arrived, heard,
                                                   parseFloat(el.dataset.drawn)]), 0)));
    });
  };
  new MutationObserver(check).observe(document.body, {childList: true, subtree: true});
  new PerformanceObserver(list => list.getEntries().forEach(e => window.__long.push(e.duration)))
    .observe({type: 'longtask'});
}
"""


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_browser(seconds: float = 40.0) -> dict:
    import soundfile as sf
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from browser import pw
    from browser.browser_support import StreamlitServer, launch_with_microphone, new_context
    from browser.test_live import WEBRTC_FRAME

    tmp = Path(tempfile.mkdtemp(prefix="envnet-live-"))
    x = np.concatenate([f.reshape(-1, 2)[:, 0] for f in frames(5)]) / 32768
    wav = tmp / "mic.wav"
    sf.write(wav, x, 48_000, subtype="PCM_16")
    srv = StreamlitServer(tmp / "server.log").start()
    try:
        with sync_playwright() as p:
            browser = launch_with_microphone(p, wav)
            page = new_context(browser, permissions=["microphone"]).new_page()
            pw.open_app(page, srv.url, "live")
            page.locator('.envnet-map[data-kind="learned"]').wait_for()
            page.evaluate(ON_SCREEN_JS)
            load = os.getloadavg()[0]
            page.frame_locator(WEBRTC_FRAME).get_by_role("button", name="Start").click()
            page.wait_for_timeout(3000)  # connecting and the first updates
            cpu0 = process_cpu_s(srv.proc.pid)
            page.evaluate("() => { window.__long = []; }")  # the browser's work while streaming, not loading
            page.wait_for_timeout(int(seconds * 1000))
            server_cpu = process_cpu_s(srv.proc.pid) - cpu0
            rows = page.evaluate("() => window.__live")
            long_tasks = page.evaluate("() => window.__long")
            load_end = os.getloadavg()[0]
            browser.close()
    finally:
        srv.stop()
    rows = [r for r in rows if r[2] > 3.0]  # after the first seconds of connecting and warming up
    if len(rows) < 3:
        raise RuntimeError(f"only {len(rows)} live redraws were seen")
    lat = [shown - arrived for shown, arrived, *_ in rows]
    # Where it goes: arrival → the page drawing it (waiting for the fragment's next run, then the update) and
    # drawn → on screen (Streamlit sending it, the browser replacing the element and decoding the images).
    to_drawn = [drawn - arrived for _, arrived, _, drawn in rows]
    to_screen = [shown - drawn for shown, _, _, drawn in rows]
    gaps = [b[0] - a[0] for a, b in zip(rows, rows[1:], strict=False)]
    # The worst-placed sound in each redraw arrived just after the previous redraw's newest audio: it waited a
    # whole update interval more.
    oldest = [b[0] - a[1] for a, b in zip(rows, rows[1:], strict=False)]
    out = {"load_at_start": load, "load_at_end": load_end, "redraws": len(rows), "arrival_to_screen": stats(lat),
           "p95_arrival_to_screen_ms": 1e3 * float(np.percentile(lat, 95)),
           "oldest_audio_to_screen": stats(oldest), "p95_oldest_audio_to_screen_ms": 1e3 * float(np.percentile(oldest, 95)),
           "arrival_to_drawn": stats(to_drawn), "drawn_to_screen": stats(to_screen),
           "redraw_interval": stats(gaps), "redraws_per_s": 1 / statistics.median(gaps),
           "redraws_per_s_mean": (len(rows) - 1) / (rows[-1][0] - rows[0][0]),
           "server_cpu_s_per_10s": 10 * server_cpu / seconds,
           "long_tasks_s_per_10s": 10 * sum(long_tasks) / 1e3 / seconds, "longest_task_ms": max(long_tasks, default=0)}
    log(f"newest audio's arrival → on screen: {fmt(stats(lat))}, p95 {out['p95_arrival_to_screen_ms']:.0f} ms "
        f"({len(rows)} redraws; load {load:.1f} at the start, {load_end:.1f} at the end)")
    log(f"  of which arrival → drawn by the page {fmt(stats(to_drawn))}, drawn → on screen {fmt(stats(to_screen))}")
    log(f"the oldest audio in each redraw → on screen: {fmt(stats(oldest))}, "
        f"p95 {out['p95_oldest_audio_to_screen_ms']:.0f} ms")
    log(f"maps redrawn every {fmt(stats(gaps))} = {out['redraws_per_s']:.1f} per second "
        f"(mean over the run {out['redraws_per_s_mean']:.1f} per second)")
    log(f"server process CPU while streaming: {out['server_cpu_s_per_10s']:.2f} CPU-s per 10 s")
    log(f"browser main thread in long tasks: {out['long_tasks_s_per_10s']:.2f} s per 10 s, "
        f"longest {out['longest_task_ms']:.0f} ms")
    return out


def bench_gc(repeats: int = 5) -> dict:
    """Streamlit's full garbage collection after every script run (runner.postScriptGC), with what the app's
    server has loaded, before and after the warm-up's gc.freeze() (pages/_ui.py)."""
    import gc
    import importlib

    for name in ("streamlit", "pandas", "plotly.graph_objects", "streamlit_webrtc"):
        importlib.import_module(name)
    load_checkpoint()
    plots.warm_up()

    def timed() -> list[float]:
        out = []
        for _ in range(repeats):
            t = time.perf_counter()
            gc.collect(2)
            out.append(time.perf_counter() - t)
        return out

    tracked = len(gc.get_objects())
    before = timed()
    gc.freeze()
    after = timed()
    gc.unfreeze()
    res = {"tracked_objects": tracked, "before_freeze": stats(before), "after_freeze": stats(after)}
    log(f"gc.collect(2) over {tracked} objects: {fmt(stats(before))}; after gc.freeze(): {fmt(stats(after))}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="library,gc,browser")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seconds", type=float, default=40.0, help="how long the browser streams")
    ap.add_argument("--lengths", default="10,60,300", help="stream lengths for the library, seconds")
    args = ap.parse_args(argv)
    bench._out = sys.stderr if args.json else sys.stdout  # the table moves aside when JSON takes stdout
    results = {"machine": machine()}
    log(json.dumps(results["machine"]))
    only = set(args.only.split(","))
    if "library" in only:
        results["library"] = bench_library(tuple(int(x) for x in args.lengths.split(",")))
    if "gc" in only:
        results["gc"] = bench_gc()
    if "browser" in only:
        results["browser"] = bench_browser(args.seconds)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long a visitor waits in the browser: Playwright driving Debian's Chromium against a fresh server.

    python benchmarks/browser.py            # 5 uploads, 5 slider moves, 5 timeline clicks
    python benchmarks/browser.py --json     # results as JSON on stdout
    python benchmarks/browser.py --repeats 3

Measured the way a user waits: the clock starts when the action starts (the file is handed to the
uploader, the slider's key is pressed, the timeline's point is clicked) and stops at the **last change
of the page's main area** (a MutationObserver's timestamp), once Streamlit's "running" indicator is gone
and nothing has changed for QUIET_S. So a figure drawn late, or a second rerun, counts.

- first_page_after_healthy_s (the target's figure): a fresh server → the Classify page drawn and idle, from
  the moment the server first answers its health check, with Chromium already open (a visitor's browser
  is). Before that moment nobody can open the page: a Space shows "Starting" until the health check
  answers, and serve.py loads and warms the default model before it does. first_page_s is the whole
  time from `streamlit run serve.py`, and server_healthy_s the part before the health check.
- upload_s: a 5 s 44.1 kHz WAV (a new clip each time) → results drawn (top classes, timeline,
  waveform, both spectrograms). The first upload after start-up is reported apart.
- slider_s: the "Window" slider moved one step → spectrograms and waveform redrawn.
- click_s: a point of the "Class probabilities over time" chart clicked → its window drawn.
Targets (issue 15): upload ≤ 1.5 s, slider/click ≤ 0.5 s, a fresh server's first page ≤ 3 s, on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from tests.browser.browser_support import CHROMIUM, StreamlitServer, launch, new_context  # noqa: E402

TARGETS = {"upload_s": 1.5, "slider_s": 0.5, "click_s": 0.5, "first_page_after_healthy_s": 3.0}
QUIET_S = 1.5  # no change for this long after the run ended = the page is done

# Record the time of every change in the main area; t0 is set just before an action.
OBSERVE_JS = """
() => {
  if (window.__obs) { window.__obs.disconnect(); }
  window.__last = performance.now();
  const main = document.querySelector('[data-testid="stMain"]') || document.body;
  window.__obs = new MutationObserver(() => { window.__last = performance.now(); });
  window.__obs.observe(main, {subtree: true, childList: true, attributes: true, characterData: true});
  window.__t0 = performance.now();
  return true;
}
"""
STATE_JS = """
() => ({
  running: !!document.querySelector('[data-testid="stStatusWidget"]') ||
           !!document.querySelector('[data-testid="stSpinner"]'),
  now: performance.now(), last: window.__last, t0: window.__t0,
  plots: document.querySelectorAll('.js-plotly-plot').length,
  text: document.querySelector('[data-testid="stMain"]')?.innerText || '',
})
"""


def clip_bytes(seed: int, seconds: float = 5.0, sr: int = 44_100) -> bytes:
    """A 5 s WAV unlike the others: a glide, a hum and noise bursts at a seed-dependent pitch."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 200 + 60 * seed
    wave = 0.3 * np.sin(2 * np.pi * (f0 + 300 * t / seconds) * t) + 0.1 * np.sin(2 * np.pi * 120 * t)
    wave += (np.sin(2 * np.pi * 0.7 * t) > 0.6) * rng.normal(0, 0.2, t.size)
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1, 1).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def settle(page, expect: str | None = None, timeout: float = 60.0, changed: bool = True) -> float:
    """Seconds from the action's start to the page's last change, once the run is over and quiet."""
    deadline = time.monotonic() + timeout
    saw_change = not changed  # an action must change something; a page load may be done already
    while time.monotonic() < deadline:
        s = page.evaluate(STATE_JS)
        saw_change = saw_change or s["last"] > s["t0"] or s["running"]
        done = saw_change and not s["running"] and (expect is None or expect in s["text"])
        if done and s["now"] - s["last"] >= QUIET_S * 1000:
            return (s["last"] - s["t0"]) / 1000
        page.wait_for_timeout(50)
    raise TimeoutError(f"the page did not settle within {timeout:.0f} s")


def start_clock(page) -> None:
    page.evaluate(OBSERVE_JS)


def upload(page, path: Path) -> float:
    box = page.get_by_test_id("stFileUploader").filter(has_text="Upload a sound file")
    start_clock(page)
    box.locator('input[type="file"]').set_input_files(str(path))
    return settle(page, expect=path.name)


def move_slider(page) -> float:
    thumb = page.get_by_test_id("stSlider").filter(has_text="Window").get_by_role("slider")
    thumb.focus()
    start_clock(page)
    thumb.press("ArrowRight")
    return settle(page)


# The pixel position of one point of the timeline chart, from plotly's own axes.
POINT_JS = """
([title, i]) => {
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const t = gd.layout && gd.layout.title ? (gd.layout.title.text || gd.layout.title) : '';
    if (!String(t).includes(title)) continue;
    const fl = gd._fullLayout, tr = gd._fullData[0], r = gd.getBoundingClientRect();
    const n = tr.x.length, k = Math.min(i, n - 1);
    return {x: r.left + fl.xaxis._offset + fl.xaxis.l2p(tr.x[k]),
            y: r.top + fl.yaxis._offset + fl.yaxis.l2p(tr.y[k]), n: n};
  }
  return null;
}
"""


def click_timeline(page, index: int) -> float:
    chart = page.locator(".js-plotly-plot").filter(has_text="over time").first
    chart.scroll_into_view_if_needed()
    pt = page.evaluate(POINT_JS, ["over time", index])
    if pt is None:
        raise RuntimeError("no 'Class probabilities over time' chart on the page")
    page.mouse.move(pt["x"], pt["y"])
    page.wait_for_timeout(300)  # plotly's hover must find the point before the click selects it
    start_clock(page)
    page.mouse.click(pt["x"], pt["y"])
    return settle(page)


def cpu_s(pid: int) -> float:
    """CPU seconds a process (all its threads) has used: the server's work, which a busy machine's
    other processes delay but do not add to, unlike wall-clock time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def summary(ts: list[float]) -> dict:
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "n": len(ts),
            "runs": [round(t, 3) for t in ts]}


def run(repeats: int = 5, log=print) -> dict:
    if not CHROMIUM.exists():
        return {"skipped": f"{CHROMIUM} not found"}
    from playwright.sync_api import sync_playwright

    out: dict = {"targets": TARGETS, "quiet_s": QUIET_S}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        clips = []
        for i in range(repeats + 1):
            path = Path(tmp) / f"clip{i}.wav"
            path.write_bytes(clip_bytes(i))
            clips.append(path)
        browser = launch(p)
        context = new_context(browser)
        page = context.new_page()
        page.goto("about:blank")
        server = StreamlitServer(Path(tmp) / "server.log")
        t0 = time.perf_counter()
        try:
            server.start()
            out["server_healthy_s"] = time.perf_counter() - t0
            page.goto(server.url, wait_until="commit")
            page.get_by_text("Classify a sound").first.wait_for(timeout=120_000)
            page.get_by_test_id("stFileUploader").filter(has_text="Upload a sound file").wait_for(timeout=120_000)
            # first page: until the page is drawn and idle (the quiet period itself is not counted)
            start_clock(page)
            settle(page, changed=False)
            s = page.evaluate(STATE_JS)
            out["first_page_s"] = max(time.perf_counter() - t0 - (s["now"] - s["last"]) / 1000, 0)
            out["first_page_after_healthy_s"] = out["first_page_s"] - out["server_healthy_s"]
            log(f"  server healthy {out['server_healthy_s']:.2f} s; Classify page drawn {out['first_page_s']:.2f} s "
                f"({out['first_page_after_healthy_s']:.2f} s after)")
            c0 = cpu_s(server.proc.pid)
            out["first_upload_s"] = upload(page, clips[0])
            out["first_upload_server_cpu_s"] = cpu_s(server.proc.pid) - c0
            log(f"  first upload → results {out['first_upload_s']:.2f} s")
            walls: dict[str, list[float]] = {"upload_s": [], "slider_s": [], "click_s": []}
            cpus: dict[str, list[float]] = {k: [] for k in walls}
            pid = server.proc.pid
            actions = {"upload_s": lambda i: upload(page, clips[i + 1]), "slider_s": lambda i: move_slider(page),
                       "click_s": lambda i: click_timeline(page, 2 + i)}
            for i in range(repeats):
                for key, act in actions.items():
                    c0 = cpu_s(pid)
                    walls[key].append(act(i))
                    cpus[key].append(cpu_s(pid) - c0)  # includes the quiet wait, when the server is idle
                log("  " + ", ".join(f"{k[:-2]} {walls[k][-1]:.2f} s (server CPU {cpus[k][-1]:.2f} s)" for k in walls))
            for key in walls:
                out[key] = summary(walls[key])
                out[key]["server_cpu_s"] = statistics.median(cpus[key])
            out["rss_mb"] = _rss_mb(server.proc.pid)
        finally:
            server.stop()
            browser.close()
    met = {k: (out[k]["median"] if isinstance(out[k], dict) else out[k]) <= v for k, v in TARGETS.items() if k in out}
    out["met"] = met
    for k, v in TARGETS.items():
        if k in out:
            got = out[k]["median"] if isinstance(out[k], dict) else out[k]
            log(f"  {k:26} {got:6.2f} s   target ≤ {v} s  {'met' if met[k] else 'NOT met'}")
    return out


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out_stream = sys.stderr if args.json else sys.stdout
    res = run(args.repeats, log=lambda m: print(m, file=out_stream, flush=True))
    if args.json:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Live page in a real Chromium with a fake microphone: press Start, watch both maps scroll and a
prediction appear within 10 s, then Capture the last 1.5 s into Classify.

Chromium plays a WAV file as its microphone (--use-file-for-fake-audio-capture), in a loop, to the app over
WebRTC on loopback (no ICE servers needed). The file is a real ESC-10 clip from ../shared when present,
converted to WAV in a temporary folder (no audio is committed), else a generated one.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from envnet.plots import LEARNED_TITLE, LIVE_LEARNED_TITLE, LIVE_MEL_TITLE, MEL_TITLE

from . import pw
from .browser_support import ROOT, launch_with_microphone, new_context
from .conftest import save_failure

SHARED_CLIPS = ROOT.parent / "shared" / "data" / "esc10" / "audio"
WEBRTC_FRAME = 'iframe[title="streamlit_webrtc.component.webrtc_streamer"]'
# The bar: maps and an answer within 10 s of Start. On a 2-core machine shared with other work the
# browser, the server and WebRTC all slow down together, so the bar stretches with the load per core (an idle
# machine keeps 10 s; load 8 on 2 cores allows 40 s). benchmarks/live.py measures the real latency.
DEADLINE_S = 10.0 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def microphone_wav(folder: Path) -> tuple[Path, str]:
    """A 48 kHz 16-bit WAV for Chromium's fake microphone, and what it is."""
    from envnet.audio import load_audio, resample

    dogs = sorted(SHARED_CLIPS.glob("*-0.ogg")) if SHARED_CLIPS.is_dir() else []  # ESC-50 target 0: dog
    if dogs:
        wave = resample(load_audio(dogs[0]), 16_000, 48_000).numpy()
        what = f"ESC-10 clip {dogs[0].name}"
    else:
        rng = np.random.default_rng(0)
        t = np.arange(3 * 48_000) / 48_000
        wave = 0.3 * np.sin(2 * np.pi * 600 * t) * (np.sin(2 * np.pi * 2 * t) > 0)  # a beeping tone
        wave += 0.05 * rng.standard_normal(t.size)
        what = "a generated beeping tone"
    path = folder / "microphone.wav"
    sf.write(path, np.clip(wave, -1, 1), 48_000, subtype="PCM_16")
    return path, what


def map_columns(fig: dict | None) -> int:
    if fig is None:
        return 0
    return fig["traces"][0].get("z_shape", [0, 0])[1]


def wait_for(page, what: str, check, timeout_s: float):
    start = time.monotonic()
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        page.wait_for_timeout(200)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s; page text: "
                         f"{pw.main(page).inner_text()[-300:]!r}")


@pytest.fixture
def mic_page(playwright_instance, server, tmp_path, request):
    wav, what = microphone_wav(tmp_path)
    browser = launch_with_microphone(playwright_instance, wav)
    context = new_context(browser, permissions=["microphone"])
    page = context.new_page()
    page.fake_microphone = what
    yield page
    save_failure(request, page, server)
    browser.close()


def test_live_microphone_scrolls_both_maps_and_answers_soon_after_start(mic_page, server) -> None:
    page = mic_page
    pw.open_app(page, server.url, "live")
    pw.main(page).get_by_role("heading", name="Live microphone").wait_for()
    pw.wait_idle(page)
    assert map_columns(pw.wait_plot(page, LIVE_LEARNED_TITLE)) == 0  # empty axes: nothing heard before Start
    start = page.frame_locator(WEBRTC_FRAME).get_by_role("button", name="Start")
    start.wait_for()

    start.click()
    t0 = time.monotonic()
    page.frame_locator(WEBRTC_FRAME).get_by_role("button", name="Stop").wait_for()
    connected = time.monotonic() - t0
    # Read only the charts drawn by the current redraw (pw.find_plot's `fresh`): while the maps' fragment
    # redraws, Streamlit keeps the previous run's copies on screen for a moment, and for a moment a new map
    # may be there before its neighbour.
    first = wait_for(page, "the maps filling",
                     lambda: map_columns(f := pw.find_plot(page, LIVE_LEARNED_TITLE, fresh=True)) > 0 and f,
                     DEADLINE_S)
    wait_for(page, "the maps scrolling on",
             lambda: map_columns(pw.find_plot(page, LIVE_LEARNED_TITLE, fresh=True)) > map_columns(first), DEADLINE_S)
    top = wait_for(page, "a prediction", lambda: pw.find_plot(page, "Top classes", fresh=True), DEADLINE_S)
    elapsed = time.monotonic() - t0
    assert elapsed < DEADLINE_S, (f"maps and a prediction took {elapsed:.1f} s, the Stop button {connected:.1f} s "
                                  f"of it (fake microphone: {page.fake_microphone})")
    print(f"Start → maps and a prediction: {elapsed:.1f} s (load {os.getloadavg()[0]:.1f})")

    # Both maps, 40 rows each, drawn by the same redraw: at one instant the fresh mel map is as far along as
    # the fresh learned map.
    def both_maps():
        charts = pw.plots(page)
        learned, mel = (pw.find_plot(page, t, fresh=True, charts=charts) for t in (LIVE_LEARNED_TITLE, LIVE_MEL_TITLE))
        return learned and mel and map_columns(learned) == map_columns(mel) > map_columns(first) and (learned, mel)

    learned, mel = wait_for(page, "both maps drawn together", both_maps, DEADLINE_S)
    assert learned["traces"][0]["z_shape"][0] == 40 and mel["traces"][0]["z_shape"][0] == 40
    bars = top["traces"][0]
    assert len(bars["y"]) == 5 and all(0 <= p <= 1 for p in bars["x"])
    pw.main(page).get_by_text(" s heard").wait_for()
    # The prediction keeps updating while the sound plays (the fake microphone loops its file).
    wait_for(page, "the answer updating",
             lambda: (f := pw.find_plot(page, "Top classes", fresh=True)) and f["traces"] != top["traces"], DEADLINE_S)
    pw.assert_no_errors(page)

    # Capture freezes the page and puts the last 1.5 s on Classify, analysed like any clip.
    pw.main(page).get_by_role("button", name="Capture the last 1.5 s for Classify").click()
    pw.main(page).get_by_text("it is on the Classify page now").wait_for()
    page.frame_locator(WEBRTC_FRAME).get_by_role("button", name="Start").wait_for()  # the microphone stopped
    pw.wait_idle(page)
    pw.main(page).get_by_role("link", name="Open it on Classify").click()
    pw.main(page).get_by_role("heading", name="Classify a sound").wait_for()
    pw.main(page).get_by_text(re.compile(r"live capture [0-9:]+” — 1\.50 s")).wait_for()
    for title in (LEARNED_TITLE, MEL_TITLE):
        fig = pw.wait_plot(page, title)
        assert [t["z_shape"] for t in fig["traces"] if t["type"] == "heatmap"] == [[40, 150]], title
    page.get_by_text("Best guess:").wait_for()
    pw.assert_no_errors(page)

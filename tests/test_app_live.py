"""The Live page's parts that need no microphone: what it shows before Start, the server-wide cap on streams,
bad ICE settings, a connection that never delivers audio, following the sidebar's model, and Capture into
Classify. (The real WebRTC stream runs in tests/browser/test_live.py, with Chromium's fake microphone.)

AppTest has no Streamlit server for streamlit-webrtc to attach to, so its two entry points are replaced by a
stand-in whose state the test sets (stopped, connecting, playing); the page's own code runs unchanged, and
audio frames go through the page's real callback as PyAV frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import av
import numpy as np
import pytest
import streamlit as st
import streamlit_webrtc
from apptools import html_of, open_page
from streamlit_webrtc import WebRtcStreamerState

from envnet import checkpoint
from envnet.jobs import STREAMS
from envnet.model import WINDOW
from envnet.plots import LIVE_LEARNED_TITLE, LIVE_MEL_TITLE

pytestmark = pytest.mark.skipif(
    not checkpoint.paths(checkpoint.default_checkpoint())[0].is_file(), reason="no default checkpoint in checkpoints/"
)


def texts(at, kind: str) -> list[str]:
    return [e.value for e in at.get(kind)]


def map_columns(at) -> list[int]:
    """How many columns each live map shows (learned, mel)."""
    return [int(c) for c in re.findall(r'class="envnet-map" data-kind="\w+" data-columns="(\d+)"', html_of(at))]


@dataclass
class FakeWebRtc:
    """Stands in for webrtc_streamer: the state the browser would report, and what the page passed."""

    state: WebRtcStreamerState = field(default_factory=lambda: WebRtcStreamerState(playing=False, signalling=False))
    calls: list[dict] = field(default_factory=list)
    on_frame: object = None

    def streamer(self, key: str, **kwargs):
        self.calls.append(kwargs)
        st.session_state[key] = self  # where the real one keeps its context, which the page reads first
        return self

    def sink(self, callback, key: str):
        self.on_frame = callback
        return object()

    def send(self, seconds: float, freq: float = 440.0) -> None:
        """What aiortc would hand over: 20 ms frames of packed s16 stereo at 48 kHz."""
        t = np.arange(int(seconds * 48_000)) / 48_000
        pcm = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
        for i in range(0, len(pcm), 960):
            f = pcm[i: i + 960]
            frame = av.AudioFrame.from_ndarray(np.stack([f, f], 1).reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = 48_000
            self.on_frame(frame)


@pytest.fixture
def webrtc(monkeypatch) -> FakeWebRtc:
    fake = FakeWebRtc()
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake.streamer)
    monkeypatch.setattr(streamlit_webrtc, "create_audio_sink_track", fake.sink)
    return fake


@pytest.fixture
def free_streams(webrtc):
    """Each test starts with no stream held on this (in-process) server, and leaves none behind."""
    STREAMS._leases.clear()
    yield STREAMS
    STREAMS._leases.clear()


def test_before_start_the_page_explains_itself(free_streams, webrtc) -> None:
    at = open_page("pages/live.py")
    assert not at.error and not at.warning
    assert "Live microphone" in [h.value for h in at.header]
    assert LIVE_LEARNED_TITLE in html_of(at) and LIVE_MEL_TITLE in html_of(at)  # empty axes, ready to scroll
    assert map_columns(at) == [0, 0] and "<img" not in html_of(at)  # nothing heard yet
    assert "Press Start above to listen." in texts(at, "info")
    assert any("Classify → Record" in c for c in texts(at, "caption"))  # the fallback is named up front
    # A private SENDONLY audio stream, ICE servers from the configuration (none by default: local use).
    call = webrtc.calls[-1]
    assert call["mode"] == streamlit_webrtc.WebRtcMode.SENDONLY
    # The microphone as it hears: no call-audio processing, which pushed steady sounds (rain) 20 dB down.
    assert call["media_stream_constraints"] == {
        "audio": {"echoCancellation": False, "noiseSuppression": False, "autoGainControl": False}, "video": False}
    assert call["rtc_configuration"] == {"iceServers": []}
    # The display settings are keyed, their open state kept by the server: the rerun of Start closed them.
    assert at.session_state["live_settings"] is False
    at.session_state["live_settings"] = True
    at.run()
    assert at.expander[0].label == "Display settings" and at.expander[0].proto.expanded
    # Capture with nothing heard says so, and stays on the page.
    at.button(key="live_capture").click().run()
    assert not at.exception
    assert any("Nothing to capture yet" in t for t in texts(at, "info"))
    assert "classify_clip" not in at.session_state


def test_a_full_server_says_why_and_what_to_do(free_streams, webrtc) -> None:
    for i in range(STREAMS.limit):
        assert STREAMS.acquire(f"someone-{i}")
    at = open_page("pages/live.py")
    warning = " ".join(texts(at, "warning"))
    assert f"All {STREAMS.limit} live microphones on this server are in use" in warning
    assert "Try again in a minute" in warning and "Classify → Record" in warning
    assert not webrtc.calls  # no Start button to press in vain
    STREAMS.release("someone-0")
    at.button(key="live_retry").click().run()
    assert not at.warning and len(webrtc.calls) == 1


def test_unusable_ice_settings_are_reported_not_crashed(free_streams, monkeypatch) -> None:
    monkeypatch.setenv("ENVNET_ICE_SERVERS", "[{not json")
    at = open_page("pages/live.py")
    assert not at.exception
    assert any("WebRTC settings are not usable" in w and "not valid JSON" in w for w in texts(at, "warning"))


def test_playing_streams_audio_into_the_maps_and_holds_a_slot(free_streams, webrtc) -> None:
    at = open_page("pages/live.py")
    webrtc.state = WebRtcStreamerState(playing=True, signalling=False)
    at.run()  # Start pressed: a new recording, a slot taken
    assert STREAMS.active() == 1
    webrtc.send(2.0)
    at.run()
    assert not at.exception and not at.warning
    assert any("2.0 s heard" in c for c in texts(at, "caption"))
    assert 150 < map_columns(at)[0] == map_columns(at)[1] <= 200  # 2 s of columns in both maps, as images
    assert html_of(at).count('src="data:image/png;base64,') == 2
    bars = re.findall(r'data-class="([^"]+)" data-p="([\d.]+)"', html_of(at))
    assert len(bars) == 5 and all(0 <= float(p) <= 1 for _, p in bars)  # the top classes…
    assert re.search(r'<div class="envnet-topk"><b>[^<]+</b>', html_of(at))  # …under the verdict
    assert "“None of these”: " in html_of(at)  # the shipped model's extra output, on a line of its own
    webrtc.state = WebRtcStreamerState(playing=False, signalling=False)
    at.run()  # Stop: the slot is free again, the last maps stay on screen
    assert STREAMS.active() == 0 and "envnet-topk" in html_of(at)


def test_a_connection_that_never_delivers_audio_is_explained(free_streams, webrtc) -> None:
    at = open_page("pages/live.py")
    webrtc.state = WebRtcStreamerState(playing=True, signalling=False)
    at.run()
    at.session_state["live_started"] = at.session_state["live_started"] - 60  # a minute without audio
    at.run()
    warning = " ".join(texts(at, "warning"))
    assert "live connection could not be made" in warning and "TURN" in warning and "Classify → Record" in warning


def test_capture_sends_the_last_window_to_classify(free_streams, webrtc) -> None:
    at = open_page("pages/live.py")
    webrtc.state = WebRtcStreamerState(playing=True, signalling=False)
    at.run()
    webrtc.send(1.9)  # under MAX_PENDING_SECONDS: a page that updates this rarely keeps it all
    at.run()  # the page's update computes its columns and its answer
    live = at.session_state["live_stream"]
    assert any("1.9 s heard" in c for c in texts(at, "caption"))
    at.button(key="live_capture").click().run()
    assert not at.exception
    clip = at.session_state["classify_clip"]
    assert clip["name"].startswith("live capture") and clip["id"].startswith("live:")
    assert clip["wave"].numel() == WINDOW
    np.testing.assert_allclose(clip["wave"].numpy(), live.wave.last(WINDOW), atol=0)
    # Capture freezes: the page asks the browser to stop, keeps the maps, and links to Classify.
    assert webrtc.calls[-1]["desired_playing_state"] is False
    assert any(clip["name"] in m and "Classify page" in m for m in texts(at, "success"))
    assert LIVE_LEARNED_TITLE in html_of(at)
    webrtc.state = WebRtcStreamerState(playing=False, signalling=False)  # the browser stopped
    at.run()
    assert webrtc.calls[-1]["desired_playing_state"] is None and STREAMS.active() == 0
    at.switch_page("pages/classify.py").run()
    assert not at.exception
    assert "Classify a sound" in [h.value for h in at.header]  # Classify analyses it, with every detail
    assert f"“{clip['name']}” — 1.50 s" in [s.value for s in at.subheader]

def test_the_stream_follows_the_sidebar_model(free_streams) -> None:
    names = [name for name, _, _ in checkpoint.list_checkpoints()]
    if len(names) < 2:
        pytest.skip("needs two checkpoints in checkpoints/")
    at = open_page("pages/live.py")
    first = at.session_state["live_stream"].model
    picked = at.selectbox(key="model_key").value
    other = next(f"file:{n}" for n in names if f"file:{n}" != picked)
    at.selectbox(key="model_key").set_value(other).run()
    assert not at.exception
    live = at.session_state["live_stream"]
    assert live.model is not first  # set_model ran: the learned columns are now the other model's

"""Live microphone: EnvNet's learned spectrogram and a mel spectrogram scrolling as it listens, the
top classes of the last 1.5 s, and a capture to Classify.

The streaming itself is envnet/stream.py; this page only wires the browser's microphone to it and draws.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import streamlit as st

from envnet import plots
from envnet.jobs import STREAMS
from envnet.model import SAMPLE_RATE, WINDOW
from envnet.spectra import cached_frequency_response
from envnet.stream import LiveStream, rtc_configuration
from pages._ui import current_checkpoint, freeze_loaded, model_key_of, page_setup

KEY = "live_mic"  # streamlit-webrtc keeps its context under this key in session_state
STREAM = "live_stream"  # this session's LiveStream: private to the browser tab
OWNER = "live_owner"  # this session's name in the server-wide stream cap
MODEL = "live_model"  # which model the stream was built for
STARTED = "live_started"  # time.time() when the current stream started (None when stopped)
CLIP = "classify_clip"  # Classify's clip: {"id", "name", "wave"} (pages/classify.py)
FROZEN = "live_frozen"  # set by Capture: the stream stops, the maps stay, Classify has the clip
CAPTURED = "live_captured"  # the name of the last capture, shown with a link to Classify until the next Start
UPDATE_EVERY = 0.2  # seconds: five updates a second, so at least four survive a busy machine (0.25 s gave 4.0 at best)
NO_AUDIO_AFTER = 8.0  # seconds playing without audio before the page says the connection failed
# The sound as the microphone hears it, as Classify's recorder takes it: the browser's call-audio processing took
# rain, a steady noise, 20 dB down and away from "rain", and would treat any steady sound a class shows as noise.
RAW_MICROPHONE = {"echoCancellation": False, "noiseSuppression": False, "autoGainControl": False}
RECORD_HINT = ("**Classify → Record** always works: it records in the browser and sends the clip as a file, "
               "without a live connection.")


def connection_trouble() -> None:
    st.warning("The live connection could not be made: the browser's audio is not reaching the server. "
               "A network that blocks WebRTC (many school and company networks do) needs a TURN server: the "
               "app's README explains how to set one (ENVNET_ICE_SERVERS). " + RECORD_HINT)
    st.page_link("pages/classify.py", label="Go to Classify", icon=":material/hearing:")


def stream_for(ck) -> LiveStream:
    """This session's stream, following the sidebar's model (including one trained a minute ago)."""
    live: LiveStream | None = st.session_state.get(STREAM)
    key = model_key_of(ck)
    if live is None:
        live = st.session_state[STREAM] = LiveStream(ck.model, ck.classes)
    elif st.session_state.get(MODEL) != key:
        live.set_model(ck.model, ck.classes)
    st.session_state[MODEL] = key
    return live


def verdict_text(pred) -> str:
    """The last 1.5 s in words: "Sounds like: dog (97%)", not sure (with the closest class), or silence."""
    v = pred.verdict
    return f"Sounds like: {v.text}" if v.kind == "class" else v.text


def capture() -> None:
    """The Capture button's callback: keep the last 1.5 s as Classify's clip and freeze the page (the stream
    stops, the maps stay). The visitor then opens Classify by a link: switching pages while the maps'
    fragment still refreshes itself left Classify blank in Chromium, whichever run did the switch."""
    wave = st.session_state[STREAM].capture()
    if wave.numel() < SAMPLE_RATE // 10:
        st.session_state["live_flash"] = "Nothing to capture yet: press Start and make a sound first."
        return
    stamp = time.strftime("%H:%M:%S")
    st.session_state[CLIP] = {"id": f"live:{uuid.uuid4().hex[:8]}", "name": f"live capture {stamp}", "wave": wave}
    st.session_state[FROZEN] = True
    st.session_state[CAPTURED] = st.session_state[CLIP]["name"]


page_setup()
st.header("Live microphone")
st.caption("Press Start and make a sound: the 40 filters EnvNet learned and a 40-band mel spectrogram scroll by "
           "as it listens, and its answer for the last 1.5 s updates five times a second.")
ck = current_checkpoint()
if ck is None:
    st.stop()

try:
    from streamlit_webrtc import WebRtcMode, create_audio_sink_track, webrtc_streamer
except ImportError:
    st.error("The live microphone needs the streamlit-webrtc package, which is not installed on this server "
             "(pip install -r requirements.txt). " + RECORD_HINT)
    st.stop()
# Imported here, in a page run: streamlit-webrtc registers its browser component only from a script run (the
# warm-up thread has none). Its modules (aiortc, PyAV) then join the objects the collector skips.
freeze_loaded("streamlit_webrtc")

try:
    rtc = rtc_configuration()
except ValueError as e:
    st.warning(f"The server's WebRTC settings are not usable ({e}); trying without ICE servers, which works only "
               "when the browser and the server share a network.")
    rtc = {"iceServers": []}

owner = st.session_state.setdefault(OWNER, uuid.uuid4().hex)
live = stream_for(ck)
# The filters' centre frequencies order the learned map's rows. Measured once per model (~1 s, more on a busy
# machine): here, while the visitor reads the page, not in the first update after Start.
filters = cached_frequency_response(ck.model)
previous = st.session_state.get(KEY)  # streamlit-webrtc's context: its state is current before the widget draws
playing = bool(previous is not None and previous.state.playing)
if playing:
    allowed = STREAMS.acquire(owner)
else:
    STREAMS.release(owner)
    allowed = not STREAMS.full_for(owner)

if not allowed and not playing:
    st.warning(f"All {STREAMS.limit} live microphones on this server are in use by other visitors right now, and "
               "each one takes a share of the server's processor. Try again in a minute: a microphone is freed as "
               "soon as its visitor presses Stop or closes the tab. " + RECORD_HINT)
    st.button("Try again", key="live_retry")
    st.page_link("pages/classify.py", label="Go to Classify", icon=":material/hearing:")
    st.stop()


def on_frame(frame) -> None:
    """Runs on the WebRTC thread for every 20 ms of audio: queue it, nothing more."""
    live.push_frame(frame.to_ndarray(), frame.sample_rate, len(frame.layout.channels), frame.format.is_planar)


ctx = webrtc_streamer(
    key=KEY,
    mode=WebRtcMode.SENDONLY,
    rtc_configuration=rtc,
    media_stream_constraints={"audio": RAW_MICROPHONE, "video": False},
    sink_audio_track=create_audio_sink_track(on_frame, key=f"{KEY}_sink"),
    desired_playing_state=False if (playing and (not allowed or st.session_state.get(FROZEN))) else None,
    translations={"start": "Start", "stop": "Stop", "select_device": "Microphone"},
)
if playing and not allowed:
    st.warning(f"All {STREAMS.limit} live microphones on this server are in use; this one was stopped. "
               "Try again in a minute. " + RECORD_HINT)

# Frozen by Capture: stop refreshing now, before the browser has even confirmed the stop.
now_playing = ctx.state.playing and not st.session_state.get(FROZEN)
if not ctx.state.playing and not ctx.state.signalling:
    st.session_state.pop(FROZEN, None)  # stopped: the next Start streams as usual
if CAPTURED in st.session_state and not now_playing:
    st.success(f"Captured the last 1.5 s as “{st.session_state[CAPTURED]}”: it is on the Classify page now. The "
               "microphone is stopped; press Start to listen again.")
    st.page_link("pages/classify.py", label="Open it on Classify", icon=":material/hearing:")
if now_playing and st.session_state.get(STARTED) is None:
    live.reset()  # a new recording: the maps start empty
    st.session_state.pop(CAPTURED, None)
    st.session_state[STARTED] = time.time()
elif not now_playing and not ctx.state.signalling:
    st.session_state[STARTED] = None
if ctx.state.signalling and not now_playing:
    st.session_state.setdefault("live_signalling_since", time.time())
    if time.time() - st.session_state["live_signalling_since"] > NO_AUDIO_AFTER:
        connection_trouble()
else:
    st.session_state.pop("live_signalling_since", None)
if not now_playing:
    st.caption("Your browser will ask to use the microphone. Nothing is recorded or kept on the server: it sees "
               "only the last few seconds, and only while the stream runs. Nothing happening after Start? "
               + RECORD_HINT)



@st.fragment(run_every=UPDATE_EVERY if now_playing else None)
def show() -> None:
    view = live.update()
    if now_playing:
        STREAMS.acquire(owner)  # renew the lease: a stream nobody draws any more is taken back
        started = st.session_state.get(STARTED) or time.time()
        if view.seconds == 0 and time.time() - started > NO_AUDIO_AFTER:
            connection_trouble()
    if view.learned.shape[1] == 0:
        st.info("Press Start above to listen." if not now_playing else "Waiting for the microphone…")
    order = filters.order if st.session_state.get("live_sort", True) else None
    # Images and plain HTML, not plotly charts: the browser redraws them in a few milliseconds, where three
    # plotly charts took longer than the time between two updates (benchmarks/README.md). One element for
    # both maps, so they always show the same moment.
    # Silent columns drawn as zeros, as Classify draws a silent window: the biases alone are not a sound.
    learned = np.where(view.silent, 0.0, view.learned)
    st.html(plots.live_maps_html(learned, view.mel, first_frame=view.first_frame, order=order,
                                 centres=filters.centres, arrived=view.arrived, drawn=time.time()))
    left, right = st.columns([3, 2])
    with left:
        if view.prediction is not None:
            k = int(st.session_state.get("live_topk", min(5, len(ck.classes))))
            heard = view.prediction.verdict.kind != "silence"  # silence ranks no classes, as on Classify
            st.html(plots.top_classes_html(view.prediction.top(k) if heard else [], verdict_text(view.prediction),
                                           view.prediction.none_of_these if heard and ck.model.config.other else None))
        elif now_playing and view.seconds:
            st.info(f"Listening… the first answer comes after {WINDOW / SAMPLE_RATE:.1f} s of sound.")
    with right:
        if view.seconds:
            level = "silent" if view.level_db < -90 else f"input level {view.level_db:.0f} dBFS"
            st.caption(f"{view.seconds:.1f} s heard · {level}"
                       + (f" · {view.dropped_seconds:.1f} s dropped (the server fell behind)"
                          if view.dropped_seconds else ""))
        st.button("Capture the last 1.5 s for Classify", key="live_capture", icon=":material/photo_camera:",
                  on_click=capture, help="Freeze what you just heard and open it on the Classify page, with every "
                                         "detail there.")
        if st.session_state.get(FROZEN) and now_playing:
            st.rerun(scope="app")  # the full run stops the stream and shows the link to Classify
        if "live_flash" in st.session_state:
            st.info(st.session_state.pop("live_flash"))


show()
# Keyed, its state kept by the server: the full rerun Start causes closed it under the visitor's hand.
with st.expander("Display settings", key="live_settings", on_change="rerun"):
    st.toggle("Order learned filters by centre frequency", value=True, key="live_sort",
              help="Stack the learned filters from low to high frequency so the map reads like a spectrogram.")
    st.number_input("Top classes to show", 1, len(ck.classes), min(5, len(ck.classes)), key="live_topk")

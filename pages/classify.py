"""Classify a sound (upload, record or an example) and compare what EnvNet learned with a mel
spectrogram, window by window.
"""

from __future__ import annotations

import math
from pathlib import Path

import streamlit as st
import torch

from envnet import limits, plots
from envnet.audio import AUDIO_EXTENSIONS, AudioError, is_silent, load_audio, to_wav_bytes, window_at
from envnet.examples import DEMO_SOUNDS, clips_by_class, dataset_roots
from envnet.model import SAMPLE_RATE, WINDOW
from envnet.predict import predict
from envnet.spectra import cached_frequency_response, learned_spectrogram, mel_spectrogram
from pages._ui import (
    SOUND_UPLOAD_HELP,
    SOUND_UPLOAD_MB,
    chart,
    current_checkpoint,
    model_key_of,
    no_paths,
    page_setup,
    show_spectrograms,
)

CLIP = "classify_clip"  # {"id", "name", "wave"}: this session's current clip, kept across pages and reruns
MAX_TIMELINE_WINDOWS = 120


def set_clip(name: str, wave: torch.Tensor, clip_id: str) -> None:
    st.session_state[CLIP] = {"id": clip_id, "name": name, "wave": wave}


def decode(name: str, data: bytes, clip_id: str) -> None:
    """Decode once per upload/recording; errors are shown, the previous clip is kept."""
    current = st.session_state.get(CLIP)
    if current and current["id"] == clip_id:
        return
    ext = Path(name).suffix.lower()
    if ext and ext not in AUDIO_EXTENSIONS:
        st.error(f"“{name}” is a {ext} file, not a sound file EnvNet can read. Please upload WAV, FLAC, OGG or MP3.")
        return
    try:
        wave = load_audio(data)
    except AudioError as e:
        st.error(f"Could not use “{name}”: {e}")
        return
    set_clip(name, wave, clip_id)


@st.cache_data(show_spinner=False, max_entries=8)
def dataset_index(root: str) -> dict[str, list[str]]:
    return {c: [str(p) for p in ps] for c, ps in clips_by_class(root).items()}


def choose_source() -> None:
    source = st.radio("Sound source", ["Upload", "Record", "Example"], horizontal=True, key="classify_source")
    if source == "Upload":
        up = st.file_uploader("Upload a sound file (up to 60 s)", key="classify_upload",
                              max_upload_size=SOUND_UPLOAD_MB, help=SOUND_UPLOAD_HELP)
        if up is not None:
            decode(up.name, up.getvalue(), f"upload:{up.file_id}")
    elif source == "Record":
        rec = st.audio_input("Record a sound", sample_rate=SAMPLE_RATE, key="classify_record")
        if rec is not None:
            decode("your recording", rec.getvalue(), f"record:{rec.file_id}")
    else:
        roots = dataset_roots()
        kinds = ["Generated demo sounds"] + (["Dataset clips"] if roots else [])
        kind = st.radio("Example kind", kinds, horizontal=True, key="classify_example_kind")
        if not roots:
            st.caption("No dataset on this server yet: “Download ESC-50 (includes ESC-10)” on the Train page "
                       "to browse real clips here.")
        if kind == "Generated demo sounds":
            name = st.selectbox("Demo sound", list(DEMO_SOUNDS), key="classify_demo")
            if st.button("Use this example", key="classify_use_demo") or CLIP not in st.session_state:
                set_clip(name, DEMO_SOUNDS[name](), f"demo:{name}")
        else:
            root = st.selectbox("Dataset", [str(r) for r in roots], key="classify_dataset",
                                format_func=lambda r: Path(r).name if limits.public() else r)  # no server paths
            try:
                index = dataset_index(root)
            except (OSError, ValueError) as e:
                st.error(no_paths(f"Could not read that dataset: {e}"))
                return
            c1, c2 = st.columns(2)
            cls = c1.selectbox("Class", list(index), key="classify_class")
            path = c2.selectbox("Clip", index[cls], format_func=lambda p: Path(p).name, key="classify_clip_path")
            if st.button("Use this example", key="classify_use_clip") and path:
                try:
                    set_clip(f"{cls}: {Path(path).name}", load_audio(path), f"file:{path}")
                except AudioError as e:
                    st.error(no_paths(str(e)))


def timeline_hop(n: int) -> int:
    """0.5 s between windows, coarser for long clips so at most MAX_TIMELINE_WINDOWS are computed."""
    return max(SAMPLE_RATE // 2, math.ceil(max(0, n - WINDOW) / (MAX_TIMELINE_WINDOWS - 1)))


def analyse(ck, clip: dict) -> dict:
    """Predictions for this clip and model, computed once and kept in the session."""
    key = (clip["id"], model_key_of(ck))
    cache = st.session_state.setdefault("classify_results", {})
    if key not in cache:
        wave = clip["wave"]
        hop = timeline_hop(wave.numel())
        with st.spinner("Listening…"):
            clip_pred = predict(ck.model, wave, ck.classes, n_crops=10)
            timeline = predict(ck.model, wave, ck.classes, hop=hop)
        cache.clear()  # one clip's results at a time: bounded memory per session
        cache[key] = {"clip": clip_pred, "timeline": timeline}
    return cache[key]


def pick_window(timeline, n_windows: int) -> int:
    """The window slider, which a click on the timeline also moves."""
    if n_windows <= 1:
        return 0
    # The chart's click from the last interaction is in session state before the chart is drawn again;
    # applying it first lets this run's chart and slider both show the clicked window.
    event = st.session_state.get("classify_timeline")
    points = event.get("selection", {}).get("points", []) if event else []
    if points:
        clicked = points[0].get("customdata", points[0].get("point_index"))
        if isinstance(clicked, list):
            clicked = clicked[0]
        # Apply a click once: afterwards the slider may move on its own while the selection lingers.
        if clicked is not None and st.session_state.get("classify_last_click") != clicked:
            st.session_state["classify_last_click"] = clicked
            st.session_state["classify_window"] = int(clicked)
    if st.session_state.get("classify_window", 0) >= n_windows:
        st.session_state["classify_window"] = 0
    # No line for the selected window here (the waveform's band and the slider show it; a click highlights
    # its point): the chart then stays the same while the window moves, and the browser keeps it as it
    # is instead of redrawing five traces on every slider step.
    fig = plots.timeline_figure(timeline.window_probs, timeline.starts, timeline.classes)
    chart(fig, "classify_timeline", on_select="rerun", selection_mode="points")
    starts = timeline.starts
    # Seconds, not a bare index: each step is one analysed window, shown by where it starts and ends.
    return st.select_slider("Window", list(range(n_windows)), key="classify_window",
                            format_func=lambda i: f"{starts[i] / SAMPLE_RATE:.1f}–{(starts[i] + WINDOW) / SAMPLE_RATE:.1f} s",
                            help="Which 1.5 s window to show in the spectrograms below; clicking a point on the "
                                 "timeline picks its window too.")


def window_spectrograms(ck, clip: dict, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learned and mel maps of one window, kept per clip and model: moving back to a window is free."""
    key = (clip["id"], model_key_of(ck), start)
    cache = st.session_state.setdefault("classify_windows", {})
    if key not in cache:
        if len(cache) >= 32 or any(k[:2] != key[:2] for k in cache):  # one clip's windows, bounded
            cache.clear()
        win = window_at(clip["wave"], start)
        cache[key] = (learned_spectrogram(ck.model, win), mel_spectrogram(win))
    return cache[key]


@st.fragment
def show_results(ck, clip: dict, res: dict) -> None:
    """Everything drawn from one clip's results. A fragment: moving the window slider, clicking the
    timeline or changing the top-k reruns only this, not the sidebar, the source picker and the model."""
    wave: torch.Tensor = clip["wave"]
    timeline = res["timeline"]
    # The answer first: on a phone the columns stack, and the verdict must come right after the sound.
    verdict, detail = st.columns([2, 3])
    with verdict:
        if "wav" not in clip:  # encoded once per clip, not on every rerun
            clip["wav"] = to_wav_bytes(wave)
        st.audio(clip["wav"], format="audio/wav")
        best, p = res["clip"].top(1)[0]
        st.markdown(f"**Best guess: {best}** ({p:.0%}, averaged over {len(res['clip'].starts)} windows)")
        k = st.number_input("Top classes to show", 1, len(ck.classes), min(5, len(ck.classes)), key="classify_topk")
        chart(plots.topk_figure(res["clip"].top(int(k))), "classify_top")
    with detail:
        n_windows = len(timeline.starts)
        if n_windows > 1:
            sel = pick_window(timeline, n_windows)
        else:
            sel = 0
            st.caption("The clip fits in one window (shorter clips are centred in silence).")
        chart(plots.waveform_figure(wave, timeline.starts, sel), "classify_wave")
    starts = timeline.starts  # the timeline's windows are the ones the slider and the chart count
    sort = st.toggle("Order learned filters by centre frequency", value=True, key="classify_sort",
                     help="Stack the learned filters from low to high frequency so the map reads like a spectrogram.")
    learned, mel = window_spectrograms(ck, clip, starts[sel])
    show_spectrograms(learned, mel, start_sample=starts[sel],
                      response=cached_frequency_response(ck.model) if sort else None, key="classify_spectrograms")
    st.caption(f"Window {sel}: {starts[sel] / SAMPLE_RATE:.2f}–{(starts[sel] + WINDOW) / SAMPLE_RATE:.2f} s. "
               "The learned map: the 40 filters EnvNet learned, max-pooled every 10 ms. The mel map: a 40-band mel "
               "spectrogram of the same samples, frame for frame.")


page_setup()
st.header("Classify a sound")
st.caption("EnvNet listens to 1.5 s windows of raw audio. Upload, record or pick a sound; see what it hears.")
ck = current_checkpoint()
choose_source()
clip = st.session_state.get(CLIP)

if ck is not None and clip is not None:
    wave: torch.Tensor = clip["wave"]
    st.subheader(f"“{clip['name']}” — {wave.numel() / SAMPLE_RATE:.2f} s")
    if is_silent(wave):
        st.warning("This clip is silent (or nearly): there is nothing to classify, so the scores below mean little.")
    show_results(ck, clip, analyse(ck, clip))
elif ck is not None:
    st.info("Choose a sound above to classify it.")

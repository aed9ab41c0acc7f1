"""Classify a sound (upload, record or an example): the verdict (a class, not sure, or silence), a long
recording's segments, and what EnvNet learned beside a mel spectrogram, window by window.
"""

from __future__ import annotations

import math
from pathlib import Path

import streamlit as st
import torch

from envnet import limits, plots
from envnet.audio import AUDIO_EXTENSIONS, AudioError, load_audio, to_wav_bytes
from envnet.examples import DEMO_SOUNDS, clips_by_class, dataset_roots
from envnet.model import SAMPLE_RATE, WINDOW
from envnet.predict import SEGMENTS_AFTER, predict
from envnet.spectra import cached_frequency_response, learned_spectrogram, mel_spectrogram, silent_frames
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


@st.cache_data(show_spinner=False, max_entries=16)
def dataset_index(root: str, known: tuple[str, ...], train_folds: tuple[int, ...]) -> dict[str, list[tuple[str, bool]]]:
    """Class → [(clip path, whether the model trained on it)], clips it never heard first."""
    return {c: [(str(p), t) for p, t in items]
            for c, items in clips_by_class(root, known=known, train_folds=train_folds).items()}


def train_folds(ck) -> tuple[int, ...]:
    """The dataset folds the model's card says it trained on (none for a model trained on other data)."""
    data = ck.card.get("data")
    folds = data.get("train_folds") if isinstance(data, dict) else None
    return tuple(f for f in folds if isinstance(f, int)) if isinstance(folds, list) else ()


def use_file(name: str, path: str) -> None:
    try:
        set_clip(name, load_audio(path), f"file:{path}")
    except AudioError as e:
        st.session_state["classify_example_error"] = no_paths(str(e))


def try_example(picks: dict[str, tuple[str, bool]]) -> None:
    c = st.session_state.get("classify_try")
    if c in picks:
        use_file(f"{c}: {Path(picks[c][0]).name}", picks[c][0])


def first_screen(ck) -> None:
    """What this model can answer, and one real recording of each of its classes to try in one click."""
    names = ", ".join(ck.classes)
    rule = ck.model.calibration
    st.markdown(f"**This model knows {len(ck.classes)} sounds:** {names}. "
                + ("A sound that is none of them should get “not sure”." if rule else
                   "It has no “not sure” rule, so it names one of these for any sound, even one it never learned."))
    picks: dict[str, tuple[str, bool]] = {}
    for root in dataset_roots():
        try:
            index = dataset_index(str(root), tuple(ck.classes), train_folds(ck))
        except (OSError, ValueError):
            continue
        for c in ck.classes:
            if index.get(c) and (c not in picks or picks[c][1] and not index[c][0][1]):
                picks[c] = index[c][0]
    if not picks:
        st.caption("No recordings of these classes on this server: try the generated demo sounds under “Example”, "
                   "or “Download ESC-50 (includes ESC-10)” on the Train page.")
        return
    heard = [c for c, (_, trained) in picks.items() if trained]
    st.caption("Real recordings to try, one per class, from the datasets on this server (this model's card does "
               "not say what it trained on, so it may have heard them)." if not train_folds(ck) else
               "Real recordings to try, one per class, from folds this model did not train on."
               if not heard else
               "Real recordings to try, one per class. " + (
                   "This model trained on all of them (this server has no held-out fold), so it will do better on "
                   "them than on new sounds." if len(heard) == len(picks) else
                   f"It trained on those of {', '.join(heard)} (no held-out clip of them here)."))
    # Pills wrap on a phone, where ten buttons in columns would stack into a long list.
    st.pills("Try a real recording", list(picks), key="classify_try", on_change=try_example, args=(picks,),
             label_visibility="collapsed")
    if err := st.session_state.pop("classify_example_error", None):
        st.error(err)


def choose_source(ck) -> None:
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
                index = dataset_index(root, tuple(ck.classes), train_folds(ck)) if ck else {}
            except (OSError, ValueError) as e:
                st.error(no_paths(f"Could not read that dataset: {e}"))
                return
            c1, c2 = st.columns(2)
            cls = c1.selectbox("Class", list(index), key="classify_class")
            trained = dict(index.get(cls, []))
            path = c2.selectbox("Clip", list(trained), key="classify_clip_path",
                                format_func=lambda p: Path(p).name + (" · trained on" if trained.get(p) else ""))
            if trained.get(path):
                st.caption("The selected model trained on this clip: expect it to do better than on a new sound.")
            elif ck is not None and cls not in ck.classes:
                st.caption(f"“{cls}” is not one of this model's classes: a good test of “not sure”.")
            if st.button("Use this example", key="classify_use_clip") and path:
                use_file(f"{cls}: {Path(path).name}", path)
                if err := st.session_state.pop("classify_example_error", None):
                    st.error(err)


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
    silent = [v.kind == "silence" for v in timeline.window_verdicts]
    if all(silent):
        st.caption("Every window is silent: there is no class to follow over time.")
    else:
        fig = plots.timeline_figure(timeline.window_probs, timeline.starts, timeline.classes, silent=silent)
        chart(fig, "classify_timeline", on_select="rerun", selection_mode="points")
    starts = timeline.starts
    # Seconds, not a bare index: each step is one analysed window, shown by where it starts and ends.
    return st.select_slider("Window", list(range(n_windows)), key="classify_window",
                            format_func=lambda i: f"{starts[i] / SAMPLE_RATE:.1f}–{(starts[i] + WINDOW) / SAMPLE_RATE:.1f} s",
                            help="Which 1.5 s window to show in the spectrograms below; clicking a point on the "
                                 "timeline picks its window too.")


def window_spectrograms(ck, clip: dict, timeline, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learned and mel maps of window i as the model heard it, kept per clip and model: moving back to a
    window is free."""
    key = (clip["id"], model_key_of(ck), timeline.starts[i])
    cache = st.session_state.setdefault("classify_windows", {})
    if key not in cache:
        if len(cache) >= 32 or any(k[:2] != key[:2] for k in cache):  # one clip's windows, bounded
            cache.clear()
        win = timeline.window(i)
        learned = learned_spectrogram(ck.model, win)
        silent = torch.from_numpy(silent_frames(win))  # silence (a short clip's padding): drawn as zeros
        cache[key] = (learned.masked_fill(silent, 0.0), mel_spectrogram(win))
    return cache[key]


def show_verdict(ck, pred) -> None:
    """The answer in words: a class, not sure, or silence, and how "not sure" is decided for this model."""
    v = pred.verdict
    if v.kind == "class":
        st.markdown(f"#### Sounds like: {v.label} ({v.p:.0%})")
    else:
        st.warning(f"**{'Not sure' if v.kind == 'unsure' else 'Silence'}.** {v.text}")
    rule = ck.model.calibration
    if rule is None:
        st.caption("This model has no “not sure” rule: it always names one of its classes.")
        return
    f = rule.figures
    measured = (f" On held-out recordings this kept {f['known_kept']:.0%} of known sounds confident and flagged "
                f"{f['unknown_flagged']:.0%} of unknown ones." if isinstance(f.get("known_kept"), float)
                and isinstance(f.get("unknown_flagged"), float) else "")
    st.caption(f"“Not sure” when no class reaches {rule.cutoff}.{measured}")


def show_segments(pred) -> None:
    """A long recording as what happens when: one row per stretch with one verdict."""
    rows = [{"from (s)": round(s.start, 1), "to (s)": round(s.end, 1),
             "sound": {"unsure": "not sure", "silence": "silence"}.get(s.verdict, s.verdict),
             "probability": "" if s.p is None else f"{s.p:.0%}"} for s in pred.segments()]
    st.markdown("**What happens when**")
    st.dataframe(rows, hide_index=True, width="stretch", key="classify_segments")


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
        show_verdict(ck, res["clip"])
        if wave.numel() > SEGMENTS_AFTER:
            show_segments(timeline)
        if res["clip"].verdict.kind == "silence":
            st.caption("Nothing was loud enough to rank the classes.")
        else:
            k = st.number_input("Top classes to show", 1, len(ck.classes), min(5, len(ck.classes)), key="classify_topk")
            chart(plots.topk_figure(res["clip"].top(int(k))), "classify_top")
            best, p = res["clip"].top(1)[0]
            n = len(res["clip"].starts)
            pct = f"{p:.0%}" if p >= 0.005 else "under 1%"  # not "helicopter (0%)"
            st.caption(f"Best guess: {best} ({pct}), averaged over {n} window{'s' if n > 1 else ''} of 1.5 s."
                       + (f" “None of these”: {res['clip'].none_of_these:.0%}." if ck.model.config.other else ""))
    with detail:
        n_windows = len(timeline.starts)
        if n_windows > 1:
            sel = pick_window(timeline, n_windows)
        else:
            sel = 0
            first, end = timeline.kept
            st.caption("The clip fits in one window (shorter clips are centred in silence)." if end - first >= timeline.length
                       else f"Its sound, {(end - first) / SAMPLE_RATE:.1f} s once the quiet start and end are trimmed, "
                            "fits in one window (centred in silence).")
        st.html(plots.waveform_html(wave, timeline.starts, sel))
    starts = timeline.starts  # the timeline's windows are the ones the slider and the chart count
    sort = st.toggle("Order learned filters by centre frequency", value=True, key="classify_sort",
                     help="Stack the learned filters from low to high frequency so the map reads like a spectrogram.")
    learned, mel = window_spectrograms(ck, clip, timeline, sel)
    show_spectrograms(learned, mel, start_sample=starts[sel],
                      response=cached_frequency_response(ck.model) if sort else None, key="classify_spectrograms")
    st.caption(f"Window {sel}: {starts[sel] / SAMPLE_RATE:.2f}–{(starts[sel] + WINDOW) / SAMPLE_RATE:.2f} s. "
               "The learned map: the 40 filters EnvNet learned, max-pooled every 10 ms. The mel map: a 40-band mel "
               "spectrogram of the same samples, frame for frame.")


page_setup()
st.header("Classify a sound")
st.caption("EnvNet listens to 1.5 s windows of raw audio. Upload, record or pick a sound; see what it hears.")
ck = current_checkpoint()
if ck is not None:
    first_screen(ck)
choose_source(ck)
clip = st.session_state.get(CLIP)

if ck is not None and clip is not None:
    wave: torch.Tensor = clip["wave"]
    st.subheader(f"“{clip['name']}” — {wave.numel() / SAMPLE_RATE:.2f} s")
    show_results(ck, clip, analyse(ck, clip))
elif ck is not None:
    st.info("Choose a sound above to classify it.")

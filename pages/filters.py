"""What the learned filters listen to, measured with pure tones, beside a mel filterbank; the
first-layer kernels; a tone explorer.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from envnet import examples, plots
from envnet.audio import to_wav_bytes
from envnet.model import SAMPLE_RATE, WINDOW
from envnet.spectra import (
    cached_frequency_response,
    kernel_spectra,
    learned_spectrogram,
    mel_frequency_response,
    mel_spectrogram,
    tone,
)
from pages._ui import chart, charts_side_by_side, current_checkpoint, page_setup, show_spectrograms


@st.cache_resource(show_spinner=False)
def mel_response():
    return mel_frequency_response()


page_setup()
st.header("Filters: what EnvNet learned to listen for")
st.caption("Each of the 40 learned filters is played pure tones from 10 Hz to 8 kHz; the heatmap shows how "
           "strongly it answers each one. A mel filterbank, measured the same way, is the hand-made "
           "equivalent a classic spectrogram uses.")
ck = current_checkpoint()
if ck is not None:
    model = ck.model
    with st.spinner("Measuring the filters with pure tones…"):
        fr = cached_frequency_response(model)
    sort = st.toggle("Sort filters by centre frequency", value=True, key="filters_sort")
    charts_side_by_side(plots.filterbank_comparison(fr, mel_response(), sort=sort),
                        ["filters_compare_learned", "filters_compare_mel"])
    alive = np.isfinite(fr.centres)
    if alive.any():
        st.caption(f"Centre frequencies of the {int(alive.sum())} responding filters range from "
                   f"{np.nanmin(fr.centres):.0f} Hz to {np.nanmax(fr.centres):.0f} Hz (feature block: "
                   "conv1 → conv2 → 10 ms max-pool).")
    if (~alive).any():
        st.caption(f"{int((~alive).sum())} filters never respond to a pure tone (\"dead\" filters).")

    st.subheader("The first layer's kernels")
    st.caption("Each first-layer filter is just 8 numbers (0.5 ms of audio). Their spectra show which "
               "frequencies each one lets through on its own, before the second layer combines them.")
    w, db, freqs = kernel_spectra(model)
    charts_side_by_side(plots.kernels_figure(w, db, freqs, order=fr.order if sort else None),
                        ["filters_kernels_taps", "filters_kernels_spectra"])

    st.subheader("Tone explorer")
    c1, c2 = st.columns([1, 2])
    with c1:
        kind = st.radio("Test sound", ["Tone", "Sweep"], horizontal=True, key="filters_kind")
        if kind == "Tone":
            choices = [int(round(f)) for f in np.geomspace(20, 8000, 41)]
            f = st.select_slider("Tone frequency (Hz)", choices, value=choices[24], key="filters_freq")
            sound = tone(float(f), WINDOW)
        else:
            st.caption("An exponential sweep from 50 Hz to 7.5 kHz over one 1.5 s window.")
            sound = examples.sweep(50.0, 7500.0, seconds=WINDOW / SAMPLE_RATE)[:WINDOW]
        st.audio(to_wav_bytes(sound), format="audio/wav")
    spec = learned_spectrogram(model, sound)
    with c2:
        chart(plots.filter_activity_figure(spec.mean(-1), fr.centres, order=fr.order if sort else None),
              "filters_activity")
    show_spectrograms(spec, mel_spectrogram(sound), response=fr if sort else None, key="filters_tone_spec")

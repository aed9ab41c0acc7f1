"""How EnvNet turns 1.5 s of raw audio into class scores, layer by layer, in classroom words, with a
convolution-arithmetic demo.
"""

from __future__ import annotations

import math

import streamlit as st

from envnet import plots
from envnet.model import layer_walkthrough
from envnet.teaching import conv_output_length, format_shape
from pages._ui import chart, current_checkpoint, page_setup

page_setup()
st.header("How it works")
st.markdown(
    "EnvNet hears sound the way it arrives at a microphone: as a list of numbers, 16,000 per second. "
    "It has no spectrogram built in. Its first two layers **learn** their own set of 40 filters, and a "
    "max-pool every 10 ms turns their outputs into a 40 × 150 picture of the sound — a *learned "
    "spectrogram*. The rest of the network reads that picture like an image and decides what it hears."
)
ck = current_checkpoint()
if ck is not None:
    rows = layer_walkthrough(ck.model)
    table = [{"layer": r["layer"], "what it does": r["what"], "output shape": format_shape(r["shape"]),
              "numbers out": math.prod(r["shape"]), "parameters": r["params"]} for r in rows]
    st.subheader(f"One window through “{ck.name}”")
    # All layers, no inner scroll, and only the numbers: four short columns fit a phone's width, where a fifth
    # column of words was cut off at the screen's edge. The words follow as a list (two columns on a laptop).
    st.dataframe(table, hide_index=True, width="stretch", height="content",
                 column_order=["layer", "output shape", "numbers out", "parameters"],
                 column_config={"layer": st.column_config.TextColumn(width="small"),
                                "numbers out": st.column_config.NumberColumn(format="localized"),  # 24,014
                                "parameters": st.column_config.NumberColumn(format="localized")})
    half = math.ceil(len(rows) / 2)
    for col, part in zip(st.columns(2), (rows[:half], rows[half:]), strict=True):
        col.markdown("\n".join(f"- **{r['layer']}**: {r['what']}" for r in part))
    total = sum(r["params"] for r in rows)
    feats = sum(r["params"] for r in rows if r["layer"] in ("conv1", "conv2"))
    st.markdown(
        f"**{total:,} parameters** in all. The two filter layers that make the learned spectrogram use only "
        f"**{feats:,}** of them; most sit in the fully connected layers. The shapes above were read off a real "
        f"pass of one window through this model: {' → '.join(format_shape(r['shape']) for r in rows)}."
    )

st.subheader("Convolution arithmetic")
st.markdown(
    "A convolution slides a small *kernel* along the input. Each position gives one output number. The "
    "*stride* is how far it jumps each time; *padding* adds zeros at both ends so the edges get covered too."
)
c = st.columns(4)
n = c[0].number_input("Input length", 1, 100_000, 24, key="conv_length")
k = c[1].number_input("Kernel size", 1, 1000, 8, key="conv_kernel")
s = c[2].number_input("Stride", 1, 1000, 1, key="conv_stride")
p = c[3].number_input("Padding", 0, 1000, 0, key="conv_padding")
out = conv_output_length(int(n), int(k), int(s), int(p))
# Two short lines, not one long one: a phone's width holds each.
st.latex(r"\text{outputs} = \left\lfloor \frac{L + 2p - k}{s} \right\rfloor + 1")
# When the kernel does not fit, the formula's own value is below 1: said as it is, then what it means.
raw = (int(n) + 2 * int(p) - int(k)) // int(s) + 1
st.latex(rf"= \left\lfloor \frac{{{n} + 2\cdot{p} - {k}}}{{{s}}} \right\rfloor + 1 = {raw}"
         + (r" \;\rightarrow\; 0" if out == 0 else ""))
if out == 0:
    st.warning("The kernel is longer than the (padded) input: it does not fit even once, so there is no output.")
elif n + 2 * p <= 400:
    chart(plots.conv_arithmetic_figure(int(n), int(k), int(s), int(p)), "conv_demo")
else:
    st.caption("(The picture is drawn for inputs up to 400 cells.)")
st.markdown(
    f"In EnvNet: 24,014 samples, kernel 8, stride 1 → **{conv_output_length(24014, 8):,}**; again → "
    f"**{conv_output_length(24007, 8):,}**; then a max-pool with kernel 160 and stride 160 → "
    f"**{conv_output_length(24000, 160, 160)}** frames of 10 ms. That is why a window is 24,014 samples: "
    "1.5 s plus the 14 samples the two 8-tap filters use up."
)

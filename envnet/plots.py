"""Plotly figures for the app. Each builder takes arrays and returns a go.Figure, so every plot can be
tested without Streamlit (tests/test_plots.py) and reused in notebooks.

Time axes are in seconds, frequency axes in Hz (log scale), filter/band axes are indices 0–39.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from envnet.model import N_FRAMES, POOL, SAMPLE_RATE, WINDOW
from envnet.spectra import FrequencyResponse

# Learned frame i summarises input samples 160 i … 160 i + 173: its centre is 160 i + 87 (see spectra.py).
FRAME_CENTRE = 87
LEARNED_TITLE = "Learned spectrogram (40 × 150)"
MEL_TITLE = "Mel spectrogram (40 × 150)"
MAX_WAVE_POINTS = 4000  # a browser draws 4,000 points instantly; a 60 s clip has 960,000
# Streamlit's chart element rewrites the colours #000001, #000002, … in a figure to its theme's palette,
# even with theme=None, and Magma starts at #000004: the quietest cells came out lavender. One shade off
# keeps them black.
MAGMA = [c if c != "#000004" else "#010005" for c in plotly.colors.sequential.Magma]


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def frame_times(start_sample: int = 0, n_frames: int = N_FRAMES) -> np.ndarray:
    """Centre time in seconds of each learned/mel frame of the window that starts at start_sample."""
    return (start_sample + np.arange(n_frames) * POOL + FRAME_CENTRE) / SAMPLE_RATE


def _envelope(wave: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Min/max per bucket, interleaved: the downsampled line keeps every peak the eye would see."""
    n = len(wave)
    if n <= max_points:
        return np.arange(n), wave
    bucket = int(np.ceil(n / (max_points // 2)))
    m = n // bucket * bucket
    chunks = wave[:m].reshape(-1, bucket)
    idx = np.repeat(np.arange(chunks.shape[0]) * bucket + bucket // 2, 2)
    vals = np.stack([chunks.min(1), chunks.max(1)], 1).reshape(-1)
    return idx, vals


def waveform_figure(
    wave, starts: Sequence[int] = (), selected: int | None = None, *, sr: int = SAMPLE_RATE,
    window: int = WINDOW, title: str = "Waveform and analysed windows",
) -> go.Figure:
    """The clip as a line, each analysed 1.5 s window as a shaded band, the selected one highlighted."""
    w = _np(wave).reshape(-1)
    idx, vals = _envelope(w, MAX_WAVE_POINTS)
    fig = go.Figure(go.Scattergl(x=idx / sr, y=vals, mode="lines", name="waveform", line={"width": 1},
                                 hovertemplate="%{x:.3f} s<br>%{y:.3f}<extra></extra>"))
    for i, s in enumerate(starts):
        chosen = i == selected
        fig.add_vrect(
            x0=s / sr, x1=(s + window) / sr, line_width=2 if chosen else 0, line_color="crimson",
            fillcolor="crimson" if chosen else "royalblue", opacity=0.25 if chosen else 0.07, layer="below",
        )
    fig.update_layout(title=title, height=230, margin={"l": 50, "r": 20, "t": 40, "b": 40}, showlegend=False)
    fig.update_xaxes(title_text="time (s)")
    fig.update_yaxes(title_text="amplitude", range=[-1.05, 1.05])
    return fig


def topk_figure(top: Sequence[tuple[str, float]], title: str = "Top classes") -> go.Figure:
    """Horizontal bars, the most likely class on top, probabilities as percentages."""
    names = [c for c, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", text=[f"{p:.1%}" for p in probs],
                           textposition="auto", hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    fig.update_layout(title=title, height=max(180, 45 * len(top) + 60), margin={"l": 10, "r": 20, "t": 40, "b": 40})
    fig.update_xaxes(title_text="probability", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(automargin=True)  # class names are the labels: never clip them
    return fig


def timeline_figure(
    window_probs, starts: Sequence[int], classes: Sequence[str], *, top: int = 5, selected: int | None = None,
    sr: int = SAMPLE_RATE, window: int = WINDOW,
) -> go.Figure:
    """Probability of the `top` most likely classes per window, one line each, against the window's centre
    time. Points carry their window index as customdata, so a click can select that window."""
    p = _np(window_probs)
    centres = (np.asarray(starts) + window / 2) / sr
    keep = np.argsort(-p.mean(0))[: max(1, min(top, p.shape[1]))]
    fig = go.Figure()
    for j in keep:
        fig.add_trace(go.Scatter(
            x=centres, y=p[:, j], mode="lines+markers", name=classes[j], customdata=np.arange(len(centres)),
            hovertemplate=f"{classes[j]}<br>window %{{customdata}} at %{{x:.2f}} s<br>%{{y:.1%}}<extra></extra>",
        ))
    if selected is not None and 0 <= selected < len(centres):
        fig.add_vline(x=centres[selected], line_dash="dash", line_color="crimson")
    fig.update_layout(title="Class probabilities over time", height=300,
                      margin={"l": 50, "r": 20, "t": 40, "b": 40}, clickmode="event+select")
    fig.update_xaxes(title_text="window centre (s)")
    fig.update_yaxes(title_text="probability", range=[0, 1], tickformat=".0%")
    return fig


def spectrogram_pair(
    learned, mel, *, start_sample: int = 0, order: Sequence[int] | None = None,
    learned_title: str = LEARNED_TITLE, mel_title: str = MEL_TITLE,
) -> go.Figure:
    """The learned 40 × 150 map beside the 40 × 150 mel spectrogram on one shared time axis (seconds).

    `order` (filter indices sorted by centre frequency) re-stacks the learned rows so the map reads
    low-to-high like a spectrogram; hover always names the original filter number.
    """
    L, M = _np(learned), _np(mel)
    if L.shape != M.shape or L.ndim != 2:
        raise ValueError(f"need two maps of the same 2-D shape, got {L.shape} and {M.shape}")
    rows = np.arange(L.shape[0]) if order is None else np.asarray(order)
    t = frame_times(start_sample, L.shape[1])
    filt = np.repeat(rows[:, None], L.shape[1], axis=1)
    # Wide spacing: the left colorbar and the right plot's axis title both live in the gap.
    fig = make_subplots(rows=1, cols=2, subplot_titles=(learned_title, mel_title), horizontal_spacing=0.2)
    fig.add_trace(go.Heatmap(
        z=L[rows], x=t, y=np.arange(L.shape[0]), customdata=filt, colorscale="Viridis", name="learned",
        colorbar={"title": "activation", "x": 0.415, "len": 0.9, "thickness": 12},
        hovertemplate="time %{x:.3f} s<br>row %{y} (filter %{customdata})<br>activation %{z:.3f}<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Heatmap(
        z=M, x=t, y=np.arange(M.shape[0]), colorscale=MAGMA, name="mel",
        colorbar={"title": "dB", "x": 1.0, "len": 0.9, "thickness": 12},
        hovertemplate="time %{x:.3f} s<br>mel band %{y}<br>%{z:.1f} dB<extra></extra>",
    ), row=1, col=2)
    fig.update_xaxes(title_text="time (s)", row=1, col=1)
    fig.update_xaxes(title_text="time (s)", matches="x", row=1, col=2)
    fig.update_yaxes(title_text="filter (by centre frequency)" if order is not None else "filter", row=1, col=1)
    fig.update_yaxes(title_text="mel band (low → high)", row=1, col=2)
    fig.update_layout(height=380, margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def _response_heatmap(fr: FrequencyResponse, sort: bool, colorscale: str | list[str] = "Viridis", showscale: bool = True,
                      label: str = "filter") -> go.Heatmap:
    z = fr.normalised(sort=sort)
    rows = fr.order if sort else np.arange(z.shape[0])
    return go.Heatmap(
        z=z, x=fr.freqs, y=np.arange(z.shape[0]), customdata=np.repeat(np.asarray(rows)[:, None], z.shape[1], 1),
        colorscale=colorscale, zmin=0, zmax=1, showscale=showscale, colorbar={"title": "relative"},
        hovertemplate=f"%{{x:.0f}} Hz<br>{label} %{{customdata}}<br>%{{z:.2f}} of its peak<extra></extra>",
    )


def frequency_response_figure(fr: FrequencyResponse, *, sort: bool = False, title: str | None = None,
                              label: str = "filter") -> go.Figure:
    """Filters × tone frequency: how strongly each filter answers a pure tone, each scaled to its own peak."""
    fig = go.Figure(_response_heatmap(fr, sort, label=label))
    what = "sorted by centre frequency" if sort else "in network order"
    fig.update_layout(title=title or f"Frequency response of the {fr.response.shape[0]} learned filters ({what})",
                      height=360, margin={"l": 50, "r": 20, "t": 50, "b": 40})
    fig.update_xaxes(title_text="tone frequency (Hz)", type="log")
    fig.update_yaxes(title_text=f"{label} (by centre frequency)" if sort else label)
    return fig


def filterbank_comparison(learned: FrequencyResponse, mel: FrequencyResponse, *, sort: bool = True) -> go.Figure:
    """Learned filters beside a 40-band mel filterbank, measured the same way (pure tones)."""
    what = "sorted by centre frequency" if sort else "in network order"
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, shared_yaxes=True,
                        subplot_titles=(f"Learned filters ({what})", "Mel filterbank (40 bands)"))
    fig.add_trace(_response_heatmap(learned, sort), row=1, col=1)
    fig.add_trace(_response_heatmap(mel, False, MAGMA, showscale=False, label="mel band"), row=1, col=2)
    for c in (1, 2):
        fig.update_xaxes(title_text="tone frequency (Hz)", type="log", row=1, col=c)
    fig.update_yaxes(title_text="filter / band", row=1, col=1)
    fig.update_layout(height=380, margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def filter_evolution_figure(snapshots: Sequence[tuple[int, np.ndarray]], freqs, *, sort: bool = True) -> go.Figure:
    """An animation over epochs of the filters' frequency response: one plotly frame per snapshot,
    a slider and a play button. Rows are sorted by the LAST snapshot's centre frequencies, so a row is
    the same filter in every frame and you watch it move into place."""
    if not snapshots:
        raise ValueError("no filter snapshots to animate")
    freqs = np.asarray(freqs)
    final = np.asarray(snapshots[-1][1])
    order = np.argsort(np.argmax(final, axis=1), kind="stable") if sort else np.arange(final.shape[0])

    def z(resp) -> np.ndarray:
        r = np.asarray(resp)[order]
        return r / np.maximum(r.max(axis=1, keepdims=True), 1e-12)

    def heat(resp) -> go.Heatmap:
        return go.Heatmap(z=z(resp), x=freqs, y=np.arange(len(order)), colorscale="Viridis", zmin=0, zmax=1,
                          hovertemplate="%{x:.0f} Hz<br>row %{y}<br>%{z:.2f}<extra></extra>")

    frames = [go.Frame(data=[heat(r)], name=str(e)) for e, r in snapshots]
    fig = go.Figure(data=[heat(snapshots[-1][1])], frames=frames)
    steps = [{"label": str(e), "method": "animate",
              "args": [[str(e)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}]}
             for e, _ in snapshots]
    fig.update_layout(
        title="How the filters evolved (epoch slider; ▶ plays it)", height=430,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        sliders=[{"active": len(steps) - 1, "steps": steps, "currentvalue": {"prefix": "epoch "}, "y": -0.12}],
        updatemenus=[{"type": "buttons", "showactive": False, "x": 0, "y": 1.12, "xanchor": "left", "buttons": [
            {"label": "▶ play", "method": "animate",
             "args": [None, {"frame": {"duration": 400, "redraw": True}, "fromcurrent": False}]},
            {"label": "❚❚ pause", "method": "animate",
             "args": [[None], {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}]},
        ]}],
    )
    fig.update_xaxes(title_text="tone frequency (Hz)", type="log")
    fig.update_yaxes(title_text="filter (by final centre frequency)" if sort else "filter")
    return fig


def training_curves(history: Sequence[dict], batch_losses: Sequence[tuple[float, float]] = ()) -> go.Figure:
    """Loss (left) and accuracy (right) per epoch; batch losses (fractional epoch, loss) as a faint line
    so the curve moves within the first epoch too."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    if batch_losses:
        bx, by = zip(*batch_losses, strict=True)
        fig.add_trace(go.Scatter(x=bx, y=by, mode="lines", name="batch loss", line={"width": 1, "color": "#bbb"}),
                      row=1, col=1)
    ep = [h["epoch"] for h in history]
    fig.add_trace(go.Scatter(x=ep, y=[h["train_loss"] for h in history], mode="lines+markers", name="train loss"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=ep, y=[h["train_acc"] for h in history], mode="lines+markers", name="train accuracy"),
                  row=1, col=2)
    val = [h for h in history if "val_acc" in h]
    if val:
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in val], y=[h["val_loss"] for h in val], mode="lines+markers",
                                 name="validation loss"), row=1, col=1)
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in val], y=[h["val_acc"] for h in val], mode="lines+markers",
                                 name="validation accuracy"), row=1, col=2)
    for c in (1, 2):
        fig.update_xaxes(title_text="epoch", row=1, col=c)
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_layout(height=320, margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def kernels_figure(weights, spectra_db, freqs, *, order: Sequence[int] | None = None) -> go.Figure:
    """First-layer kernels: the 8 taps of each of the 40 filters as stacked waveforms (left), and their
    magnitude spectra as a filters × frequency heatmap (right)."""
    W, D, f = _np(weights), _np(spectra_db), np.asarray(freqs)
    rows = np.arange(W.shape[0]) if order is None else np.asarray(order)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.35, 0.65], horizontal_spacing=0.1,
                        subplot_titles=("Kernels (8 taps each)", "Kernel magnitude spectra"))
    scale = 0.45 / max(float(np.abs(W).max()), 1e-12)
    taps = np.arange(W.shape[1])
    for r, k in enumerate(rows):
        fig.add_trace(go.Scatter(x=taps, y=r + W[k] * scale, mode="lines+markers", showlegend=False,
                                 line={"width": 1}, marker={"size": 3}, customdata=W[k],
                                 hovertemplate=f"filter {k}<br>tap %{{x}}: %{{customdata:.3f}}<extra></extra>"),
                      row=1, col=1)
    fig.add_trace(go.Heatmap(z=D[rows], x=f, y=np.arange(len(rows)), colorscale="Viridis",
                             customdata=np.repeat(rows[:, None], D.shape[1], 1), colorbar={"title": "dB"},
                             hovertemplate="%{x:.0f} Hz<br>filter %{customdata}<br>%{z:.1f} dB<extra></extra>"),
                  row=1, col=2)
    fig.update_xaxes(title_text="tap", row=1, col=1)
    fig.update_xaxes(title_text="frequency (Hz)", row=1, col=2)
    fig.update_yaxes(title_text="filter", row=1, col=1)
    fig.update_yaxes(title_text="filter", row=1, col=2)
    fig.update_layout(height=560, margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def filter_activity_figure(activity, centres=None, *, order: Sequence[int] | None = None,
                           title: str = "How strongly each filter responds") -> go.Figure:
    """One bar per filter: its mean output for a sound (e.g. a test tone)."""
    a = _np(activity).reshape(-1)
    rows = np.arange(len(a)) if order is None else np.asarray(order)
    hover = "filter %{customdata}<br>mean output %{y:.3f}<extra></extra>"
    custom = rows
    if centres is not None:
        c = np.asarray(centres)[rows]
        custom = np.stack([rows, np.nan_to_num(c)], 1)
        hover = "filter %{customdata[0]}<br>centre ≈ %{customdata[1]:.0f} Hz<br>mean output %{y:.3f}<extra></extra>"
    fig = go.Figure(go.Bar(x=np.arange(len(rows)), y=a[rows], customdata=custom, hovertemplate=hover))
    fig.update_layout(title=title, height=280, margin={"l": 50, "r": 20, "t": 40, "b": 40})
    fig.update_xaxes(title_text="filter (by centre frequency)" if order is not None else "filter")
    fig.update_yaxes(title_text="mean output")
    return fig


def conv_arithmetic_figure(length: int, kernel: int, stride: int, padding: int, max_windows: int = 12) -> go.Figure:
    """The input as a row of cells (padding grey) and the first few positions of the kernel as bars."""
    from envnet.teaching import conv_output_length

    n_out = conv_output_length(length, kernel, stride, padding)
    total = length + 2 * padding
    fig = go.Figure()
    colours = ["#ddd" if (i < padding or i >= padding + length) else "#6a9fd8" for i in range(total)]
    fig.add_trace(go.Bar(x=np.arange(total), y=[1] * total, marker_color=colours, name="input (grey = padding)",
                         hovertemplate="input cell %{x}<extra></extra>", width=0.9))
    for o in range(min(n_out, max_windows)):
        s = o * stride
        fig.add_shape(type="rect", x0=s - 0.45, x1=s + kernel - 0.55, y0=1.15 + 0.25 * o, y1=1.3 + 0.25 * o,
                      fillcolor="crimson", opacity=0.6, line_width=0)
    fig.update_layout(title=f"{length} inputs, kernel {kernel}, stride {stride}, padding {padding} → {n_out} outputs",
                      height=260 + 8 * min(n_out, max_windows), showlegend=False,
                      margin={"l": 30, "r": 20, "t": 50, "b": 40})
    fig.update_xaxes(title_text="input position")
    fig.update_yaxes(visible=False)
    return fig


LIVE_LEARNED_TITLE = "Learned spectrogram, live"
LIVE_MEL_TITLE = "Mel spectrogram, live"
MEL_RANGE_DB = 80.0  # the live mel map shows its loudest 80 dB; quieter is black


def _levels(z: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values → 0…255: a live map travels as one byte per cell (48 kB for 6 s), not eight."""
    return np.round(np.clip((z - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)


def _level_bar(lo: float, hi: float, fmt: str, title: str, x: float) -> dict:
    ticks = np.linspace(0, 255, 5)
    return {"title": title, "x": x, "len": 0.9, "thickness": 12, "tickvals": ticks.tolist(),
            "ticktext": [format(lo + (hi - lo) * t / 255, fmt) for t in ticks]}


def live_maps(learned, mel, *, first_frame: int = 0, seconds: float = 6.0, order: Sequence[int] | None = None,
              meta: dict | None = None) -> go.Figure:
    """The Live page's scrolling pair: the newest learned and mel columns, the time axis in seconds since
    Start covering the last `seconds` (it fills from the right), drawn four times a second.

    Lean on purpose: bytes rather than floats, x as start + step rather than arrays, no per-cell hover
    data, no make_subplots; `meta` rides along (the page stamps when its audio arrived, for latency)."""
    L, M = _np(learned), _np(mel)
    if L.shape[1] != M.shape[1] or L.ndim != 2 or M.ndim != 2:
        raise ValueError(f"need two maps with the same number of columns, got {L.shape} and {M.shape}")
    rows = np.arange(L.shape[0]) if order is None else np.asarray(order)
    L = L[rows]
    l_hi = float(L.max()) if L.size else 1.0
    m_hi = float(M.max()) if M.size else 0.0
    m_lo = m_hi - MEL_RANGE_DB
    x0 = (first_frame * POOL + FRAME_CENTRE) / SAMPLE_RATE
    dx = POOL / SAMPLE_RATE
    end = x0 + max(L.shape[1] - 1, 0) * dx
    fig = go.Figure()
    fig.add_trace(go.Heatmap(z=_levels(L, 0.0, l_hi), x0=x0, dx=dx, colorscale="Viridis", zmin=0, zmax=255,
                             name="learned", xaxis="x", yaxis="y", hoverinfo="skip",
                             colorbar=_level_bar(0.0, l_hi, ".2g", "activation", 0.44)))
    fig.add_trace(go.Heatmap(z=_levels(M, m_lo, m_hi), x0=x0, dx=dx, colorscale=MAGMA, zmin=0, zmax=255,
                             name="mel", xaxis="x2", yaxis="y2", hoverinfo="skip",
                             colorbar=_level_bar(m_lo, m_hi, ".0f", "dB", 1.0)))
    axis = {"range": [end - seconds, end], "title": {"text": "time since Start (s)"}}
    fig.update_layout(
        height=340, margin={"l": 50, "r": 20, "t": 40, "b": 40}, meta=meta or {},
        xaxis={**axis, "domain": [0.0, 0.40]}, xaxis2={**axis, "domain": [0.56, 0.96], "anchor": "y2"},
        yaxis={"title": {"text": "filter (by centre frequency)" if order is not None else "filter"}},
        yaxis2={"title": {"text": "mel band (low → high)"}, "anchor": "x2"},
        annotations=[
            {"text": LIVE_LEARNED_TITLE, "x": 0.20, "y": 1.0, "xref": "paper", "yref": "paper", "xanchor": "center",
             "yanchor": "bottom", "showarrow": False, "font": {"size": 16}},
            {"text": LIVE_MEL_TITLE, "x": 0.76, "y": 1.0, "xref": "paper", "yref": "paper", "xanchor": "center",
             "yanchor": "bottom", "showarrow": False, "font": {"size": 16}},
        ],
        uirevision="live",
    )
    return fig

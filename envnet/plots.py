"""Figures for the app. Each builder takes arrays and returns a plotly go.Figure, or, for what is redrawn
on every window move or live update (the maps, the waveform, the live top classes), light HTML that a
browser draws in milliseconds. Every plot can be tested without Streamlit (tests/test_plots.py).

Time axes are in seconds, frequency axes in Hz (log scale); filter and band axes are in Hz (their centres)
when the rows are sorted by centre frequency, else indices 0–39.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import re
from collections.abc import Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import torch
from PIL import Image

from envnet.model import N_BANDS, N_FRAMES, POOL, SAMPLE_RATE, WINDOW
from envnet.spectra import FRAME_CENTRE, FrequencyResponse, centres_and_order, mel_band_centres
from envnet.teaching import conv_output_length

LEARNED_TITLE = "Learned spectrogram (40 × 150)"
MEL_TITLE = "Mel spectrogram (40 × 150)"
LOG_HZ_TICKS = (10, 30, 100, 300, 1000, 3000)  # about evenly spaced on a log axis from 10 Hz to 8 kHz
# Streamlit's chart element rewrites the colours #000001, #000002, … in a figure to its theme's palette,
# even with theme=None, and Magma starts at #000004: the quietest cells came out lavender. One shade off
# keeps them black.
MAGMA = [c if c != "#000004" else "#010005" for c in plotly.colors.sequential.Magma]
# The learned map in dB relative to its loudest cell: one bright spot no longer washes out the rest, and the
# scale reads like the mel spectrogram's. Silent cells (the ReLU's zeros) sit at the floor.
LEARNED_FLOOR_DB = -60.0
# Each figure stands alone (pages put related ones in columns, which stack on a phone). The title sits just
# above the plot, below the top-right toolbar's row, so the toolbar never covers it; legends go underneath.
TOP_MARGIN = 64
# Passed to st.plotly_chart by the pages: a short toolbar, no plotly logo.
CHART_CONFIG = {"displaylogo": False,
                "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"]}


def _layout(fig: go.Figure, title: str, height: int, *, left: int = 55, bottom: int = 45, legend: bool = False,
            right: int = 20) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xref": "container", "xanchor": "left", "y": 1, "yref": "paper",
               "yanchor": "bottom", "pad": {"b": 12, "l": 8}, "font": {"size": 15}},
        height=height, margin={"l": left, "r": right, "t": TOP_MARGIN, "b": bottom}, showlegend=legend,
    )
    if legend:  # at the very bottom, under the axis title, in rows: a legend beside a plot takes half a phone
        fig.update_layout(legend={"orientation": "h", "x": 0, "xanchor": "left", "xref": "container",
                                  "y": 0, "yanchor": "bottom", "yref": "container"})
    return fig


def hz_label(f: float) -> str:
    """A tick label: 95, 440, 1.2k, 7.5k (the axis title says Hz)."""
    if not np.isfinite(f):
        return "–"
    return f"{f:.0f}" if f < 1000 else f"{f / 1000:.1f}k".replace(".0k", "k")


def figures_html(figs: Sequence[go.Figure], heading: str = "") -> str:
    """A standalone HTML page with the figures side by side, wrapping one under the other on a narrow
    screen (what `python -m envnet inspect` writes)."""
    divs = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    cells = "".join(f'<div style="flex:1 1 420px;min-width:0">{d}</div>' for d in divs)
    title = html.escape(heading)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'></head>"
            f"<body style='font-family:sans-serif'><h3>{title}</h3>"
            f"<div style='display:flex;flex-wrap:wrap;gap:8px'>{cells}</div></body></html>")


def _hz_ticks(centres: np.ndarray, every: int = 5) -> dict:
    rows = sorted({*range(0, len(centres), every), len(centres) - 1})
    return {"tickmode": "array", "tickvals": rows, "ticktext": [hz_label(centres[r]) for r in rows]}


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


def topk_figure(top: Sequence[tuple[str, float]], title: str = "Top classes") -> go.Figure:
    """Horizontal bars, the most likely class on top, probabilities as percentages (the Live page draws the
    same as light HTML: top_classes_html)."""
    names = [c for c, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", text=[f"{p:.1%}" for p in probs],
                           textposition="auto", hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    _layout(fig, title, max(200, 45 * len(top) + 90), left=10)
    fig.update_xaxes(title_text="probability", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(automargin=True)  # class names are the labels: never clip them
    return fig


def timeline_figure(
    window_probs, starts: Sequence[int], classes: Sequence[str], *, top: int = 5, sr: int = SAMPLE_RATE,
    window: int = WINDOW, silent: Sequence[bool] | None = None,
) -> go.Figure:
    """Probability per window of the `top` most likely classes and of every class that wins a window, one
    line each, against the window's centre time (a long recording of many sounds shows all of them).
    Windows marked `silent` are left out (gaps in the lines): nothing there was loud enough to classify.
    Points carry their window index as customdata, so a click can select that window."""
    p = _np(window_probs).astype(np.float64)
    if silent is not None:
        p[np.asarray(silent, dtype=bool)] = np.nan
    heard = p[~np.isnan(p).any(1)]
    centres = (np.asarray(starts) + window / 2) / sr
    winners = set(heard.argmax(1).tolist())
    order = np.argsort(-heard.mean(0)) if len(heard) else []
    keep = [int(j) for rank, j in enumerate(order) if rank < max(1, top) or j in winners]
    fig = go.Figure()
    for j in keep:
        fig.add_trace(go.Scatter(
            x=centres, y=p[:, j], mode="lines+markers", name=classes[j], customdata=np.arange(len(centres)),
            hovertemplate=f"{classes[j]}<br>window %{{customdata}} at %{{x:.2f}} s<br>%{{y:.1%}}<extra></extra>",
        ))
    _layout(fig, "Class probabilities over time", 380, left=50, bottom=120, legend=True)
    fig.update_layout(clickmode="event+select")
    fig.update_xaxes(title_text="window centre (s)")
    fig.update_yaxes(title_text="probability", range=[0, 1], tickformat=".0%")
    return fig


def activation_db(activation, floor_db: float = LEARNED_FLOOR_DB) -> np.ndarray:
    """20·log10(activation / the loudest activation), never below floor_db: the learned map's colour scale.
    20·log10, as for an amplitude: the filters' outputs are amplitudes, and the mel's 10·log10 of power is
    the same decibel. Zeros (the ReLU's silence) and an all-zero map sit at the floor."""
    a = np.maximum(_np(activation).astype(np.float64), 0.0)
    peak = float(a.max()) if a.size else 0.0
    if peak <= 0:
        return np.full(a.shape, floor_db)
    with np.errstate(divide="ignore"):
        return np.maximum(20 * np.log10(a / peak), floor_db)


def spectrogram_pair(
    learned, mel, *, start_sample: int = 0, order: Sequence[int] | None = None, centres=None,
    learned_title: str = LEARNED_TITLE, mel_title: str = MEL_TITLE, height: int = 380,
) -> tuple[go.Figure, go.Figure]:
    """The learned 40 × 150 map and the 40 × 150 mel spectrogram of the same window, as two figures on the
    same time axis (seconds), so a page can set them side by side or, on a phone, one above the other.

    The learned map is shown in dB relative to its loudest cell (`activation_db`); hover gives the raw
    activation. `order` (filter indices sorted by centre frequency) re-stacks the learned rows so the map
    reads low-to-high like a spectrogram, and with `centres` (each filter's measured centre frequency, Hz)
    its y axis is labelled in Hz, as the mel's is at its bands' centres. Hover always names the filter.
    """
    L, M = _np(learned), _np(mel)
    if L.shape != M.shape or L.ndim != 2:
        raise ValueError(f"need two maps of the same 2-D shape, got {L.shape} and {M.shape}")
    n = L.shape[0]
    rows = np.arange(n) if order is None else np.asarray(order)
    t = frame_times(start_sample, L.shape[1])
    shape = (n, L.shape[1])
    row_centres = np.asarray(centres, dtype=float)[rows] if centres is not None else np.full(n, np.nan)
    # float32 throughout: the browser receives these arrays on every window change, and float64 doubles them
    custom = np.stack([np.broadcast_to(rows[:, None], shape), L[rows], np.broadcast_to(row_centres[:, None], shape)],
                      axis=-1).astype(np.float32)
    colorbar = {"thickness": 12, "len": 0.95, "title": {"side": "right"}}
    learned_fig = go.Figure(go.Heatmap(
        z=activation_db(L[rows]).astype(np.float32), x=t, y=np.arange(n), customdata=custom, colorscale="Viridis", name="learned",
        zmin=LEARNED_FLOOR_DB, zmax=0,
        colorbar={**colorbar, "title": {"text": "dB re loudest", "side": "right"}},
        hovertemplate="time %{x:.3f} s<br>filter %{customdata[0]}"
                      + (" (centre ≈ %{customdata[2]:.0f} Hz)" if centres is not None else "")
                      + "<br>activation %{customdata[1]:.3f} (%{z:.0f} dB)<extra></extra>",
    ))
    sorted_hz = order is not None and centres is not None
    if sorted_hz:
        learned_fig.update_yaxes(title_text="filter centre (Hz)", **_hz_ticks(row_centres))
    else:
        learned_fig.update_yaxes(title_text="filter (by centre frequency)" if order is not None else "filter")
    band_hz = mel_band_centres(M.shape[0])
    lo, hi = mel_colour_range(M)
    mel_fig = go.Figure(go.Heatmap(
        z=M, x=t, y=np.arange(M.shape[0]), colorscale=MAGMA, name="mel", zmin=lo, zmax=hi,
        customdata=np.broadcast_to(band_hz[:, None], M.shape).astype(np.float32),
        colorbar={**colorbar, "title": {"text": "dB", "side": "right"}},
        hovertemplate="time %{x:.3f} s<br>mel band %{y} (centre %{customdata:.0f} Hz)<br>%{z:.1f} dB<extra></extra>",
    ))
    mel_fig.update_yaxes(title_text="mel band centre (Hz)", **_hz_ticks(band_hz))
    for fig, title in ((learned_fig, learned_title), (mel_fig, mel_title)):
        fig.update_xaxes(title_text="time (s)")
        _layout(fig, title, height, left=60, right=10)
    return learned_fig, mel_fig


def _response_heatmap(fr: FrequencyResponse, sort: bool, colorscale: str | list[str] = "Viridis",
                      label: str = "filter") -> go.Heatmap:
    z = fr.normalised(sort=sort)
    rows = fr.order if sort else np.arange(z.shape[0])
    return go.Heatmap(
        z=z, x=fr.freqs, y=np.arange(z.shape[0]), customdata=np.repeat(np.asarray(rows)[:, None], z.shape[1], 1),
        colorscale=colorscale, zmin=0, zmax=1,
        colorbar={"title": {"text": "of its peak", "side": "right"}, "thickness": 12, "len": 0.95},
        hovertemplate=f"%{{x:.0f}} Hz<br>{label} %{{customdata}}<br>%{{z:.2f}} of its peak<extra></extra>",
    )


def log_hz_axis(fig: go.Figure, title: str = "tone frequency (Hz)") -> None:
    """A log frequency axis with a few labelled ticks (10, 30, 100, 300, 1k, 3k): plotly's own log ticks add
    small "2" and "5" labels between the decades, which crowd them on a laptop and pile up on a phone."""
    fig.update_xaxes(title_text=title, type="log", tickmode="array", tickvals=LOG_HZ_TICKS,
                     ticktext=[hz_label(f) for f in LOG_HZ_TICKS])


def _response_axes(fig: go.Figure, fr: FrequencyResponse, sort: bool, label: str, centre: str = "centre") -> None:
    log_hz_axis(fig)
    if sort:  # rows low → high: label them with their centre frequencies, as a spectrogram's axis would be
        fig.update_yaxes(title_text=f"{label} {centre} (Hz)", **_hz_ticks(np.asarray(fr.centres)[fr.order]))
    else:
        fig.update_yaxes(title_text=label)


def frequency_response_figure(fr: FrequencyResponse, *, sort: bool = False, title: str | None = None,
                              label: str = "filter", colorscale: str | list[str] = "Viridis") -> go.Figure:
    """Filters × tone frequency: how strongly each filter answers a pure tone, each scaled to its own peak."""
    fig = go.Figure(_response_heatmap(fr, sort, colorscale, label=label))
    _response_axes(fig, fr, sort, label)
    default = f"The {fr.response.shape[0]} learned filters ({'sorted' if sort else 'network order'})"
    return _layout(fig, title or default, 380, left=60, right=10)


def filterbank_comparison(learned: FrequencyResponse, mel: FrequencyResponse, *,
                          sort: bool = True) -> tuple[go.Figure, go.Figure]:
    """Learned filters and a 40-band mel filterbank, measured the same way (pure tones): two figures, each
    with the colour bar of its own colour scale (Viridis for learned things, Magma for mel ones, as on the
    spectrograms)."""
    what = "sorted by centre frequency" if sort else "in network order"
    return (frequency_response_figure(learned, sort=sort, title=f"Learned filters ({what})"),
            frequency_response_figure(mel, sort=True, title=f"Mel filterbank ({mel.response.shape[0]} bands)",
                                      label="mel band", colorscale=MAGMA))


def filter_evolution_figure(snapshots: Sequence[tuple[int, np.ndarray]], freqs, *, sort: bool = True) -> go.Figure:
    """An animation over epochs of the filters' frequency response: one plotly frame per snapshot,
    a slider and a play button. Epoch 0 is the filters before the first epoch (where training started).

    Each frame is drawn as frequency_response_figure draws one snapshot, rows ordered by the LAST snapshot's
    centre frequencies (centres_and_order, as everywhere), so a row is the same filter in every frame, you
    watch it move into place, and the y axis is in Hz (those final centres), as on the live heatmap."""
    if not snapshots:
        raise ValueError("no filter snapshots to animate")
    freqs = np.asarray(freqs)
    final = np.asarray(snapshots[-1][1])
    centres, order = centres_and_order(final, freqs)

    def response(resp) -> FrequencyResponse:
        return FrequencyResponse(freqs, np.asarray(resp), order, centres)

    def heat(resp) -> go.Heatmap:
        return _response_heatmap(response(resp), sort)

    frames = [go.Frame(data=[heat(r)], name=str(e)) for e, r in snapshots]
    fig = go.Figure(data=[heat(final)], frames=frames)
    steps = [{"label": str(e), "method": "animate",
              "args": [[str(e)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}]}
             for e, _ in snapshots]
    _layout(fig, "How the filters evolved, epoch by epoch", 540, left=60, right=10, bottom=180)
    # Under the x axis's title, never over the heatmap: the play/pause buttons, then the epoch slider on a row
    # of its own (beside the buttons it ran into them on a phone). Offsets in pixels below the plot.
    fig.update_layout(
        sliders=[{"active": len(steps) - 1, "steps": steps, "currentvalue": {"prefix": "filters after epoch "},
                  "x": 0, "len": 1, "y": 0, "yanchor": "top", "pad": {"t": 100, "b": 0}}],
        updatemenus=[{"type": "buttons", "direction": "right", "showactive": False, "x": 0, "y": 0,
                      "xanchor": "left", "yanchor": "top", "pad": {"t": 58, "r": 0}, "buttons": [
                          {"label": "▶", "method": "animate",
                           "args": [None, {"frame": {"duration": 400, "redraw": True}, "fromcurrent": False}]},
                          {"label": "❚❚", "method": "animate",
                           "args": [[None], {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}]},
                      ]}],
    )
    _response_axes(fig, response(final), sort, "filter", centre="centre at the end")
    return fig


def training_curves(history: Sequence[dict],
                    batch_losses: Sequence[tuple[float, float]] = ()) -> tuple[go.Figure, go.Figure]:
    """Loss and accuracy per epoch, as two figures; batch losses (fractional epoch, loss) as a faint line
    so the loss curve moves within the first epoch too."""
    loss, acc = go.Figure(), go.Figure()
    if batch_losses:
        bx, by = zip(*batch_losses, strict=True)
        loss.add_trace(go.Scatter(x=bx, y=by, mode="lines", name="batch", line={"width": 1, "color": "#bbb"}))
    ep = [h["epoch"] for h in history]
    loss.add_trace(go.Scatter(x=ep, y=[h["train_loss"] for h in history], mode="lines+markers", name="training",
                              line={"color": "#2f6fdf"}))
    acc.add_trace(go.Scatter(x=ep, y=[h["train_acc"] for h in history], mode="lines+markers", name="training",
                             line={"color": "#2f6fdf"}))
    val = [h for h in history if "val_acc" in h]
    if val:
        vx = [h["epoch"] for h in val]
        loss.add_trace(go.Scatter(x=vx, y=[h["val_loss"] for h in val], mode="lines+markers", name="validation",
                                  line={"color": "#e4572e"}))
        acc.add_trace(go.Scatter(x=vx, y=[h["val_acc"] for h in val], mode="lines+markers", name="validation",
                                 line={"color": "#e4572e"}))
    for fig, title in ((loss, "Loss"), (acc, "Accuracy")):
        fig.update_xaxes(title_text="epoch", dtick=1 if len(history) <= 10 else None)  # no "epoch 1.5" ticks
        _layout(fig, title, 340, legend=True, bottom=95)
    loss.update_yaxes(title_text="cross-entropy")
    acc.update_yaxes(title_text="accuracy", range=[0, 1.02], tickformat=".0%")
    return loss, acc


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str],
                     title: str = "Held-out examples: what the model said") -> go.Figure:
    """A confusion matrix as a heatmap with the count in every cell."""
    z = np.asarray(confusion, dtype=float)
    labels = [str(c) for c in classes]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, colorscale="Blues", showscale=False,
                               text=z.astype(int), texttemplate="%{text}",
                               hovertemplate="true %{y}, said %{x}: %{z:.0f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="true class")
    fig.update_xaxes(title="model said", side="bottom")
    return _layout(fig, title, max(260, 70 + 40 * len(labels)), left=90)


def kernels_figure(weights, spectra_db, freqs, *, order: Sequence[int] | None = None) -> tuple[go.Figure, go.Figure]:
    """First-layer kernels: the 8 taps of each of the 40 filters as stacked waveforms, and their magnitude
    spectra as a filters × frequency heatmap (two figures)."""
    W, D, f = _np(weights), _np(spectra_db), np.asarray(freqs)
    rows = np.arange(W.shape[0]) if order is None else np.asarray(order)
    taps_fig, spectra_fig = go.Figure(), go.Figure()
    scale = 0.45 / max(float(np.abs(W).max()), 1e-12)
    taps = np.arange(W.shape[1])
    for r, k in enumerate(rows):
        taps_fig.add_trace(go.Scatter(x=taps, y=r + W[k] * scale, mode="lines+markers", showlegend=False,
                                      line={"width": 1}, marker={"size": 3}, customdata=W[k],
                                      hovertemplate=f"filter {k}<br>tap %{{x}}: %{{customdata:.3f}}<extra></extra>"))
    spectra_fig.add_trace(go.Heatmap(
        z=D[rows], x=f, y=np.arange(len(rows)), colorscale="Viridis",
        customdata=np.repeat(rows[:, None], D.shape[1], 1),
        colorbar={"title": {"text": "dB", "side": "right"}, "thickness": 12, "len": 0.95},
        hovertemplate="%{x:.0f} Hz<br>filter %{customdata}<br>%{z:.1f} dB<extra></extra>"))
    what = "filter (by centre frequency)" if order is not None else "filter"
    taps_fig.update_xaxes(title_text="tap")
    taps_fig.update_yaxes(title_text=what)
    spectra_fig.update_xaxes(title_text="frequency (Hz)")
    spectra_fig.update_yaxes(title_text=what)
    return (_layout(taps_fig, "Kernels (8 taps each)", 560),
            _layout(spectra_fig, "Kernel magnitude spectra", 560, right=10))


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
    _layout(fig, title, 300, left=50)
    fig.update_xaxes(title_text="filter (by centre frequency)" if order is not None else "filter")
    fig.update_yaxes(title_text="mean output")
    return fig


def conv_arithmetic_figure(length: int, kernel: int, stride: int, padding: int, max_drawn: int = 24) -> go.Figure:
    """The input as a row of cells (padding grey) and the kernel's positions as bars, one per output. Up to
    `max_drawn` positions are all drawn; beyond that the first ones and the last, and the title says so."""
    n_out = conv_output_length(length, kernel, stride, padding)
    total = length + 2 * padding
    fig = go.Figure()
    colours = ["#ddd" if (i < padding or i >= padding + length) else "#6a9fd8" for i in range(total)]
    fig.add_trace(go.Bar(x=np.arange(total), y=[1] * total, marker_color=colours, name="input (grey = padding)",
                         hovertemplate="input cell %{x}<extra></extra>", width=0.9))
    drawn = list(range(n_out)) if n_out <= max_drawn else [*range(max_drawn - 1), n_out - 1]
    for row, o in enumerate(drawn):
        s = o * stride
        fig.add_shape(type="rect", x0=s - 0.45, x1=s + kernel - 0.55, y0=1.15 + 0.25 * row, y1=1.3 + 0.25 * row,
                      fillcolor="crimson", opacity=0.6, line_width=0, name=f"output {o}")
    title = f"{length} input{'s' * (length != 1)} → {n_out} output{'s' * (n_out != 1)}"
    if len(drawn) < n_out:
        title += f" ({len(drawn)} drawn)"
    _layout(fig, title, 220 + 9 * len(drawn), left=30)
    fig.update_xaxes(title_text="input position")
    fig.update_yaxes(visible=False)
    return fig


LIVE_LEARNED_TITLE = "Learned spectrogram, live"
LIVE_MEL_TITLE = "Mel spectrogram, live"
MEL_RANGE_DB = 80.0  # the mel maps show their loudest 80 dB; quieter is black
MEL_FLOOR_DB = -100.0  # the mel spectrogram's own floor (AmplitudeToDB's 1e-10 power): silence
MAP_HEIGHT = 240  # pixels of map (without its labels)
LIVE_MAP_HEIGHT = 200
WAVE_TITLE = "Waveform and analysed windows"
WAVE_HEIGHT = 140
MAX_SVG_POINTS = 2000  # min/max pairs of 1,000 buckets: more than a laptop-wide plot has pixels
# Plotly's default first colour, as the Classify page's top-classes bars have it.
BAR_COLOUR = "#636efa"
MAPS_CSS = """<style>
.envnet-maps{display:flex;flex-wrap:wrap;gap:12px 20px;font-size:12px;line-height:1.2}
.envnet-map{flex:1 1 300px;min-width:0}
.envnet-map h4,.envnet-wave h4{font-size:15px;font-weight:600;margin:0 0 6px 0;padding:0}
.envnet-grid{display:grid;grid-template-columns:14px 36px minmax(0,1fr) 8px 10px 28px 14px}
.envnet-grid>*{grid-row:1}
.envnet-vt{writing-mode:vertical-rl;transform:rotate(180deg);text-align:center;opacity:.75;white-space:nowrap;
  overflow:hidden}
.envnet-ticks{position:relative}
.envnet-ticks span{position:absolute;white-space:nowrap;opacity:.75}
.envnet-y span{right:4px;transform:translateY(50%)}
.envnet-c span{left:4px;transform:translateY(50%)}
.envnet-grid>.envnet-x{grid-row:2;grid-column:3;height:16px}
.envnet-x span{top:2px;transform:translateX(-50%)}
.envnet-grid>.envnet-xtitle{grid-row:3;grid-column:3;text-align:center;opacity:.75}
.envnet-plot{position:relative;display:flex;justify-content:flex-end;background:rgba(128,128,128,.12)}
.envnet-plot img{display:block;height:100%;image-rendering:pixelated}
.envnet-nobar{grid-template-columns:14px 36px minmax(0,1fr) 8px}
.envnet-wave{font-size:12px;line-height:1.2}
.envnet-wave .envnet-plot{background:none}
.envnet-wave img{width:100%;image-rendering:auto}
.envnet-topk{font-size:14px;max-width:560px}
.envnet-topk b{display:block;font-size:16px;margin:0 0 8px 0}
.envnet-bars{display:grid;grid-template-columns:max-content minmax(0,1fr) 3.6em;gap:6px 8px;align-items:center}
.envnet-bar{display:contents}
.envnet-bar div{height:16px;background:rgba(128,128,128,.15)}
.envnet-bar div div{height:100%}
.envnet-bar span:last-child{text-align:right}
.envnet-none{margin-top:8px;opacity:.75}
</style>"""


@functools.cache
def colour_table(colorscale: str | tuple[str, ...]) -> np.ndarray:
    """256 RGB colours (uint8) sampled from a plotly colour scale ("Viridis", or a tuple of colours such as
    MAGMA): level 0 is the scale's bottom, level 255 its top, interpolated as plotly interpolates."""
    scale = plotly.colors.make_colorscale(list(colorscale)) if isinstance(colorscale, tuple) else \
        plotly.colors.get_colorscale(colorscale)
    rgb = plotly.colors.sample_colorscale(scale, list(np.linspace(0, 1, 256)))
    table = np.array([[float(v) for v in re.findall(r"[\d.]+", c)] for c in rgb])
    out = np.round(table).astype(np.uint8)
    out.flags.writeable = False
    return out


def map_png(levels: np.ndarray, colorscale: str | tuple[str, ...]) -> bytes:
    """A map of byte levels (rows × columns, row 0 the lowest band) as a palette PNG, one pixel per cell,
    the lowest band at the bottom: a 40 × 600 map of a noisy room is ~19 kB, which a browser decodes in a
    millisecond (plotly sent the same map as 48 kB of bytes in base64, plus the chart to redraw)."""
    levels = np.ascontiguousarray(np.asarray(levels, dtype=np.uint8)[::-1])
    if levels.ndim != 2 or 0 in levels.shape:
        raise ValueError(f"need a non-empty 2-D map of levels, got shape {levels.shape}")
    image = Image.fromarray(levels, mode="P")
    image.putpalette(colour_table(colorscale).tobytes())
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # ~1 ms; what size there is, is the map's detail: levels 1-9 differ by 1 %
    return buf.getvalue()


def _levels(z: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values → 0…255 on the colour scale from lo to hi."""
    return np.round(np.clip((z - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _ticks(cls: str, labels: Sequence[tuple[float, str]], side: str, column: int | None = None) -> str:
    """Labels at fractions of an axis: `side` "bottom" (y axes, 0 = the bottom) or "left" (the time axis)."""
    spans = "".join(f'<span style="{side}:{_pct(f)}">{html.escape(t)}</span>' for f, t in labels)
    where = f' style="grid-column:{column}"' if column else ""
    return f'<div class="envnet-ticks {cls}"{where}>{spans}</div>'


def _time_ticks(left: float, right: float, most: int = 6) -> list[tuple[float, str]]:
    """Round times (0.5 s, 1 s, 2 s … apart, at most `most` steps) as (fraction of the axis, label)."""
    span = max(right - left, 1e-9)
    step = next((s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60) if span / s <= most), 120)
    first, last = math.ceil((left - span / 100) / step), math.floor((right + span / 100) / step)
    return [((k * step - left) / span, f"{k * step:g}") for k in range(first, last + 1)]


def mel_colour_range(mel) -> tuple[float, float]:
    """The mel map's colour range: its loudest MEL_RANGE_DB, but never a top below MEL_FLOOR_DB + MEL_RANGE_DB,
    so that silence (every cell at the floor) is drawn black rather than as its own loudest cell."""
    m = _np(mel)
    hi = max(float(m.max()) if m.size else MEL_FLOOR_DB, MEL_FLOOR_DB + MEL_RANGE_DB)
    return hi - MEL_RANGE_DB, hi


def map_html(values, kind: str, *, start_sample: int = 0, seconds: float | None = None,
             order: Sequence[int] | None = None, centres=None, title: str | None = None, x_title: str = "time (s)",
             height: int = MAP_HEIGHT, data: dict | None = None) -> str:
    """A learned (kind "learned") or mel ("mel") map as HTML: a PNG with one pixel per cell, rows in Hz at
    the left, a colour bar at the right and the time axis below, all plain HTML text. Its first column is the
    frame that starts at `start_sample`; with `seconds` (the Live page's scrolling view), the newest columns
    fill the last `seconds` from the right.

    The learned map in Viridis, dB re its loudest cell down to LEARNED_FLOOR_DB, rows re-stacked low → high
    by `order` and labelled in Hz with `centres`; the mel map in Magma over its loudest MEL_RANGE_DB. The
    same colours and scales as the interactive charts (spectrogram_pair), drawn in milliseconds where a
    plotly heatmap took the browser ~0.4 s on every window change (benchmarks/README.md).

    The outer element carries data-kind, data-columns, data-start (start_sample) and any `data` given."""
    if kind not in ("learned", "mel"):
        raise ValueError(f"kind must be 'learned' or 'mel', not {kind!r}")
    z = _np(values)
    if z.ndim != 2:
        raise ValueError(f"need a 2-D map (bands × frames), got shape {z.shape}")
    n, cols = z.shape
    if kind == "learned":
        rows = np.arange(n) if order is None else np.asarray(order)
        z, lo, hi, colours, bar = activation_db(z[rows]), LEARNED_FLOOR_DB, 0.0, "Viridis", "dB re loudest"
        if order is not None and centres is not None:
            row_hz, ytitle = np.asarray(centres, dtype=float)[rows], "filter centre (Hz)"
        else:
            row_hz, ytitle = None, "filter (by centre frequency)" if order is not None else "filter"
    else:
        (lo, hi), colours, bar = mel_colour_range(z), tuple(MAGMA), "dB"
        row_hz, ytitle = mel_band_centres(n), "mel band centre (Hz)"
    title = title or (LEARNED_TITLE if kind == "learned" else MEL_TITLE)
    span = max(1, cols) if seconds is None else max(1, round(seconds * SAMPLE_RATE / POOL))  # columns across
    dx = POOL / SAMPLE_RATE
    # The right edge is the newest column's right edge (columns centred at frame_times); before any sound,
    # the first `seconds`.
    right = (start_sample + (cols - 1) * POOL + FRAME_CENTRE) / SAMPLE_RATE + dx / 2 if cols else span * dx
    left = right - span * dx
    picks = sorted({*range(0, n, 5), n - 1}) if n else []
    ylabels = [((r + 0.5) / n, hz_label(row_hz[r]) if row_hz is not None else str(r)) for r in picks]
    cticks = [(f, f"{lo + (hi - lo) * f:.0f}") for f in np.linspace(0, 1, 5)]
    table = colour_table(colours)
    gradient = ",".join(f"rgb({r},{g},{b}) {_pct(i / 255)}" for i in (*range(0, 255, 17), 255)
                        for r, g, b in [table[i].tolist()])
    if cols:
        png = base64.b64encode(map_png(_levels(z[:, -span:], lo, hi), colours)).decode("ascii")
        img = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{png}" ' \
              f'style="width:{_pct(min(cols, span) / span)}">'
    else:
        img = ""
    attrs = "".join(f' data-{k}="{html.escape(str(v))}"' for k, v in
                    {"kind": kind, "columns": min(cols, span), "start": start_sample, **(data or {})}.items())
    return (
        f'<div class="envnet-map"{attrs}><h4>{html.escape(title)}</h4><div class="envnet-grid">'
        f'<div class="envnet-vt" style="grid-column:1;height:{height}px">{html.escape(ytitle)}</div>'
        f'{_ticks("envnet-y", ylabels, "bottom", 2)}'
        f'<div class="envnet-plot" style="grid-column:3;height:{height}px">{img}</div>'
        f'<div style="grid-column:5;background:linear-gradient(to top,{gradient})"></div>'
        f'{_ticks("envnet-c", cticks, "bottom", 6)}'
        f'<div class="envnet-vt" style="grid-column:7">{html.escape(bar)}</div>'
        f'{_ticks("envnet-x", _time_ticks(left, right), "left")}'
        f'<div class="envnet-xtitle">{html.escape(x_title)}</div>'
        f'</div></div>'
    )


def maps_html(learned, mel, *, start_sample: int = 0, order: Sequence[int] | None = None, centres=None,
              learned_title: str | None = None, mel_title: str | None = None, **kwargs) -> str:
    """The learned and mel maps of the same samples (map_html), side by side on a laptop and one above the
    other on a phone, in one piece of HTML: the browser replaces both at once, so they always show the same
    moment."""
    maps = [map_html(learned, "learned", start_sample=start_sample, order=order, centres=centres,
                     title=learned_title, **kwargs),
            map_html(mel, "mel", start_sample=start_sample, title=mel_title, **kwargs)]
    return f'{MAPS_CSS}<div class="envnet-maps">{"".join(maps)}</div>'


def live_maps_html(learned, mel, *, first_frame: int = 0, seconds: float = 6.0, order: Sequence[int] | None = None,
                   centres=None, arrived: float = 0.0, drawn: float = 0.0) -> str:
    """The Live page's two scrolling maps: the last `seconds` of the stream, its column `first_frame` first,
    with the time since Start below. data-arrived (the server's time.time() when the newest audio in them
    arrived) and data-drawn (when the page drew them) let benchmarks/live.py compare them with the browser's
    clock to see where the time from sound to screen goes."""
    return maps_html(learned, mel, start_sample=first_frame * POOL, order=order, centres=centres, seconds=seconds,
                     x_title="time since Start (s)", height=LIVE_MAP_HEIGHT, learned_title=LIVE_LEARNED_TITLE,
                     mel_title=LIVE_MEL_TITLE,
                     data={"first-frame": first_frame, "arrived": f"{arrived:.3f}", "drawn": f"{drawn:.3f}"})


def waveform_html(wave, starts: Sequence[int] = (), selected: int | None = None, *, sr: int = SAMPLE_RATE,
                  window: int = WINDOW, title: str = WAVE_TITLE, height: int = WAVE_HEIGHT) -> str:
    """The clip as a line (min/max per bucket, so every peak stays), each analysed window as a shaded band
    and the selected one outlined in red: an SVG image under HTML axes, which a browser redraws in a
    millisecond when the window moves (the plotly chart took ~0.3 s, all 4,000 points drawn again).
    An image, not inline SVG: Streamlit's st.html removes <svg>. The outer element carries data-selected
    and data-windows."""
    w = _np(wave).reshape(-1)
    idx, vals = _envelope(w, MAX_SVG_POINTS)
    x0 = min([0, *starts]) / sr
    x1 = max(max([len(w), *(s + window for s in starts)]) / sr, x0 + 1 / sr)

    def band(s: int, chosen: bool) -> str:
        look = 'fill="crimson" fill-opacity=".25" stroke="crimson" stroke-width="2" vector-effect="non-scaling-stroke"' \
            if chosen else 'fill="royalblue" fill-opacity=".07"'
        return f'<rect x="{s / sr:.4f}" y="-1.05" width="{window / sr:.4f}" height="2.1" {look}/>'

    bands = "".join(band(s, False) for i, s in enumerate(starts) if i != selected)
    if selected is not None and 0 <= selected < len(starts):
        bands += band(starts[selected], True)  # last, so its outline is on top
    # SVG's y axis points down; 0.0 - v also turns -0.0 into 0.0
    line = " ".join(f"{i / sr:.4f},{0.0 - v:.3f}" for i, v in zip(idx.tolist(), vals.tolist(), strict=True))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{x0:.4f} -1.05 {x1 - x0:.4f} 2.1" '
           f'preserveAspectRatio="none">{bands}<polyline points="{line}" fill="none" stroke="{BAR_COLOUR}" '
           f'stroke-width="1" vector-effect="non-scaling-stroke"/></svg>')
    src = base64.b64encode(svg.encode()).decode("ascii")
    yticks = [((v + 1.05) / 2.1, f"{v:g}") for v in (-1, -0.5, 0, 0.5, 1)]
    return (
        f'{MAPS_CSS}<div class="envnet-wave" data-selected="{-1 if selected is None else selected}" '
        f'data-windows="{len(starts)}"><h4>{html.escape(title)}</h4><div class="envnet-grid envnet-nobar">'
        f'<div class="envnet-vt" style="grid-column:1;height:{height}px">amplitude</div>'
        f'{_ticks("envnet-y", yticks, "bottom", 2)}'
        f'<div class="envnet-plot" style="grid-column:3;height:{height}px">'
        f'<img alt="{html.escape(title)}" src="data:image/svg+xml;base64,{src}"></div>'
        f'{_ticks("envnet-x", _time_ticks(x0, x1), "left")}'
        f'<div class="envnet-xtitle">time (s)</div>'
        f'</div></div>'
    )


def top_classes_html(top: Sequence[tuple[str, float]], headline: str = "", none_of_these: float | None = None) -> str:
    """The top classes as light HTML bars, most likely first, each with its probability (what the Classify
    page's topk_figure shows, cheap enough to redraw five times a second), under a bold `headline` (the
    verdict), and `none_of_these` (a model with that output) on a line of its own. Class names are escaped:
    a visitor names the classes of a model they train."""
    rows = "".join(
        f'<div class="envnet-bar" data-class="{html.escape(name)}" data-p="{p:.4f}"><span>{html.escape(name)}</span>'
        f'<div><div style="width:{_pct(min(max(p, 0.0), 1.0))};background:{BAR_COLOUR}"></div></div>'
        f'<span>{p:.1%}</span></div>'
        for name, p in top)
    head = f"<b>{html.escape(headline)}</b>" if headline else ""
    # A line, not a bar among the classes: it is no class, and with it near 100 % the bars are all empty.
    rest = "" if none_of_these is None else f'<div class="envnet-none">“None of these”: {none_of_these:.1%}</div>'
    return f'{MAPS_CSS}<div class="envnet-topk">{head}<div class="envnet-bars">{rows}</div>{rest}</div>'


def warm_up() -> None:
    """Build and serialise the Classify page's figures once, from stand-in data, so that plotly's lazily
    imported validators and encoders (0.46 s for the first set in a process against 0.15 s later, measured
    under load) are loaded before a visitor's first upload waits for them; likewise the maps' PNG encoder.
    Returns nothing, keeps nothing."""
    maps = torch.ones(N_BANDS, N_FRAMES)
    figs = [topk_figure([("a", 0.5), ("b", 0.5)]), timeline_figure(torch.full((2, 2), 0.5), [0, WINDOW], ["a", "b"]),
            *spectrogram_pair(maps, maps)]
    for fig in figs:
        fig.to_json()
    maps_html(maps, maps)  # Pillow's PNG encoder
    waveform_html(torch.zeros(2 * WINDOW), [0, WINDOW], 0)

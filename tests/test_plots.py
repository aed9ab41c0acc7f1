"""The app's figure builders, without Streamlit: trace types, shapes, axes, and the numbers they show."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import torchaudio.functional as AF
from apptools import read_maps
from plotly.utils import PlotlyJSONEncoder

from envnet import plots
from envnet.model import N_BANDS, N_FRAMES, SAMPLE_RATE, WINDOW, build_model
from envnet.spectra import (
    FrequencyResponse,
    centres_and_order,
    kernel_spectra,
    learned_spectrogram,
    mel_band_centres,
    mel_spectrogram,
    tone,
)
from envnet.teaching import conv_output_length


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(n_classes=3, fc_width=64).eval()


def fake_response(n: int = 40, n_freqs: int = 30, seed: int = 0) -> FrequencyResponse:
    rng = np.random.default_rng(seed)
    freqs = np.geomspace(10, 8000, n_freqs)
    peaks = rng.permutation(n) % n_freqs
    response = np.exp(-0.5 * ((np.arange(n_freqs)[None] - peaks[:, None]) / 2.0) ** 2)
    order = np.argsort(peaks, kind="stable")
    return FrequencyResponse(freqs, response, order, freqs[peaks])


def test_spectrogram_pair_is_two_40x150_heatmaps_on_the_same_time_axis(model):
    win = tone(1000.0)
    learned, mel = learned_spectrogram(model, win), mel_spectrogram(win)
    figs = plots.spectrogram_pair(learned, mel, start_sample=16_000)
    assert len(figs) == 2  # two figures: side by side on a laptop, stacked on a phone
    heat = [f.data[0] for f in figs]
    assert all(isinstance(h, go.Heatmap) for h in heat)
    assert [np.asarray(h.z).shape for h in heat] == [(N_BANDS, N_FRAMES)] * 2
    np.testing.assert_allclose(heat[0].x, heat[1].x)
    # Frame i of the window starting at 1 s is centred at sample 16000 + 160 i + 87.
    assert heat[0].x[0] == pytest.approx((16_000 + 87) / SAMPLE_RATE)
    assert heat[0].x[-1] - heat[0].x[0] == pytest.approx(149 * 0.01)
    assert [f.layout.title.text for f in figs] == [plots.LEARNED_TITLE, plots.MEL_TITLE]
    assert all(f.layout.xaxis.title.text == "time (s)" for f in figs)
    for h in heat:
        assert "s" in h.hovertemplate and "%{z" in h.hovertemplate
    # Unsorted: rows in network order; hover carries the raw activation beside the dB colour.
    np.testing.assert_allclose(np.asarray(heat[0].customdata)[..., 1], learned.numpy(), rtol=1e-6)
    assert figs[0].layout.yaxis.title.text == "filter"


def test_learned_map_is_in_db_below_its_loudest_cell_so_one_bright_spot_does_not_wash_out_the_rest():
    learned = np.full((40, 150), 0.1)
    learned[5, 7] = 100.0  # one spot a thousand times louder than the background
    learned[6, :] = 1.0  # a faint line: on a linear scale 1 % of the colour range, invisible
    learned[7, :] = 0.0  # the ReLU's silence
    z = np.asarray(plots.spectrogram_pair(learned, np.zeros((40, 150)))[0].data[0].z)
    assert plots.LEARNED_FLOOR_DB <= -60
    assert z[5, 7] == 0.0 and z[6, 0] == pytest.approx(-40.0) and z[0, 0] == pytest.approx(-60.0)
    assert (z[6, 0] - z[0, 0]) / -plots.LEARNED_FLOOR_DB >= 0.3  # the line is a third of the scale above the rest
    assert np.all(z[7] == plots.LEARNED_FLOOR_DB) and z.min() >= plots.LEARNED_FLOOR_DB
    assert np.all(plots.activation_db(np.zeros((3, 3))) == plots.LEARNED_FLOOR_DB)  # silence: no NaN, no crash


def test_both_maps_label_their_rows_in_hz_learned_filters_at_their_measured_centres():
    learned = np.arange(40)[:, None] * np.ones((1, 150))
    centres = np.geomspace(100, 7000, 40)[::-1].copy()  # filter 0 is the highest
    centres[3] = np.nan  # a dead filter
    order = np.argsort(np.nan_to_num(centres, nan=np.inf))
    learned_fig, mel_fig = plots.spectrogram_pair(learned, np.zeros((40, 150)), order=order, centres=centres)
    y = learned_fig.layout.yaxis
    assert "Hz" in y.title.text
    shown = {v: t for v, t in zip(y.tickvals, y.ticktext, strict=True)}
    assert shown[0] == plots.hz_label(centres[order[0]]) == "100"
    assert shown[39] == "–"  # the dead filter sorts last and has no centre
    hz = [float(t.replace("k", "e3")) for v, t in shown.items() if t != "–"]
    assert hz == sorted(hz)  # low to high, as on a spectrogram
    z = np.asarray(learned_fig.data[0].z)
    assert np.asarray(learned_fig.data[0].customdata)[0, 0, 0] == order[0]  # hover names the original filter
    # Rows re-stacked: filter 39 (lowest centre, the loudest here) first, filter 0 (silent) next to last.
    assert z[0, 0] == 0.0 and z[-2, 0] == plots.LEARNED_FLOOR_DB
    m = mel_fig.layout.yaxis
    assert "Hz" in m.title.text
    band_hz = mel_band_centres(40)
    assert [plots.hz_label(band_hz[v]) for v in m.tickvals] == list(m.ticktext)
    with pytest.raises(ValueError):
        plots.spectrogram_pair(np.zeros((40, 150)), np.zeros((40, 149)))


def test_mel_band_centres_are_where_the_filterbank_peaks():
    fb = AF.melscale_fbanks(4001, 0.0, SAMPLE_RATE / 2, N_BANDS, SAMPLE_RATE).numpy()  # 2 Hz bins
    peaks = np.linspace(0, SAMPLE_RATE / 2, 4001)[fb.argmax(0)]
    np.testing.assert_allclose(mel_band_centres(N_BANDS), peaks, atol=2.0)


def waveform(markup: str) -> dict:
    """waveform_html's markup read as a browser would: the bands (outlined or not, start, width) in drawing
    order, the line's points (time, amplitude), the tick labels."""
    svg = base64.b64decode(re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', markup).group(1)).decode()
    rects = [("stroke" in attrs, float(x), float(w)) for x, w, attrs in
             re.findall(r'<rect x="([\d.-]+)" y="[^"]*" width="([\d.]+)" height="[^"]*"([^>]*)>', svg)]
    pts = np.array([[float(v) for v in p.split(",")] for p in
                    re.search(r'<polyline points="([^"]*)"', svg).group(1).split()])
    ticks = {cls: re.findall(r"<span[^>]*>([^<]*)</span>", body)
             for cls, body in re.findall(r'class="envnet-ticks envnet-(\w)"[^>]*>(.*?)</div>', markup)}
    return {"rects": rects, "t": pts[:, 0], "y": -pts[:, 1], "ticks": ticks,
            "selected": int(re.search(r'data-selected="(-?\d+)"', markup).group(1))}


def test_waveform_marks_each_window_and_outlines_the_selected_one():
    wave = torch.zeros(3 * SAMPLE_RATE)
    starts = [0, 8000, 23986]
    w = waveform(plots.waveform_html(wave, starts, selected=1))
    assert w["selected"] == 1
    assert [outlined for outlined, _, _ in w["rects"]] == [False, False, True]  # the selected one on top
    assert w["rects"][-1][1:] == pytest.approx((0.5, WINDOW / SAMPLE_RATE), abs=1e-4)
    assert w["ticks"]["x"] == ["0", "0.5", "1", "1.5", "2", "2.5", "3"]
    assert w["ticks"]["y"] == ["-1", "-0.5", "0", "0.5", "1"]
    assert "Waveform and analysed windows" in plots.waveform_html(wave)


def test_waveform_downsampling_keeps_the_peaks():
    wave = np.zeros(60 * SAMPLE_RATE, dtype=np.float32)
    wave[123_457] = 0.9
    wave[700_001] = -0.8
    w = waveform(plots.waveform_html(wave))
    assert len(w["y"]) <= plots.MAX_SVG_POINTS
    assert w["y"].max() == pytest.approx(0.9) and w["y"].min() == pytest.approx(-0.8)
    assert w["t"].max() <= 60.0 and w["ticks"]["x"][-1] == "60"


def test_topk_bars_sorted_best_on_top():
    fig = plots.topk_figure([("dog", 0.7), ("rain", 0.2), ("rooster", 0.1)])
    bar = fig.data[0]
    assert isinstance(bar, go.Bar) and bar.orientation == "h"
    assert list(bar.y) == ["rooster", "rain", "dog"]  # plotly draws the last category at the top
    assert list(bar.text)[-1] == "70.0%"


def test_timeline_one_line_per_top_class_and_per_winner_with_window_indices():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    fig = plots.timeline_figure(p, [0, 8000, 16000, 24000], ["a", "b", "c"], top=2)
    # The two highest mean probabilities, best first, and c, which is not among them but wins window 2: a long
    # recording of many sounds shows every one that wins somewhere.
    assert [t.name for t in fig.data] == ["b", "a", "c"]
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    assert list(fig.data[0].customdata) == [0, 1, 2, 3]
    np.testing.assert_allclose(fig.data[0].x[0], WINDOW / 2 / SAMPLE_RATE)
    assert fig.layout.yaxis.title.text == "probability"


def test_timeline_leaves_silent_windows_out():
    p = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    fig = plots.timeline_figure(p, [0, 8000, 16000], ["a", "b", "c"], top=1, silent=[False, True, False])
    # b only "wins" the silent window: it is not drawn, and no line has a point there.
    assert [t.name for t in fig.data] == ["a", "c"]
    assert all(np.isnan(t.y[1]) and not np.isnan(t.y[0]) for t in fig.data)
    assert plots.timeline_figure(p, [0, 8000, 16000], ["a", "b", "c"], silent=[True] * 3).data == ()


def test_a_silent_mel_map_is_drawn_black_and_a_loud_one_over_its_loudest_80_db():
    silent = torch.full((40, 150), plots.MEL_FLOOR_DB)
    lo, hi = plots.mel_colour_range(silent)
    assert lo == plots.MEL_FLOOR_DB and hi == plots.MEL_FLOOR_DB + 80  # every cell at the bottom colour
    assert plots.mel_colour_range(torch.linspace(-60, 30, 6000).reshape(40, 150)) == (-50.0, 30.0)


def test_frequency_response_heatmap_sorting_puts_low_centres_first():
    fr = fake_response()
    fig = plots.frequency_response_figure(fr, sort=True)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (40, 30)
    peaks = z.argmax(1)
    assert np.all(np.diff(peaks) >= 0)  # sorted rows: centre frequency rises down the stack
    assert z.max(1) == pytest.approx(np.ones(40))  # each filter scaled to its own peak
    assert fig.layout.xaxis.type == "log" and "Hz" in fig.layout.xaxis.title.text
    unsorted = np.asarray(plots.frequency_response_figure(fr, sort=False).data[0].z)
    assert not np.all(np.diff(unsorted.argmax(1)) >= 0)


def test_filterbank_comparison_two_figures_each_with_the_colour_bar_of_its_own_scale():
    learned_fig, mel_fig = plots.filterbank_comparison(fake_response(seed=1), fake_response(seed=2))
    heat = [learned_fig.data[0], mel_fig.data[0]]
    assert all(isinstance(h, go.Heatmap) and np.asarray(h.z).shape == (40, 30) for h in heat)
    assert learned_fig.layout.xaxis.type == "log" and mel_fig.layout.xaxis.type == "log"
    assert mel_fig.layout.title.text == "Mel filterbank (40 bands)"
    # Once the mel map was drawn in Magma beside a Viridis colour bar: now each shows its own bar.
    assert all(h.showscale is not False for h in heat)
    assert heat[1].colorscale == go.Heatmap(colorscale=plots.MAGMA).colorscale != heat[0].colorscale
    assert "Hz" in learned_fig.layout.yaxis.title.text and "Hz" in mel_fig.layout.yaxis.title.text


def test_filter_evolution_has_one_frame_per_epoch_and_a_slider():
    freqs = np.geomspace(10, 8000, 30)
    snaps = [(e, fake_response(seed=e).response) for e in range(4)]
    fig = plots.filter_evolution_figure(snaps, freqs)
    assert [f.name for f in fig.frames] == ["0", "1", "2", "3"]
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "1", "2", "3"]
    assert np.asarray(fig.frames[2].data[0].z).shape == (40, 30)
    # Rows follow the final epoch's order in every frame: the last frame reads low → high.
    assert np.all(np.diff(np.asarray(fig.frames[-1].data[0].z).argmax(1)) >= 0)
    # The play/pause buttons and the slider sit under the heatmap (paper y < 0), never over it.
    for widget in (fig.layout.updatemenus[0], fig.layout.sliders[0]):
        assert widget.y <= 0 and widget.yanchor == "top" and widget.pad.t > 40
    assert fig.layout.sliders[0].pad.t > fig.layout.updatemenus[0].pad.t + 30  # a row each: they never overlap
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["▶", "❚❚"]
    with pytest.raises(ValueError):
        plots.filter_evolution_figure([], freqs)


def test_filter_evolution_labels_its_rows_in_hz_as_the_live_heatmap_does():
    """The heatmap after a run once numbered its rows 0–39 while the live one during the run showed Hz: both
    now come from one builder, rows in the final snapshot's centre-frequency order, ticks at those centres."""
    freqs = np.geomspace(10, 8000, 30)
    snaps = [(e, fake_response(seed=e).response) for e in range(3)]
    fig = plots.filter_evolution_figure(snaps, freqs)
    centres, order = centres_and_order(snaps[-1][1], freqs)
    live = plots.frequency_response_figure(FrequencyResponse(freqs, snaps[-1][1], order, centres), sort=True)
    assert list(fig.layout.yaxis.ticktext) == list(live.layout.yaxis.ticktext)
    assert list(fig.layout.yaxis.tickvals) == list(live.layout.yaxis.tickvals)
    assert all(re.fullmatch(r"\d+(\.\d)?k?", t) for t in fig.layout.yaxis.ticktext)  # "95", "1.2k": Hz, not rows
    assert "Hz" in fig.layout.yaxis.title.text
    np.testing.assert_allclose(np.asarray(fig.frames[-1].data[0].z), np.asarray(live.data[0].z))
    # Hover names the filter (its network index) in every frame, not a row number.
    assert np.asarray(fig.frames[0].data[0].customdata)[:, 0].tolist() == list(order)
    # The slider says what its numbers are: the filters after that epoch, epoch 0 being the start.
    assert fig.layout.sliders[0].currentvalue.prefix == "filters after epoch "


def test_log_frequency_axes_show_only_a_few_readable_ticks():
    """Plotly's own log ticks put small "2" and "5" labels between the decades, crowding them at 1400 px."""
    freqs = np.geomspace(10, 8000, 30)
    figs = [plots.frequency_response_figure(fake_response()),
            *plots.filterbank_comparison(fake_response(seed=1), fake_response(seed=2)),
            plots.filter_evolution_figure([(0, fake_response().response)], freqs)]
    for fig in figs:
        axis = fig.layout.xaxis
        assert axis.type == "log" and axis.tickmode == "array"
        assert list(axis.ticktext) == ["10", "30", "100", "300", "1k", "3k"]
        # Evenly spread on the log axis: no two labels closer than 0.45 of a decade.
        assert np.diff(np.log10(axis.tickvals)).min() >= 0.45


def test_training_curves_loss_and_accuracy_figures_with_legends_underneath():
    hist = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.4},
            {"epoch": 2, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.7, "val_acc": 0.6}]
    loss, acc = plots.training_curves(hist, [(0.5, 1.2), (1.0, 0.9)])
    assert [t.name for t in loss.data] == ["batch", "training", "validation"]
    assert [t.name for t in acc.data] == ["training", "validation"]
    assert list(acc.data[1].x) == [2] and list(acc.data[1].y) == [0.6]
    assert [loss.layout.title.text, acc.layout.title.text] == ["Loss", "Accuracy"]
    assert loss.layout.xaxis.title.text == "epoch" and acc.layout.yaxis.title.text == "accuracy"
    for fig in (loss, acc):  # a legend beside the plot took half a phone's width
        assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"


def test_kernels_figure_shows_40_kernels_and_their_spectra(model):
    w, db, freqs = kernel_spectra(model)
    taps, spectra = plots.kernels_figure(w, db, freqs)
    lines = [t for t in taps.data if isinstance(t, go.Scatter)]
    heat = [t for t in spectra.data if isinstance(t, go.Heatmap)]
    assert len(lines) == 40 and all(len(t.x) == 8 for t in lines)
    assert np.asarray(heat[0].z).shape == (40, 257)
    # Each kernel is drawn around its row: subtracting the row gives back the (scaled) taps.
    scale = 0.45 / np.abs(w).max()
    np.testing.assert_allclose((np.asarray(lines[3].y) - 3) / scale, w[3], rtol=1e-5, atol=1e-6)


def test_filter_activity_bars_and_conv_demo():
    fig = plots.filter_activity_figure(np.arange(40.0), np.linspace(100, 4000, 40), order=np.arange(40)[::-1])
    assert isinstance(fig.data[0], go.Bar) and fig.data[0].y[0] == 39
    demo = plots.conv_arithmetic_figure(10, 3, 2, 1)
    assert "→ 5 outputs" in demo.layout.title.text
    assert plots.conv_arithmetic_figure(1, 1, 1, 0).layout.title.text.startswith("1 input → 1 output")  # not "1 inputs"
    assert len([s for s in demo.layout.shapes if s.type == "rect"]) == 5


@pytest.mark.parametrize("length,kernel,stride,padding", [(24, 8, 1, 0), (10, 3, 2, 1), (30, 1, 1, 0), (400, 8, 1, 0)])
def test_conv_demo_draws_as_many_positions_as_it_says(length, kernel, stride, padding):
    """It once said "→ 17 outputs" and drew 12 kernel positions."""
    fig = plots.conv_arithmetic_figure(length, kernel, stride, padding)
    n_out = conv_output_length(length, kernel, stride, padding)
    drawn = [s for s in fig.layout.shapes if s.type == "rect"]
    title = fig.layout.title.text
    assert f"→ {n_out} outputs" in title
    if len(drawn) < n_out:  # too many to draw: the title says how many are drawn, and it is true
        assert f"({len(drawn)} drawn)" in title and drawn[-1].name == f"output {n_out - 1}"
    else:
        assert len(drawn) == n_out
    # Every drawn position is a real one: inside the padded input, `stride` apart.
    assert all(-0.5 < r.x0 and r.x1 < length + 2 * padding for r in drawn)


@pytest.mark.parametrize("length,kernel,stride,padding,expected", [
    (24014, 8, 1, 0, 24007), (24007, 8, 1, 0, 24000), (24000, 160, 160, 0, 150), (10, 3, 2, 1, 5),
    (5, 7, 1, 0, 0), (5, 7, 1, 1, 1),
])
def test_conv_output_length(length, kernel, stride, padding, expected):
    assert conv_output_length(length, kernel, stride, padding) == expected
    if expected:  # the formula agrees with PyTorch
        out = torch.nn.functional.conv1d(torch.zeros(1, 1, length), torch.zeros(1, 1, kernel), stride=stride,
                                         padding=padding)
        assert out.shape[-1] == expected


def every_figure(model) -> list[go.Figure]:
    win = tone(1000.0)
    w, db, freqs = kernel_spectra(model)
    return [
        *plots.spectrogram_pair(learned_spectrogram(model, win), mel_spectrogram(win)),
        *plots.filterbank_comparison(fake_response(seed=1), fake_response(seed=2)),
        plots.frequency_response_figure(fake_response(), sort=True),
        plots.filter_evolution_figure([(e, fake_response(seed=e).response) for e in range(2)], np.geomspace(10, 8000, 30)),
        *plots.kernels_figure(w, db, freqs),
        plots.filter_activity_figure(np.arange(40.0), np.linspace(100, 4000, 40)),
        plots.topk_figure([("a", 0.7), ("b", 0.3)]),
        plots.timeline_figure(torch.full((3, 2), 0.5), [0, 8000, 16000], ["a", "b"]),
        *plots.training_curves([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.4}], [(0.5, 1.2)]),
        plots.conv_arithmetic_figure(10, 3, 2, 1),
        plots.confusion_figure([[3, 0], [1, 2]], ["clap", "knock"]),
    ]


def test_no_figure_uses_a_colour_that_streamlit_rewrites(model):
    """Streamlit's chart element replaces #000001, #000002, … in a figure with its theme palette (even with
    theme=None). Magma starts at #000004, which turned the quietest mel cells lavender in the app."""
    figures = every_figure(model)
    for fig in figures:
        spec = fig.to_plotly_json()
        spec["layout"].pop("template", None)  # Streamlit's own template uses those colours on purpose
        rewritten = re.findall(r"#0000\d\d\b", json.dumps(spec, cls=PlotlyJSONEncoder), flags=re.IGNORECASE)
        assert not rewritten, (fig.layout.title.text, rewritten)


def test_colour_tables_are_the_classify_pages_scales() -> None:
    viridis = plots.colour_table("Viridis")
    assert viridis.shape == (256, 3) and viridis.dtype == np.uint8
    assert viridis[0].tolist() == [68, 1, 84] and viridis[-1].tolist() == [253, 231, 37]  # plotly's ends
    magma = plots.colour_table(tuple(plots.MAGMA))
    assert magma[-1].tolist() == [252, 253, 191] and magma[0].tolist() == [1, 0, 5]
    assert (np.diff(viridis.astype(int).sum(1)) >= -3).all()  # Viridis brightens from bottom to top


def test_a_windows_maps_are_images_on_its_own_time_axis_with_rows_in_hz():
    """The Classify and Filters pages' maps: 150 columns of one pixel for the 1.5 s window, its times in the
    clip, rows in Hz when sorted by centre frequency: what the interactive charts show, as two images."""
    learned = torch.rand(40, 150)
    mel = torch.linspace(-100, 0, 150).expand(40, 150)
    centres = np.linspace(100, 7000, 40)
    markup = plots.maps_html(learned, mel, start_sample=16000, order=np.arange(40), centres=centres)
    maps = read_maps(markup)
    lm, mm = maps["learned"], maps["mel"]
    assert lm["image"].size == mm["image"].size == (150, 40) and lm["start"] == "16000"
    assert lm["ticks"]["x"] == mm["ticks"]["x"] == ["1", "1.5", "2", "2.5"]  # the window's 1.0–2.5 s
    assert lm["ticks"]["y"][0] == "100" and lm["ticks"]["y"][-1] == "7k"
    assert plots.LEARNED_TITLE in markup and plots.MEL_TITLE in markup
    # The mel map shows its loudest 80 dB: the first 20 dB of the ramp are black.
    M = np.asarray(mm["image"].convert("RGB"))
    magma = plots.colour_table(tuple(plots.MAGMA))
    assert (M[:, 0] == magma[0]).all() and (M[:, -1] == magma[255]).all()
    assert mm["ticks"]["c"] == ["-80", "-60", "-40", "-20", "0"]


def test_live_maps_are_images_over_the_last_seconds_on_the_classify_scales() -> None:
    learned = np.ones((40, 700), np.float32)
    learned[:, -1] = 10.0  # the newest column 20 dB above the rest
    learned[5] = 0.0  # a silent filter
    mel = np.full((40, 700), -20.0, np.float32)
    mel[:, -1] = 10.0
    order = np.arange(40)[::-1]
    maps = read_maps(plots.live_maps_html(learned, mel, first_frame=1000, order=order,
                                          centres=np.linspace(100, 7000, 40), arrived=1.5))
    viridis, magma = plots.colour_table("Viridis"), plots.colour_table(tuple(plots.MAGMA))
    lm, mm = maps["learned"], maps["mel"]
    assert lm["arrived"] == mm["arrived"] == "1.500" and lm["first-frame"] == "1000"
    # Only the last 6 s: 600 columns of one pixel, 40 rows, the lowest band at the bottom.
    assert lm["image"].size == mm["image"].size == (600, 40) and lm["columns"] == "600"
    L, M = np.asarray(lm["image"].convert("RGB")), np.asarray(mm["image"].convert("RGB"))
    assert (np.delete(L[:, -1], 39 - 34, axis=0) == viridis[255]).all()  # 0 dB re loudest: the top of the scale
    assert (L[0, 0] == viridis[round(40 / 60 * 255)]).all()  # -20 dB on the 60 dB scale
    assert (L[39 - 34] == viridis[0]).all()  # filter 5, re-stacked by `order` to row 34, at the floor
    assert (M[:, -1] == magma[255]).all() and (M[:, 0] == magma[round(50 / 80 * 255)]).all()  # 30 dB under
    # Axes that read like the Classify page's: rows in Hz (highest filter first as `order` put it, at the
    # bottom), colour bars in dB, the time since Start in whole seconds over the last 6 s.
    assert lm["ticks"]["y"][0] == "7k" and lm["ticks"]["c"][0] == "-60" and lm["ticks"]["c"][-1] == "0"
    assert mm["ticks"]["y"][0] == "44" and mm["ticks"]["c"][-1] == "10" and mm["ticks"]["c"][0] == "-70"
    # The newest column's right edge is (1699 · 160 + 87) / 16000 + 0.005 = 17.0004 s: 11.0004–17.0004 s shown.
    assert lm["ticks"]["x"] == [str(t) for t in range(11, 18)]
    # A stream that just started fills from the right: the image covers 2 s of the 6 s width.
    young = plots.map_html(mel[:, :200], "mel", seconds=6.0)
    assert 'style="width:33.33%"' in young and read_maps(young)["mel"]["image"].size == (200, 40)
    empty = read_maps(plots.live_maps_html(np.zeros((40, 0)), np.zeros((40, 0))))
    assert empty["mel"]["image"] is None and empty["mel"]["columns"] == "0"
    assert empty["learned"]["ticks"]["x"] == [str(t) for t in range(7)]  # the first 6 s since Start
    with pytest.raises(ValueError, match="kind"):
        plots.map_html(mel, "chroma")


def test_top_classes_html_bars_in_order_with_names_escaped() -> None:
    markup = plots.top_classes_html([("<img src=x>", 0.7), ("dog & cat", 0.2), ("rain", 0.1)],
                                    "Sounds like: <img src=x> (70%)")
    rows = re.findall(r'data-class="([^"]*)" data-p="([^"]*)".*?width:([\d.]+)%', markup)
    assert rows == [("&lt;img src=x&gt;", "0.7000", "70.00"), ("dog &amp; cat", "0.2000", "20.00"),
                    ("rain", "0.1000", "10.00")]
    assert "<img src=x>" not in markup  # a visitor's class name is text, never markup
    assert "<b>Sounds like: &lt;img src=x&gt; (70%)</b>" in markup and "70.0%" in markup
    assert "None of these" not in markup  # a model without that output
    with_rest = plots.top_classes_html([("dog", 0.004)], "Not sure", none_of_these=0.99)
    assert re.findall(r'data-class="([^"]*)"', with_rest) == ["dog"]  # a line of its own, not a class's bar
    assert "“None of these”: 99.0%" in with_rest


def test_titles_sit_above_their_plot_below_the_toolbar_and_legends_underneath(model):
    """On a phone the toolbar (top right) covered titles, and legends beside a plot took half its width."""
    for fig in every_figure(model):
        title = fig.layout.title
        assert title.text and len(title.text) <= 48, title.text  # fits a 390 px phone at this size
        assert title.yref == "paper" and title.yanchor == "bottom" and title.xanchor == "left"
        assert fig.layout.margin.t >= plots.TOP_MARGIN  # the toolbar's row above the title
        if fig.layout.showlegend:
            assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"


def test_confusion_figure_shows_every_count():
    from envnet.plots import confusion_figure

    fig = confusion_figure([[3, 0], [1, 2]], ["clap", "knock"])
    cell = fig.data[0]
    assert list(cell.x) == ["clap", "knock"] and list(cell.y) == ["clap", "knock"]
    assert cell.text.tolist() == [[3, 0], [1, 2]]


FIRST_FIGURES = """
import json, sys, torch
from envnet import plots
{warm}
before = set(sys.modules)
wave = 0.1 * torch.randn(3 * 16000)
figs = [plots.topk_figure([("dog", 0.7), ("rain", 0.3)]),
        plots.timeline_figure(torch.rand(3, 4), [0, 8000, 16000], list("abcd")),
        *plots.spectrogram_pair(torch.rand(40, 150), 20 * torch.randn(40, 150))]
for fig in figs:
    fig.to_json()
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize("warm", [False, True])
def test_warm_up_loads_what_the_first_classify_figures_need(warm):
    """In a fresh Python, as on a fresh server: plotly imports its validators the first time a figure is
    built. After plots.warm_up() (the server does it in the background at start) a visitor's first figures
    import nothing more; without it they do (the check that this test can tell the two apart)."""
    code = FIRST_FIGURES.format(warm="plots.warm_up()" if warm else "")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert (imported == []) is warm, imported[:10]

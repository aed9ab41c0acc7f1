"""The app's figure builders, without Streamlit: trace types, shapes, axes, and the numbers they show."""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from plotly.utils import PlotlyJSONEncoder

from envnet import plots
from envnet.model import N_BANDS, N_FRAMES, SAMPLE_RATE, WINDOW, build_model
from envnet.spectra import FrequencyResponse, kernel_spectra, learned_spectrogram, mel_spectrogram, tone
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


def test_spectrogram_pair_has_two_40x150_heatmaps_on_one_time_axis(model):
    win = tone(1000.0)
    learned, mel = learned_spectrogram(model, win), mel_spectrogram(win)
    fig = plots.spectrogram_pair(learned, mel, start_sample=16_000)
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heat) == 2
    assert [np.asarray(h.z).shape for h in heat] == [(N_BANDS, N_FRAMES)] * 2
    assert fig.layout.xaxis2.matches == "x"
    np.testing.assert_allclose(heat[0].x, heat[1].x)
    # Frame i of the window starting at 1 s is centred at sample 16000 + 160 i + 87.
    assert heat[0].x[0] == pytest.approx((16_000 + 87) / SAMPLE_RATE)
    assert heat[0].x[-1] - heat[0].x[0] == pytest.approx(149 * 0.01)
    titles = [a.text for a in fig.layout.annotations]
    assert plots.LEARNED_TITLE in titles and plots.MEL_TITLE in titles
    assert fig.layout.xaxis.title.text == "time (s)" and fig.layout.xaxis2.title.text == "time (s)"
    for h in heat:
        assert "s" in h.hovertemplate and "%{z" in h.hovertemplate and "%{y}" in h.hovertemplate
    np.testing.assert_allclose(heat[0].z, learned.numpy())  # unsorted: rows in network order


def test_spectrogram_pair_order_restacks_learned_rows_only():
    learned = np.arange(40)[:, None] * np.ones((1, 150))
    mel = np.random.default_rng(0).normal(size=(40, 150))
    order = np.arange(40)[::-1]
    fig = plots.spectrogram_pair(learned, mel, order=order)
    z0, z1 = np.asarray(fig.data[0].z), np.asarray(fig.data[1].z)
    assert z0[0, 0] == 39 and z0[-1, 0] == 0
    np.testing.assert_allclose(z1, mel)
    assert np.asarray(fig.data[0].customdata)[0, 0] == 39  # hover names the original filter
    with pytest.raises(ValueError):
        plots.spectrogram_pair(np.zeros((40, 150)), np.zeros((40, 149)))


def test_waveform_marks_each_window_and_highlights_the_selected_one():
    wave = torch.zeros(3 * SAMPLE_RATE)
    starts = [0, 8000, 23986]
    fig = plots.waveform_figure(wave, starts, selected=1)
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 3
    assert rects[1].x0 == pytest.approx(0.5) and rects[1].x1 == pytest.approx((8000 + WINDOW) / SAMPLE_RATE)
    assert rects[1].line.width == 2 and rects[0].line.width == 0
    assert fig.layout.xaxis.title.text == "time (s)"


def test_waveform_downsampling_keeps_the_peaks():
    wave = np.zeros(60 * SAMPLE_RATE, dtype=np.float32)
    wave[123_457] = 0.9
    wave[700_001] = -0.8
    fig = plots.waveform_figure(wave)
    y = np.asarray(fig.data[0].y)
    assert len(y) <= plots.MAX_WAVE_POINTS
    assert y.max() == pytest.approx(0.9) and y.min() == pytest.approx(-0.8)
    assert np.asarray(fig.data[0].x).max() <= 60.0


def test_topk_bars_sorted_best_on_top():
    fig = plots.topk_figure([("dog", 0.7), ("rain", 0.2), ("rooster", 0.1)])
    bar = fig.data[0]
    assert isinstance(bar, go.Bar) and bar.orientation == "h"
    assert list(bar.y) == ["rooster", "rain", "dog"]  # plotly draws the last category at the top
    assert list(bar.text)[-1] == "70.0%"


def test_timeline_one_line_per_top_class_with_window_indices():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    fig = plots.timeline_figure(p, [0, 8000, 16000, 24000], ["a", "b", "c"], top=2, selected=2)
    assert [t.name for t in fig.data] == ["b", "a"]  # the two highest mean probabilities, best first
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    assert list(fig.data[0].customdata) == [0, 1, 2, 3]
    np.testing.assert_allclose(fig.data[0].x[0], WINDOW / 2 / SAMPLE_RATE)
    assert fig.layout.yaxis.title.text == "probability"


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


def test_filterbank_comparison_two_heatmaps_same_tones():
    fig = plots.filterbank_comparison(fake_response(seed=1), fake_response(seed=2))
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heat) == 2 and all(np.asarray(h.z).shape == (40, 30) for h in heat)
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    assert "Mel filterbank (40 bands)" in [a.text for a in fig.layout.annotations]


def test_filter_evolution_has_one_frame_per_epoch_and_a_slider():
    freqs = np.geomspace(10, 8000, 30)
    snaps = [(e, fake_response(seed=e).response) for e in range(4)]
    fig = plots.filter_evolution_figure(snaps, freqs)
    assert [f.name for f in fig.frames] == ["0", "1", "2", "3"]
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "1", "2", "3"]
    assert np.asarray(fig.frames[2].data[0].z).shape == (40, 30)
    # Rows follow the final epoch's order in every frame: the last frame reads low → high.
    assert np.all(np.diff(np.asarray(fig.frames[-1].data[0].z).argmax(1)) >= 0)
    with pytest.raises(ValueError):
        plots.filter_evolution_figure([], freqs)


def test_training_curves_loss_and_accuracy_panels():
    hist = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.4},
            {"epoch": 2, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.7, "val_acc": 0.6}]
    fig = plots.training_curves(hist, [(0.5, 1.2), (1.0, 0.9)])
    names = [t.name for t in fig.data]
    assert names == ["batch loss", "train loss", "train accuracy", "validation loss", "validation accuracy"]
    val_acc = fig.data[4]
    assert list(val_acc.x) == [2] and list(val_acc.y) == [0.6] and val_acc.xaxis == "x2"
    assert fig.layout.xaxis.title.text == "epoch" and fig.layout.yaxis2.title.text == "accuracy"


def test_kernels_figure_shows_40_kernels_and_their_spectra(model):
    w, db, freqs = kernel_spectra(model)
    fig = plots.kernels_figure(w, db, freqs)
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
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
    assert len([s for s in demo.layout.shapes if s.type == "rect"]) == 5


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


def test_no_figure_uses_a_colour_that_streamlit_rewrites(model):
    """Streamlit's chart element replaces #000001, #000002, … in a figure with its theme palette (even with
    theme=None). Magma starts at #000004, which turned the quietest mel cells lavender in the app."""
    win = tone(1000.0)
    w, db, freqs = kernel_spectra(model)
    figures = [
        plots.spectrogram_pair(learned_spectrogram(model, win), mel_spectrogram(win)),
        plots.filterbank_comparison(fake_response(seed=1), fake_response(seed=2)),
        plots.frequency_response_figure(fake_response(), sort=True),
        plots.filter_evolution_figure([(e, fake_response(seed=e).response) for e in range(2)], np.geomspace(10, 8000, 30)),
        plots.kernels_figure(w, db, freqs),
        plots.filter_activity_figure(np.arange(40.0), np.linspace(100, 4000, 40)),
        plots.waveform_figure(win, [0], 0),
        plots.topk_figure([("a", 0.7), ("b", 0.3)]),
        plots.timeline_figure(torch.full((3, 2), 0.5), [0, 8000, 16000], ["a", "b"]),
        plots.training_curves([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.4}], [(0.5, 1.2)]),
        plots.conv_arithmetic_figure(10, 3, 2, 1),
    ]
    for fig in figures:
        spec = fig.to_plotly_json()
        spec["layout"].pop("template", None)  # Streamlit's own template uses those colours on purpose
        rewritten = re.findall(r"#0000\d\d\b", json.dumps(spec, cls=PlotlyJSONEncoder), flags=re.IGNORECASE)
        assert not rewritten, (fig.layout.title.text, rewritten)


def test_live_maps_scroll_over_the_last_seconds_in_bytes() -> None:
    from envnet.plots import LIVE_LEARNED_TITLE, LIVE_MEL_TITLE, live_maps

    learned = np.tile(np.arange(40, dtype=np.float32)[:, None], (1, 300))  # row r has activation r
    mel = np.full((40, 300), -20.0, np.float32)
    mel[:, -1] = 10.0
    fig = live_maps(learned, mel, first_frame=1000, order=np.arange(40)[::-1], meta={"arrived": 1.5})
    lz, mz = (np.asarray(t.z) for t in fig.data)
    assert lz.dtype == np.uint8 and lz.shape == mz.shape == (40, 300)
    assert lz[0, 0] == 255 and lz[-1, 0] == 0  # re-stacked by `order`, scaled to the map's own peak
    assert mz[0, -1] == 255 and mz[0, 0] == round(50 / 80 * 255)  # 30 dB below the peak of an 80 dB range
    bar = fig.data[0].colorbar
    assert bar.ticktext[0] == "0" and bar.ticktext[-1] == "39"  # the colour bar speaks activations, not bytes
    x_end = (1299 * 160 + 87) / 16000
    assert fig.layout.xaxis.range == (pytest.approx(x_end - 6), pytest.approx(x_end))
    assert fig.data[0].x0 == pytest.approx((1000 * 160 + 87) / 16000)
    assert [a.text for a in fig.layout.annotations] == [LIVE_LEARNED_TITLE, LIVE_MEL_TITLE]
    assert fig.layout.meta == {"arrived": 1.5}
    empty = live_maps(np.zeros((40, 0)), np.zeros((40, 0)))
    assert np.asarray(empty.data[0].z).shape == (40, 0)
    with pytest.raises(ValueError, match="same number of columns"):
        live_maps(learned, mel[:, :10])

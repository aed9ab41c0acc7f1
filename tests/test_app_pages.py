"""Filters and How it works render for the default model; the sidebar's model upload validates files and
keeps each session's models to itself."""

from __future__ import annotations

import json

import pytest
from apptools import html_of, open_page, titles
from streamlit.testing.v1 import AppTest

from envnet import checkpoint
from envnet.checkpoint import make_card, state_bytes
from envnet.model import build_model

pytestmark = pytest.mark.skipif(
    not checkpoint.paths(checkpoint.default_checkpoint())[0].is_file(), reason="no default checkpoint in checkpoints/"
)






def tiny_model_files(classes=("clap", "snap")) -> tuple[bytes, bytes]:
    model = build_model(n_classes=len(classes), fc_width=64)
    return state_bytes(model), json.dumps(make_card(model, list(classes), "tiny-upload")).encode()


def add_model(at: AppTest, weights: bytes, card: bytes) -> AppTest:
    at.file_uploader(key="upload_weights").set_value(("m.safetensors", weights, "application/octet-stream"))
    at.file_uploader(key="upload_card").set_value(("m.json", card, "application/json"))
    at.run()
    at.button(key="add_uploaded_model").click()
    return at.run()


@pytest.mark.slow  # measures the filters with 96 tones: a few seconds, more on a busy CPU
def test_filters_page_renders_for_the_default_model():
    at = open_page("pages/filters.py")
    assert not at.error
    t = titles(at)
    for expected in ("Mel filterbank (40 bands)", "Kernels (8 taps each)", "Kernel magnitude spectra",
                     "How strongly each filter responds"):
        assert expected in t
    assert any(x.startswith("Learned filters (sorted by centre frequency)") for x in t)
    # The tone's two maps, as images (plots.maps_html), with rows in Hz while the filters are sorted.
    maps = html_of(at)
    assert "Learned spectrogram (40 × 150)" in maps and "Mel spectrogram (40 × 150)" in maps
    assert "filter centre (Hz)" in maps
    assert any(c.value.startswith("**Why they look alike**") for c in at.caption)  # what the two maps show
    at.toggle(key="filters_sort").set_value(False).run()
    assert "Learned filters (in network order)" in titles(at)
    assert "filter centre (Hz)" not in html_of(at)
    at.radio(key="filters_kind").set_value("Sweep").run()
    assert not at.exception and len(at.get("audio")) == 1


def test_how_it_works_shows_live_shapes_and_conv_arithmetic():
    at = open_page("pages/how_it_works.py")
    table = at.dataframe[0].value
    shapes = list(table["output shape"])
    assert shapes[:4] == ["1 × 24014", "40 × 24007", "40 × 24000", "40 × 150"]
    assert shapes[-1] == "11"  # the default model's 10 classes and its "none of these" output
    assert int(table["parameters"].sum()) == sum(p.numel() for p in build_model(fc_width=1024, other=True).parameters())
    # Big counts with thousands separators (8,976,854, not 8976854): the browser formats them by its locale.
    columns = json.loads(at.dataframe[0].proto.columns)
    assert [columns[c]["type_config"].get("format") for c in ("numbers out", "parameters")] == ["localized"] * 2
    # Four short columns fit a phone (a fifth, of words, was cut off at 390 px); the words follow as a list.
    assert list(at.dataframe[0].proto.column_order) == ["layer", "output shape", "numbers out",
                                                          "parameters"]
    words = " ".join(m.value for m in at.markdown)
    assert all(f"**{layer}**: {what}" in words for layer, what in zip(table["layer"], table["what it does"],
                                                                         strict=True))
    at.number_input(key="conv_length").set_value(10)
    at.number_input(key="conv_kernel").set_value(3)
    at.number_input(key="conv_stride").set_value(2)
    at.number_input(key="conv_padding").set_value(1).run()
    assert at.latex[-1].value.strip("$\n ").endswith("= 5")
    assert any("→ 5 outputs" in x for x in titles(at))
    at.number_input(key="conv_kernel").set_value(30).run()  # longer than the input: no outputs, no crash
    assert not at.exception and at.warning
    assert at.latex[-1].value.strip("$\n ").endswith(r"= -8 \;\rightarrow\; 0")  # ⌊(10 + 2 − 30) / 2⌋ + 1


def test_uploaded_model_is_validated_selected_and_private_to_its_session():
    at = open_page("pages/classify.py")
    other = open_page("pages/classify.py")
    # The card's uploader states the card's own limit (1 MB), not the server's 128 MB.
    assert at.file_uploader(key="upload_card").proto.max_upload_size_mb == 1
    add_model(at, *tiny_model_files())
    assert not at.exception and not at.error
    key = at.selectbox(key="model_key").value
    assert key.startswith("session:uploaded")
    assert "tiny-upload (uploaded)" in at.selectbox(key="model_key").options
    assert any("clap, snap" in m.value for m in at.sidebar.markdown)  # the model card lists its classes
    other.run()
    assert not any("tiny-upload" in o for o in other.selectbox(key="model_key").options)


@pytest.mark.parametrize("weights,card,fragment", [
    (b"\x80\x04\x95" + b"\x00" * 100, None, "pickle"),
    (b"not safetensors at all", None, "safetensors"),
    (None, b"{not json", "json"),
    (None, json.dumps({"classes": ["a", "b", "c"], "architecture": {"n_classes": 2, "fc_width": 64}}).encode(),
     "classes"),
])
def test_bad_model_files_get_a_clear_error(weights, card, fragment):
    good_w, good_c = tiny_model_files()
    at = open_page("pages/classify.py")
    add_model(at, weights or good_w, card or good_c)
    assert not at.exception
    assert at.error and fragment in at.error[0].value.lower()
    assert at.selectbox(key="model_key").value == f"file:{checkpoint.DEFAULT_NAME}"  # still the default


@pytest.mark.skipif(not checkpoint.paths(checkpoint.CHECKPOINT_DIR / "envnet-esc10-fold4val")[0].is_file(),
                    reason="the validation twin is not in checkpoints/")
def test_the_second_shipped_model_says_what_it_is_in_the_picker():
    at = open_page("pages/classify.py")
    picker = at.selectbox(key="model_key")
    labels = {o: o for o in picker.options}
    assert "envnet-esc10 (shipped)" in labels
    assert "envnet-esc10-fold4val (shipped · fold 4 held out)" in labels
    picker.set_value("file:envnet-esc10-fold4val").run()
    assert not at.exception
    blurb = [c.value for c in at.sidebar.caption if "validation twin" in c.value]
    assert blurb and "folds 1–3 only" in blurb[0] and "fold 4's clips are new to it" in blurb[0]


def test_the_sidebar_model_card_reads_as_words_not_a_json_blob():
    at = open_page("pages/classify.py")
    captions = [c.value for c in at.sidebar.caption]
    assert any(c.startswith("Recipe: 100 epochs, learning rate 0.01, batch 64") for c in captions), captions
    assert any(c.startswith("“Not sure” when no class reaches 49.7%") for c in captions), captions
    # trained on every fold: the card names no validation clips (its 90 % is its twin's), so none are claimed
    assert any(c.endswith("320 training clips") for c in captions), captions
    assert [m.value for m in at.sidebar.metric] == ["90.0%"]  # the twin: 72 of 80 held-out clips
    assert len(at.sidebar.json) == 1  # only the whole card, behind its own "Whole card (JSON)" button

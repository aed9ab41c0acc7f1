"""What a person does in the app, in a real Chromium: open it, classify an upload, record with a microphone,
survive a corrupt file, train their own classes and use the result.

Each journey asserts what is on screen (text, plot titles and plotly's own data, no error box unless
expected, no traceback); a failure leaves a full-page screenshot in tests/browser/artifacts/.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from envnet import load_audio, load_checkpoint, predict

from . import pw
from .browser_support import (
    ARTIFACTS,
    UI_TIMEOUT_MS,
    StreamlitServer,
    clicks,
    launch_with_microphone,
    new_context,
    noise,
    sweep,
    tone,
    write_wav,
)


@pytest.fixture(scope="module")
def default_model():
    return load_checkpoint()


def expected_top(ck, path, k: int = 5) -> list[tuple[str, float]]:
    """What the library says about a clip: the app must show the same."""
    return predict(ck.model, load_audio(path.read_bytes()), ck.classes, n_crops=10).top(k)


def shown_top(page) -> list[tuple[str, float]]:
    """The "Top classes" bar chart's (label, probability) pairs, as plotted."""
    fig = pw.wait_plot(page, "Top classes")
    bars = fig["traces"][0]
    return sorted(zip(bars["y"], bars["x"], strict=True), key=lambda t: -t[1])


def assert_spectrograms(page, changed_from: dict | None = None) -> dict[str, dict]:
    """Both maps, as two images of 150 × 40 cells (side by side, or stacked on a phone)."""
    shown = pw.wait_maps(page, changed_from=changed_from)
    assert [shown[k]["size"] for k in ("learned", "mel")] == [[150, 40], [150, 40]], shown
    return shown


# ---------------------------------------------------------------- 1. open the app


def test_open_app_shows_default_model_and_its_classes(page, server, default_model) -> None:
    pw.open_app(page, server.url)
    assert page.get_by_role("heading", name="Classify a sound").is_visible()
    sidebar = page.get_by_test_id("stSidebar")
    # The model picker shows the shipped default.
    assert sidebar.get_by_role("combobox", name="Model").input_value().startswith(default_model.name)
    sidebar.get_by_text("Model card", exact=True).click()
    card = sidebar.get_by_test_id("stExpander").filter(has=page.get_by_text("Model card", exact=True))
    for cls in default_model.classes:
        card.get_by_text(cls, exact=False).first.wait_for()
    assert f"{len(default_model.classes)} classes" in card.inner_text()
    # The other pages are one click away.
    nav = sidebar.get_by_test_id("stSidebarNav").inner_text()
    for title in ("Classify", "Live", "Train", "Filters", "How it works"):
        assert title in nav
    pw.assert_no_errors(page)


# ---------------------------------------------------------------- 2. classify an upload


def test_classify_upload_shows_topk_and_both_spectrograms_and_window_slider_updates_them(
    page, server, default_model, tmp_path
) -> None:
    # 3 s: longer than one window, so there is a timeline and a slider to move.
    sr = 22050  # not 16 kHz, so the app's resampling is on the way
    clip = write_wav(tmp_path / "chirp.wav", 0.6 * sweep(200, 4000, 3.0, sr=sr) + 0.1 * noise(3.0, sr=sr), sr=sr)
    pw.open_app(page, server.url)
    pw.upload(page, "Upload a sound file", clip)
    page.get_by_text("Best guess:").wait_for()
    pw.wait_idle(page)

    top = shown_top(page)
    want = expected_top(default_model, clip, len(top))
    assert [c for c, _ in top] == [c for c, _ in want]
    assert np.allclose([p for _, p in top], [p for _, p in want], atol=2e-3), (top, want)
    best, p = want[0]
    assert f"Best guess: {best}" in pw.main(page).inner_text()

    before = assert_spectrograms(page)
    slider = pw.main(page).get_by_role("slider")
    assert slider.input_value() == "0"
    slider.focus()
    for _ in range(2):
        page.keyboard.press("ArrowRight")
    # Both maps must change: new images of window 2 (1.0 s in), not just a redraw of the old ones.
    assert_spectrograms(page, changed_from=before)
    pw.wait_idle(page)
    after = assert_spectrograms(page)
    assert {m["start"] for m in before.values()} == {"0"} and {m["start"] for m in after.values()} == {"16000"}
    assert slider.input_value() == "2"
    assert re.search(r"Window 2: 1\.00", pw.main(page).inner_text()), "the caption does not name window 2"
    pw.assert_no_errors(page)


# ---------------------------------------------------------------- 3. record with the microphone


@pytest.fixture
def mic_browser(playwright_instance, tmp_path_factory):
    """A Chromium whose fake microphone plays a generated wav (Chromium loops it) without asking."""
    wav = write_wav(tmp_path_factory.mktemp("mic") / "mic.wav", 0.5 * clicks(3.0) + tone(660, 3.0, amp=0.3), sr=48000)
    b = launch_with_microphone(playwright_instance, wav)
    yield b
    b.close()


def test_record_with_fake_microphone_gets_a_prediction(new_page, mic_browser, server) -> None:
    page = new_page(mic_browser)
    page.context.grant_permissions(["microphone"], origin=server.url)
    pw.open_app(page, server.url)
    pw.choose_radio(page, "Record")
    recorder = page.get_by_test_id("stAudioInput")
    recorder.wait_for()
    recorder.get_by_role("button", name=re.compile("record", re.I)).first.click()
    page.wait_for_timeout(2500)  # 2.5 s of the looping fake microphone
    recorder.get_by_role("button", name=re.compile("stop", re.I)).first.click()
    page.get_by_text("“your recording”").wait_for(timeout=UI_TIMEOUT_MS)
    page.get_by_text("Best guess:").wait_for()
    pw.wait_idle(page)
    heading = pw.main(page).get_by_text("“your recording”").inner_text()
    seconds = float(re.search(r"([\d.]+) s", heading).group(1))
    assert 1.0 < seconds < 10.0, heading
    assert len(shown_top(page)) == 5
    assert_spectrograms(page)
    pw.assert_no_errors(page)


# ---------------------------------------------------------------- 4. a corrupt upload


def test_corrupt_upload_shows_a_clear_message_and_page_still_works(page, server, default_model, tmp_path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)  # a WAV header, then garbage
    good = write_wav(tmp_path / "tone.wav", tone(440, 2.0))
    pw.open_app(page, server.url)
    pw.upload(page, "Upload a sound file", bad)
    page.get_by_text("Could not use “broken.wav”").wait_for()
    pw.wait_idle(page)
    errs = pw.errors(page)
    assert len(errs) == 1 and "broken.wav" in errs[0], errs
    assert "Traceback" not in errs[0] and "Error:" not in errs[0].split(":", 1)[0]
    pw.assert_no_errors(page, allow="broken.wav")
    assert page.get_by_text("Best guess:").count() == 0

    # The page still works: the next, good file is classified and the error box goes away.
    pw.upload(page, "Upload a sound file", good)
    page.get_by_text("“tone.wav”").wait_for()
    page.get_by_text("Best guess:").wait_for()
    pw.wait_idle(page)
    assert [c for c, _ in shown_top(page)] == [c for c, _ in expected_top(default_model, good)]
    assert_spectrograms(page)
    pw.assert_no_errors(page)


def test_text_file_renamed_to_wav_gets_a_message_not_a_traceback(page, server, tmp_path) -> None:
    fake = tmp_path / "notes.wav"
    fake.write_text("these are my lecture notes, not a sound\n" * 20)
    pw.open_app(page, server.url)
    pw.upload(page, "Upload a sound file", fake)
    page.get_by_text("Could not use “notes.wav”").wait_for()
    pw.wait_idle(page)
    pw.assert_no_errors(page, allow="notes.wav")


# ---------------------------------------------------------------- 5. train your own classes


def test_train_own_classes_shows_curves_and_filters_and_the_model_is_usable_on_classify(page, server, tmp_path) -> None:
    # Two classes a tiny model can tell apart in 2 epochs: low hums and high whistles, 3 clips each.
    examples = {
        "hum": [write_wav(tmp_path / f"hum{i}.wav", tone(120 + 30 * i, 2.0) + 0.02 * noise(2.0, seed=i))
                for i in range(3)],
        "whistle": [write_wav(tmp_path / f"whistle{i}.wav", tone(2500 + 300 * i, 2.0) + 0.02 * noise(2.0, seed=9 + i))
                    for i in range(3)],
    }
    model_name = "browser-journey-model"
    pw.open_app(page, server.url)
    pw.go_to(page, "Train")
    page.get_by_role("heading", name="Train your own EnvNet").wait_for()
    m = pw.main(page)
    for cls, files in examples.items():
        pw.add_own_class(page, cls, files)
    # Own classes train few-shot by default: this journey trains the whole network (curves, filters).
    pw.train_whole_network(page)
    pw.fill_number(page, "Epochs", 2)
    pw.fill_number(page, "Batch size", 8)
    pw.choose_option(m, "Classifier width", "64")
    pw.wait_idle(page)
    pw.set_text(page, "Model name", model_name)  # the whole network's: the few-shot one is hidden in this mode
    m.get_by_text("Training on 6 clips of 2 classes").wait_for()
    pw.assert_no_errors(page)

    m.get_by_role("button", name="Start training").click()
    m.get_by_text(re.compile(r"Finished after 2 epochs")).wait_for(timeout=240_000)
    pw.wait_idle(page)
    for title in ("Loss", "Accuracy"):
        curves = pw.wait_plot(page, title)
        # Two epochs: the per-epoch curves have two points.
        assert any(len(t.get("x") or []) == 2 for t in curves["traces"]), curves["traces"]
    filters = pw.wait_plot(page, "How the filters evolved")
    heat = [t for t in filters["traces"] if t["type"] == "heatmap"]
    assert heat and heat[0]["z_shape"][0] == 40, heat
    m.get_by_text(f"“{model_name}” is trained and selected in the sidebar").wait_for()
    pw.assert_no_errors(page)

    # The new model is picked in the sidebar and listed beside the shipped one.
    sidebar = page.get_by_test_id("stSidebar")
    assert sidebar.get_by_role("combobox", name="Model").input_value() == f"{model_name} (trained here)"
    sidebar.get_by_role("combobox", name="Model").click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    assert f"{model_name} (trained here)" in options and any("(shipped)" in o for o in options), options

    # On Classify it answers with the user's own classes.
    pw.go_to(page, "Classify")
    pw.upload(page, "Upload a sound file", write_wav(tmp_path / "probe.wav", tone(150, 2.0)))
    page.get_by_text("Best guess:").wait_for()
    pw.wait_idle(page)
    assert {c for c, _ in shown_top(page)} == {"hum", "whistle"}
    assert_spectrograms(page)
    pw.assert_no_errors(page)


def knocks(seconds: float, sr: int = 48_000, every: float = 0.7, seed: int = 0) -> np.ndarray:
    """Quiet room noise with a knock (a 40 ms decaying noise burst) every `every` seconds."""
    rng = np.random.default_rng(seed)
    x = 0.003 * rng.standard_normal(int(seconds * sr))
    n = int(0.04 * sr)
    burst = np.exp(-np.arange(n) / (0.008 * sr))
    for i in range(int(0.3 * sr), len(x) - n, int(every * sr)):
        x[i : i + n] += 0.6 * burst * rng.standard_normal(n)
    return x


@pytest.fixture
def knock_mic_browser(playwright_instance, tmp_path_factory):
    """A Chromium whose fake microphone plays someone knocking again and again (Chromium loops the file)."""
    wav = write_wav(tmp_path_factory.mktemp("knock") / "knocks.wav", knocks(4.2), sr=48_000)
    b = launch_with_microphone(playwright_instance, wav)
    yield b
    b.close()


def test_record_a_session_see_its_examples_train_few_shot_and_classify(new_page, knock_mic_browser, server,
                                                                         tmp_path) -> None:
    """Issue 12's journey: a recording session of one sound is split into examples (each playable and
    removable), a second class is uploaded, Train gives a few-shot model with held-out scores, and Classify
    answers with the visitor's own classes."""
    page = new_page(knock_mic_browser)
    page.context.grant_permissions(["microphone"], origin=server.url)
    pw.open_app(page, server.url)
    pw.go_to(page, "Train")
    m = pw.main(page)
    m.get_by_label("New class name").fill("knock")
    m.get_by_role("button", name="Add class").click()
    m.get_by_text("Class “knock”").wait_for()
    pw.wait_idle(page)
    recorder = page.get_by_test_id("stAudioInput").filter(has_text="Record a session of “knock”")
    recorder.get_by_role("button", name=re.compile("record", re.I)).first.click()
    page.wait_for_timeout(6000)  # about 8 knocks of the looping fake microphone
    recorder.get_by_role("button", name=re.compile("stop", re.I)).first.click()
    done = m.get_by_text(re.compile(r"“the session” was split into \d+ examples of “knock”"))
    done.wait_for(timeout=UI_TIMEOUT_MS)
    pw.wait_idle(page)
    n = int(re.search(r"split into (\d+) examples", done.inner_text()).group(1))
    assert 4 <= n <= 12, done.inner_text()  # one per knock heard, give or take the start and end
    m.get_by_text(f"knock: {n} examples").wait_for()
    assert m.locator("audio").count() >= n  # each example playable
    m.get_by_role("button", name="Remove", exact=True).first.click()  # and removable
    m.get_by_text(f"knock: {n - 1} example").wait_for()
    pw.wait_idle(page)

    hums = [write_wav(tmp_path / f"hum{i}.wav", tone(150 + 40 * i, 1.5) + 0.01 * noise(1.5, seed=i)) for i in range(4)]
    pw.add_own_class(page, "hum", hums)
    pw.set_text(page, "Model name", "my-knocks")
    m.get_by_role("button", name="Train", exact=True).click()
    m.get_by_text(re.compile(r"“my-knocks” is trained \([\d.]+ s\) and selected in the sidebar")).wait_for(
        timeout=180_000)
    pw.wait_idle(page)
    assert re.search(r"\d+% right on \d+ held-out examples", m.inner_text()), m.inner_text()
    confusion = pw.wait_plot(page, "Held-out examples: what the model said")
    assert [t["z_shape"] for t in confusion["traces"] if t["type"] == "heatmap"] == [[2, 2]]
    sidebar = page.get_by_test_id("stSidebar")
    assert sidebar.get_by_role("combobox", name="Model").input_value() == "my-knocks (trained here)"
    pw.assert_no_errors(page)

    pw.go_to(page, "Classify")
    probe = write_wav(tmp_path / "probe.wav", knocks(3.0, sr=16_000, seed=7), sr=16_000)
    pw.upload(page, "Upload a sound file", probe)
    top = shown_top(page)
    pw.wait_idle(page)
    assert {c for c, _ in top} == {"knock", "hum"} and top[0][0] == "knock", top
    pw.assert_no_errors(page)


def test_a_deep_link_as_a_fresh_servers_first_request_gets_the_apps_navigation(browser) -> None:
    """A bookmarked /train?run=… after a server restart: Streamlit would run pages/train.py on its own with
    a navigation listing every file in pages/ (even `_ui`); the app must come through app.py instead."""
    srv = StreamlitServer(ARTIFACTS / "streamlit-deep-link.log").start()
    page = new_context(browser).new_page()
    try:
        pw.open_app(page, srv.url, "train?run=from-before-the-restart")
        pw.main(page).get_by_role("heading", name="Train your own EnvNet").wait_for()
        pw.wait_idle(page)
        links = [text.split("\n")[-1] for text in page.get_by_test_id("stSidebarNav").get_by_role("link").all_inner_texts()]
        assert links == ["Classify", "Live", "Train", "Filters", "How it works"], links
        assert page.get_by_test_id("stSidebar").get_by_text("no longer on this server").count() == 1
        pw.assert_no_errors(page)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "deep_link.png"))
        raise
    finally:
        page.context.close()
        srv.stop()


# ---------------------------------------------------------------- 7. models of one's own, one after another

def visible_uploader(page, label: str):
    """The sidebar's uploader with this label that a person sees (Streamlit may keep a hidden old copy)."""
    boxes = page.get_by_test_id("stSidebar").get_by_test_id("stFileUploader").filter(has_text=label)
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000  # the expander's contents come a moment after a rerun
    while True:
        shown = [boxes.nth(k) for k in range(boxes.count()) if boxes.nth(k).is_visible()]
        if len(shown) == 1 or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)
    assert len(shown) == 1, f"{len(shown)} visible “{label}” uploaders: is “Use your own model file” still open?"
    return shown[0]


def test_three_uploaded_models_in_a_row_each_added_the_upload_box_staying_open(page, server, tmp_path) -> None:
    """Was: after "Added …", the next run dropped that note, the expander below moved up and was drawn anew,
    closed: choosing the next weights file shut it, and the card chosen after it was lost."""
    import json

    from envnet.checkpoint import make_card, state_bytes
    from envnet.model import build_model

    pw.open_app(page, server.url, "how_it_works")
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("Use your own model file").click()
    for i in range(3):
        model = build_model(n_classes=2, fc_width=16)
        (tmp_path / f"m{i}.safetensors").write_bytes(state_bytes(model))
        (tmp_path / f"m{i}.json").write_text(json.dumps(make_card(model, ["clap", "snap"], f"mine-{i}")))
        visible_uploader(page, "Weights").locator('input[type="file"]').set_input_files(tmp_path / f"m{i}.safetensors")
        pw.wait_idle(page)
        visible_uploader(page, "Model card").locator('input[type="file"]').set_input_files(tmp_path / f"m{i}.json")
        pw.wait_idle(page)
        assert f"m{i}.json" in visible_uploader(page, "Model card").inner_text()
        sidebar.get_by_role("button", name="Add this model").click()
        sidebar.get_by_text(f"Added mine-{i} (2 classes)").wait_for()
        pw.wait_idle(page)
        # Used: both boxes are empty again, ready for the next model.
        for label in ("Weights", "Model card"):
            assert "Upload" in visible_uploader(page, label).inner_text()
            assert f"m{i}" not in visible_uploader(page, label).inner_text()
    pw.main(page).get_by_role("heading", name="One window through “mine-2”").wait_for()  # the page uses it
    pw.assert_no_errors(page)

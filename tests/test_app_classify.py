"""The Classify page through Streamlit's AppTest: a real upload gives top-k and both spectrograms; bad
files give an error box and the page stays usable."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from apptools import html_of, read_maps
from streamlit.testing.v1 import AppTest

from envnet import checkpoint

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 180  # generous: CI machines may be busy; a normal run takes a few seconds

pytestmark = pytest.mark.skipif(
    not checkpoint.paths(checkpoint.default_checkpoint())[0].is_file(), reason="no default checkpoint in checkpoints/"
)


def wav_bytes(seconds: float = 2.5, sr: int = 22_050, freq: float = 440.0, channels: int = 2,
              amplitude: float = 0.5) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = amplitude * np.sin(2 * np.pi * freq * t)
    buf = io.BytesIO()
    sf.write(buf, np.repeat(x[:, None], channels, 1), sr, format="WAV")
    return buf.getvalue()


def arr(v) -> np.ndarray:
    """A plotly JSON array: a list, or plotly's typed base64 buffer {dtype, bdata, shape}."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape([int(n) for n in str(v["shape"]).split(",")]) if "shape" in v else a
    return np.asarray(v)


def figure(at: AppTest, title: str) -> dict:
    """The plotly figure on the page whose title (or a subplot title) is `title`."""
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        if title in fig_titles(spec):
            return spec
    raise AssertionError(f"no figure titled {title!r}; found {all_titles(at)}")


def fig_titles(spec: dict) -> list[str]:
    titles = [spec["layout"].get("title", {}).get("text", "")]
    return titles + [a.get("text", "") for a in spec["layout"].get("annotations", [])]


def all_titles(at: AppTest) -> list[str]:
    return [t for el in at.get("plotly_chart") for t in fig_titles(json.loads(el.proto.spec))]


def upload(at: AppTest, name: str, data: bytes, mime: str = "audio/wav") -> AppTest:
    at.radio(key="classify_source").set_value("Upload")
    at.run()
    at.file_uploader(key="classify_upload").set_value((name, data, mime))
    return at.run()


@pytest.fixture
def at() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_opens_on_classify_with_the_default_model(at):
    assert at.selectbox(key="model_key").value == f"file:{checkpoint.DEFAULT_NAME}"
    assert at.header[0].value == "Classify a sound"
    assert not at.error


def test_uploaded_wav_shows_topk_timeline_waveform_and_both_spectrograms(at):
    upload(at, "tone.wav", wav_bytes())
    assert not at.exception and not at.error
    titles = all_titles(at)
    assert "Top classes" in titles
    assert any(t.startswith("Class probabilities over time") for t in titles)  # 2.5 s > one window
    markup = html_of(at)
    for expected in ("Waveform and analysed windows", "Learned spectrogram (40 × 150)", "Mel spectrogram (40 × 150)"):
        assert expected in markup
    assert {k: m["image"].size for k, m in read_maps(html_of(at)).items()} == {"learned": (150, 40), "mel": (150, 40)}
    top = figure(at, "Top classes")
    assert len(top["data"][0]["y"]) == 5
    assert any("Sounds like" in m.value for m in at.markdown) or any("Not sure" in w.value for w in at.warning)
    # On request, the same maps as interactive charts.
    at.toggle(key="classify_spectrograms_interactive").set_value(True).run()
    heat = [t for title in ("Learned spectrogram (40 × 150)", "Mel spectrogram (40 × 150)")
            for t in figure(at, title)["data"] if t["type"] == "heatmap"]
    assert [arr(h["z"]).shape for h in heat] == [(40, 150), (40, 150)]
    assert not read_maps(html_of(at))


def test_a_tone_is_not_one_of_the_ten_sounds(at):
    """The 440 Hz tone once came out as helicopter 59 %: the shipped model now says it does not know it."""
    upload(at, "tone.wav", wav_bytes(freq=440.0))
    assert not at.exception
    said = [w.value for w in at.warning]
    assert any(w.startswith("**Not sure.** This doesn't sound like any of the 10 sounds I know; ") for w in said), said
    assert any("“Not sure” when no class reaches" in c.value for c in at.caption)


def test_first_screen_lists_the_classes_and_offers_real_recordings(at):
    text = " ".join(m.value for m in at.markdown)
    assert "This model knows 10 sounds:" in text and "chainsaw" in text
    pills = at.get("button_group")
    if not any(d.is_dir() for d in [Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"]):
        pytest.skip("no ESC-10 clips beside the repository (../shared/data/esc10)")
    assert pills, "no real recordings offered"
    # The shipped model trained on every fold this server has: the page says so.
    assert any("trained on all of them" in c.value for c in at.caption)
    # A model whose card does not say what it trained on (uploaded, few-shot): never "folds it did not train on".
    from apptools import open_page
    from test_app_pages import add_model, tiny_model_files

    at = add_model(open_page("pages/classify.py"), *tiny_model_files(("dog", "rooster")))
    said = [c.value for c in at.caption if c.value.startswith("Real recordings to try")]
    assert said == ["Real recordings to try, one per class, from the datasets on this server (this model's card "
                    "does not say what it trained on, so it may have heard them)."]


def test_a_short_sound_in_a_long_quiet_clip_is_said_to_fit_one_window_once_trimmed(at):
    # A 5 s recording of one bark read "The clip fits in one window (shorter clips are centred in silence)."
    sr = 16_000
    x = np.zeros(5 * sr)
    x[2 * sr: 2 * sr + sr // 2] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr // 2) / sr)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV")
    upload(at, "bark.wav", buf.getvalue())
    assert not at.exception and not at.error
    assert "Its sound, 0.5 s once the quiet start and end are trimmed, fits in one window (centred in silence)." in [
        c.value for c in at.caption]
    upload(at, "short.wav", wav_bytes(seconds=1.0))
    assert "The clip fits in one window (shorter clips are centred in silence)." in [c.value for c in at.caption]
    # The silence it is centred in is drawn as silence (the floor), not as the layers' bright biases.
    image = np.asarray(read_maps(html_of(at))["learned"]["image"].convert("RGB"))
    assert image.shape[1] == 150
    floor = image[0, 0]
    assert (image[:, :20] == floor).all() and (image[:, -20:] == floor).all()  # 0.25 s of padding each side
    assert (image[:, 60:90] != floor).any()


def test_window_slider_moves_the_spectrograms(at):
    upload(at, "tone.wav", wav_bytes(seconds=3.0))
    slider = at.select_slider(key="classify_window")
    assert slider.value == 0 and len(slider.options) >= 3
    assert slider.options[:3] == ["0.0–1.5 s", "0.5–2.0 s", "1.0–2.5 s"]  # seconds, not a bare index

    def shown(at: AppTest) -> tuple[list[str], str]:
        return [m["start"] for m in read_maps(html_of(at)).values()], re.search(r'data-selected="(\d+)"', html_of(at)).group(1)

    assert shown(at) == (["0", "0"], "0")
    slider.set_value(2).run()
    assert not at.exception
    assert shown(at) == (["16000", "16000"], "2")  # windows are 0.5 s apart; the waveform outlines window 2


@pytest.mark.parametrize("name,data,fragment", [
    ("broken.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7, "could not use “broken.wav”: could not decode"),
    ("empty.wav", b"", "could not use “empty.wav”: the file is empty"),
    ("notes.txt", b"hello, this is text", "not a sound file"),
    ("picture.wav", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "could not use “picture.wav”: the file is not audio"),
])
def test_bad_upload_shows_an_error_and_the_page_still_works(at, name, data, fragment):
    upload(at, name, data, "application/octet-stream")
    assert not at.exception
    assert at.error and fragment in at.error[0].value.lower(), at.error[0].value
    upload(at, "tone.wav", wav_bytes())  # the next good file works as usual
    assert not at.exception and not at.error
    assert "Top classes" in all_titles(at)


def test_silent_clip_gets_a_warning_and_no_class_ranked(at):
    upload(at, "silence.wav", wav_bytes(amplitude=0.0))
    assert not at.exception
    assert any("silent" in w.value for w in at.warning)
    captions = " ".join(c.value for c in at.caption)
    assert "Nothing was loud enough to rank the classes" in captions and "Best guess" not in captions
    assert "Every window is silent" in captions
    assert "Top classes" not in all_titles(at) and "Class probabilities over time" not in all_titles(at)


def test_demo_example_is_classified_and_kept_across_pages(at):
    at.radio(key="classify_source").set_value("Example").run()
    at.selectbox(key="classify_demo").set_value("Sweep 50 Hz → 7.5 kHz").run()
    at.button(key="classify_use_demo").click().run()
    assert not at.exception
    assert any("Sweep" in s.value for s in at.subheader)
    at.switch_page("pages/how_it_works.py").run()
    at.switch_page("pages/classify.py").run()
    assert any("Sweep" in s.value for s in at.subheader)  # the clip survived the page change


def encoded(x: np.ndarray, sr: int, subtype: str, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
    return buf.getvalue()


def _tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)
    return x if channels == 1 else np.repeat(x[:, None], channels, 1)


BAD_AND_ODD = {
    # name: (bytes factory, "error" | "result")
    "nan.wav": (lambda: encoded(np.full(8000, np.nan), 16_000, "FLOAT"), "error"),
    "truncated.wav": (lambda: wav_bytes()[:30], "error"),
    "archive.wav": (zip_bytes, "error"),
    "ten_minutes.wav": (lambda: encoded(np.zeros(600 * 8000), 8000, "PCM_U8"), "error"),
    "zero_samples.wav": (lambda: encoded(np.zeros(0), 16_000, "PCM_16"), "error"),
    "six_channels.wav": (lambda: encoded(_tone(1.0, 16_000, 6), 16_000, "PCM_16"), "result"),
    "8khz.wav": (lambda: encoded(_tone(2.0, 8000), 8000, "PCM_16"), "result"),
    "96khz_24bit.wav": (lambda: encoded(_tone(1.0, 96_000), 96_000, "PCM_24"), "result"),
    "8bit.wav": (lambda: encoded(_tone(1.0, 16_000), 16_000, "PCM_U8"), "result"),
    "float32_loud.wav": (lambda: encoded(4 * _tone(1.0, 16_000), 16_000, "FLOAT"), "result"),
    "10ms.wav": (lambda: encoded(_tone(0.01, 16_000), 16_000, "PCM_16"), "result"),
    "square_dc.wav": (lambda: encoded(0.3 + 0.6 * np.sign(_tone(1.0, 16_000)), 16_000, "PCM_16"), "result"),
    "clip.flac": (lambda: encoded(_tone(1.0, 44_100), 44_100, "PCM_16", "FLAC"), "result"),
    "clip.ogg": (lambda: encoded(_tone(1.0, 44_100), 44_100, "VORBIS", "OGG"), "result"),
}


@pytest.mark.parametrize("name", list(BAD_AND_ODD))
def test_bad_and_odd_files_give_a_result_or_a_clear_error(at, name):
    make, expected = BAD_AND_ODD[name]
    upload(at, name, make(), "application/octet-stream")
    assert not at.exception, [e.value for e in at.exception]
    if expected == "error":
        assert at.error and name in at.error[0].value
        assert "Traceback" not in at.error[0].value
    else:
        assert not at.error, [e.value for e in at.error]
        assert "Top classes" in all_titles(at)


def test_the_verdict_comes_right_after_the_sound(at):
    """On a phone the columns stack in page order: the answer was 1,650 px down, below the timeline."""
    upload(at, "tone.wav", wav_bytes(seconds=3.0))
    order = []

    def walk(node):
        for child in getattr(node, "children", {}).values():
            if child.type == "plotly_chart":
                order.append(fig_titles(json.loads(child.proto.spec))[0])
            elif child.type == "html" and "envnet-wave" in child.proto.body:
                order.append("Waveform and analysed windows")
            elif child.type in ("markdown", "warning") and any(
                    w in getattr(child, "value", "") for w in ("Sounds like", "Not sure", "silent")):
                order.append("verdict")
            elif child.type == "audio":
                order.append("audio")
            walk(child)

    walk(at.main)
    assert order[:3] == ["audio", "verdict", "Top classes"], order
    assert order.index("Top classes") < order.index("Class probabilities over time") < order.index(
        "Waveform and analysed windows")

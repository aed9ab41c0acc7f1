"""The Train page through AppTest: a classroom's own classes, a tiny live training, the new model in the
picker and on Classify; one training per server; Stop keeps the model."""

from __future__ import annotations

import ast
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from apptools import APP, TIMEOUT, titles
from streamlit.testing.v1 import AppTest

from envnet import recordings
from envnet.audio import load_audio
from envnet.data import read_esc50
from envnet.jobs import SLOT, RunState
from envnet.spectra import FrequencyResponse, centres_and_order


def wav(freq: float, seconds: float = 1.0, sr: int = 16_000, amplitude: float = 0.5) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, amplitude * np.sin(2 * np.pi * freq * t), sr, format="WAV")
    return buf.getvalue()




def figure(at: AppTest, prefix: str) -> dict:
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        if spec["layout"].get("title", {}).get("text", "").startswith(prefix):
            return spec
    raise AssertionError(f"no figure titled {prefix!r}: {titles(at)}")


def by_label(widgets, label: str):
    for w in widgets:
        if w.label == label:
            return w
    raise AssertionError(f"no widget labelled {label!r}: {[w.label for w in widgets]}")


def wait_for_training(timeout: float = 150.0) -> None:
    end = time.time() + timeout
    while SLOT.owner is not None:
        assert time.time() < end, "training did not finish in time"
        time.sleep(0.2)


@pytest.fixture
def train_page() -> AppTest:
    assert SLOT.owner is None, "a training from another test is still running"
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    yield at
    job = at.session_state["train_job"] if "train_job" in at.session_state else None
    if job is not None:  # never leave a run (and the server's slot) behind
        job.stop()
        job.join(60)


def counts(at: AppTest) -> list[str]:
    """The "NAME: N examples" line under each class."""
    return [c.value.split(":")[0] + ":" + c.value.split(":")[1] for c in at.caption if " example" in c.value]


def add_own_classes(at: AppTest) -> None:
    for name in ("low", "high"):
        at.text_input(key="own_new_class").set_value(name)
        at.button(key="own_add_class").click().run()
    by_label(at.file_uploader, "Add examples to “low”").set_value(
        [(f"low{i}.wav", wav(200 * (1 + 0.1 * i)), "audio/wav") for i in range(3)])
    by_label(at.file_uploader, "Add examples to “high”").set_value(
        [(f"high{i}.wav", wav(3000 * (1 + 0.1 * i)), "audio/wav") for i in range(2)])
    at.run()
    # The third "high" example comes from the microphone.
    by_label(at.audio_input, "Record an example of “high”").set_value(("rec.wav", wav(3500), "audio/wav"))
    at.run()


def full_network(at: AppTest) -> None:
    """Own classes train few-shot by default; the whole-network settings sit behind the Advanced toggle."""
    at.toggle(key="train_full_own").set_value(True)
    at.run()


def tiny_settings(at: AppTest, epochs: int = 2, name: str = "unit-model") -> None:
    full_network(at)
    at.number_input(key="train_epochs").set_value(epochs)
    at.number_input(key="train_batch").set_value(8)
    at.selectbox(key="train_width").set_value(64)
    at.checkbox(key="train_init").uncheck()
    at.text_input(key="train_name").set_value(name)
    at.run()


def test_own_classes_survive_reruns_and_page_changes(train_page):
    at = train_page
    add_own_classes(at)
    assert not at.exception and not at.error
    assert counts(at) == ["low: 3 examples", "high: 3 examples"]
    # The uploader states the real limit (a minute of sound), not the server's "128MB per file".
    box = by_label(at.file_uploader, "Add examples to “low”").proto
    assert box.max_upload_size_mb == 50 and "60 seconds" in box.help
    at.switch_page("pages/classify.py").run()
    at.switch_page("pages/train.py").run()
    assert counts(at) == ["low: 3 examples", "high: 3 examples"]
    # A class name that exists already is refused with a message, not a crash.
    at.text_input(key="own_new_class").set_value("low")
    at.button(key="own_add_class").click().run()
    assert any("already" in w.value for w in at.warning)
    # A bad file is reported and the examples already added stay.
    by_label(at.file_uploader, "Add examples to “low”").set_value(("junk.wav", b"not audio", "audio/wav"))
    at.run()
    assert not at.exception and at.error and "junk.wav" in at.error[0].value
    assert counts(at) == ["low: 3 examples", "high: 3 examples"]
    # The uploader is emptied (the kept examples are listed below it), and the refusal is said until the next upload.
    refusal = ["“junk.wav” was not added: the file is not audio: it looks like a text file"]
    assert not by_label(at.file_uploader, "Add examples to “low”").value
    at.run()
    assert [e.value for e in at.error] == refusal
    by_label(at.file_uploader, "Add examples to “low”").set_value(("more.wav", wav(300), "audio/wav"))
    at.run()
    assert not at.exception and not at.error
    assert counts(at) == ["low: 4 examples", "high: 3 examples"]
    # A silent recording is refused, and said why for as long as the recorder holds it (it was said once).
    mic = by_label(at.audio_input, "Record an example of “high”")
    mic.set_value(("rec.wav", wav(1000, amplitude=0.0), "audio/wav")).run()
    refused = [e.value for e in at.error]
    assert len(refused) == 1 and refused[0].startswith("“recording 4” was not added:") and "silent" in refused[0]
    at.button(key="own_add_class").click().run()  # any other rerun
    assert [e.value for e in at.error] == refused
    by_label(at.audio_input, "Record an example of “high”").set_value(("rec.wav", wav(3600), "audio/wav")).run()
    assert not at.exception and not at.error
    assert counts(at) == ["low: 4 examples", "high: 4 examples"]


@pytest.mark.slow  # a real (tiny) training plus four filter measurements: ~10 s alone, more on a busy CPU
def test_tiny_training_shows_curves_filters_and_the_model_becomes_selectable(train_page):
    at = train_page
    add_own_classes(at)
    tiny_settings(at)
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error
    assert "Stop training" in [b.label for b in at.button]
    # Go to Classify while it trains: the finished model must reach the picker there too.
    at.switch_page("pages/classify.py").run()
    assert any("Training “unit-model”" in c.value for c in at.sidebar.caption)
    wait_for_training()
    at.run()
    picker = at.selectbox(key="model_key")
    assert picker.value.startswith("session:trained") and "unit-model (trained here)" in picker.options
    at.radio(key="classify_source").set_value("Upload").run()
    at.file_uploader(key="classify_upload").set_value(("t.wav", wav(3000, seconds=2.0), "audio/wav")).run()
    assert not at.exception and not at.error
    assert sorted(figure(at, "Top classes")["data"][0]["y"]) == ["high", "low"]  # Classify uses the new model
    # Back on Train: the curves, the filter heatmap, the replay over epochs and the downloads.
    at.switch_page("pages/train.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Loss" in titles(at) and "Accuracy" in titles(at)
    assert "training" in [t["name"] for t in figure(at, "Loss")["data"]]
    evolution = figure(at, "How the filters evolved")
    assert [f["name"] for f in evolution["frames"]] == ["0", "1", "2"]
    assert evolution["data"][0]["type"] == "heatmap" and evolution["layout"]["sliders"][0]["active"] == 2
    # Rows in Hz as on the live heatmap (not filter numbers 0–39), and epoch 0 explained.
    assert "Hz" in evolution["layout"]["yaxis"]["title"]["text"] and evolution["layout"]["yaxis"]["ticktext"]
    assert any(c.value.startswith("Epoch 0 is where training started") for c in at.caption)
    # The model card says truthfully where its data came from: uploaded and recorded examples.
    assert any(c.value.startswith("Data: your own examples") for c in at.sidebar.caption)
    # The final filters are drawn once, as the evolution's last frame: not again as a separate heatmap.
    assert not any(t.startswith("The 40 filters after epoch") for t in titles(at))
    assert {b.label for b in at.get("download_button")} >= {"Download weights (.safetensors)",
                                                              "Download model card (.json)"}
    assert any("is trained and selected" in m.value for m in at.success)


def test_the_whole_network_toggle_shows_only_its_own_controls(train_page):
    """With "Advanced: train the whole network" on, the few-shot name and Train button went away; only the
    chosen way's controls show, and switching back brings them back."""
    at = train_page
    add_own_classes(at)
    assert "fs_train" in keys(at, "button") and "fs_name" in keys(at, "text_input")
    assert "train_start" not in keys(at, "button")
    full_network(at)
    assert not at.exception
    assert "fs_train" not in keys(at, "button") and "fs_name" not in keys(at, "text_input")
    assert "train_start" in keys(at, "button") and "train_name" in keys(at, "text_input")
    at.toggle(key="train_full_own").set_value(False).run()
    assert "fs_train" in keys(at, "button") and "train_start" not in keys(at, "button")


def page_order(at: AppTest) -> list[tuple[str, str]]:
    """The main area's elements top to bottom, as (type, label or text)."""
    out = []

    def walk(node) -> None:
        children = getattr(node, "children", None)
        if children:
            for child in children.values():
                walk(child)
            return
        text = getattr(node, "label", None) or getattr(node, "value", "")
        out.append((node.type, text if isinstance(text, str) else ""))

    walk(at.main)
    return out


def keys(at: AppTest, kind: str) -> set[str]:
    return {w.key for w in at.get(kind)}


class SteppingJob:
    """A stand-in training that moves on by one epoch every time anyone looks at it: a page that took two
    snapshots in one redraw would show two epochs."""

    def __init__(self, measuring: bool = False, stopping: bool = False) -> None:
        self.id, self.token, self.name, self.running, self.result = "fake", "fake-token", "fake-model", True, None
        self.looks = 3  # epochs already run: the heatmap names an epoch, not "before training"
        self.measuring = measuring  # epoch e has ended but its filters are still being measured
        self.stopping = stopping  # Stop was pressed; the run has not ended yet
        self.fr = fake_response()

    def heartbeat(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass

    def snapshot(self) -> RunState:
        self.looks += 1
        e = self.looks  # epoch e has just ended and its filters were measured
        return RunState("running", 50, e, 4, 4, 1.0, [{"epoch": i, "train_loss": 1.0, "train_acc": 0.5}
                                                     for i in range(1, e + 1)],
                        [], [(i, self.fr.response) for i in range(e + 1 - self.measuring)], self.fr.freqs, self.fr,
                        None, "",
                        clock=10.0 * e, seconds_left=5.0, stopping=self.stopping)


def fake_response() -> FrequencyResponse:
    freqs = np.geomspace(10, 8000, 30)
    response = np.exp(-0.5 * ((np.arange(30)[None] - (np.arange(40) % 30)[:, None]) / 2.0) ** 2)
    centres, order = centres_and_order(response, freqs)
    return FrequencyResponse(freqs, response, order, centres)


def test_one_redraw_of_a_run_names_one_epoch(train_page):
    """The sidebar, the status line and the filter heatmap's title once named different epochs for a moment,
    each from its own look at the run: now the Train page draws from one snapshot, and the sidebar there
    names no epoch of its own."""
    at = train_page
    at.session_state["train_job"] = SteppingJob()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    status = [p.proto.text for p in at.get("progress") if p.proto.text.startswith("Epoch")]
    assert len(status) == 1, status
    said = int(re.match(r"Epoch (\d+) of 50", status[0]).group(1))
    heat = [t for t in titles(at) if t.startswith("The 40 filters after epoch")]
    assert heat == [f"The 40 filters after epoch {said}"]
    assert f" {10 * said} s so far" in status[0]  # the clock of the same snapshot
    sidebar = [c.value for c in at.sidebar.caption if c.value.startswith("Training “fake-model”")]
    assert sidebar == ["Training “fake-model”: its progress is on this page."]
    # On another page the sidebar is where the run's progress shows.
    at.switch_page("pages/classify.py").run()
    assert any(re.search(r"Training “fake-model”: epoch \d+ of 50", c.value) for c in at.sidebar.caption)


def test_a_stop_in_progress_says_so_and_cannot_be_pressed_again(train_page):
    """A stop takes effect after the current step and the model is then checked and saved: on a busy CPU that
    took minutes, with the page still saying "Epoch 3 of 30" and offering Stop as if nothing had happened."""
    at = train_page
    at.session_state["train_job"] = SteppingJob(stopping=True)
    at.run()
    status = [p.proto.text for p in at.get("progress")]
    assert any(t.startswith("Stopping after 4 epochs: finishing the current step") for t in status), status
    assert at.button(key="train_stop").disabled


def test_while_an_epochs_filters_are_measured_the_status_says_so(train_page):
    """Between an epoch's end and its filters' measurement the heatmap still shows the epoch before: the
    status line says why instead of naming another epoch without explanation."""
    at = train_page
    at.session_state["train_job"] = SteppingJob(measuring=True)
    at.run()
    status = [p.proto.text for p in at.get("progress") if p.proto.text.startswith("Epoch")]
    said = int(re.match(r"Epoch (\d+) of 50 done: measuring its filters", status[0]).group(1))
    assert [t for t in titles(at) if t.startswith("The 40 filters")] == [f"The 40 filters after epoch {said - 1}"]


def test_stop_ends_the_run_and_keeps_the_model(train_page):
    at = train_page
    add_own_classes(at)
    tiny_settings(at, epochs=500, name="stopped-model")
    at.button(key="train_start").click().run()
    assert SLOT.owner is not None
    at.button(key="train_stop").click().run()
    wait_for_training(60)
    at.run()
    assert not at.exception
    job = at.session_state["train_job"]
    assert job.snapshot().status == "stopped" and len(job.snapshot().history) < 500
    assert "stopped-model (trained here)" in at.selectbox(key="model_key").options


def test_another_sessions_training_makes_the_server_busy(train_page):
    at = train_page
    add_own_classes(at)
    full_network(at)
    assert SLOT.acquire("another visitor")
    try:
        at.run()
        assert any("busy" in w.value for w in at.warning)
        assert at.button(key="train_start").disabled
    finally:
        SLOT.release("another visitor")
    at.run()
    assert not at.button(key="train_start").disabled


def test_a_closed_tab_gets_its_run_back_from_the_address(train_page):
    at = train_page
    add_own_classes(at)
    tiny_settings(at, epochs=500, name="found-again")
    at.button(key="train_start").click().run()
    token = at.query_params["run"]
    assert token and token == at.session_state["train_job"].token
    # The tab is closed; the visitor opens the same address later: a new session, the same run.
    again = AppTest.from_file(APP, default_timeout=TIMEOUT)
    again.query_params["run"] = token
    again.run()
    again.switch_page("pages/train.py").run()
    assert not again.exception
    assert again.session_state["train_job"] is at.session_state["train_job"]
    again.button(key="train_stop").click().run()
    wait_for_training(60)
    again.run()
    assert "found-again (trained here)" in again.selectbox(key="model_key").options


def test_an_unknown_run_in_the_address_is_explained(train_page):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = "no-such-run"
    at.run()
    assert not at.exception
    assert any("no longer on this server" in w.value for w in at.sidebar.warning)
    assert "run" not in at.query_params
    assert "train_job" not in at.session_state


def test_examples_saved_as_a_zip_come_back_and_single_examples_can_be_removed(train_page):
    at = train_page
    saved = recordings.to_zip({"low": [(f"low{i}.wav", load_audio(wav(200 + 20 * i))) for i in range(3)],
                               "high": [("high0.wav", load_audio(wav(3000)))]})
    at.file_uploader(key="own_load").set_value(("my-sounds.zip", saved, "application/zip")).run()
    assert not at.exception and not at.error
    assert counts(at) == ["low: 3 examples", "high: 1 example"]
    assert any("Loaded 4 examples in 2 classes" in s.value for s in at.success)
    assert "Save these examples (.zip)" in [b.label for b in at.get("download_button")]
    # One bad recording goes, the others stay.
    remove = [b for b in at.button if b.label == "Remove" and b.key.startswith("own_rm_clip_")]
    assert len(remove) == 4
    remove[1].click().run()
    assert counts(at) == ["low: 2 examples", "high: 1 example"]
    # A file that is not a zip is explained; nothing is lost.
    at.file_uploader(key="own_load").set_value(("oops.zip", b"not a zip", "application/zip")).run()
    assert not at.exception and any("oops.zip" in e.value and "not a zip" in e.value for e in at.error)
    assert counts(at) == ["low: 2 examples", "high: 1 example"]


def test_a_session_holds_a_bounded_amount_of_examples(train_page, monkeypatch):
    monkeypatch.setattr(recordings, "MAX_TOTAL_SECONDS", 2.5)
    at = train_page
    saved = recordings.to_zip({"a": [(f"a{i}.wav", load_audio(wav(300 + 50 * i))) for i in range(4)]})
    at.file_uploader(key="own_load").set_value(("big.zip", saved, "application/zip")).run()
    assert not at.exception
    assert counts(at) == ["a: 2 examples"]
    assert any("not added: this session already holds 2.5 seconds" in w.value for w in at.warning)


def magic_writes(path: Path) -> list[int]:
    """Lines that Streamlit's "magic" would write onto the page (bare expressions that are not calls)."""
    from streamlit.runtime.scriptrunner.magic import MAGIC_MODULE_NAME, add_magic

    tree = add_magic(path.read_text(), str(path))
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name) and n.func.value.id == MAGIC_MODULE_NAME]


def test_no_page_has_a_bare_expression_that_streamlit_would_write():
    root = Path(APP).parent
    for path in [root / "app.py", *sorted((root / "pages").glob("*.py"))]:
        assert not magic_writes(path), f"{path.name} lines {magic_writes(path)} would be written onto the page"


def test_choosing_a_folder_of_classes_shows_no_python_object(train_page, tmp_path):
    """A bare expression in split_by_fold once dumped the Dataset (server paths, "No docs available")."""
    for cls, freq in (("low", 200), ("high", 3000)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            (tmp_path / cls / f"{i}.wav").write_bytes(wav(freq * (1 + 0.1 * i)))
    at = train_page
    at.radio(key="train_source").set_value("A folder on the server").run()
    at.text_input(key="train_folder").set_value(str(tmp_path)).run()
    assert not at.exception and not at.error
    assert any("4 clips, 2 classes" in c.value for c in at.caption)  # the folder was read
    assert not at.main.get("help") and not at.main.json  # and nothing of the object was written (st.help)


def test_a_dataset_of_one_fold_is_not_split_into_nothing_to_train_on(train_page, tmp_path):
    """ESC-50's layout with every clip in fold 1 (as esc50-more): the only fold was held out by default, the
    page said "Training on 0 clips" and Start failed with "no usable training clips"."""
    (tmp_path / "audio").mkdir()
    (tmp_path / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i, (target, name, freq) in enumerate([(3, "cow", 200), (3, "cow", 220), (5, "cat", 3000), (5, "cat", 3300)]):
        (tmp_path / "audio" / f"1-{i}-A-{target}.wav").write_bytes(wav(freq))
        rows.append(f"1-{i}-A-{target}.wav,1,{target},{name},False,{i},A")
    (tmp_path / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    at = train_page
    at.radio(key="train_source").set_value("A folder on the server").run()
    at.text_input(key="train_folder").set_value(str(tmp_path)).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="train_val_fold").value == "none"
    assert any(c.value.startswith("Training on 4 clips of 2 classes") for c in at.caption)
    assert not at.button(key="train_start").disabled
    at.selectbox(key="train_val_fold").set_value(1).run()
    assert [e.value for e in at.error] == [
        "Every clip is in fold 1: validating on it would leave nothing to train on. Choose “none”."]
    assert at.button(key="train_start").disabled
    with pytest.raises(ValueError, match="lists no ESC-10 clips: choose the ESC-50 subset"):
        read_esc50(tmp_path, "esc10")


def test_a_folder_that_is_not_a_dataset_is_named_once_with_the_reason(train_page, tmp_path):
    at = train_page
    at.radio(key="train_source").set_value("A folder on the server").run()
    for folder, reason in ((tmp_path, "need at least two class folders"), (tmp_path / "nope", "No such file")):
        at.text_input(key="train_folder").set_value(str(folder)).run()
        assert not at.exception and len(at.error) == 1 and reason in at.error[0].value
        assert at.error[0].value.count("Could not read") == 1 and at.error[0].value.count(tmp_path.name) == 1


def test_a_long_upload_is_split_and_the_page_says_so(train_page):
    at = train_page
    at.text_input(key="own_new_class").set_value("knock")
    at.button(key="own_add_class").click().run()
    sr = 16_000
    knocks = np.zeros(12 * sr, np.float32)  # a knock every 1.5 s: a session of one sound
    for k in range(8):
        start = int((0.5 + 1.5 * k) * sr)
        knocks[start : start + 2400] = 0.8 * np.random.default_rng(k).standard_normal(2400) * np.hanning(2400)
    buf = io.BytesIO()
    sf.write(buf, knocks, sr, format="WAV")
    by_label(at.file_uploader, "Add examples to “knock”").set_value(("session.wav", buf.getvalue(), "audio/wav"))
    at.run()
    assert not at.exception and not at.error
    said = [s.value for s in at.success]
    assert len(said) == 1 and said[0].startswith("“session.wav” was split into 8 examples of “knock”"), said
    assert counts(at) == ["knock: 8 examples"]
    # Several long files in one upload: each one's split is said (only the last one's was).
    buf2 = io.BytesIO()
    sf.write(buf2, knocks[: 6 * sr], sr, format="WAV")
    by_label(at.file_uploader, "Add examples to “knock”").set_value(
        [("a.wav", buf.getvalue(), "audio/wav"), ("b.wav", buf2.getvalue(), "audio/wav")])
    at.run()
    assert [s.value for s in at.success] == ["“a.wav” was split into 8 examples of “knock”; “b.wav” was split into "
                                             "4 examples of “knock”: listen to them below and remove any that are "
                                             "not the sound."]
    assert counts(at) == ["knock: 20 examples"]


def test_save_these_examples_is_built_in_the_page_once_per_change(train_page, monkeypatch):
    """The zip used to be a deferred callable, run on the server's download thread while a rerun changed the
    classes: "dictionary changed size during iteration", or no download at all."""
    built = []
    real = recordings.to_zip
    monkeypatch.setattr(recordings, "to_zip", lambda ex: built.append(ex) or real(ex))
    at = train_page
    add_own_classes(at)
    save = next(b for b in at.get("download_button") if b.proto.label == "Save these examples (.zip)")
    assert not save.proto.deferred_file_id  # bytes made in the page's run, not later on another thread
    n = len(built)
    at.run()
    at.run()
    assert len(built) == n  # nothing changed: the same zip is served again
    by_label(at.file_uploader, "Add examples to “low”").set_value(("low9.wav", wav(260), "audio/wav")).run()
    assert len(built) == n + 1
    assert [name for name, _ in built[-1]["low"]] == ["low0.wav", "low1.wav", "low2.wav", "low9.wav"]
    loaded, problems = recordings.from_zip(real(built[-1]))
    assert not problems and {k: len(v) for k, v in loaded.items()} == {"low": 4, "high": 3}


def test_a_busy_server_shows_each_visitor_their_place_in_the_queue(train_page):
    at = train_page
    add_own_classes(at)
    tiny_settings(at, epochs=1)
    other = AppTest.from_file(APP, default_timeout=TIMEOUT)
    other.run()
    other.session_state["own_classes"] = at.session_state["own_classes"]
    other.switch_page("pages/train.py").run()
    full_network(other)
    assert SLOT.acquire("another visitor")
    try:
        at.run()
        assert any("busy training another visitor's model" in w.value for w in at.warning)
        # On a phone it was under the data choice and all the settings, off the first screen: now it comes
        # first, right under the page's title.
        shown = page_order(at)
        busy = next(i for i, (kind, text) in enumerate(shown) if "busy training" in text)
        assert busy < shown.index(("radio", "Training data")), shown[: busy + 1]
        at.button(key="train_queue").click().run()
        other.run()
        other.button(key="train_queue").click().run()
        assert any("number 1 in the queue" in i.value for i in at.info)
        assert any("number 2 in the queue" in i.value for i in other.info)
        assert at.button(key="train_start").disabled and other.button(key="train_start").disabled
        SLOT.release("another visitor")
        at.run()
        other.run()
        # The first in line may start now (with a countdown); the second still waits its turn.
        assert any("It is your turn" in s.value for s in at.success) and not at.button(key="train_start").disabled
        assert any("number 2 in the queue" in i.value for i in other.info)
        assert other.button(key="train_start").disabled
        at.button(key="train_start").click().run()
        assert at.session_state["train_job"].running
        other.run()
        assert any("number 1 in the queue" in i.value for i in other.info)
    finally:  # never leave the slot or places behind for the other tests of this process
        SLOT.release("another visitor")
        for t in (at, other):
            SLOT.leave(t.session_state["train_visitor"])

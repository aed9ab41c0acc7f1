"""Datasets in the app: real ESC-10 clips as Classify examples and as Train data (skipped without the
data), and the download button's message when the server is offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from apptools import open_page

from envnet import checkpoint

ESC10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"

needs_esc10 = pytest.mark.skipif(not (ESC10 / "meta" / "esc50.csv").is_file(),
                                 reason=f"ESC-10 not found at {ESC10}")
needs_default = pytest.mark.skipif(not checkpoint.paths(checkpoint.default_checkpoint())[0].is_file(),
                                   reason="no default checkpoint in checkpoints/")




@pytest.mark.slow  # decodes a real clip and measures the default model's filters
@needs_esc10
@needs_default
def test_classify_a_real_clip_picked_by_class(monkeypatch):
    monkeypatch.setenv("ENVNET_DATA", str(ESC10))
    at = open_page("pages/classify.py")
    at.radio(key="classify_source").set_value("Example").run()
    at.radio(key="classify_example_kind").set_value("Dataset clips").run()
    at.selectbox(key="classify_dataset").set_value(str(ESC10)).run()
    assert "dog" in at.selectbox(key="classify_class").options
    at.selectbox(key="classify_class").set_value("rooster").run()
    at.button(key="classify_use_clip").click().run()
    assert not at.exception and not at.error
    assert any(s.value.startswith("“rooster:") for s in at.subheader)
    # A rooster clip the shipped model trained on: it names it (this server has no held-out fold).
    assert any(m.value.startswith("#### Sounds like: rooster") for m in at.markdown)


@pytest.mark.slow  # decodes ESC-10 once (later runs read the cached waveforms)
@needs_esc10
def test_train_page_reads_esc10_with_folds(monkeypatch):
    monkeypatch.setenv("ENVNET_DATA", str(ESC10))
    at = open_page("pages/train.py")
    at.radio(key="train_source").set_value("ESC-10 / ESC-50 (cache)").run()
    at.selectbox(key="train_root").set_value(str(ESC10)).run()
    assert not at.exception and not at.error
    info = [c.value for c in at.caption if "clips," in c.value]
    assert info and "10 classes" in info[0]
    fold = at.selectbox(key="train_val_fold")
    assert fold.options[0] == "none" and fold.options[-1] == f"fold {fold.value}"  # the last fold held out by default
    assert not at.button(key="train_start").disabled
    assert not at.main.get("help") and not at.main.json  # no Dataset object written out (issue 14's dump)


@pytest.mark.parametrize("public", [False, True])
def test_download_offline_says_what_a_visitor_can_do_on_the_page(monkeypatch, public):
    from envnet import download, examples

    def offline(*args, **kwargs):  # what download() raises offline: words for the command line
        raise download.OfflineError("could not reach github.com. " + download.manual_instructions(Path("/srv/cache")))

    if public:
        monkeypatch.setenv("ENVNET_PUBLIC", "1")
    monkeypatch.setattr(examples, "dataset_roots", lambda: [])
    monkeypatch.setattr(download, "download", offline)
    at = open_page("pages/train.py")
    at.radio(key="train_source").set_value("ESC-10 / ESC-50 (cache)").run()
    assert any("No ESC-50 copy" in i.value for i in at.info)
    at.button(key="train_download").click().run()
    assert not at.exception and len(at.error) == 1
    message = at.error[0].value
    assert "cannot reach GitHub" in message and "Your own classes" in message  # what to do instead, here
    assert "command" not in message and "--data" not in message  # not the command line's words
    assert ("/" in message) is not public  # a public server names no server paths (nor links)


def test_classify_without_data_names_the_train_pages_download_button_as_it_is(monkeypatch):
    """Was: Classify said "download ESC-10" while the Train page's button said ESC-50."""
    from envnet import examples

    monkeypatch.setattr(examples, "dataset_roots", lambda: [])
    train = open_page("pages/train.py")
    train.radio(key="train_source").set_value("ESC-10 / ESC-50 (cache)").run()
    label = train.button(key="train_download").label
    at = open_page("pages/classify.py")
    at.radio(key="classify_source").set_value("Example").run()
    assert not at.exception
    assert any(f"“{label}” on the Train page" in c.value for c in at.caption), [c.value for c in at.caption]


def test_a_public_server_names_no_paths_in_the_dataset_picker_or_errors(monkeypatch, tmp_path):
    from envnet import examples

    root = tmp_path / "srv" / "ESC-50-master"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n")  # no clips
    monkeypatch.setenv("ENVNET_PUBLIC", "1")
    monkeypatch.setattr(examples, "dataset_roots", lambda: [root])
    at = open_page("pages/train.py")
    at.radio(key="train_source").set_value("ESC-10 / ESC-50 (cache)").run()
    assert not at.exception
    box = at.selectbox(key="train_root")
    assert box.options == ["ESC-50-master"]  # shown by name; the value stays the real folder
    assert at.error and str(tmp_path) not in at.error[0].value and "ESC-50-master" in at.error[0].value
    sidebar = " ".join(str(j.value) for j in at.sidebar.json) + " ".join(c.value for c in at.sidebar.caption)
    assert "../" not in sidebar and "/tmp/" not in sidebar  # the model card's data source and recipe paths

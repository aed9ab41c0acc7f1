"""The README's picture of the Classify page, docs/classify.png, is made here: a real Chromium classifies a
generated clip and the page is photographed. The committed picture changes only on request:

    ENVNET_UPDATE_SCREENSHOT=1 python -m pytest tests/browser/test_screenshot.py

Otherwise the new picture goes to tests/browser/artifacts/classify.png, to compare by eye.
"""

from __future__ import annotations

import io
import os

from PIL import Image

from . import pw
from .browser_support import ARTIFACTS, ROOT, clicks, sweep, write_wav

DOCS_PNG = ROOT / "docs" / "classify.png"
WIDTH, HEIGHT = 1200, 1400  # CSS pixels: the sidebar, the clip's verdict and timeline, the two maps
MAX_BYTES = 400_000  # small enough for a README: the picture is quantised to 256 colours


def small_png(shot: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(shot)).convert("RGB").quantize(256).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def test_classify_page_screenshot_for_the_readme(new_page, server, tmp_path) -> None:
    page = new_page()
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    clip = write_wav(tmp_path / "sweep-and-clicks.wav", 0.6 * sweep(200, 4000, 3.0) + 0.4 * clicks(3.0))
    pw.open_app(page, server.url)
    pw.upload(page, "Upload a sound file", clip)
    page.get_by_text("Best guess:").wait_for()
    pw.wait_maps(page)
    pw.wait_idle(page)
    pw.assert_no_errors(page)
    # Scrolled to the clip's heading: its verdict, the timeline and the two maps, not the uploader.
    page.get_by_text("sweep-and-clicks.wav” —").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    png = small_png(page.screenshot())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "classify.png").write_bytes(png)
    if os.environ.get("ENVNET_UPDATE_SCREENSHOT"):
        DOCS_PNG.parent.mkdir(exist_ok=True)
        DOCS_PNG.write_bytes(png)
    assert len(png) < MAX_BYTES, len(png)
    # The README shows the committed picture, which is one of these: a PNG of the page at this size.
    assert "docs/classify.png" in (ROOT / "README.md").read_text()
    committed = Image.open(DOCS_PNG)
    assert committed.format == "PNG" and committed.size == Image.open(io.BytesIO(png)).size
    assert DOCS_PNG.stat().st_size < MAX_BYTES

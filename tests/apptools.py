"""Shared AppTest helpers: open a page of the real app, read the plotly figures' titles and the HTML maps."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 180  # seconds per rerun: a 2-core CI machine runs model forwards inside reruns


def titles(at: AppTest) -> list[str]:
    """Every figure's title and subplot titles on the page."""
    out = []
    for el in at.get("plotly_chart"):
        layout = json.loads(el.proto.spec)["layout"]
        out.append(layout.get("title", {}).get("text", ""))
        out += [a.get("text", "") for a in layout.get("annotations", [])]
    return out


def open_page(page: str) -> AppTest:
    """Run app.py, then switch to `page` (e.g. "pages/filters.py"); fails on any exception."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def html_of(at: AppTest) -> str:
    """The page's st.html elements, joined: the maps, the waveform, the live top classes."""
    return "".join(h.proto.body for h in at.get("html"))


def read_maps(markup: str) -> dict[str, dict]:
    """The maps in plots.maps_html's markup: per kind its data attributes, decoded image (RGB, or None),
    and tick labels, read the way a browser would."""
    out = {}
    for part in markup.split('<div class="envnet-map"')[1:]:
        attrs = dict(re.findall(r' data-([a-z-]+)="([^"]*)"', part.split(">", 1)[0]))
        src = re.search(r'src="data:image/png;base64,([^"]+)"', part)
        image = Image.open(io.BytesIO(base64.b64decode(src.group(1)))) if src else None
        ticks = {cls: re.findall(r"<span[^>]*>([^<]*)</span>", body)
                 for cls, body in re.findall(r'class="envnet-ticks envnet-(\w)"[^>]*>(.*?)</div>', part)}
        out[attrs["kind"]] = {**attrs, "image": image, "ticks": ticks}
    return out

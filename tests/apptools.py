"""Shared AppTest helpers: open a page of the real app, read the plotly figures' titles."""

from __future__ import annotations

import json
from pathlib import Path

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

"""Reading a Streamlit page the way a person sees it: alerts, figures (plotly's own data), the sidebar.

Works on Playwright's sync pages; the async many-users test has its own copies of the two JavaScript
snippets (PLOTS_JS, ALERTS_JS), which is why they are plain strings.
"""

from __future__ import annotations

import re
import time

from .browser_support import UI_TIMEOUT_MS

# Every plotly chart on the page: its title, subplot titles (annotations) and per-trace data shapes.
PLOTS_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const layout = gd.layout || {};
  const title = layout.title ? (typeof layout.title === 'string' ? layout.title : layout.title.text) : '';
  const annotations = (layout.annotations || []).map(a => a.text);
  // _fullData holds the decoded arrays; gd.data may still be plotly's base64 {dtype, bdata} encoding.
  const traces = (gd._fullData || gd.data || []).map(t => {
    const out = {type: t.type || 'scatter', name: t.name || ''};
    if (t.z) {
      const z = Array.from(t.z, row => Array.from(row));
      out.z_shape = [z.length, z.length ? z[0].length : 0];
    }
    if (t.x) out.x = Array.from(t.x);
    if (t.y) out.y = Array.from(t.y);
    return out;
  });
  // What a person sees now: Streamlit keeps the previous run's copy of an element while a fragment redraws
  // (faded, data-stale), and sometimes a hidden copy (no height) beside the new one.
  const box = gd.closest('[data-testid="stElementContainer"]');
  const fresh = gd.getBoundingClientRect().height > 0 && !(box && box.getAttribute('data-stale') === 'true');
  return {title, annotations, traces, fresh};
})
"""

# The learned and mel maps (plots.maps_html: images in HTML): which window each shows, its decoded size, and
# its image's identity (`src`), so a test can see that a map really changed.
MAPS_JS = """
() => Array.from(document.querySelectorAll('.envnet-map')).map(m => {
  const img = m.querySelector('img');
  const box = m.closest('[data-testid="stElementContainer"]');
  return {kind: m.dataset.kind, start: m.dataset.start,
          size: img && img.complete ? [img.naturalWidth, img.naturalHeight] : null,
          src: img ? img.src.length + ':' + img.src.slice(-80) : '',
          fresh: m.getBoundingClientRect().height > 0 && !(box && box.getAttribute('data-stale') === 'true')};
}).filter(m => m.fresh)
"""

# Error and warning boxes, exceptions (Streamlit's traceback box) and the visible text.
ALERTS_JS = """
() => ({
  errors: Array.from(document.querySelectorAll('[data-testid="stAlertContentError"]')).map(e => e.innerText),
  exceptions: Array.from(document.querySelectorAll('[data-testid="stException"]')).map(e => e.innerText),
  text: document.body.innerText,
})
"""


def open_app(page, url: str, path: str = "", wait: bool = True) -> None:
    """Navigate; with wait=False return as soon as the server answers, to open several tabs at once."""
    # Not waiting for the "load" event: on a busy 2-core machine the JS bundle alone can take a minute;
    # what matters is the app's own text appearing.
    page.goto(f"{url}/{path}", wait_until="commit")
    if wait:
        wait_ready(page)


def wait_ready(page) -> None:
    page.get_by_text("EnvNet Sound Lab").first.wait_for(timeout=2 * UI_TIMEOUT_MS)
    wait_idle(page)


def wait_idle(page, timeout_ms: int = UI_TIMEOUT_MS) -> None:
    """Until Streamlit has finished the current run: its status widget ("Running…") is gone for a moment."""
    deadline = time.monotonic() + timeout_ms / 1000
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0 or \
            page.locator('[data-testid="stSpinner"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.0:
            return
        page.wait_for_timeout(200)
    raise AssertionError("the app was still running after the timeout")


def plots(page) -> list[dict]:
    return page.evaluate(PLOTS_JS)


def find_plot(page, title: str, fresh: bool = False, charts: list[dict] | None = None) -> dict | None:
    """The chart whose title or one of whose subplot titles starts with `title`; with `fresh`, only a visible
    chart drawn by the current run (a page that redraws itself, like Live, has old copies on screen for a
    moment). `charts`: a snapshot from plots(page), to read several charts from the same instant."""
    for p in plots(page) if charts is None else charts:
        if fresh and not p["fresh"]:
            continue
        # Streamlit's plotly theme wraps titles in <b>…</b>.
        names = [re.sub(r"<[^>]+>", "", t or "") for t in [p["title"], *p["annotations"]]]
        if any(n.startswith(title) for n in names):
            return p
    return None


def wait_plot(page, title: str, timeout_ms: int = UI_TIMEOUT_MS, changed_from: dict | None = None) -> dict:
    """Wait for a chart with that title (and, if given, data different from `changed_from`)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        p = find_plot(page, title)
        if p is not None and (changed_from is None or p["traces"] != changed_from["traces"]):
            return p
        page.wait_for_timeout(300)
    raise AssertionError(f"no chart titled {title!r}{' with new data' if changed_from else ''} appeared; "
                         f"charts on screen: {[q['title'] or q['annotations'] for q in plots(page)]}")


def maps(page) -> dict[str, dict]:
    """The learned and mel maps on screen now, by kind."""
    return {m["kind"]: m for m in page.evaluate(MAPS_JS)}


def wait_maps(page, changed_from: dict | None = None, timeout_ms: int = UI_TIMEOUT_MS) -> dict[str, dict]:
    """Wait until both maps are drawn (their images decoded) and, given `changed_from`, both differ from it."""
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        now = maps(page)
        if set(now) == {"learned", "mel"} and all(m["size"] for m in now.values()) and (
                changed_from is None or all(now[k]["src"] != changed_from[k]["src"] for k in now)):
            return now
        page.wait_for_timeout(200)
    raise AssertionError(f"the learned and mel maps did not appear{' changed' if changed_from else ''}: {maps(page)}")


def assert_no_errors(page, allow: str | None = None) -> None:
    """No exception box and no traceback anywhere; no error box unless its text matches `allow`."""
    state = page.evaluate(ALERTS_JS)
    assert not state["exceptions"], f"the app shows an exception: {state['exceptions']}"
    assert "Traceback" not in state["text"], "the page shows a Python traceback"
    unexpected = [e for e in state["errors"] if not (allow and re.search(allow, e))]
    assert not unexpected, f"the app shows error boxes: {unexpected}"


def errors(page) -> list[str]:
    return page.evaluate(ALERTS_JS)["errors"]


def main(page):
    return page.get_by_test_id("stMain")


def upload(page, label: str, path) -> None:
    """Put a file (or a list of files) into the file uploader with this label (its hidden <input type=file>)."""
    box = page.get_by_test_id("stFileUploader").filter(has_text=label)
    files = [str(p) for p in path] if isinstance(path, (list, tuple)) else str(path)
    box.locator('input[type="file"]').set_input_files(files)


def choose_radio(page, label: str) -> None:
    page.get_by_test_id("stRadio").locator("label").filter(has_text=re.compile(rf"^{re.escape(label)}$")).click()


def go_to(page, title: str) -> None:
    """Open a page through the sidebar's navigation, as a person would."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=re.compile(re.escape(title))).click()
    wait_idle(page)


def fill_number(page, label: str, value: int) -> None:
    box = main(page).get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def choose_option(scope, label: str, option: str) -> None:
    """Pick an option of a selectbox; retried because a rerun that lands mid-click closes the dropdown."""
    box = scope.get_by_role("combobox", name=label)
    for _ in range(5):
        box.click()
        try:
            scope.page.get_by_role("option", name=option, exact=True).click(timeout=5000)
        except Exception:  # Playwright's TimeoutError: the dropdown closed under us
            scope.page.keyboard.press("Escape")
            continue
        scope.page.wait_for_timeout(500)
        if box.input_value() == option:
            return
    raise AssertionError(f"could not choose {option!r} in {label!r} (it shows {box.input_value()!r})")


def add_own_class(page, name: str, files: list) -> None:
    """On Train's "Your own classes": name a class and upload its examples, then wait until they are counted."""
    m = main(page)
    m.get_by_label("New class name").fill(name)
    m.get_by_role("button", name="Add class").click()
    m.get_by_text(f"Class “{name}”").wait_for()
    wait_idle(page)
    upload(page, f"Add examples to “{name}”", files)
    m.get_by_text(f"{name}: {len(files)} example").wait_for()
    wait_idle(page)


def train_whole_network(page) -> None:
    """On Train with two classes of one's own: switch on "Advanced: train the whole network instead" (own
    classes train few-shot by default) and wait for the whole-network settings."""
    m = main(page)
    m.get_by_text("Advanced: train the whole network instead").click()
    m.get_by_label("Epochs", exact=True).wait_for()
    wait_idle(page)


def set_text(page, label: str, value: str, nth: int | None = None) -> None:
    """Type into the text field with this label; `nth` picks one of several with the same label (-1: the
    last), e.g. the whole network's "Model name" below the few-shot one."""
    box = main(page).get_by_label(label, exact=True)
    if nth is not None:
        box = box.nth(nth)
    box.fill(value)
    box.press("Enter")
    wait_idle(page)

"""Real-browser fixtures: one `streamlit run app.py` per test session, Debian's Chromium driven by Playwright.

Every test here is marked `browser`; they skip (with the reason) where /usr/bin/chromium is missing. `make
browser` installs it where that needs no password (root, or passwordless sudo, as in CI), so there they run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .browser_support import ARTIFACTS, CHROMIUM, ROOT, StreamlitServer, launch, new_context

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # Keep each phase's report on the item, so that fixtures can screenshot a failure in their teardown.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (`make browser`: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python package is missing (pip install -r requirements-dev.txt)")
    return CHROMIUM


@pytest.fixture(scope="session")
def server(chromium_path: Path) -> Iterator[StreamlitServer]:
    """The app under test, shared by the journeys; each journey opens its own browser (Streamlit) session."""
    if not (ROOT / "app.py").is_file():
        pytest.fail("app.py is missing: the browser journeys need the Streamlit app")
    srv = StreamlitServer(ARTIFACTS / "streamlit.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def playwright_instance(chromium_path: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_instance):
    b = launch(playwright_instance)
    yield b
    b.close()


def save_failure(request: pytest.FixtureRequest, page, server: StreamlitServer | None = None) -> None:
    """A full-page screenshot (and the server's log) when the test's call phase failed."""
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    except Exception as e:  # the page may be gone (the closed-browser test); the failure itself matters more
        print(f"could not save a screenshot of {name}: {e}")
    if server is not None:
        (ARTIFACTS / f"{name}.server.log").write_text(server.log_tail(20000))


@pytest.fixture
def new_page(browser, server: StreamlitServer, request: pytest.FixtureRequest):
    """A factory of fresh browser contexts (separate Streamlit sessions); failures screenshot the last page."""
    contexts = []

    def make(b=None):
        context = new_context(b or browser)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in reversed(contexts):
        if context.pages:
            save_failure(request, context.pages[-1], server)
            break
    for context in contexts:
        try:
            context.close()
        except Exception:  # already closed by the test's browser
            pass


@pytest.fixture
def page(new_page):
    return new_page()

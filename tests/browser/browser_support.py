"""What the browser journeys share: the Streamlit server under test, Chromium's launch flags, generated audio.

Playwright must never download a browser of its own: we launch Debian's /usr/bin/chromium (installed by
`make browser`, which CI runs).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots and server logs of failures (git-ignored)
# Flags the workplace's closed network needs: without them Chromium keeps dialling Google's hosts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Many tabs at once (the many-users test): background tabs must still render their charts.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
SERVER_START_TIMEOUT = 120.0  # a cold import of torch + streamlit on a busy 2-core machine
# Generous: one Streamlit rerun with a model forward takes seconds on a busy 2-core machine.
UI_TIMEOUT_MS = 90_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


class StreamlitServer:
    """`python -m streamlit run serve.py` (the app as `make run` serves it) on a free localhost port; its log goes to a file for failure reports."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> StreamlitServer:
        cmd = [
            sys.executable, "-m", "streamlit", "run", "serve.py",
            "--server.headless", "true",
            "--server.address", "127.0.0.1",
            "--server.port", str(self.port),
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # A new process group, so that stopping the server also stops any worker the app started.
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            if healthy(self.url):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"streamlit not healthy after {SERVER_START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def launch(p, extra_args: list[str] | None = None):
    """Debian's Chromium through a Playwright sync or async instance."""
    return p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + (extra_args or []))


def launch_with_microphone(p, wav: Path):
    """Chromium whose microphone plays `wav` (in a loop), with the permission granted without asking."""
    return launch(p, ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                      f"--use-file-for-fake-audio-capture={wav}"])


LOCAL = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost)[:/]")


def new_context(browser, **kwargs):
    """A fresh browser context (cookies, cache: a separate visitor) that never leaves this machine.

    Requests to other hosts are aborted at once: the app asks fonts.gstatic.com for its Material favicon,
    and on a closed network each such lookup can stall a page for many seconds.
    """
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, **kwargs)
    context.set_default_timeout(UI_TIMEOUT_MS)
    context.route(lambda url: url.startswith("http") and not LOCAL.match(url), lambda route: route.abort())
    return context


def write_wav(path: Path, wave: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    sf.write(path, np.asarray(wave, dtype=np.float32), sr, subtype=subtype)
    return path


def tone(freq: float, seconds: float = 2.0, sr: int = 16000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def noise(seconds: float = 2.0, sr: int = 16000, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    return amp * np.random.default_rng(seed).uniform(-1, 1, int(seconds * sr))


def clicks(seconds: float = 2.0, sr: int = 16000, every: float = 0.25) -> np.ndarray:
    x = np.zeros(int(seconds * sr))
    x[:: int(every * sr)] = 0.9
    return x


def sweep(f0: float, f1: float, seconds: float = 2.0, sr: int = 16000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    k = np.log(f1 / f0) / seconds
    return amp * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)

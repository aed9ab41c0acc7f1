"""serve.py, the server `make run` and the Dockerfile start: it answers only once the default model is
loaded and warm, so a fresh server's first visitor waits for neither."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a child process: constructing st.App pins Streamlit's main-script path for the whole process.
START_UP = """
import asyncio
import serve
from envnet import spectra
from pages import _ui

async def start():
    async with serve.lifespan(serve.app):
        model = _ui.load_by_key(next(iter(_ui.shipped()))).model
        print("warm" if model in spectra._fr_cache else "cold")

asyncio.run(start())
"""


def test_the_server_loads_and_warms_the_default_model_before_it_answers():
    done = subprocess.run([sys.executable, "-c", START_UP], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "warm"  # the frequency response, the last of the warm-up, is there

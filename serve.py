"""The server (`streamlit run serve.py`, what `make run` and the Dockerfile start): app.py's pages, on a
server that gets ready before its first visitor. Without it, a fresh server imports torch, loads the
default model and fills its caches only when the first page is opened, and that visitor waits for all of it
(on 2 busy cores, their first upload took 17-38 s instead of 4-5 s: benchmarks/README.md). Here it happens
while the server starts, before it answers its health check (which is when a Hugging Face Space shows
"Running"). app.py stays the script each session runs, and what AppTest drives.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import streamlit as st

from pages._ui import warm_default_model


@asynccontextmanager
async def lifespan(app: st.App):
    warm = await asyncio.to_thread(warm_default_model)
    if warm is not None:
        await asyncio.to_thread(warm.join)
    yield


app = st.App("app.py", lifespan=lifespan)

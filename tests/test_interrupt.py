"""Interruptions: a training process killed mid-run leaves a readable checkpoint and state, `--resume`
continues from it, and state/checkpoint writes are atomic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tonedata import memory_dataset, write_class_folders

from envnet import checkpoint, cli
from envnet.checkpoint import STATE_KEY
from envnet.train import TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path, capsys):
    data = write_class_folders(tmp_path / "data", per_class=2, seconds=0.3)
    out, log = tmp_path / "run", tmp_path / "log.jsonl"
    args = ["train", "--data", str(data), "--batch-size", "3", "--fc-width", "16", "--out", str(out), "--log", str(log)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ENVNET_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "envnet", *args, "--epochs", "200"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        # Epoch N is logged before it is saved, so the third line proves epoch 2's state and checkpoint are
        # on disk however slowly this machine runs; the kill then lands inside a later epoch or save.
        while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)
        time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # what survived is readable: the checkpoint loads, the state names a finished epoch
    ckpt = checkpoint.load(out)
    done = ckpt.card["recipe"]["epochs_completed"]
    # the weights file carries the authoritative bookkeeping; the .json beside it may lag by one write
    with safe_open(str(tmp_path / "run.state.safetensors"), "pt") as f:
        state = json.loads(f.metadata()[STATE_KEY])
    assert state["epoch"] >= 2 and done >= 2
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left where the checkpoint lives"
    logged = [json.loads(x) for x in log.read_text().splitlines()]

    # --resume continues from the saved epoch and finishes the requested number
    handler = signal.getsignal(signal.SIGINT)
    try:
        epochs = state["epoch"] + 1
        assert cli.main([*args, "--epochs", str(epochs), "--resume"]) == 0
    finally:
        signal.signal(signal.SIGINT, handler)
    assert f"resumed at epoch {state['epoch']}" in capsys.readouterr().out
    card = checkpoint.load(out).card
    assert card["recipe"]["epochs_completed"] == epochs
    history = card["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    # the epochs before the kill are kept as they were logged, not retrained
    assert [h["train_loss"] for h in history[: state["epoch"]]] == [h["train_loss"] for h in logged[: state["epoch"]]]


def test_failed_state_write_keeps_the_previous_state(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=1, batch_size=3, fc_width=16, filters_every=0)
    t = Trainer(memory_dataset(per_class=2, seconds=0.3), None, cfg, out=tmp_path / "run")
    t.run()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"run.state.safetensors", "run.state.json", "run.safetensors", "run.json"} <= before.keys()

    def crash(*args, **kwargs):  # the process dies just before the rename that would commit the write
        raise KeyboardInterrupt

    t.epoch, t.history = 5, t.history * 5
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        t.save_state()
    with pytest.raises(KeyboardInterrupt):
        t.save_checkpoint(tmp_path / "run")
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # old files intact, no temporary files left behind
    fresh = Trainer(memory_dataset(per_class=2, seconds=0.3), None, cfg, out=tmp_path / "run")
    assert fresh.resume() and fresh.epoch == 1
    for k, v in fresh.model.state_dict().items():
        assert torch.equal(v, t.model.state_dict()[k])


def test_state_bookkeeping_travels_inside_the_weights_file(tmp_path):
    """If the process dies between the weights and the .json, the weights' own record wins."""
    cfg = TrainConfig(epochs=2, batch_size=3, fc_width=16, filters_every=0)
    t = Trainer(memory_dataset(per_class=2, seconds=0.3), None, cfg, out=tmp_path / "run")
    t.run()
    meta = tmp_path / "run.state.json"
    stale = json.loads(meta.read_text())
    stale["epoch"], stale["history"] = 1, stale["history"][:1]
    meta.write_text(json.dumps(stale))  # as if the kill came before the .json was replaced
    fresh = Trainer(memory_dataset(per_class=2, seconds=0.3), None, cfg, out=tmp_path / "run")
    assert fresh.resume() and fresh.epoch == 2 and len(fresh.history) == 2
    (tmp_path / "run.state.safetensors").write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="cannot be read"):
        Trainer(memory_dataset(per_class=2, seconds=0.3), None, cfg, out=tmp_path / "run").resume()

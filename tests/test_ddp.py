"""`python -m envnet train` under torchrun with 2 CPU processes (gloo): both end with identical weights,
only rank 0 writes the checkpoint and the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tonedata import write_class_folders

from envnet import checkpoint

REPO = Path(__file__).resolve().parents[1]

# Runs the real CLI, and afterwards each rank dumps the weights it ended with, so the test can compare.
LAUNCH = textwrap.dedent("""
    import os, sys
    from safetensors.torch import save_file
    from envnet import cli, train

    run = train.Trainer.run

    def run_and_dump(self):
        model = run(self)
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(os.environ["DUMP_DIR"], f"rank{self.rank}.safetensors"))
        return model

    train.Trainer.run = run_and_dump
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_two_gloo_processes_end_identical(tmp_path):
    data = write_class_folders(tmp_path / "data", per_class=4, seconds=0.3)
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    env = {**os.environ, "DUMP_DIR": str(tmp_path), "OMP_NUM_THREADS": "1", "ENVNET_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           "train", "--data", str(data), "--epochs", "2", "--batch-size", "4", "--fc-width", "16",
           "--val-folds", "4", "--eval-every", "1", "--out", str(tmp_path / "ddp"), "--log-file", str(tmp_path / "log.jsonl")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between the two processes"
    # the weights moved: they are not simply the shared initialisation
    fresh = checkpoint.build_model(n_classes=3, fc_width=16)
    assert not torch.equal(r0["fc7.weight"], fresh.state_dict()["fc7.weight"])
    # one writer: rank 0's checkpoint holds the same weights (to float16), and one log line per epoch
    ckpt = checkpoint.load(tmp_path / "ddp")
    torch.testing.assert_close(ckpt.model.state_dict()["conv1.0.weight"], r0["conv1.0.weight"], rtol=2e-3, atol=1e-4)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and "val_acc" in lines[-1]
    # 4 clips per class fall in folds 1-4; fold 4 is held out, so 9 train (4 per process) and 3 validate
    assert ckpt.card["data"]["n_train"] == 9 and ckpt.card["data"]["n_val"] == 3
    assert proc.stdout.count('"train_loss"') == 1  # only rank 0 prints the summary

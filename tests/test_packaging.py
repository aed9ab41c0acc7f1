"""EnvNet installs as a package: `pip install .` and `pip install -e .` give an `envnet` command that runs
from any folder and finds the shipped models."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["predict", "inspect", "train", "evaluate", "crossval", "download"]


@pytest.fixture
def venv(tmp_path) -> Path:
    """A fresh virtual environment that sees this one's packages (torch, pip, setuptools and the rest)
    through a .pth file, so that installing EnvNet with --no-deps needs no network."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, capture_output=True)
    site_packages = next((env / "lib").glob("python*/site-packages"))
    (site_packages / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env


def source_copy(tmp_path: Path) -> Path:
    """The checkout without its environment and history: building writes build/ and *.egg-info into it."""
    ignore = shutil.ignore_patterns(".git", ".venv", "venv", "build", "*.egg-info", "__pycache__", "artifacts",
                                    ".pytest_cache", ".ruff_cache", ".hypothesis", ".benchmarks")
    return Path(shutil.copytree(ROOT, tmp_path / "src", ignore=ignore))


@pytest.mark.slow  # a venv and a build: ~20 s
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_pip_install_gives_an_envnet_command_that_runs_from_any_folder(venv, tmp_path, editable):
    src = source_copy(tmp_path)
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*cmd, *(["-e"] if editable else []), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([str(venv / "bin" / "envnet"), "--help"], cwd=elsewhere, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(name in out.stdout for name in SUBCOMMANDS), out.stdout
    # The shipped model is found: the checkout's for an editable install, the installed copy otherwise.
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import envnet.checkpoint as c; print(c.default_checkpoint())"],
                           cwd=elsewhere, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert where.returncode == 0, where.stderr[-2000:]
    stem = Path(where.stdout.strip())
    expected = src / "checkpoints" if editable else venv / "share" / "envnet-sound-lab" / "checkpoints"
    assert stem.parent == expected
    assert stem.with_name(stem.name + ".safetensors").is_file() and stem.with_name(stem.name + ".json").is_file()

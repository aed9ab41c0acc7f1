"""The Hugging Face Space deployment matches the README's set-up (Docker itself cannot run here).

A Space builds the Dockerfile and shows the port named in the README's front matter; if any of these drift
apart (another requirements file, another entry point, another port), the Space breaks while every local
test still passes. So: read what the README tells a person to run, expand it through the Makefile, and
compare with what the Dockerfile runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import torch

from envnet.audio import MAX_SECONDS
from envnet.checkpoint import MAX_BYTES
from envnet.model import build_model

ROOT = Path(__file__).resolve().parents[1]
PORT = 8501


def read(name: str) -> str:
    path = ROOT / name
    if not path.is_file():
        pytest.fail(f"{name} is missing")
    return path.read_text()


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def shell_commands(args: str) -> list[list[str]]:
    """A RUN line or a recipe line split into simple commands (on && ; |), each a token list."""
    return [shlex.split(part) for part in re.split(r"&&|;|\|\|?", args) if part.strip()]


def installs_requirements(cmd: list[str]) -> str | None:
    """The requirements file a `pip install -r FILE` command installs, else None."""
    if "pip" not in " ".join(cmd) or "install" not in cmd:
        return None
    for i, tok in enumerate(cmd):
        if tok in ("-r", "--requirement") and i + 1 < len(cmd):
            return cmd[i + 1]
        if tok.startswith("--requirement="):
            return tok.split("=", 1)[1]
    return None


def runs_streamlit(cmd: list[str]) -> str | None:
    """The script a `[python -m] streamlit run SCRIPT` command runs, else None."""
    for i in range(len(cmd) - 2):
        if cmd[i].endswith("streamlit") and cmd[i + 1] == "run":
            return cmd[i + 2]
    return None


def docker_cmd(instructions: list[tuple[str, str]]) -> list[str]:
    entry = [args for name, args in instructions if name in ("CMD", "ENTRYPOINT")]
    assert entry, "the Dockerfile has no CMD/ENTRYPOINT: the Space would start nothing"
    args = entry[-1]
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def test_dockerfile_installs_requirements_and_runs_the_app_on_8501() -> None:
    ins = dockerfile_instructions(read("Dockerfile"))
    installed = [f for name, args in ins if name == "RUN" for c in shell_commands(args) if (f := installs_requirements(c))]
    assert installed == ["requirements.txt"], f"the Dockerfile installs {installed}, not requirements.txt"
    copied = [args for name, args in ins if name == "COPY"]
    assert any("requirements.txt" in c.split() for c in copied), "requirements.txt is not copied in before pip runs"
    cmd = docker_cmd(ins)
    assert runs_streamlit(cmd) == "serve.py", f"the container runs {cmd}, not streamlit run serve.py"
    assert f"--server.port={PORT}" in cmd or any(
        a == "--server.port" and b == str(PORT) for a, b in zip(cmd, cmd[1:], strict=False)
    ), f"the container's streamlit does not listen on {PORT}: {cmd}"
    # Inside a container the server must listen beyond loopback, or the Space's proxy cannot reach it.
    assert "--server.address=0.0.0.0" in cmd or "0.0.0.0" in cmd, cmd
    assert ("EXPOSE", str(PORT)) in ins


def test_dockerfile_is_not_run_as_root_and_keeps_uploads_working_in_the_iframe() -> None:
    ins = dockerfile_instructions(read("Dockerfile"))
    users = [args for name, args in ins if name == "USER"]
    assert users and users[-1] not in ("root", "0"), "Spaces run as user 1000; the image should too"
    env = " ".join(args for name, args in ins if name == "ENV")
    # XSRF protection stays on; its cookie is SameSite=None (and so Secure) to reach the server from the
    # huggingface.co iframe. Streamlit 1.67 reads both from these variables under `streamlit run`.
    assert "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false" not in env
    assert "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=true" in env
    assert "STREAMLIT_SERVER_XSRF_COOKIE_SAME_SITE=none" in env
    assert "ENVNET_PUBLIC=1" in env  # the public server's limits (envnet.limits) apply on a Space


def test_dockerignore_keeps_the_image_free_of_git_and_test_artifacts() -> None:
    ignored = {line.strip() for line in read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", "tests/browser/artifacts"} <= ignored
    # The shipped model must go into the image: the app opens on it.
    assert not any(p.startswith("checkpoints") or p in ("*.safetensors", "*.json") for p in ignored)


# ---------------------------------------------------------------- README and Makefile


def front_matter(readme: str) -> dict[str, str]:
    """The YAML front matter's top-level `key: value` pairs (the Space reads only flat keys)."""
    if not readme.startswith("---\n"):
        return {}
    block = readme[4:].split("\n---", 1)[0]
    pairs = {}
    for line in block.splitlines():
        if ":" in line and not line.startswith((" ", "-", "#")):
            key, _, value = line.partition(":")
            pairs[key.strip()] = value.strip().strip("\"'")
    return pairs


def makefile_commands(makefile: str, target: str, variables: dict[str, str] | None = None,
                      seen: set[str] | None = None) -> list[list[str]]:
    """The commands `make TARGET` runs: prerequisites first, $(VAR)s expanded, `@`/`-` prefixes dropped,
    continued lines joined."""
    variables = dict(variables or {})
    for m in re.finditer(r"^(\w+)\s*\??:?=\s*(.*)$", makefile, re.M):
        variables.setdefault(m.group(1), m.group(2).strip())
    seen = seen if seen is not None else set()
    if target in seen:
        return []
    seen.add(target)
    m = re.search(rf"^{re.escape(target)}\s*:(?!=)(.*)$((?:\n\t.*)*)", makefile, re.M)
    assert m, f"the Makefile has no target {target!r}"
    cmds = []
    for dep in m.group(1).split():
        cmds += makefile_commands(makefile, dep, variables, seen)
    for line in re.sub(r"\\\n\t", " ", m.group(2)).splitlines():  # a trailing backslash continues the line
        line = line.strip().lstrip("@-")
        if not line:
            continue
        line = re.sub(r"\$\((\w+)\)", lambda v: variables.get(v.group(1), ""), line)
        cmds += shell_commands(line)
    return cmds


def readme_setup_lines(readme: str) -> list[list[list[str]]]:
    """Each command line of the README's shell code blocks, as the commands it runs (`make X` expanded)."""
    # Fences are paired in order (an opening fence, then the next fence line), so prose between two code
    # blocks is never read as shell.
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", readme, re.S | re.M)
    blocks = [body for lang, body in fenced if lang in ("bash", "sh", "shell", "console", "")]
    lines: list[list[list[str]]] = []
    for block in blocks:
        for line in block.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line.strip().removeprefix("$ "))  # shell comments
            if not line:
                continue
            cmds: list[list[str]] = []
            for cmd in shell_commands(line):
                if cmd and cmd[0] == "make" and (ROOT / "Makefile").is_file():
                    for target in [t for t in cmd[1:] if "=" not in t and not t.startswith("-")] or ["run"]:
                        cmds += makefile_commands(read("Makefile"), target)
                else:
                    cmds.append(cmd)
            lines.append(cmds)
    return lines


def test_readme_front_matter_declares_a_docker_space_on_8501() -> None:
    meta = front_matter(read("README.md"))
    assert meta, "README.md does not start with the Space's YAML front matter (---)"
    assert meta.get("sdk") == "docker"
    assert meta.get("app_port") == str(PORT)
    for key in ("title", "emoji", "short_description"):
        assert meta.get(key), f"the front matter has no {key}"
    # The Hub rejects a short_description over 60 characters.
    assert len(meta["short_description"]) <= 60, meta["short_description"]


def test_readme_setup_and_dockerfile_install_the_same_file_and_run_the_same_app() -> None:
    # The README's app command: the line whose commands start streamlit (e.g. `make run`, expanded).
    app_lines = [cmds for cmds in readme_setup_lines(read("README.md")) if any(runs_streamlit(c) for c in cmds)]
    assert app_lines, "no command in the README's code blocks starts the app"
    readme_runs = {s for cmds in app_lines for c in cmds if (s := runs_streamlit(c))}
    readme_installs = {f for cmds in app_lines for c in cmds if (f := installs_requirements(c))}
    assert readme_runs == {"serve.py"}, f"the README's set-up runs {readme_runs}"
    ins = dockerfile_instructions(read("Dockerfile"))
    docker_installs = {f for name, args in ins if name == "RUN" for c in shell_commands(args)
                       if (f := installs_requirements(c))}
    assert docker_installs == readme_installs, (
        f"the Dockerfile installs {docker_installs}, the README's app set-up {readme_installs}"
    )
    assert runs_streamlit(docker_cmd(ins)) == "serve.py"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed here")
def test_make_installs_into_the_active_virtualenv_or_into_dot_venv(tmp_path) -> None:
    """PEP 668: a system Python refuses pip outside a virtual environment, so make never uses one."""
    def dry_run(target: str, **env: str) -> str:
        base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL")}
        done = subprocess.run(["make", "-n", target], cwd=ROOT, env={**base, **env}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    plain = dry_run("run")
    assert ".venv/bin/python -m pip install -q -r requirements.txt" in plain
    assert ".venv/bin/python -m streamlit run serve.py" in plain
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "pip").touch()
    active = dry_run("test", VIRTUAL_ENV=str(tmp_path / "env"))
    assert f"{tmp_path}/env/bin/python -m pip install -q -r requirements-dev.txt" in active
    assert f"{tmp_path}/env/bin/python -m pytest" in active
    assert ".venv" not in active and "-m venv" not in active


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md", "tests/README.md"])
def test_readmes_have_no_unfilled_placeholders(doc: str) -> None:
    """The set-up section once told people they needed "DISK_GB GB of disk" and "INSTALL_MIN minutes". Real
    names (settings, environment variables) are written as code; a bare CAPS_NAME in the prose is a hole."""
    prose = re.sub(r"```.*?```|`[^`]*`", "", read(doc), flags=re.S)
    holes = re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", prose)
    assert not holes, f"placeholders left in {doc}: {holes}"


def test_readme_says_how_to_deploy_the_space() -> None:
    text = read("README.md").lower()
    assert "hugging face space" in text and "docker" in text


# ---------------------------------------------------------------- Streamlit configuration


def test_streamlit_config_caps_uploads_to_fit_the_clip_cap_and_sets_a_theme() -> None:
    config = tomllib.loads(read(".streamlit/config.toml"))
    cap_mb = config.get("server", {}).get("maxUploadSize")
    assert isinstance(cap_mb, int), "server.maxUploadSize (MB) is not set"
    # The longest clip the app accepts, as a common recording (48 kHz stereo 32-bit float wav), must fit ...
    longest_clip_mb = MAX_SECONDS * 48_000 * 2 * 4 / 2**20
    # ... and so must a full-width (fc 4096, 50 classes) model as the library saves it (float16), so that a
    # person can upload back what they downloaded from the Train page ...
    with torch.device("meta"):  # shapes only: no memory, no time spent initialising 48 M weights
        model = build_model(n_classes=50, fc_width=4096)
    weights_mb = sum(p.numel() * 2 for p in model.state_dict().values()) / 2**20
    assert cap_mb >= max(longest_clip_mb, weights_mb), (cap_mb, longest_clip_mb, weights_mb)
    # ... but nothing the library would refuse anyway: a public demo should not buffer useless huge uploads.
    assert cap_mb * 2**20 <= MAX_BYTES, (cap_mb, MAX_BYTES)
    assert config.get("theme"), "no [theme] section"


def test_this_streamlit_knows_the_xsrf_cookie_samesite_option() -> None:
    """The Dockerfile relies on server.xsrfCookieSameSite (Streamlit ≥ 1.67); an older one would ignore it
    and every upload inside the Space's iframe would fail with 403."""
    from streamlit import config

    assert "server.xsrfCookieSameSite" in config._config_options_template

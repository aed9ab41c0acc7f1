"""Writing a file so that a reader sees the old one or the new one, never half of either: checkpoints a
visitor is about to load, the CPU probe's cache, decoded clips that several sessions read."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write(path: Path, data: bytes, exclusive: bool = False) -> None:
    """Write to a temp file in the same folder, fsync, then put it in place in one step. exclusive: a hard
    link instead of a rename, which raises FileExistsError when the name exists, so two writers of one name
    cannot both win."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; these are meant to be shared
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)

"""Fetch ESC-50 (and its ESC-10 subset) into a local cache: resumable, verified, safely unpacked.

    python -m envnet download esc10            # → ~/.cache/envnet/ESC-50-master, read with --subset esc10

ESC-10 is not published on its own: it is the `esc10` column of ESC-50's metadata, so both names fetch
the same archive. Only the standard library is used (urllib), so this works wherever Python does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from envnet import data

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/refs/heads/master.zip"
ARCHIVE_NAME = "ESC-50-master.zip"
DATASET_DIR = "ESC-50-master"
CHUNK = 1 << 16


@dataclass(frozen=True)
class Source:
    url: str
    subset: str
    sha256: str | None = None  # GitHub's master archive changes with the repository, so none is pinned


SOURCES = {"esc50": Source(ESC50_URL, "esc50"), "esc10": Source(ESC50_URL, "esc10")}


class DownloadError(Exception):
    """The archive could not be fetched, verified or unpacked; the message says what to do."""


class OfflineError(DownloadError):
    """The server could not be reached at all."""


def cache_dir() -> Path:
    """ENVNET_CACHE if set now (tests and users may set it after import), else envnet.data.CACHE_DIR."""
    env = os.environ.get("ENVNET_CACHE")
    return Path(env) if env else data.CACHE_DIR


def manual_instructions(root: Path, url: str = ESC50_URL) -> str:
    return (
        f"To set the data up by hand, download {url} on a machine with internet access and either put the zip "
        f"at {root / ARCHIVE_NAME} (then run this command again), or unpack it so that "
        f"{root / DATASET_DIR / 'audio'}/ and {root / DATASET_DIR / 'meta' / 'esc50.csv'} exist. "
        f"Any folder with that layout (audio/ + meta/esc50.csv), or one folder per class, also works with --data DIR."
    )


def dataset_root(folder: Path) -> Path | None:
    """The folder holding meta/esc50.csv and audio/: FOLDER itself or one of its direct children."""
    for cand in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] if folder.is_dir() else []:
        if data.is_esc50(cand):
            return cand
    return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _total_size(resp, offset: int) -> int | None:
    """The full file size from Content-Range (a resumed 206) or Content-Length (a fresh 200)."""
    cr = resp.headers.get("Content-Range")
    if cr and "/" in cr and not cr.endswith("/*"):
        return int(cr.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def fetch(url: str, dest: Path, sha256: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download URL to DEST through DEST.part, continuing a previous partial download with an HTTP Range
    request when the server supports it. Verifies the size the server announced and, if given, the
    sha256; a mismatch deletes the download (it cannot be trusted for resuming either)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "envnet-download/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the .part is already whole
            total = offset
            resp = None
        else:
            raise DownloadError(f"{url}: the server answered {e.code} {e.reason}") from None
    except (TimeoutError, urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise OfflineError(f"could not reach {url} ({reason})") from None
    if resp is not None:
        with resp:
            if offset and resp.status != 206:  # the server ignored Range: start over
                offset = 0
            total = _total_size(resp, offset)
            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=f"downloading {dest.name}", disable=not progress)
            try:
                with open(part, "ab" if offset else "wb") as f:
                    while block := resp.read(CHUNK):
                        f.write(block)
                        bar.update(len(block))
            except (TimeoutError, OSError) as e:
                raise OfflineError(f"the download of {url} broke off ({e}); run the same command again to resume") from None
            finally:
                bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: got {size} bytes of {total}; run the same command again to resume")
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256.lower():
            part.unlink()
            raise DownloadError(f"{url}: checksum mismatch (sha256 {got}, expected {sha256}); the download was deleted")
    part.replace(dest)
    return dest


def safe_extract(archive: Path, target: Path) -> None:
    """Unpack a zip into TARGET, refusing any member that would land outside it (absolute paths, '..')
    or that is a symbolic link."""
    target = Path(target).resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            dest = (target / info.filename).resolve()
            if not dest.is_relative_to(target):
                raise DownloadError(f"{archive}: refusing to unpack {info.filename!r}, which points outside {target}")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise DownloadError(f"{archive}: refusing to unpack the symbolic link {info.filename!r}")
        zf.extractall(target)


def _check_archive(archive: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            names = zf.namelist()
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{archive} is not a valid zip archive ({e}); delete it and download again") from None
    if bad is not None:
        raise DownloadError(f"{archive}: {bad} is corrupt; delete the archive and download again")
    if not any(n.endswith("meta/esc50.csv") for n in names):
        raise DownloadError(f"{archive} does not contain meta/esc50.csv: it is not the ESC-50 archive")


def download(name: str = "esc50", root: str | Path | None = None, url: str | None = None,
             sha256: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Make ESC-50 available under ROOT (default: the cache) and return its folder (audio/ + meta/).
    A second call finds it there and does nothing; ESC-10 is read from it with subset='esc10'."""
    if name not in SOURCES:
        raise DownloadError(f"unknown dataset {name!r}; choose from {', '.join(SOURCES)}")
    src = SOURCES[name]
    url = url or src.url
    sha256 = sha256 or src.sha256
    root = Path(root) if root is not None else cache_dir()
    final = root / DATASET_DIR
    if found := dataset_root(final):
        return found
    archive = root / ARCHIVE_NAME
    if archive.is_file() and sha256 is not None and sha256_of(archive) != sha256.lower():
        raise DownloadError(f"{archive} does not have the expected sha256 {sha256}; delete it and download again")
    if not archive.is_file():
        try:
            fetch(url, archive, sha256=sha256, progress=progress, timeout=timeout)
        except OfflineError as e:
            raise OfflineError(f"{e}. {manual_instructions(root, url)}") from None
    _check_archive(archive)
    # Unpack next to the final folder and rename, so an interrupted unpack never looks finished.
    staging = root / f".{DATASET_DIR}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    safe_extract(archive, staging)
    inner = dataset_root(staging)
    if inner is None:
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"{archive} holds no folder with audio/ and meta/esc50.csv")
    if final.exists():
        shutil.rmtree(final)
    inner.replace(final)
    shutil.rmtree(staging, ignore_errors=True)
    archive.unlink()  # the unpacked clips are what is used; keeping both would double the disk use
    return final

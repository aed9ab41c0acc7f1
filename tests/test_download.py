"""The ESC-50 downloader against a local HTTP server (127.0.0.1 only) serving a small archive built here."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tonedata import write_esc50

from envnet import cli, download
from envnet.data import read_esc50


class Server:
    """Serves FILES (path → bytes) with Range support; records each request's Range header."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        self.files, self.ranges, self.requests = files, ranges, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.requests.append(self.headers.get("Range"))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and outer.ranges:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    """A miniature ESC-50-master.zip: the same top folder, audio/ and meta/esc50.csv."""
    src = write_esc50(tmp_path_factory.mktemp("src") / "ESC-50-master", per_class_per_fold=1, seconds=0.1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, str(p.relative_to(src.parent)))
    return buf.getvalue()


def test_full_download_unpacks_and_is_idempotent(tmp_path, archive):
    with Server({"/esc50.zip": archive}) as srv:
        root = download.download("esc10", tmp_path, url=srv.url("/esc50.zip"), progress=False)
        assert root == tmp_path / "ESC-50-master"
        ds = read_esc50(root, "esc10")
        assert ds.classes == ["low", "high", "noise"] and len(ds) == 15
        assert not (tmp_path / "ESC-50-master.zip").exists() and not list(tmp_path.glob("*.part"))
        assert srv.requests == [None]
        # a second call finds the data and does not touch the network
        assert download.download("esc10", tmp_path, url=srv.url("/esc50.zip"), progress=False) == root
        assert len(srv.requests) == 1


def test_resume_sends_range_and_completes(tmp_path, archive):
    half = len(archive) // 2
    (tmp_path / "ESC-50-master.zip.part").write_bytes(archive[:half])
    with Server({"/esc50.zip": archive}) as srv:
        sha = hashlib.sha256(archive).hexdigest()
        root = download.download("esc50", tmp_path, url=srv.url("/esc50.zip"), sha256=sha, progress=False)
        assert srv.requests == [f"bytes={half}-"]
    assert len(read_esc50(root)) == 20


def test_resume_restarts_when_server_ignores_range(tmp_path, archive):
    part = tmp_path / "a.zip.part"
    part.write_bytes(b"stale bytes from another file")
    with Server({"/a.zip": archive}, ranges=False) as srv:
        path = download.fetch(srv.url("/a.zip"), tmp_path / "a.zip", progress=False)
    assert path.read_bytes() == archive and not part.exists()


def test_checksum_mismatch_is_a_clear_error_and_drops_the_file(tmp_path, archive):
    with Server({"/esc50.zip": archive}) as srv, pytest.raises(download.DownloadError, match="checksum mismatch"):
        download.download("esc50", tmp_path, url=srv.url("/esc50.zip"), sha256="0" * 64, progress=False)
    assert not list(tmp_path.glob("*.zip*")) and not (tmp_path / "ESC-50-master").exists()


def test_not_found_is_a_clear_error(tmp_path):
    with Server({}) as srv, pytest.raises(download.DownloadError, match="404"):
        download.download("esc50", tmp_path, url=srv.url("/missing.zip"), progress=False)


def test_not_a_zip_and_wrong_zip_are_rejected(tmp_path):
    wrong = io.BytesIO()
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr("something/else.txt", "hello")
    with Server({"/junk.zip": b"<html>login page</html>", "/wrong.zip": wrong.getvalue()}) as srv:
        with pytest.raises(download.DownloadError, match="not a valid zip"):
            download.download("esc50", tmp_path / "a", url=srv.url("/junk.zip"), progress=False)
        with pytest.raises(download.DownloadError, match="meta/esc50.csv"):
            download.download("esc50", tmp_path / "b", url=srv.url("/wrong.zip"), progress=False)


def test_archive_placed_by_hand_is_used_without_network(tmp_path, archive):
    (tmp_path / "ESC-50-master.zip").write_bytes(archive)
    root = download.download("esc50", tmp_path, url="http://127.0.0.1:9/never-used.zip", progress=False)
    assert len(read_esc50(root)) == 20


def test_unpacking_refuses_path_traversal(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ESC-50-master/meta/esc50.csv", "filename,fold,target,category,esc10\n")
        zf.writestr("../../outside.txt", "gotcha")
    with pytest.raises(download.DownloadError, match="outside"):
        download.safe_extract(evil, tmp_path / "target")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path.parent / "outside.txt").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens on it once the socket is closed


def test_offline_message_says_where_to_put_the_files(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/esc50.zip"
    with pytest.raises(download.OfflineError) as err:
        download.download("esc10", tmp_path, url=url, progress=False, timeout=5)
    msg = str(err.value)
    assert "could not reach" in msg and str(tmp_path / "ESC-50-master" / "meta" / "esc50.csv") in msg
    assert "--data" in msg


def test_cli_download_offline_exit_code_3(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/esc50.zip"
    assert cli.main(["download", "esc10", "--root", str(tmp_path), "--url", url, "--quiet"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("envnet: could not reach") and "Traceback" not in err
    assert "ESC-50-master" in err


def test_cli_download_prints_the_data_folder(tmp_path, archive, capsys, monkeypatch):
    monkeypatch.setenv("ENVNET_CACHE", str(tmp_path))  # the default root follows ENVNET_CACHE
    with Server({"/esc50.zip": archive}) as srv:
        assert cli.main(["download", "esc10", "--url", srv.url("/esc50.zip"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "ESC-50-master")
    assert "15 clips, 3 classes" in err and "--subset esc10" in err

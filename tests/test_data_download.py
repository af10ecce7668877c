"""Download against a local HTTP server on 127.0.0.1: resume after a broken transfer, retries,
checksum failures that leave nothing under the final name, and the CLI on the real metadata."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from graphrec_dist.cli import main as cli_main
from graphrec_dist.data.download import RemoteFile, download
from graphrec_dist.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "goodbooks-10k"


class _Server:
    """Serves ``root``; honours Range; ``break_after[name]`` bytes cut the next transfer of ``name``."""

    def __init__(self, root: Path) -> None:
        self.root, self.break_after, self.requests = root, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.break_after.pop(name, None)
                body = data[start:] if cut is None else data[start:start + cut]
                self.wfile.write(body)
                if cut is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def served(tmp_path):
    root = tmp_path / "remote"
    root.mkdir()
    data = b"user_id,book_id,rating\n" + b"".join(f"{i},{i % 7 + 1},4\n".encode() for i in range(5000))
    (root / "ratings.csv").write_bytes(data)
    spec = RemoteFile("ratings.csv", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    with _Server(root) as server:
        yield server, spec, data


def test_resume_after_broken_transfer(served, tmp_path) -> None:
    server, spec, data = served
    server.break_after["ratings.csv"] = 1000
    out = tmp_path / "out"
    files = download(out, server.url, files=(spec,), progress=False, backoff=0)
    assert files["ratings.csv"].read_bytes() == data
    assert server.requests == [("ratings.csv", None), ("ratings.csv", "bytes=1000-")]
    assert not list(out.glob(".*part"))
    # Already there and valid: nothing is fetched again.
    download(out, server.url, files=(spec,), progress=False)
    assert len(server.requests) == 2


def test_checksum_mismatch_leaves_nothing(served, tmp_path) -> None:
    server, spec, data = served
    bad = RemoteFile("ratings.csv", size=spec.size, sha256="0" * 64)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="does not verify: sha256"):
        download(out, server.url, files=(bad,), progress=False, backoff=0)
    assert list(out.iterdir()) == []


def test_gives_up_after_retries_keeping_the_part(served, tmp_path) -> None:
    server, spec, data = served
    out = tmp_path / "out"
    with pytest.raises(DataError, match="404"):
        download(out, server.url, files=(RemoteFile("missing.csv"),), progress=False, backoff=0)
    server.break_after["ratings.csv"] = 100
    with pytest.raises(DataError, match="after 1 attempts"):
        download(out, server.url, files=(spec,), retries=0, progress=False, backoff=0)
    assert not (out / "ratings.csv").exists()
    assert (out / ".ratings.csv.part").stat().st_size == 100
    download(out, server.url, files=(spec,), progress=False, backoff=0)  # resumes from 100
    assert (out / "ratings.csv").read_bytes() == data
    assert server.requests[-1] == ("ratings.csv", "bytes=100-")


@pytest.mark.skipif(not (SHARED / "books.csv").is_file(), reason="real Goodbooks metadata not present")
def test_cli_download_real_metadata(tmp_path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    for name in ("books.csv", "tags.csv"):
        (remote / name).write_bytes((SHARED / name).read_bytes())
    (remote / "tags.csv").write_bytes((SHARED / "tags.csv").read_bytes()[:-10])  # truncated upstream copy
    out = tmp_path / "out"
    with _Server(remote) as server:
        assert cli_main(["data", "download", "--out", str(out), "--base-url", server.url, "--only", "books",
                         "--no-progress"]) == 0
        assert (out / "books.csv").read_bytes() == (SHARED / "books.csv").read_bytes()
        code = cli_main(["data", "download", "--out", str(out), "--base-url", server.url, "--only", "tags",
                         "--no-progress", "--retries", "0"])
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["books.csv"]

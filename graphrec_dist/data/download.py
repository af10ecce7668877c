"""Fetch the Goodbooks-10k files: progress bar, size and checksum checks, resume and retry.

A file is downloaded to ``.<name>.part`` beside its final name; a broken transfer is resumed with
an HTTP Range request (or restarted when the server ignores it), and only a file that passed its
checks is renamed onto the final name. A file already there and valid is not fetched again.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from graphrec_dist.errors import DataError
from graphrec_dist.logging_utils import get_logger

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/zygmuntz/goodbooks-10k/master/"
log = get_logger("data.download")


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch; ``git_sha1`` is the blob id GitHub serves (sha1 of "blob <size>\\0" + bytes)."""

    name: str
    size: Optional[int] = None
    git_sha1: Optional[str] = None
    sha256: Optional[str] = None


# Git blob ids of the files in the dataset's repository (github.com/zygmuntz/goodbooks-10k);
# to_read.csv's is not known here, so only its transfer length is checked.
GOODBOOKS_FILES = (
    RemoteFile("ratings.csv", git_sha1="0d245a10acfe3c89b2e4004cdbc805b99771ac5d"),
    RemoteFile("to_read.csv"),
    RemoteFile("books.csv", size=3286659, git_sha1="d694afdf5f555b51c1128c6ff562b6e54a7f75e3",
               sha256="4d21d0e0433128657c752e3a3d0405ac0ec11675d6c70c64cb0abf4ab1acb76a"),
    RemoteFile("book_tags.csv", size=16665883, git_sha1="f82218f199850f533568eaf22529b5df1c545412",
               sha256="8ff2f0659be9ddbe10bf47ba33b5b69024f893f017ac665236f15bc97d862950"),
    RemoteFile("tags.csv", size=722480, git_sha1="65b5424eeec23554e9b034933e438cd12017a985",
               sha256="87f316957564fa21c316a4f50afc87f07906f478f990eec027aaca00c536c449"),
)


def verify(path: Path, spec: RemoteFile) -> str | None:
    """None when ``path`` matches the spec's size and checksums, else what is wrong."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        return f"size {size} bytes, expected {spec.size}"
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            sha256.update(block)
            sha1.update(block)
    if spec.sha256 is not None and sha256.hexdigest() != spec.sha256:
        return f"sha256 {sha256.hexdigest()}, expected {spec.sha256}"
    if spec.git_sha1 is not None and sha1.hexdigest() != spec.git_sha1:
        return f"git blob sha1 {sha1.hexdigest()}, expected {spec.git_sha1}"
    return None


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (resuming at its size); raises on a short transfer."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        if have and resp.status != 206:  # the server sent the whole file: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = None
        if progress:
            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name[1:-5], leave=False)
        try:
            with open(part, "ab" if have else "wb") as fh:
                while block := resp.read(1 << 20):
                    fh.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    got = part.stat().st_size
    if total is not None and got != total:
        raise ConnectionError(f"transfer ended at {got} of {total} bytes")


def fetch(base_url: str, spec: RemoteFile, out: Path, retries: int = 3, timeout: float = 60.0,
          progress: bool = True, backoff: float = 1.0) -> Path:
    """Download one file into ``out`` (resume/retry), verify it, rename it into place."""
    final = out / spec.name
    if final.exists() and verify(final, spec) is None:
        log.info("%s is already there and verified", final)
        return final
    part = out / f".{spec.name}.part"
    url = base_url.rstrip("/") + "/" + spec.name
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():  # asked past the end: the part may be complete
                break
            if exc.code < 500 or attempt == retries:
                raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            if attempt == retries:
                raise DataError(f"download of {url} failed after {retries + 1} attempts: {exc} "
                                f"(partial data kept in {part}; run again to resume)") from None
            log.warning("download of %s interrupted (%s); retrying (%d/%d)", url, exc, attempt + 1, retries)
        time.sleep(backoff * (attempt + 1))
    problem = verify(part, spec)
    if problem is not None:
        part.unlink()
        raise DataError(f"downloaded {url} does not verify: {problem}; the partial file was removed")
    os.replace(part, final)
    return final


def download(out: str | Path, base_url: str = DEFAULT_BASE_URL, files: tuple[RemoteFile, ...] = GOODBOOKS_FILES,
             only: list[str] | None = None, retries: int = 3, timeout: float = 60.0, progress: bool = True,
             backoff: float = 1.0) -> dict[str, Path]:
    """Fetch ``files`` (or those named in ``only``) from ``base_url`` into ``out``; name -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [f for f in files if only is None or f.name in only or f.name.rsplit(".", 1)[0] in only]
    if only is not None and len(chosen) != len(set(only)):
        known = ", ".join(f.name for f in files)
        raise DataError(f"unknown file(s) in {only}; known: {known}")
    return {f.name: fetch(base_url, f, out, retries, timeout, progress, backoff) for f in chosen}

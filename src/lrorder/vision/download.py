"""A resumable, verified, atomic HTTP download (used for the CIFAR-10 python release).

Bytes go to `DEST.part`; an interrupted download leaves it there and the next call asks the
server for the rest (HTTP Range). Only a file whose md5 matches is renamed to `DEST`, so
`DEST` is either absent or complete and correct.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from lrorder.core.errors import UserError

CHUNK = 1 << 16


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, *, timeout: float = 60.0, progress: bool = True) -> Path:
    """Fetch `url` into `dest`, resuming a previous partial download; verify `md5`."""
    dest = Path(dest)
    if dest.exists() and md5_of(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    again = f"run the same command again to resume the download of {url}"
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status != 206:  # the server ignored the range: start again
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with part.open("ab" if have else "wb") as sink, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                    disable=not progress or None) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    sink.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # the range starts at the end: the part file is already whole
            total = have
        else:
            raise UserError(f"download of {url} failed (HTTP {exc.code}): {again}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise UserError(f"download of {url} was interrupted ({exc}); {again}") from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise UserError(f"download of {url} stopped at {size} of {total} bytes: {again}")
    got = md5_of(part)
    if got != md5:
        part.unlink()
        raise UserError(f"{url} has md5 {got}, expected {md5}: the download was corrupt and "
                        "was deleted; run the same command again")
    part.replace(dest)
    return dest

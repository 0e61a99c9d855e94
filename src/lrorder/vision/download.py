"""A resumable, verified, atomic HTTP download (used for the CIFAR-10 python release).

Bytes go to `DEST.part`; an interrupted download leaves it there and the next call asks the
server for the rest (HTTP Range). Only a file whose md5 matches is renamed to `DEST`, so
`DEST` is either absent or complete and correct. Reaching the host has a short timeout, so a
machine without network is told so in seconds; the transfer itself may stall longer.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from lrorder.core.errors import UserError

CHUNK = 1 << 16
CONNECT_TIMEOUT = 5.0  # seconds to connect and receive the response's headers
READ_TIMEOUT = 60.0  # seconds the transfer may stall


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, have: int, connect_timeout: float, read_timeout: float):
    """The response for the bytes of `url` from `have` on; None when there are none left (416).

    urllib has one timeout for connecting and reading: it is `connect_timeout` until the
    headers are in, then the body's socket (under the response's reader) gets `read_timeout`.
    """
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=connect_timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # the range starts at the end: the part file is already whole
            return None
        raise UserError(f"download of {url} failed (HTTP {exc.code}): check the address, "
                        "then run the same command again") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc or type(exc).__name__
        raise UserError(f"cannot reach {urllib.parse.urlsplit(url).netloc or url} ({reason}): "
                        "check the network, then run the same command again") from None
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(read_timeout)
    return response


def download(url: str, dest: Path, md5: str, *, connect_timeout: float = CONNECT_TIMEOUT,
             read_timeout: float = READ_TIMEOUT, progress: bool = True) -> Path:
    """Fetch `url` into `dest`, resuming a previous partial download; verify `md5`."""
    dest = Path(dest)
    if dest.exists() and md5_of(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    again = f"run the same command again to resume the download of {url}"
    have = part.stat().st_size if part.exists() else 0
    response = _open(url, have, connect_timeout, read_timeout)
    total = have
    if response is not None:
        with response:
            if response.status != 206:  # the server ignored the range: start again
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            try:
                with part.open("ab" if have else "wb") as sink, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                        disable=not progress or None) as bar:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        sink.write(block)
                        bar.update(len(block))
            except (http.client.HTTPException, OSError) as exc:
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

"""The image data sets, as uint8 arrays (N, C, H, W), from whatever copy a machine has.

CIFAR-10 is looked for, in order, as the canonical python release in the data directory
(`cifar-10-batches-py/` or `cifar-10-python.tar.gz`, lossless) and as the JPEG copy
`cifar10-jpeg.npz` (in the data directory, or ../shared/data beside the repository), which
is decoded once into `cifar10-jpeg-decoded.npz` in the data directory. Fashion-MNIST is read
from its four idx .gz files (data directory `fashion-mnist/`, or the Debian package's place).

The first copy found is the one in use; it is checked (cheaply: it opens and has its members)
before it is trusted. The data directory is `--data-dir`, else $LRORDER_DATA, else
~/.cache/lrorder/data. Anything missing or unreadable raises a UserError whose one line says
what to run; `ensure` downloads CIFAR-10 when it is absent.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import os
import pickle
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

import lrorder
from lrorder.core.errors import UserError
from lrorder.core.rundir import write_atomic

ENV = "LRORDER_DATA"
DEFAULT_DIR = Path("~/.cache/lrorder/data")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
URL_ENV, MD5_ENV = "LRORDER_CIFAR10_URL", "LRORDER_CIFAR10_MD5"
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
JPEG_MEMBERS = tuple(f"{split}_{part}" for split in ("train", "test")
                     for part in ("jpeg", "offsets", "labels"))
CIFAR_ARCHIVE, CIFAR_DIR = "cifar-10-python.tar.gz", "cifar-10-batches-py"
JPEG_NPZ, JPEG_CACHE = "cifar10-jpeg.npz", "cifar10-jpeg-decoded.npz"
SHARED_JPEG = Path(lrorder.__file__).resolve().parents[3] / "shared" / "data" / JPEG_NPZ
FASHION_DIRS = ("fashion-mnist", "/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# The released code's per-channel normalisation (xternalz/WideResNet-pytorch), in [0, 1] units.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
DATASETS = ("cifar10", "fashion-mnist")


@dataclasses.dataclass(frozen=True)
class Images:
    """A labelled image data set: uint8 pixels (N, C, H, W), int64 labels, normalisation."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


def data_dir(given: str | os.PathLike | None = None) -> Path:
    """`given`, else $LRORDER_DATA, else ~/.cache/lrorder/data (user-expanded)."""
    return Path(given or os.environ.get(ENV) or DEFAULT_DIR).expanduser()


def how_to_get(name: str) -> str:
    if name == "cifar10":
        return (f"run `lrorder data cifar10` to download it (or put {CIFAR_DIR}/, {CIFAR_ARCHIVE} "
                f"or {JPEG_NPZ} in the data directory: --data-dir, ${ENV} or {DEFAULT_DIR})")
    return ("run `apt-get install dataset-fashion-mnist`, or put the four idx .gz files in "
            f"DATA_DIR/fashion-mnist/ (DATA_DIR: --data-dir, ${ENV} or {DEFAULT_DIR})")


def cifar_source(root: Path) -> Path | None:
    """The best CIFAR-10 copy present: python release first (lossless), then the JPEG copy."""
    for path in (root / CIFAR_DIR, root / CIFAR_ARCHIVE, root / JPEG_NPZ, SHARED_JPEG):
        if path.exists():
            return path
    return None


def fashion_source(root: Path) -> Path | None:
    for folder in FASHION_DIRS:
        path = root / folder
        if all((path / name).exists() for name in FASHION_FILES):
            return path
    return None


def damage(path: Path) -> str | None:
    """Why the data copy at `path` cannot be used, or None: a cheap check that it opens and
    holds its members (a truncated or corrupt member is found when it is loaded)."""
    try:
        if path.is_dir() and path.name == CIFAR_DIR:
            empty = [n for n in CIFAR_BATCHES if not (path / n).is_file() or not (path / n).stat().st_size]
            return f"{', '.join(empty)} missing or empty" if empty else None
        if path.is_dir():  # Fashion-MNIST: each idx file starts with its magic number
            for name in FASHION_FILES:
                with gzip.open(path / name) as handle:
                    if handle.read(3) != b"\x00\x00\x08":
                        return f"{name} is not an idx file"
            return None
        if path.name.endswith(".tar.gz"):
            stat = path.stat()
            names = _archive_names(path, stat.st_size, stat.st_mtime_ns)
            absent = sorted({f"{CIFAR_DIR}/{n}" for n in CIFAR_BATCHES} - names)
        else:
            with zipfile.ZipFile(path) as archive:
                absent = sorted({f"{n}.npy" for n in JPEG_MEMBERS} - set(archive.namelist()))
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error) as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"no {', '.join(absent)} in it" if absent else None


@functools.lru_cache(maxsize=4)
def _archive_names(path: Path, size: int, mtime_ns: int) -> frozenset[str]:
    """The members of a .tar.gz, listed once per version of the file (it reads all of it)."""
    with tarfile.open(path, "r:gz") as archive:
        return frozenset(archive.getnames())


def _found(name: str, root: Path) -> tuple[Path | None, str | None]:
    """The copy of `name` in use (or None), and why it cannot be used (or None)."""
    found = cifar_source(root) if name == "cifar10" else fashion_source(root)
    if found is None:
        return None, f"{name} data not found in {root}: {how_to_get(name)}"
    reason = damage(found)
    return found, reason and _corrupt(found, reason, name)


def missing(name: str, given: str | None = None) -> str | None:
    """None when data set `name` is present and whole; else one line saying how to get it."""
    return _found(name, data_dir(given))[1]


def where(name: str, given: str | None = None) -> str:
    """`lrorder data where`'s line for `name`: the copy a run would use, or why there is none."""
    found, problem = _found(name, data_dir(given))
    return problem or str(found)


def ensure(name: str, given: str | os.PathLike | None = None) -> str | None:
    """None when data set `name` is present and whole; else download it if it can be (CIFAR-10
    when absent) and return None, or return one line: why not, and the command to fetch it.

    A present but corrupt copy is reported, never downloaded over. The download comes from
    $LRORDER_CIFAR10_URL when set (a mirror, or a test's local server), checked against
    $LRORDER_CIFAR10_MD5 (default: the official archive's md5); without network it fails in
    seconds.
    """
    root = data_dir(given)
    found, problem = _found(name, root)
    if found is not None or name != "cifar10":
        return problem
    print(f"cifar10 data not found in {root}: downloading it", file=sys.stderr)
    try:
        fetch_cifar10(root)
    except UserError as exc:
        return f"cifar10 data not found in {root} and downloading it failed ({exc}); {how_to_get(name)}"
    return _found(name, root)[1]


def load(name: str, given: str | None = None) -> Images:
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    problem = missing(name, given)
    if problem:
        raise UserError(problem)
    root = data_dir(given)
    if name == "fashion-mnist":
        return _load_fashion(fashion_source(root))
    return _load_cifar(cifar_source(root), root)


def _corrupt(path: Path, reason: str, name: str) -> str:
    return f"{path} is truncated or corrupt ({reason}): delete it and {how_to_get(name)}"


def _load_cifar(path: Path, root: Path) -> Images:
    try:
        if path.suffix == ".npz":
            arrays = _decoded_jpeg(path, root)
        else:
            arrays = _python_release(path)
    except (OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError, tarfile.TarError,
            zipfile.BadZipFile, zlib.error) as exc:
        raise UserError(_corrupt(path, f"{type(exc).__name__}: {exc}", "cifar10")) from None
    return Images(*arrays, mean=CIFAR_MEAN, std=CIFAR_STD, source=str(path))


def _python_release(path: Path) -> tuple[np.ndarray, ...]:
    """The five training batches and the test batch of the pickled release (dir or archive)."""
    if path.is_dir():
        blobs = {n: (path / n).read_bytes() for n in CIFAR_BATCHES}
    else:
        with tarfile.open(path, "r:gz") as archive:
            blobs = {n: archive.extractfile(f"{CIFAR_DIR}/{n}").read() for n in CIFAR_BATCHES}
    batches = [pickle.loads(blobs[n], encoding="bytes") for n in CIFAR_BATCHES]
    xs = [np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches]
    ys = [np.asarray(b[b"labels"], dtype=np.int64) for b in batches]
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def _fingerprint(path: Path) -> str:
    """The JPEG copy's size and a hash of its first and last MiB.

    That identifies an .npz without reading all of it: it is a zip, whose central directory at
    the end of the file records the offset, size and CRC-32 of every member, so rewriting any
    member's content changes the last MiB (or the size), and a truncated, replaced or garbage
    file changes the size or the tail as well. The whole file is read once, when it is decoded.
    """
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(size - (1 << 20), 0))
        digest.update(handle.read(1 << 20))
    return f"{size}:{digest.hexdigest()}"


def _decoded_jpeg(path: Path, root: Path) -> tuple[np.ndarray, ...]:
    """Decode the JPEG copy once with Pillow; later loads read the cached uint8 arrays, as long
    as the cache was made from this very copy (it stores the copy's fingerprint)."""
    cache = root / JPEG_CACHE
    keys = ("train_x", "train_y", "test_x", "test_y")
    source = _fingerprint(path)
    if cache.exists():
        try:
            with np.load(cache) as stored:
                if str(stored["source"]) == source:
                    return tuple(stored[k] for k in keys)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error):
            pass  # a damaged cache, or one of another copy, is rebuilt below
    from PIL import Image

    with np.load(path) as raw:
        arrays = {}
        for split in ("train", "test"):
            blob, offsets = raw[f"{split}_jpeg"], raw[f"{split}_offsets"]
            images = [np.asarray(Image.open(io.BytesIO(blob[a:b].tobytes())).convert("RGB"))
                      for a, b in zip(offsets[:-1], offsets[1:])]
            arrays[f"{split}_x"] = np.stack(images).transpose(0, 3, 1, 2).copy()
            arrays[f"{split}_y"] = raw[f"{split}_labels"].astype(np.int64)
    try:
        write_atomic(cache, lambda f: np.savez(f, source=np.array(source), **arrays), mode="wb")
    except OSError:
        pass  # an unwritable data directory only costs decoding again next time
    return tuple(arrays[k] for k in keys)


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (big-endian header: magic with the rank in its last byte, then the shape)."""
    data = gzip.decompress(path.read_bytes())
    rank = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"expected {int(np.prod(shape))} values, found {body.size}")
    return body.reshape(shape)


def _load_fashion(folder: Path) -> Images:
    arrays = []
    for name in FASHION_FILES:
        try:
            arrays.append(_read_idx(folder / name))
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise UserError(_corrupt(folder / name, reason, "fashion-mnist")) from None
    train_x, train_y, test_x, test_y = arrays
    train_x, test_x = train_x[:, None], test_x[:, None]
    pixels = train_x.astype(np.float64) / 255
    return Images(train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64),
                  mean=(float(pixels.mean()),), std=(float(pixels.std()),), source=str(folder))


def fetch_cifar10(given: str | None = None, url: str | None = None, md5: str | None = None,
                  progress: bool = True) -> Path:
    """Download the CIFAR-10 python release into the data directory (resumable, md5-checked)
    from `url`, else $LRORDER_CIFAR10_URL, else the official host (md5 likewise)."""
    from lrorder.vision.download import download

    url = url or os.environ.get(URL_ENV) or CIFAR_URL
    md5 = md5 or os.environ.get(MD5_ENV) or CIFAR_MD5
    return download(url, data_dir(given) / CIFAR_ARCHIVE, md5, progress=progress)


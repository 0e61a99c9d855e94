"""Fixtures shared by the test modules, and the `gpu` marker: a test marked `gpu` is skipped
unless a CUDA device is visible (torch is imported only when such a test is collected).

With LRORDER_TEST_FAST=on in the environment (CI's second job), every vision run that does not
set `fast` itself runs as with `--set fast=on`: the arms sharing a training set are stacked on
the CPU too, as a GPU stacks them, so the tests check that grouping's contract as well."""

import http.server
import io
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest

from lrorder.cli import main
from lrorder.vision import data

FAST_FORCED = os.environ.get("LRORDER_TEST_FAST") == "on"


@pytest.fixture(autouse=True, scope="session")
def forced_fast():
    """Under LRORDER_TEST_FAST=on, `fast=on` for every vision config built without a `fast` of its
    own (a profile has none; a stored run's config keeps the one it started with), for the whole
    session: module-scoped runs too."""
    with pytest.MonkeyPatch.context() as patch:
        if FAST_FORCED:
            from lrorder.core import config
            from lrorder.vision.config import VisionConfig

            resolve = config.resolve

            def forced(config_type, values=(), texts=()):
                if issubclass(config_type, VisionConfig) and "fast" not in {**dict(values), **dict(texts)}:
                    texts = {**dict(texts), "fast": "on"}
                return resolve(config_type, values, texts)

            patch.setattr(config, "resolve", forced)
        yield


@pytest.fixture
def fast_forced():
    """Whether vision runs that do not set `fast` stack their arms here (LRORDER_TEST_FAST=on)."""
    return FAST_FORCED


@pytest.fixture
def cli():
    """The `lrorder` command in this process: `cli("run", RECIPE, "--seeds", 3)` -> exit status."""
    return lambda *argv: main([str(a) for a in argv])


@pytest.fixture
def no_shared_copies(monkeypatch, tmp_path):
    """Hide the machine's own copies (shared JPEG file, Debian Fashion-MNIST) from the loaders."""
    monkeypatch.setattr(data, "SHARED_JPEG", tmp_path / "absent.npz")
    monkeypatch.setattr(data, "FASHION_DIRS", ("fashion-mnist",))


def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(autouse=True)
def offline_download(monkeypatch):
    """No test reaches the internet: a missing CIFAR-10 is 'downloaded' from a closed local port
    (refused at once), unless a test serves its own archive."""
    monkeypatch.setenv("LRORDER_CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")


def write_fake_cifar(root, per_batch=100, test=200, seed=0, archive=False):
    """A tiny CIFAR-10 in the real pickle format: five training batches and a test batch."""
    rng = np.random.default_rng(seed)
    blobs = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        blobs[name] = pickle.dumps(batch)
    if not archive:
        folder = root / data.CIFAR_DIR
        folder.mkdir(parents=True)
        for name, blob in blobs.items():
            (folder / name).write_bytes(blob)
        return folder
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"{data.CIFAR_DIR}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


@pytest.fixture(scope="session")
def fake_cifar():
    """`fake_cifar(root, ...)`: write a tiny CIFAR-10 in the real format (see write_fake_cifar)."""
    return write_fake_cifar


class ArchiveServer:
    """A local HTTP server for one archive; `cut` makes it stop half-way through a response."""

    def __init__(self, payload: bytes):
        self.payload, self.cut, self.ranges = payload, False, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                outer.ranges.append(start)
                body = outer.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if outer.cut else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{data.CIFAR_ARCHIVE}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive_server(tmp_path):
    """A local HTTP server standing in for the CIFAR-10 host, serving a tiny real-format archive."""
    server = ArchiveServer(write_fake_cifar(tmp_path, archive=True))
    yield server
    server.close()


@pytest.fixture
def cifar_from(monkeypatch):
    """Point the CIFAR-10 download at `url` (checked against `md5`), as a mirror would."""
    def point(url, md5=data.CIFAR_MD5):
        monkeypatch.setenv(data.URL_ENV, url)
        monkeypatch.setenv(data.MD5_ENV, md5)
    return point


@pytest.fixture(scope="session")
def tiny_sets():
    """`tiny_sets(n, device)`: a tiny patched training set and the three validation sets."""
    return _tiny_sets


def _tiny_sets(n=96, device="cpu"):
    import torch

    from lrorder.vision.loader import ImageSet
    from lrorder.vision.patch import PatchRule, patchable_mask

    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    rule = PatchRule.draw(3, 10, generator)
    clean = ImageSet.from_arrays("clean", rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                                 rng.integers(0, 10, n), (0.5,) * 3, (0.25,) * 3, device,
                                 channels_last=device == "cuda")
    train = clean.with_patch("train", rule, patchable_mask(n, generator))
    evals = {"clean": clean, "mixed": train, "patch": ImageSet.blank("patch", train, 50)}
    return train, evals

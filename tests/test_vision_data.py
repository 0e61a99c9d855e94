"""Data sets: the CIFAR-10 python release (dir, archive, download), the JPEG copy, Fashion-MNIST;
missing, truncated and corrupt data give one line that says what to run."""

import gzip
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest
from PIL import Image

from lrorder.core.errors import UserError
from lrorder.vision import data
from lrorder.vision.download import download


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


@pytest.fixture
def no_shared_copies(monkeypatch, tmp_path):
    """Hide the machine's own copies (shared JPEG file, Debian Fashion-MNIST) from the loaders."""
    monkeypatch.setattr(data, "SHARED_JPEG", tmp_path / "absent.npz")
    monkeypatch.setattr(data, "FASHION_DIRS", ("fashion-mnist",))


def test_python_release_dir_and_archive_give_the_same_arrays(tmp_path, no_shared_copies):
    write_fake_cifar(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / data.CIFAR_ARCHIVE).write_bytes(write_fake_cifar(tmp_path, archive=True))
    a, b = data.load("cifar10", tmp_path / "a"), data.load("cifar10", tmp_path / "b")
    assert a.train_x.shape == (500, 3, 32, 32) and a.test_x.shape == (200, 3, 32, 32)
    assert a.train_x.dtype == np.uint8 and a.train_y.dtype == np.int64
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.test_y, b.test_y)
    assert a.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))


def test_data_dir_from_argument_environment_or_default(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV, str(tmp_path / "env"))
    assert data.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_dir() == tmp_path / "env"
    monkeypatch.delenv(data.ENV)
    assert data.data_dir() == data.DEFAULT_DIR.expanduser()


@pytest.mark.parametrize("damage", ["truncated archive", "corrupt batch"])
def test_damaged_cifar_is_one_line_saying_what_to_run(tmp_path, no_shared_copies, damage):
    if damage == "truncated archive":
        blob = write_fake_cifar(tmp_path, archive=True)
        (tmp_path / data.CIFAR_ARCHIVE).write_bytes(blob[: len(blob) // 2])
    else:
        folder = write_fake_cifar(tmp_path)
        (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="truncated or corrupt.*lrorder data cifar10") as info:
        data.load("cifar10", tmp_path)
    assert "\n" not in str(info.value)


def test_missing_data_says_how_to_get_it(tmp_path, no_shared_copies):
    assert "lrorder data cifar10" in data.missing("cifar10", tmp_path)
    assert "dataset-fashion-mnist" in data.missing("fashion-mnist", tmp_path)
    with pytest.raises(UserError, match="not found"):
        data.load("cifar10", tmp_path)


def test_jpeg_copy_is_decoded_once_into_a_uint8_cache(tmp_path, no_shared_copies):
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 6), ("test", 4)):
        files = []
        for _ in range(n):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
            files.append(buffer.getvalue())
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(files), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(f) for f in files])
        arrays[f"{split}_labels"] = np.arange(n, dtype=np.uint8)
    np.savez(tmp_path / data.JPEG_NPZ, **arrays)
    first = data.load("cifar10", tmp_path)
    assert first.train_x.shape == (6, 3, 32, 32) and first.test_y.tolist() == [0, 1, 2, 3]
    assert (tmp_path / data.JPEG_CACHE).exists()
    (tmp_path / data.JPEG_NPZ).write_bytes(b"")  # the cache alone must now suffice
    np.testing.assert_array_equal(data.load("cifar10", tmp_path).train_x, first.train_x)
    (tmp_path / data.JPEG_CACHE).unlink()
    (tmp_path / data.JPEG_NPZ).write_bytes(b"PK\x03\x04 not a whole zip file")
    with pytest.raises(UserError, match="truncated or corrupt"):
        data.load("cifar10", tmp_path)


def test_fashion_mnist_from_its_idx_files(tmp_path, no_shared_copies):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    for name in data.FASHION_FILES:
        body = images if "images" in name else np.array([7, 8, 9], dtype=np.uint8)
        header = bytes([0, 0, 8, body.ndim]) + b"".join(d.to_bytes(4, "big") for d in body.shape)
        (folder / name).write_bytes(gzip.compress(header + body.tobytes()))
    loaded = data.load("fashion-mnist", tmp_path)
    assert loaded.train_x.shape == (3, 1, 28, 28) and loaded.train_y.tolist() == [7, 8, 9]
    np.testing.assert_array_equal(loaded.test_x[:, 0], images)
    assert loaded.mean[0] == pytest.approx(images.mean() / 255)
    (folder / data.FASHION_FILES[0]).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(20)))
    with pytest.raises(UserError, match="truncated or corrupt"):
        data.load("fashion-mnist", tmp_path)


class _Server:
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
    server = _Server(write_fake_cifar(tmp_path, archive=True))
    yield server
    server.close()


def test_download_verifies_md5_and_is_then_loadable(tmp_path, archive_server, no_shared_copies):
    md5 = hashlib.md5(archive_server.payload).hexdigest()
    path = data.fetch_cifar10(tmp_path, url=archive_server.url, md5=md5, progress=False)
    assert path.read_bytes() == archive_server.payload and not path.with_name(path.name + ".part").exists()
    assert data.load("cifar10", tmp_path).train_x.shape == (500, 3, 32, 32)
    download(archive_server.url, path, md5, progress=False)  # already there: no request
    assert archive_server.ranges == [0]


def test_truncated_download_resumes_with_a_range_request(tmp_path, archive_server):
    md5 = hashlib.md5(archive_server.payload).hexdigest()
    dest = tmp_path / data.CIFAR_ARCHIVE
    archive_server.cut = True
    with pytest.raises(UserError, match="run the same command again to resume"):
        download(archive_server.url, dest, md5, progress=False)
    assert not dest.exists()
    part = dest.with_name(dest.name + ".part")
    half = part.stat().st_size
    assert 0 < half < len(archive_server.payload)
    archive_server.cut = False
    download(archive_server.url, dest, md5, progress=False)
    assert archive_server.ranges == [0, half] and dest.read_bytes() == archive_server.payload


def test_wrong_checksum_deletes_the_download(tmp_path, archive_server):
    dest = tmp_path / data.CIFAR_ARCHIVE
    with pytest.raises(UserError, match="expected 0{32}.*deleted"):
        download(archive_server.url, dest, "0" * 32, progress=False)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_data_command_shows_the_directory_and_each_data_set(tmp_path, no_shared_copies, capsys):
    import argparse

    write_fake_cifar(tmp_path)
    parser = argparse.ArgumentParser()
    data.add_arguments(parser)
    data.command(parser.parse_args(["--data-dir", str(tmp_path)]))
    out = capsys.readouterr().out
    assert f"data directory: {tmp_path}" in out and str(tmp_path / data.CIFAR_DIR) in out
    assert "fashion-mnist: missing: run `apt-get install dataset-fashion-mnist`" in out
    with pytest.raises(UserError, match="fashion-mnist data not found"):
        data.command(parser.parse_args(["fashion-mnist", "--data-dir", str(tmp_path)]))

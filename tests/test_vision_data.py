"""Data sets: the CIFAR-10 python release (dir, archive, download), the JPEG copy, Fashion-MNIST;
missing, truncated and corrupt data give one line that says what to run."""

import gzip
import hashlib
import io
import os
import socket
import time

import numpy as np
import pytest
from PIL import Image

from lrorder.core.errors import UserError
from lrorder.vision import data
from lrorder.vision.download import download


def test_python_release_dir_and_archive_give_the_same_arrays(fake_cifar, tmp_path, no_shared_copies):
    fake_cifar(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / data.CIFAR_ARCHIVE).write_bytes(fake_cifar(tmp_path, archive=True))
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
def test_damaged_cifar_is_one_line_saying_what_to_run(fake_cifar, tmp_path, no_shared_copies, damage):
    if damage == "truncated archive":
        blob = fake_cifar(tmp_path, archive=True)
        (tmp_path / data.CIFAR_ARCHIVE).write_bytes(blob[: len(blob) // 2])
    else:
        folder = fake_cifar(tmp_path)
        (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="truncated or corrupt.*lrorder data cifar10") as info:
        data.load("cifar10", tmp_path)
    assert "\n" not in str(info.value)


def test_missing_data_says_how_to_get_it(tmp_path, no_shared_copies):
    assert "lrorder data cifar10" in data.missing("cifar10", tmp_path)
    assert "dataset-fashion-mnist" in data.missing("fashion-mnist", tmp_path)
    with pytest.raises(UserError, match="not found"):
        data.load("cifar10", tmp_path)


def write_fake_jpeg(path, seed=1, train=6, test=4, first_label=0):
    """A tiny JPEG copy in its npz layout: the JPEG files of a split back to back, offsets, labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", train), ("test", test)):
        files = []
        for _ in range(n):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
            files.append(buffer.getvalue())
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(files), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(f) for f in files])
        arrays[f"{split}_labels"] = (first_label + np.arange(n, dtype=np.uint8)) % 10
    np.savez(path, **arrays)


def test_jpeg_copy_is_decoded_once_into_a_uint8_cache(tmp_path, no_shared_copies):
    write_fake_jpeg(tmp_path / data.JPEG_NPZ)
    first = data.load("cifar10", tmp_path)
    assert first.train_x.shape == (6, 3, 32, 32) and first.test_y.tolist() == [0, 1, 2, 3]
    cache = tmp_path / data.JPEG_CACHE
    made = cache.stat().st_mtime_ns
    np.testing.assert_array_equal(data.load("cifar10", tmp_path).train_x, first.train_x)
    assert cache.stat().st_mtime_ns == made  # read, not decoded again
    cache.unlink()
    (tmp_path / data.JPEG_NPZ).write_bytes(b"PK\x03\x04 not a whole zip file")
    with pytest.raises(UserError, match="truncated or corrupt"):
        data.load("cifar10", tmp_path)


@pytest.mark.parametrize("replacement", ["garbage", "same size and time, other labels"])
def test_a_decoded_cache_is_only_used_for_the_copy_it_was_made_from(tmp_path, no_shared_copies,
                                                                     replacement):
    source = tmp_path / data.JPEG_NPZ
    write_fake_jpeg(source)
    before = source.stat()
    assert data.load("cifar10", tmp_path).test_y.tolist() == [0, 1, 2, 3]
    if replacement == "garbage":
        source.write_bytes(b"\x00" * before.st_size)
        with pytest.raises(UserError, match=f"{data.JPEG_NPZ} is truncated or corrupt"):
            data.load("cifar10", tmp_path)
        return
    write_fake_jpeg(source, first_label=5)
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert source.stat().st_size == before.st_size
    assert data.load("cifar10", tmp_path).test_y.tolist() == [5, 6, 7, 8]  # decoded again
    assert data.load("cifar10", tmp_path).test_y.tolist() == [5, 6, 7, 8]  # from the new cache


@pytest.mark.parametrize("copy, content", [(data.CIFAR_ARCHIVE, b""), (data.CIFAR_ARCHIVE, b"\x1f\x8b junk"),
                                           (data.JPEG_NPZ, b""), (data.JPEG_NPZ, b"not a zip")])
def test_where_names_a_broken_copy_as_corrupt_and_says_what_to_do(tmp_path, no_shared_copies,
                                                                 copy, content):
    (tmp_path / copy).write_bytes(content)
    line = data.where("cifar10", tmp_path)
    assert line.startswith(f"{tmp_path / copy} is truncated or corrupt (")
    assert "delete it and run `lrorder data cifar10`" in line and "\n" not in line
    assert data.missing("cifar10", tmp_path) == line


def test_where_names_a_whole_copy(fake_cifar, tmp_path, no_shared_copies):
    (tmp_path / data.CIFAR_ARCHIVE).write_bytes(fake_cifar(tmp_path, archive=True))
    assert data.where("cifar10", tmp_path) == str(tmp_path / data.CIFAR_ARCHIVE)
    assert data.where("fashion-mnist", tmp_path).startswith(f"fashion-mnist data not found in {tmp_path}")


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


def test_ensure_downloads_missing_cifar_and_then_it_loads(tmp_path, archive_server, cifar_from,
                                                        no_shared_copies):
    cifar_from(archive_server.url, hashlib.md5(archive_server.payload).hexdigest())
    assert data.ensure("cifar10", tmp_path) is None
    assert (tmp_path / data.CIFAR_ARCHIVE).read_bytes() == archive_server.payload
    assert data.load("cifar10", tmp_path).test_x.shape == (200, 3, 32, 32)
    assert data.ensure("cifar10", tmp_path) is None and archive_server.ranges == [0]


def test_ensure_never_downloads_over_a_corrupt_copy(tmp_path, archive_server, cifar_from,
                                                    no_shared_copies):
    cifar_from(archive_server.url, hashlib.md5(archive_server.payload).hexdigest())
    (tmp_path / data.CIFAR_ARCHIVE).write_bytes(b"")
    reason = data.ensure("cifar10", tmp_path)
    assert reason.startswith(f"{tmp_path / data.CIFAR_ARCHIVE} is truncated or corrupt")
    assert "lrorder data cifar10" in reason
    assert archive_server.ranges == [] and (tmp_path / data.CIFAR_ARCHIVE).read_bytes() == b""


def test_ensure_says_how_to_get_fashion_mnist(tmp_path, no_shared_copies):
    assert "apt-get install dataset-fashion-mnist" in data.ensure("fashion-mnist", tmp_path)


@pytest.mark.parametrize("host", ["closed port", "silent server"])
def test_ensure_without_network_fails_fast_in_one_line(tmp_path, cifar_from, no_shared_copies, host):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if host == "silent server":  # accepts the connection, never answers
            listener.listen(1)
        else:
            listener.close()
        cifar_from(f"http://127.0.0.1:{port}/{data.CIFAR_ARCHIVE}")
        start = time.monotonic()
        reason = data.ensure("cifar10", tmp_path)
        took = time.monotonic() - start
    assert took < 15  # the connect timeout is a few seconds
    assert reason.startswith(f"cifar10 data not found in {tmp_path} and downloading it failed (cannot reach "
                             f"127.0.0.1:{port} (")
    assert "run `lrorder data cifar10`" in reason and "\n" not in reason
    assert not (tmp_path / data.CIFAR_ARCHIVE).exists()

"""IDX parsing and the Fashion-MNIST lookup order (SPEC §4), on tiny files written here."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from smpq.data import load_dataset, load_fashion_mnist, locate_fashion_mnist, read_idx
from smpq.data import fashion_mnist
from smpq.errors import DataError


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_read_idx_round_trips(tmp_path, make_idx, compress, dtype):
    array = np.arange(30).reshape(2, 3, 5).astype(dtype)
    out = read_idx(make_idx(tmp_path / "a.idx", array, compress))
    assert out.shape == (2, 3, 5) and out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05"))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)


def test_read_idx_rejects_short_body(tmp_path, make_idx):
    path = make_idx(tmp_path / "x", np.zeros((4, 28, 28), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path)


def test_read_idx_rejects_truncated_gzip(tmp_path, make_idx):
    path = make_idx(tmp_path / "x.gz", np.arange(4000, dtype=np.int32).reshape(40, 100))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="gzip stream is truncated or corrupt"):
        read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_mnist(tmp_path, make_fashion_mnist, compress):
    arrays = make_fashion_mnist(tmp_path, n_train=12, n_test=6, compress=compress)
    raw = load_fashion_mnist(tmp_path)
    assert (raw.name, raw.in_channels, raw.image_size, raw.num_classes) == ("fashion_mnist", 1, 28, 10)
    assert raw.train.images.shape == (12, 1, 28, 28) and len(raw.test) == 6
    np.testing.assert_array_equal(raw.train.images[:, 0].numpy(), arrays["train_images"])
    np.testing.assert_array_equal(raw.test.labels.numpy(), arrays["test_labels"])
    assert len(raw.files) == 4 and all(p.parent == tmp_path for p in raw.files)


def test_load_fashion_mnist_rejects_mismatched_labels(tmp_path, make_fashion_mnist, make_idx):
    make_fashion_mnist(tmp_path, n_train=12)
    make_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="do not belong together"):
        load_fashion_mnist(tmp_path)


def test_params_root_wins_over_debian_dir(tmp_path, make_fashion_mnist):
    root, debian = tmp_path / "root", tmp_path / "debian"
    make_fashion_mnist(root)
    make_fashion_mnist(debian)
    assert locate_fashion_mnist(root, tmp_path / "dl", False, debian_dir=debian) == root


def test_incomplete_params_root_names_missing_files_without_fallback(tmp_path, make_fashion_mnist):
    root, debian = tmp_path / "root", tmp_path / "debian"
    make_fashion_mnist(root)
    make_fashion_mnist(debian)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as err:
        locate_fashion_mnist(root, tmp_path / "dl", False, debian_dir=debian)
    assert "train-images" not in str(err.value)


def test_debian_dir_before_download_dir(tmp_path, make_fashion_mnist):
    debian, download = tmp_path / "debian", tmp_path / "dl"
    make_fashion_mnist(debian)
    make_fashion_mnist(download)
    assert locate_fashion_mnist(None, download, False, debian_dir=debian) == debian


@pytest.mark.parametrize("sub", ["", "FashionMNIST/raw"])
def test_download_dir_used_when_no_debian_package(tmp_path, make_fashion_mnist, sub):
    download = tmp_path / "dl"
    make_fashion_mnist(download / sub, compress=False)
    assert locate_fashion_mnist(None, download, False, debian_dir=tmp_path / "none") == download / sub


def test_nothing_anywhere_gives_install_message(tmp_path):
    with pytest.raises(DataError) as err:
        locate_fashion_mnist(None, tmp_path / "dl", False, debian_dir=tmp_path / "none")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "set data.root in params.yaml" in str(err.value)


def test_failed_download_gives_install_message_and_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "_download", lambda folder: "URLError: network unreachable")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*network unreachable"):
        locate_fashion_mnist(None, tmp_path / "dl", True, debian_dir=tmp_path / "none")


def test_successful_download_is_found_in_torchvision_layout(tmp_path, monkeypatch, make_fashion_mnist):
    def fake_download(folder):
        make_fashion_mnist(folder / "FashionMNIST" / "raw")
        return None
    monkeypatch.setattr(fashion_mnist, "_download", fake_download)
    found = locate_fashion_mnist(None, tmp_path / "dl", True, debian_dir=tmp_path / "none")
    assert found == tmp_path / "dl" / "FashionMNIST" / "raw"


def test_load_dataset_fashion_mnist_and_image_size_check(tmp_path, make_fashion_mnist):
    make_fashion_mnist(tmp_path / "root")
    raw = load_dataset("fashion_mnist", root=tmp_path / "root", download_dir=tmp_path, allow_download=False,
                       image_size=None)
    assert len(raw.train) == 12
    with pytest.raises(DataError, match="image_size is 32 but fashion_mnist images are 28"):
        load_dataset("fashion_mnist", root=tmp_path / "root", download_dir=tmp_path, allow_download=False,
                     image_size=32)

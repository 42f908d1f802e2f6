"""CIFAR-10 pickles and ImageFolder trees written by the tests, plus ``load_dataset`` dispatch errors."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from smpq.data import FileImages, load_cifar10, load_dataset, load_image_folder
from smpq.errors import DataError


@pytest.mark.parametrize("point_at_batch_dir", [False, True])
def test_load_cifar10(tmp_path, make_cifar10, point_at_batch_dir):
    written = make_cifar10(tmp_path, per_batch=4)
    folder = tmp_path / "cifar-10-batches-py" if point_at_batch_dir else tmp_path
    raw = load_cifar10(folder)
    assert raw.train.images.shape == (20, 3, 32, 32) and raw.test.images.shape == (4, 3, 32, 32)
    assert raw.classes[0] == "airplane" and raw.num_classes == 10 and raw.image_size == 32
    data, labels = written["data_batch_2"]
    np.testing.assert_array_equal(raw.train.images[4:8].numpy(), data.reshape(4, 3, 32, 32))
    assert raw.train.labels[4:8].tolist() == labels
    assert raw.test.labels.tolist() == written["test_batch"][1]
    assert sorted(p.name for p in raw.files)[-1] == "test_batch" and len(raw.files) == 7


def test_cifar10_missing_batch(tmp_path, make_cifar10):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing CIFAR-10 file.*data_batch_3"):
        load_cifar10(tmp_path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


def test_cifar10_refuses_pickled_code(tmp_path, make_cifar10):
    make_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": _Exploit(), b"labels": [0]}, f)
    with pytest.raises(DataError, match="is not allowed"):
        load_cifar10(tmp_path)


def _tree(root, make_png, val_name="val"):
    make_png(root / "train" / "dog" / "a.png", (40, 20), (200, 0, 0))
    make_png(root / "train" / "dog" / "b.JPG", (20, 20), (0, 0, 0))
    make_png(root / "train" / "cat" / "c.png", (10, 30), (0, 255, 0))
    make_png(root / val_name / "cat" / "d.png", (16, 16), (0, 0, 255))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("val_name", ["val", "test"])
def test_load_image_folder(tmp_path, make_png, val_name):
    _tree(tmp_path, make_png, val_name)
    raw = load_image_folder(tmp_path, image_size=8)
    assert raw.classes == ["cat", "dog"] and raw.hash_listing
    assert isinstance(raw.train, FileImages) and raw.train.files == ["train/cat/c.png", "train/dog/a.png",
                                                                      "train/dog/b.JPG"]
    assert raw.train.labels.tolist() == [0, 1, 1] and raw.test.labels.tolist() == [0]
    batch = raw.train.batch(torch.arange(3))
    assert batch.shape == (3, 3, 8, 8) and batch.dtype == torch.uint8
    assert batch[0, 1].eq(255).all() and batch[1, 0].eq(200).all() and batch[2].eq(0).all()
    assert raw.test.batch(torch.tensor([0]))[0, 2].eq(255).all()


def test_file_images_grayscale(tmp_path, make_png):
    make_png(tmp_path / "x.png", (12, 9), (255, 255, 255))
    images = FileImages(tmp_path, ["x.png"], torch.tensor([0]), image_size=6, in_channels=1)
    assert images.image(0).shape == (1, 6, 6) and images.image(0).eq(255).all()


def test_image_folder_empty_class_dir(tmp_path, make_png):
    _tree(tmp_path, make_png)
    (tmp_path / "train" / "bird").mkdir()
    with pytest.raises(DataError, match="bird: class folder has no images"):
        load_image_folder(tmp_path, image_size=8)


def test_image_folder_without_val_or_unknown_class(tmp_path, make_png):
    make_png(tmp_path / "train" / "dog" / "a.png", (8, 8), (1, 2, 3))
    with pytest.raises(DataError, match="no val or test/ folder"):
        load_image_folder(tmp_path, image_size=8)
    make_png(tmp_path / "val" / "fox" / "a.png", (8, 8), (1, 2, 3))
    with pytest.raises(DataError, match="'fox' is not among the train/ classes"):
        load_image_folder(tmp_path, image_size=8)


def test_corrupt_image_file_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: cannot decode image"):
        FileImages(tmp_path, ["bad.png"], torch.tensor([0]), image_size=8).image(0)


def test_load_dataset_errors(tmp_path):
    common = {"download_dir": tmp_path, "allow_download": False}
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*fashion_mnist, cifar10, image_folder"):
        load_dataset("mnist", root=None, image_size=None, **common)
    with pytest.raises(DataError, match="data.root: required for dataset 'cifar10'"):
        load_dataset("cifar10", root=None, image_size=None, **common)
    with pytest.raises(DataError, match="data.image_size: required when dataset is image_folder"):
        load_dataset("image_folder", root=tmp_path, image_size=None, **common)

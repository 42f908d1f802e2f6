"""Seeded splits and the dataset card, on a tiny Fashion-MNIST written here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from smpq.data import dataset_card, load_fashion_mnist, load_image_folder, make_splits, materialise_splits


def test_splits_disjoint_sized_sorted_and_seeded():
    a = make_splits(100, 40, search_val_size=10, seed=3, train_size=50, test_size=15)
    assert {k: len(v) for k, v in a.items()} == {"train": 50, "search_val": 10, "test": 15}
    assert not set(a["train"]) & set(a["search_val"])
    for idx, pool in ((a["train"], 100), (a["search_val"], 100), (a["test"], 40)):
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < pool
    b = make_splits(100, 40, search_val_size=10, seed=3, train_size=50, test_size=15)
    c = make_splits(100, 40, search_val_size=10, seed=4, train_size=50, test_size=15)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"]) and not np.array_equal(a["test"], c["test"])


def test_splits_default_sizes_use_the_rest():
    s = make_splits(30, 7, search_val_size=5, seed=0)
    assert len(s["train"]) == 25 and np.array_equal(s["test"], np.arange(7))
    assert np.array_equal(np.sort(np.concatenate([s["train"], s["search_val"]])), np.arange(30))


@pytest.mark.parametrize("kwargs, message", [
    ({"search_val_size": 60, "train_size": 50}, r"search_val_size \(60\) \+ data.train_size \(50\) = 110 exceeds "
                                                r"the 100 images"),
    ({"search_val_size": 100}, r"= 101 exceeds the 100 images"),
    ({"search_val_size": 0}, "at least 1"),
    ({"search_val_size": 10, "test_size": 41}, r"test_size \(41\) must be between 1 and the 40 images"),
])
def test_bad_split_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_splits(100, 40, seed=0, **kwargs)


def test_card_counts_checksums_and_normalisation(tmp_path, make_fashion_mnist):
    arrays = make_fashion_mnist(tmp_path, n_train=30, n_test=10)
    raw = load_fashion_mnist(tmp_path)
    splits = make_splits(30, 10, search_val_size=10, seed=1, test_size=5)
    sets = materialise_splits(raw, splits)
    card = dataset_card(raw, splits, sets, seed=1)
    assert card["counts"] == {"train": 20, "search_val": 10, "test": 5} and card["split_seed"] == 1
    train_labels = arrays["train_labels"][splits["train"]]
    assert card["class_counts"]["train"]["Trouser"] == int((train_labels == 1).sum())
    assert sum(card["class_counts"]["search_val"].values()) == 10
    for path in tmp_path.glob("*.gz"):
        assert card["raw_files"]["sha256"][path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    pixels = arrays["train_images"][splits["train"]] / 255.0
    assert card["normalization"]["mean"] == pytest.approx([pixels.mean()], rel=1e-9)
    assert card["normalization"]["std"] == pytest.approx([pixels.std()], rel=1e-9)
    assert (card["in_channels"], card["image_size"], card["num_classes"]) == (1, 28, 10)


def test_image_folder_card_hashes_listing(tmp_path, make_png):
    for name in ("train/a/1.png", "train/b/2.png", "val/a/3.png", "val/b/4.png"):
        make_png(tmp_path / name, (6, 6), (10, 20, 30))
    raw = load_image_folder(tmp_path, image_size=4)
    splits = make_splits(2, 2, search_val_size=1, seed=0)
    card = dataset_card(raw, splits, materialise_splits(raw, splits), seed=0)
    listing = "".join(sorted(f"{p.relative_to(tmp_path).as_posix()}\t{p.stat().st_size}\n"
                             for p in tmp_path.rglob("*.png")))
    assert card["raw_files"]["listing_sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    assert "not hashed" in card["raw_files"]["method"] and card["raw_files"]["num_files"] == 4
    assert card["normalization"]["mean"] == pytest.approx([10 / 255, 20 / 255, 30 / 255], abs=2e-3)

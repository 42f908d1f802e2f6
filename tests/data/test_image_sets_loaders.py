"""Image-set storage and statistics, augmentation, and the seeded batch loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smpq.artifacts import save_state_dict
from smpq.config import load_params
from smpq.errors import ArtifactError, ConfigError
from smpq.data import (FileImages, TensorImages, augment_batch, channel_stats, load_image_set, make_loader,
                       save_image_set)
from smpq.data.loaders import STREAM_AUGMENT
from smpq.data.seeding import torch_generator

PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _images(n=50, channels=1, size=8, seed=0) -> TensorImages:
    g = torch.Generator().manual_seed(seed)
    return TensorImages(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
                        torch.arange(n) % 10)


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def _png_folder(root, n=12, size=10) -> FileImages:
    """``n`` noise PNGs of varied shapes (some resized and cropped on decode), labels ``0..n-1``."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        shape = (size + i % 3, size + (i * 2) % 5, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / f"{i}.png")
        files.append(f"{i}.png")
    return FileImages(root, files, torch.arange(n), image_size=size)


def test_tensor_images_save_load_round_trip_and_subset(tmp_path):
    images = _images().subset(np.array([3, 1, 7]))
    assert images.labels.tolist() == [3, 1, 7]
    loaded = load_image_set(save_image_set(tmp_path / "s.pt", images))
    assert isinstance(loaded, TensorImages) and torch.equal(loaded.images, images.images)
    assert torch.equal(loaded.labels, images.labels)


def test_file_images_save_load_round_trip(tmp_path):
    images = FileImages(tmp_path, ["a/x.png", "b/y.png"], torch.tensor([0, 1]), image_size=16)
    loaded = load_image_set(save_image_set(tmp_path / "s.pt", images.subset(np.array([1]))))
    assert isinstance(loaded, FileImages) and loaded.files == ["b/y.png"] and loaded.labels.tolist() == [1]
    assert (loaded.root, loaded.image_size, loaded.in_channels) == (tmp_path, 16, 3)


def test_corrupt_or_foreign_image_set_file(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="bad.pt"):
        load_image_set(tmp_path / "bad.pt")
    save_state_dict(tmp_path / "other.pt", {"weight": torch.zeros(2)})
    with pytest.raises(ArtifactError, match="not an SMPQ image set"):
        load_image_set(tmp_path / "other.pt")
    save_state_dict(tmp_path / "broken.pt", {"format": "smpq.image_set", "version": 1, "kind": "tensor",
                                             "labels": torch.zeros(3, dtype=torch.int64)})
    with pytest.raises(ArtifactError, match="incomplete or inconsistent"):
        load_image_set(tmp_path / "broken.pt")


def test_channel_stats_matches_numpy_and_subsamples_by_seed():
    images = _images(n=40, channels=3)
    pixels = images.images.numpy() / 255.0
    mean, std = channel_stats(images)
    assert mean == pytest.approx(pixels.mean(axis=(0, 2, 3)).tolist(), rel=1e-9)
    assert std == pytest.approx(pixels.std(axis=(0, 2, 3)).tolist(), rel=1e-9)
    assert channel_stats(images, max_samples=10, seed=1) == channel_stats(images, max_samples=10, seed=1)
    assert channel_stats(images, max_samples=10, seed=1) != channel_stats(images, max_samples=10, seed=2)


def test_augment_is_a_padded_crop_or_its_mirror():
    batch = _images(n=64, channels=3, size=16).images
    out = augment_batch(batch, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(batch, (2, 2, 2, 2))
    flips = 0
    for src, got in zip(padded, out):
        crops = [src[:, y:y + 16, x:x + 16] for y in range(5) for x in range(5)]
        plain = any(torch.equal(got, c) for c in crops)
        mirrored = any(torch.equal(got, c.flip(-1)) for c in crops)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 10 < flips < 54
    assert torch.equal(out, augment_batch(batch, torch.Generator().manual_seed(0)))


def test_loader_normalises_exactly():
    images = _images(n=10, channels=2)
    loader = make_loader(images, batch_size=4, mean=[0.5, 0.25], std=[0.2, 0.4], shuffle=False, seed=0)
    batches = _epoch(loader, 0)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([b for b, _ in batches])
    expected = (images.images.double() / 255 - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / \
        torch.tensor([0.2, 0.4]).view(1, 2, 1, 1)
    assert x.dtype == torch.float32 and torch.allclose(x.double(), expected, atol=1e-5)
    assert torch.equal(torch.cat([y for _, y in batches]), images.labels)


def test_loader_same_seed_and_epoch_same_batches_other_epoch_other_order():
    images = _images(n=50)
    kwargs = {"batch_size": 8, "mean": [0.5], "std": [0.25], "shuffle": True, "augment": True}
    a, b = make_loader(images, seed=7, **kwargs), make_loader(images, seed=7, **kwargs)
    epoch1 = _epoch(a, 1)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(epoch1, _epoch(b, 1)))
    order = lambda batches: torch.cat([y for _, y in batches]).tolist()
    assert order(_epoch(a, 2)) != order(epoch1) and order(_epoch(a, 1)) == order(epoch1)
    assert order(_epoch(make_loader(images, seed=8, **kwargs), 1)) != order(epoch1)
    assert not torch.equal(a.epoch_indices(1), torch.arange(50))
    assert sorted(a.epoch_indices(1).tolist()) == list(range(50))


def test_loader_samples_per_epoch_and_drop_last():
    images = _images(n=50)
    loader = make_loader(images, batch_size=8, mean=[0.5], std=[0.25], shuffle=False, seed=0,
                         samples_per_epoch=20, drop_last=True)
    assert len(loader) == 2 and sum(len(y) for _, y in _epoch(loader, 0)) == 16
    first, second = loader.epoch_indices(0), loader.epoch_indices(1)
    assert len(first) == 20 and len(set(first.tolist())) == 20 and torch.equal(first, first.sort().values)
    assert not torch.equal(first, second)
    full = make_loader(images, batch_size=8, mean=[0.5], std=[0.25], shuffle=True, seed=0, samples_per_epoch=500)
    assert len(full) == 7 and sum(len(y) for _, y in _epoch(full, 0)) == 50


def test_loader_rejects_wrong_normalisation_length():
    with pytest.raises(ValueError, match="one value per channel"):
        make_loader(_images(channels=3), batch_size=4, mean=[0.5], std=[0.2], shuffle=False, seed=0)



def test_loader_workers_give_the_same_batches_and_each_batch_its_own_augment_stream():
    images = _images(n=50, channels=3, size=8)
    kwargs = {"batch_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3, "shuffle": True, "seed": 5, "augment": True,
              "samples_per_epoch": 30}
    here, workers = make_loader(images, **kwargs), make_loader(images, workers=2, **kwargs)
    for epoch in (0, 1):
        expected = _epoch(here, epoch)
        assert len(expected) == 4 and _same(_epoch(workers, epoch), expected)
        indices = here.epoch_indices(epoch)
        for b, (x, y) in enumerate(expected):
            raw = images.images[indices[b * 8:(b + 1) * 8]]
            augmented = augment_batch(raw, torch_generator(5, epoch, STREAM_AUGMENT, b))
            assert torch.equal(x, here.normalise(augmented)) and not torch.equal(x, here.normalise(raw))
            assert torch.equal(y, images.labels[indices[b * 8:(b + 1) * 8]])
    assert not _same(_epoch(workers, 0), _epoch(workers, 1))


def test_loader_workers_decode_an_image_folder_to_the_same_batches(tmp_path):
    images = _png_folder(tmp_path)
    kwargs = {"batch_size": 5, "mean": [0.5] * 3, "std": [0.25] * 3, "shuffle": True, "seed": 1, "augment": True}
    here, workers = make_loader(images, **kwargs), make_loader(images, workers=2, **kwargs)
    for epoch in (0, 1):
        expected = _epoch(here, epoch)
        assert [len(y) for _, y in expected] == [5, 5, 2]
        assert _same(_epoch(workers, epoch), expected)
        assert sorted(torch.cat([y for _, y in expected]).tolist()) == list(range(12))


def test_loader_workers_cut_the_same_ddp_shard():
    images = _images(n=40)
    kwargs = {"batch_size": 8, "mean": [0.5], "std": [0.25], "shuffle": True, "seed": 2, "augment": True}
    whole = _epoch(make_loader(images, **kwargs), 1)
    shard = _epoch(make_loader(images, shard=(1, 2), workers=2, **kwargs), 1)
    assert _same(shard, _epoch(make_loader(images, shard=(1, 2), **kwargs), 1))
    assert _same(shard, [(x[1::2], y[1::2]) for x, y in whole]) and [len(y) for _, y in shard] == [4] * 5


def test_loader_rejects_negative_workers():
    with pytest.raises(ConfigError) as err:
        load_params(PROJECT_PARAMS, {"runtime.loader_workers": -1})
    assert "runtime.loader_workers: -1 out of range; allowed: >= 0" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="workers must be 0"):
        make_loader(_images(), batch_size=4, mean=[0.5], std=[0.2], shuffle=False, seed=0, workers=-1)

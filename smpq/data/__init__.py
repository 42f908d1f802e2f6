"""Datasets for SMPQ (SPEC §4): find and load a source, cut seeded splits, describe them, load batches.

Flow: ``load_dataset`` -> ``make_splits`` -> ``materialise_splits`` -> ``save_image_set`` + ``dataset_card``;
training then uses ``load_image_set`` -> ``make_loader`` (seeded per epoch via ``set_epoch``).
"""

from smpq.data.batch_ops import Normaliser, augment_batch, crop_padding
from smpq.data.card import CARD_FILE, dataset_card, file_sha256, listing_sha256
from smpq.data.cifar10 import load_cifar10
from smpq.data.fashion_mnist import DEBIAN_DIR, load_fashion_mnist, locate_fashion_mnist
from smpq.data.idx import read_idx
from smpq.data.image_folder import load_image_folder
from smpq.data.image_set_io import load_image_set, save_image_set
from smpq.data.image_sets import FileImages, ImageSet, TensorImages
from smpq.data.loaders import BatchLoader, make_loader
from smpq.data.raw import RawDataset
from smpq.data.sources import DATASET_NAMES, load_dataset, missing_setting
from smpq.data.splits import make_splits, materialise_splits
from smpq.data.stats import channel_stats

__all__ = [
    "CARD_FILE", "DATASET_NAMES", "DEBIAN_DIR", "BatchLoader", "FileImages", "ImageSet",
    "Normaliser", "RawDataset", "TensorImages", "augment_batch", "channel_stats", "crop_padding", "dataset_card",
    "file_sha256", "listing_sha256", "load_cifar10", "load_dataset", "load_fashion_mnist", "load_image_folder",
    "load_image_set", "locate_fashion_mnist", "make_loader", "make_splits", "materialise_splits", "missing_setting",
    "read_idx", "save_image_set",
]

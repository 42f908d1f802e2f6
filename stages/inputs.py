"""Inputs the training stages share: the prepared splits with their card, and the model they describe.

Kept free of the quantization and supernet code, so that editing those never reruns ``pretrain``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from smpq.artifacts import read_json
from smpq.config import Params
from smpq.data import CARD_FILE, load_image_set, make_loader
from smpq.device import ONE_CPU_PROCESS, Execution
from smpq.models import create_model

MODEL_FILE = "model.pt"  # a model's state_dict, written by pretrain (float) and finetune (quantized)


@dataclass
class Prepared:
    """The splits written by ``prepare`` and the normalisation recorded in their card."""

    folder: Path
    card: dict

    def images(self, split: str):
        return load_image_set(self.folder / f"{split}.pt")

    def loader(self, split: str, *, batch_size: int, seed: int, shuffle: bool = False, augment: bool = False,
               samples_per_epoch: int | None = None, execution: Execution = ONE_CPU_PROCESS):
        """Seeded batches of ``split`` on ``execution``'s device, built by its ``loader_workers``; in a DDP run,
        this process's shard of each global batch of ``batch_size``."""
        norm = self.card["normalization"]
        return make_loader(self.images(split), batch_size=batch_size, mean=norm["mean"], std=norm["std"],
                           shuffle=shuffle, seed=seed, augment=augment, samples_per_epoch=samples_per_epoch,
                           device=execution.device, shard=(execution.rank, execution.world_size),
                           workers=execution.loader_workers)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        size = self.card["image_size"]
        return (self.card["in_channels"], size, size)


def load_prepared(folder: Path) -> Prepared:
    return Prepared(folder=folder, card=read_json(folder / CARD_FILE))


def build_model(params: Params, prepared: Prepared, pretrained: Path | None = None) -> nn.Module:
    """The model named in params, shaped for the prepared dataset (classes, channels)."""
    return create_model(params.model.name, num_classes=len(prepared.card["classes"]),
                        in_channels=prepared.card["in_channels"], pretrained=pretrained)

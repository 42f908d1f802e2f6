"""The Shapley game on a trained supernet (SPEC §3.3): the value of a coalition of bit-width candidates.

Players are the supernet's ``(layer, kind, bits)`` candidates in ``Supernet.players()`` order. A coalition
masks the frozen supernet (eval mode, no gradients; what an empty group means is the supernet's
``empty_group`` setting) and is evaluated on fixed ``search_val`` images (never ``test``), one value per image:

- ``neg_kl``: −KL(p_FP ‖ p_S) = −Σ_c p_FP,c (log p_FP,c − log p_S,c), against the full-precision model's
  logits computed once by the caller: how far the quantized network is from the one it stands for;
- ``neg_loss``: −cross-entropy against the labels; ``top1``: 1 if the image is classified right, else 0.

``many(masks)`` evaluates coalitions that differ inside one group at once: the layers before the first one
that differs run once per batch and are replayed (``smpq.shapley.prefix``), with bit-identical values.
With ``recalibration`` images, every coalition is evaluated with batch-norm statistics re-estimated on them
for that coalition (``smpq.supernet.batchnorm``), instead of the mixture's; no prefix is replayed then.

Devices: the game runs where the supernet and the images are (the caller puts both on one device, e.g. a
GPU); the per-image values come back to the CPU as numpy arrays. ``coalitions_per_forward`` K > 1 evaluates
up to K coalitions of one ``many`` call side by side in one forward of K·B images (``PrefixReplay.replay_many``),
so a GPU gets large kernels instead of K small launches; equal to one-by-one evaluation up to float rounding.
``None`` (auto) is 1 on the CPU, where it gains nothing and one-by-one keeps the values bit for bit, and on an
accelerator as many as ``smpq.device.fit_count`` allows for the recorded forward's activations.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from smpq.config import VALUES
from smpq.device import fit_count
from smpq.shapley.prefix import PrefixReplay
from smpq.supernet.batchnorm import recalibrated


class SupernetGame:
    """``game(mask)`` and ``game.many(masks)``: per-image values (float64) of coalitions of a frozen supernet."""

    def __init__(self, supernet, images: torch.Tensor, labels: torch.Tensor, value: str = "neg_kl", *,
                 fp_logits: torch.Tensor | None = None, batch_size: int | None = None,
                 recalibration: Sequence[torch.Tensor] = (), coalitions_per_forward: int | None = 1):
        if value not in VALUES:
            raise ValueError(f"unknown game value {value!r}; allowed: {', '.join(VALUES)}")
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"the value batch needs matching, non-empty images and labels "
                             f"(got {len(images)} images, {len(labels)} labels)")
        if value == "neg_kl" and (fp_logits is None or len(fp_logits) != len(images)):
            raise ValueError("value neg_kl needs the full-precision logits of the same images (fp_logits)")
        if coalitions_per_forward is not None and coalitions_per_forward < 1:
            raise ValueError(f"coalitions_per_forward must be at least 1 (or None: auto), got {coalitions_per_forward}")
        self.supernet, self.value, self._recalibration = supernet, value, list(recalibration)
        self._per_forward = 1 if coalitions_per_forward is None and images.device.type == "cpu" \
            else coalitions_per_forward
        size = batch_size or len(images)
        self._batches = [(images[i:i + size], labels[i:i + size]) for i in range(0, len(images), size)]
        self._fp = None if fp_logits is None else torch.log_softmax(fp_logits.double(), dim=1)
        self._replay = PrefixReplay(supernet)
        players = supernet.players()
        layers = supernet.mixed_layers
        self._player_layer = [layers[p.layer] for p in players]

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        return self.many([mask])[0]

    @torch.no_grad()
    def many(self, masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Values of ``masks``; the layers before the first one whose candidates differ between them run once."""
        masks = [np.asarray(m, dtype=bool) for m in masks]
        if self._recalibration:
            return [self._recalibrated(mask) for mask in masks]
        differ = np.flatnonzero(np.any(np.stack(masks) != masks[0], axis=0))
        starts = list({id(self._player_layer[i]): self._player_layer[i] for i in differ}.values())
        self.supernet.eval()
        values: list[list[torch.Tensor]] = [[] for _ in masks]
        offset = 0
        for images, labels in self._batches:
            if len(masks) == 1:
                with self.supernet.coalition(masks[0]):
                    values[0].append(self._per_image(self.supernet(images), labels, offset))
            else:
                for k, logits in self._replayed(images, masks, starts):
                    values[k].append(self._per_image(logits, labels, offset))
            offset += len(images)
        return [torch.cat(v).cpu().numpy() for v in values]

    def _replayed(self, images: torch.Tensor, masks: list[np.ndarray], starts: list) -> Iterator:
        """(k, logits of coalition k) for each mask: the first records the forward, the others replay its prefix,
        up to ``coalitions_per_forward`` of them side by side in one batched forward."""
        with self.supernet.coalition(masks[0]):
            yield 0, self._replay.record(images)
        per = self._per_forward or fit_count(self._replay.recorded_bytes(), images.device)
        for first in range(1, len(masks), per):
            chunk = masks[first:first + per]
            with self.supernet.coalition(chunk[0]):
                if len(chunk) == 1:
                    yield first, self._replay.replay(images, starts)
                    continue
                logits = self._replay.replay_many(images, starts, len(chunk),
                                                  lambda k, chunk=chunk: self.supernet.set_coalition(chunk[k]))
            yield from enumerate(logits.chunk(len(chunk)), start=first)

    def _recalibrated(self, mask: np.ndarray) -> np.ndarray:
        self.supernet.eval()
        with self.supernet.coalition(mask), recalibrated(self.supernet, self._recalibration):
            logits = [self.supernet(images) for images, _ in self._batches]
        offsets = np.cumsum([0] + [len(images) for images, _ in self._batches])
        return torch.cat([self._per_image(lg, labels, int(o))
                          for lg, (_, labels), o in zip(logits, self._batches, offsets)]).cpu().numpy()

    def _per_image(self, logits: torch.Tensor, labels: torch.Tensor, offset: int) -> torch.Tensor:
        if self.value == "top1":
            return (logits.argmax(dim=1) == labels).double()
        log_q = torch.log_softmax(logits.double(), dim=1)
        if self.value == "neg_loss":
            return log_q.gather(1, labels[:, None]).squeeze(1)
        log_p = self._fp[offset:offset + len(logits)]
        return -(log_p.exp() * (log_p - log_q)).sum(dim=1)


def supernet_game(supernet: nn.Module, images: torch.Tensor, labels: torch.Tensor, value: str = "neg_kl", *,
                  fp_logits: torch.Tensor | None = None, batch_size: int | None = None,
                  recalibration: Sequence[torch.Tensor] = (),
                  coalitions_per_forward: int | None = 1) -> SupernetGame:
    """The coalition game of a frozen supernet on ``images`` (evaluated in chunks of ``batch_size``)."""
    return SupernetGame(supernet, images, labels, value, fp_logits=fp_logits, batch_size=batch_size,
                        recalibration=recalibration, coalitions_per_forward=coalitions_per_forward)

"""The data path: a whole split lives as one uint8 tensor on the training device.

Each epoch draws one permutation from its own generator, seeded by the trainer per epoch (``set_epoch``):
the same on every rank, while augmentation and dropout draw from the global RNG, seeded per rank; a batch is
an index slice of the permutation (of this rank's shard of it), converted to float, augmented as a batch and normalized on
the device. No DataLoader, no worker processes, no PIL, no per-image Python.

Training batches drop the incomplete last batch (``drop_last``, as airbench and timm do): a final batch of
one image would break batch norm over features (BatchNorm1d) and a small one gives a noisy step. The images
left out differ each epoch, as the permutation does. A training split smaller than one batch is kept as a
single short batch rather than leaving an epoch without steps. Evaluation keeps every image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from dlx.data.augment import Augment


@dataclass
class Split:
    """Images (uint8 [N, C, H, W]) and labels (int64 [N]) of one split, on any device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


def shard(order: torch.Tensor, rank: int, world: int, *, equal: bool) -> torch.Tensor:
    """This rank's part of an epoch's index order: ``order[rank::world]``.

    ``equal`` (training): every rank gets ``len(order) // world`` indices, the ragged tail is dropped, so all
    ranks take the same number of steps and no index is duplicated (DistributedSampler pads with duplicates
    instead). Without ``equal`` (evaluation) the shards cover every index exactly once; the sums are all-reduced.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    part = order[rank::world]
    return part[: len(order) // world] if equal else part


class Batches:
    """Iterate a split in batches of float images ready for the model."""

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
        shuffle: bool = False,
        augment: Augment | None = None,
        channels_last: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        """``rank``/``world``: with several processes each iterates its own shard of every epoch (see ``shard``);
        every rank must draw the same permutation (the trainer seeds each epoch identically on all ranks)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        self.split = split
        self.rank, self.world = rank, world
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment if augment is not None and augment.enabled else None
        self.channels_last = channels_last
        self.order_seed = 0  # seeds the epoch's permutation; see set_epoch
        device = split.images.device
        c = split.images.shape[1]
        # Normalization folded into one multiply-add: x/255 is done first, then (x - mean) / std.
        if mean is not None and std is not None:
            self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, c, 1, 1)
            self.inv_std = 1.0 / torch.tensor(std, device=device, dtype=torch.float32).view(1, c, 1, 1)
        else:
            self.mean = self.inv_std = None

    def set_epoch(self, seed: int) -> None:
        """Seed the next pass's permutation (like DistributedSampler.set_epoch): equal seeds, equal orders on all ranks.

        With one process and a global batch B, rank r of W with batch B/W takes ``order[r::W]``: together the ranks'
        i-th batches hold exactly the images of the single process's i-th batch.
        """
        self.order_seed = seed

    def _count(self) -> int:
        """Images this rank sees per pass."""
        n = len(self.split)
        if self.world == 1:
            return n
        return n // self.world if self.shuffle else len(range(self.rank, n, self.world))

    def __len__(self) -> int:
        """Batches per pass (what schedules count as steps per epoch): full ones only with ``drop_last``."""
        n = self._count()
        if self.drop_last and n >= self.batch_size:
            return n // self.batch_size
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        device = self.split.images.device
        order = None
        if self.shuffle:
            generator = torch.Generator(device=device).manual_seed(self.order_seed)
            order = torch.randperm(n, device=device, generator=generator)
        if self.world > 1:  # one process of several: its shard of the (same-on-every-rank) order
            full = order if order is not None else torch.arange(n, device=device)
            order = shard(full, self.rank, self.world, equal=self.shuffle)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            if order is None:
                xb = self.split.images[start : start + self.batch_size]
                yb = self.split.labels[start : start + self.batch_size]
            else:
                idx = order[start : start + self.batch_size]
                xb, yb = self.split.images[idx], self.split.labels[idx]
            yield self.prepare(xb), yb

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float batch: scale to [0, 1], augment, normalize, optional channels_last."""
        x = images.float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x)
        if self.mean is not None:
            x = x.sub_(self.mean).mul_(self.inv_std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

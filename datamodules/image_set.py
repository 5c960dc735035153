"""A fixed training set of N images, each batch carrying the indices of its images: the data of
GLO (``lightning_modules/glo.py``), which learns one code per training image.

The set is either N renders of the shapes world (seeded by ``world_seed``) or the images of a
folder of your own (``root``; no labels needed). It is held in memory as 8-bit pixels (a render is
quantised as a PNG of it would be; a 32 px image takes 3 KB, 100,000 of them 300 MB), so a batch
costs an indexing operation.

Batches are ``{"images": B x 3 x H x W in [-1, 1], "index": B (int64, rows of the set)}``.
Order: epoch e visits the images in a permutation seeded by ``(seed, e)``, cut into
``num_images // batch_size`` batches (the last few images of a permutation wait for a later
epoch). As in ``datamodules/streams.py``, batch s on process r of W is the global batch
``g = s * W + r`` of that sequence: a resumed run sees the batches it would have seen, the W
processes of a DDP run together visit every image once an epoch, and (when ``num_images`` is a
multiple of ``W * batch_size``) one process with batches of ``W * batch_size`` takes exactly the
union of the W processes' batches, in rank order.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset

from common.errors import UserError
from common.training import batches_done
from datamodules.image_folder import ImageFolderImages, list_images
from datamodules.streams import SeededStreamDataModule, batch_seed
from datamodules.world import ShapesWorld


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """8-bit pixels of images in [-1, 1]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (float32) of 8-bit pixels."""
    return pixels.float() / 127.5 - 1.0


class EpochBatches(IterableDataset):
    """Index batches of a set of ``num_items`` in seeded epochs (see the module docstring),
    from step ``start`` on, forever; ``fetch(indices)`` makes the batch of those rows."""

    def __init__(self, fetch, num_items: int, batch_size: int, seed: int, rank: int = 0,
                 start: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is not a process of a world of {world_size}")
        if batch_size > num_items:
            raise UserError(f"a batch of {batch_size} images from a set of {num_items}: lower "
                             "data.batch_size or use more images (data.num_images)")
        self.fetch, self.num_items, self.batch_size = fetch, num_items, batch_size
        self.seed, self.rank, self.start, self.world_size = seed, rank, start, world_size
        self._cached: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != epoch:
            rng = torch.Generator().manual_seed(batch_seed(self.seed, epoch))
            self._cached = (epoch, torch.randperm(self.num_items, generator=rng))
        return self._cached[1]

    def indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step * self.world_size + self.rank, self.num_items // self.batch_size)
        return self.permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]

    def __iter__(self):
        step = self.start
        while True:
            index = self.indices(step)
            yield dict(self.fetch(index), index=index)
            step += 1


class ImageSetDataModule(SeededStreamDataModule):
    """N world renders or a folder's images, in memory, in seeded epochs with their indices.

    Args:
        root: a folder of images (searched recursively; .png .jpg .jpeg .bmp .webp), center-
            cropped to squares and resized; null: renders of the shapes world.
        num_images: the set's size: world renders to make, or the first N files of the folder
            in sorted order (null: all of them).
        resolution: image side in pixels.
        batch_size: images per batch on each process.
        seed: seed of the batch order (the run's seed in configs).
        world_seed: seed of the world's factors: the same renders whatever the run's seed.
        num_workers: processes decoding a folder's images once, at start-up.
        val_batches: random batches of the set for a validation loop (GLO has none: it
            reconstructs its training set).

    Attributes:
        pixels: ``N x 3 x R x R`` uint8, the whole set.
        factors: ``N x 6`` world factors of the renders (None for a folder).
        paths: the files of a folder (None for renders).
    """

    def __init__(self, root: str | None = None, num_images: int | None = 1024,
                 resolution: int = 32, batch_size: int = 64, seed: int = 0, world_seed: int = 0,
                 num_workers: int = 0, val_batches: int = 1) -> None:
        super().__init__(batch_size, seed, val_batches)
        if num_images is not None and num_images < 1:
            raise UserError(f"data.num_images must be a positive integer or null, got {num_images}")
        self.root, self.resolution = root, resolution
        self.factors, self.paths = None, None
        if root is None:
            if num_images is None:
                raise UserError("data.num_images is null: say how many world renders to train "
                                 "on (e.g. data.num_images=4096), or pass data.root=<a folder>")
            world = ShapesWorld(resolution)
            self.factors = world.sample_factors(num_images, torch.Generator().manual_seed(world_seed))
            self.pixels = to_pixels(world.render(self.factors))
        else:
            self.paths = list_images(root)[:num_images]
            self.pixels = self._decode(self.paths, num_workers)
        if len(self.pixels) < batch_size:
            raise UserError(f"the set has {len(self.pixels)} images, fewer than a batch of "
                             f"{batch_size}: lower data.batch_size or add images")
        self._sha256: str | None = None

    def _decode(self, paths: list[Path], num_workers: int) -> torch.Tensor:
        images = ImageFolderImages(paths, None, self.resolution)
        loader = DataLoader(images, batch_size=256, num_workers=num_workers)
        return torch.cat([to_pixels(batch["images"]) for batch in loader])

    @property
    def num_images(self) -> int:
        return len(self.pixels)

    def images(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images in [-1, 1] of the given rows (all of them by default)."""
        return from_pixels(self.pixels if index is None else self.pixels[index])

    def fingerprint(self) -> str:
        """sha256 of the set's pixels: what a checkpoint records, so that a run is never
        resumed on other images than its codes were learned for."""
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.pixels.contiguous().numpy().tobytes()).hexdigest()
        return self._sha256

    def make_batch(self, n: int, rng: torch.Generator) -> dict:
        index = torch.randperm(self.num_images, generator=rng)[:n]
        return {"images": self.images(index), "index": index}

    def train_dataloader(self) -> DataLoader:
        rank, world = self._place()
        stream = EpochBatches(lambda index: {"images": self.images(index)}, self.num_images,
                              self.batch_size, self.seed, rank, start=batches_done(self.trainer),
                              world_size=world)
        return DataLoader(stream, batch_size=None, num_workers=0)

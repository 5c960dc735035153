"""Deterministic, endless batch streams.

Batch ``s`` on process ``r`` of ``W`` is the stream's global batch ``g = s * W + r``, drawn from a
``torch.Generator`` seeded by ``(seed, g)``: a resumed run sees exactly the batches it would have
seen had it not stopped, the processes of a DDP run never share samples, and W processes taking
``S`` batches each see the same samples as one process taking ``S * W`` (so a streaming statistic
is the same, up to summation order, on any number of processes). Every batch also carries
``seed``, the 63-bit seed it was drawn with, so that a method can draw its own per-step noise
(directions, shifts) from the same stream.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from common.errors import UserError
from common.seeds import HELD_OUT_STEP
from common.training import batches_done

BatchFn = Callable[[int, torch.Generator], dict]


def batch_seed(seed: int, step: int, rank: int = 0) -> int:
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class SeededBatches(IterableDataset):
    """Yields ``make_batch(batch_size, rng)`` for steps ``start, start + 1, ...`` forever; step
    ``s`` of process ``rank`` of ``world_size`` is the global batch ``s * world_size + rank``."""

    def __init__(self, make_batch: BatchFn, batch_size: int, seed: int, rank: int = 0,
                 start: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is not a process of a world of {world_size}")
        self.make_batch, self.batch_size = make_batch, batch_size
        self.seed, self.rank, self.start, self.world_size = seed, rank, start, world_size

    def batch(self, step: int) -> dict:
        s = batch_seed(self.seed, step * self.world_size + self.rank)
        out = self.make_batch(self.batch_size, torch.Generator().manual_seed(s))
        out["seed"] = torch.tensor(s, dtype=torch.int64)
        return out

    def __iter__(self):
        step = self.start
        while True:
            yield self.batch(step)
            step += 1


class SeededStreamDataModule(pl.LightningDataModule):
    """Base of the stream datamodules: one endless training stream, aware of resumption.

    Args:
        batch_size: samples per batch on each process.
        seed: the stream's seed (the run's seed by default in configs).
    """

    def __init__(self, batch_size: int = 64, seed: int = 0, val_batches: int = 8) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size must be a positive integer, got {batch_size}")
        self.batch_size, self.seed, self.val_batches = batch_size, seed, val_batches

    def make_batch(self, n: int, rng: torch.Generator) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _place(self) -> tuple[int, int]:
        """(rank, world size) of this process."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        rank, world = self._place()
        stream = SeededBatches(self.make_batch, self.batch_size, self.seed, rank,
                               start=batches_done(self.trainer), world_size=world)
        # Batches are drawn in the main process: they cost far less than a step, and worker
        # processes would each need the stream's position.
        return DataLoader(stream, batch_size=None, num_workers=0)

    # Each process already draws its own held-out batches (seeded by rank).
    val_sharded = True

    def val_dataloader(self) -> DataLoader:
        """The same held-out batches at every evaluation (their own seed, disjoint per rank)."""
        rank, world = self._place()
        held_out = SeededBatches(self.make_batch, self.batch_size,
                                 batch_seed(self.seed, HELD_OUT_STEP, -1), rank, world_size=world)
        return DataLoader([held_out.batch(i) for i in range(self.val_batches)], batch_size=None)

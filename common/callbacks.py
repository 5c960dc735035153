"""Callbacks shared by every run."""
from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl

from common.training import batches_done


class LastCheckpoint(pl.Callback):
    """Keeps ``<dirpath>/last.ckpt``: written every N batches and at the end of training.

    Each write goes to a temporary file that replaces ``last.ckpt`` only once complete, so a run
    killed or failing while saving keeps the previous good checkpoint. (Lightning's
    ModelCheckpoint counts optimizer steps, which differ from batches under manual optimisation,
    and keeps versioned copies; one file that resume can name is what ``ckpt_path=last`` needs.)

    Args:
        dirpath: folder of the checkpoint (``outputs/<run>/checkpoints``).
        every_n_train_steps: batches between two writes (0: only at the end).
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str, every_n_train_steps: int = 200) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.every = every_n_train_steps
        self._saved_at: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILENAME

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = batches_done(trainer)
        if self.every and done % self.every == 0:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.ensure_saved(trainer)

    def ensure_saved(self, trainer) -> None:
        """Writes the checkpoint unless it already holds the current batch."""
        if self._saved_at != batches_done(trainer):
            self.save(trainer)

    def save(self, trainer) -> None:
        tmp = self.dirpath / f".{self.FILENAME}.tmp"
        # collective: every rank calls it, rank 0 writes. A save of the run's own state (not a
        # load): the full state is asked for (optimisers, loops, callbacks).
        trainer.save_checkpoint(tmp, weights_only=False)  # trusted-ok
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last_checkpoint")
        self._saved_at = batches_done(trainer)


class RunSignature(pl.Callback):
    """Records in every checkpoint what its state depends on (``run_signature``: the method and
    its options, the seed), so that a resume with other options is refused before anything is
    written (train.py ``check_resume``) instead of loading a state that means something else."""

    KEY = "run_signature"

    def __init__(self, signature: dict) -> None:
        super().__init__()
        self.signature = signature

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[self.KEY] = self.signature

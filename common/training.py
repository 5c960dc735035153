"""Where a run stands, read the same way by the data streams and the checkpoint callback."""
from __future__ import annotations


def batches_done(trainer) -> int:
    """Training batches completed so far (restored from the checkpoint when resuming).

    ``trainer.global_step`` counts optimizer steps; a module that steps several optimizers per
    batch (a GAN: D then G) says how many with ``optimizer_steps_per_batch``.
    """
    if trainer is None:
        return 0
    per_batch = getattr(trainer.lightning_module, "optimizer_steps_per_batch", 1)
    return int(trainer.global_step) // per_batch

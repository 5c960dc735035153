"""Where a run stands, read the same way by the data streams and the checkpoint callback; and
the gradient step of a module that steps several optimizers per batch under DDP."""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def batches_done(trainer) -> int:
    """Training batches completed so far (restored from the checkpoint when resuming).

    ``trainer.global_step`` counts optimizer steps; a module that steps several optimizers per
    batch (a GAN: D then G) says how many with ``optimizer_steps_per_batch``.
    """
    if trainer is None:
        return 0
    per_batch = getattr(trainer.lightning_module, "optimizer_steps_per_batch", 1)
    return int(trainer.global_step) // per_batch


def averaged_backward(module, loss: torch.Tensor, params: Iterable[torch.nn.Parameter]) -> None:
    """``module.manual_backward(loss)``, then the gradients of ``params`` averaged over the
    processes (one all-reduce). For a module whose backward passes each reach only part of its
    weights (a GAN: D's step leaves G without gradients, G's step leaves D without): DDP's own
    hooks expect every weight in every backward and stop such a run. Here they are switched off
    (``no_sync``) and the weights the step updates are averaged explicitly. On one process it is
    a plain backward."""
    params = list(params)
    model = module.trainer.strategy.model
    quiet = model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()
    with quiet:
        module.manual_backward(loss)
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    for p in params:  # a weight the loss did not reach counts as a zero gradient on that rank
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for grad, mean in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(mean.view(grad.shape))


def pixel_noise(images: torch.Tensor, std: float, batch: dict) -> torch.Tensor:
    """Images plus Gaussian noise of ``std`` drawn from the batch's own seed (a resumed run adds
    the same noise), the augmentation of the world's image readers (regressor, CLIP): robustness
    to the small artefacts of generated images."""
    if not std:
        return images
    rng = (torch.Generator().manual_seed(int(batch["seed"]) % (2**63 - 1)) if "seed" in batch
           else None)
    return images + std * torch.randn(images.shape, generator=rng).to(images)


def cosine_optimizer(factory, params, cosine_steps: int):
    """``factory(params=...)`` (Adam 1e-3 when None) with a cosine decay of the learning rate
    over ``cosine_steps`` batches (0: constant): what ``configure_optimizers`` returns for the
    world's image readers (regressor, CLIP)."""
    factory = factory or (lambda params: torch.optim.Adam(params, lr=1e-3))
    optimizer = factory(params=params)
    if not cosine_steps:
        return optimizer
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cosine_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

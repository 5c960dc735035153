"""The machinery of the fit-free (closed-form) methods: a Lightning Callback that accumulates
statistics over batches of the latent datamodule and solves once, and the thin module that
carries it through the same Trainer as the learnable methods.

    python train.py method=sefa          # a run directory, W&B, directions.pt, grids, evaluation

How a run goes:
1. ``FitFreeCarrier.__init__`` asks the method to ``check`` the generator and its options: a
   mistake is one clear error before any work.
2. Each training batch: ``FitFreeMethod.step`` adds the batch to the statistics (``accumulate``,
   no graph). The statistics are sums, so processes add theirs: memory does not grow with the
   sample count, and W processes seeing the stream's batches in turn give the same sums as one.
3. When ``samples`` latents have been seen over all processes, the sums are reduced across
   processes and ``solve`` runs once, on every process (it is deterministic). The result is kept
   in the callback's state, so the checkpoint holds it: a resumed run does not recompute it, and
   a run killed half way resumes its accumulation from the checkpoint.
4. The carrier's ``on_train_end`` (shared with every method) draws the traversal grid and writes
   ``directions.pt``; train.py then runs the same evaluation as for every method.

DDP refuses a module with no trainable parameter, so the carrier has one placeholder scalar
with manual optimisation: each batch steps it with a zero gradient (which also advances
``global_step``, the batch count that resume and the streams read).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from common.errors import UserError
from common.images import log_image, save_line_plot
from common.preemption import stopped_by_signal
from common.training import batches_done
from directions import DirectionSet, build_set
from generators.base import Generator
from lightning_modules.base import FrozenGeneratorModule, regressor_path
from regressors.attributes import AttributeAssessor, load_regressor

Stats = dict[str, torch.Tensor]
log = logging.getLogger("fit_free")


def load_assessors(generator: Generator, choice: str, purpose: str, reads: list[str]) -> list[AttributeAssessor]:
    """The regressor ``choice`` (``auto``: the generator's) read as ``AttributeAssessor``s of
    ``reads`` (scalar reads such as ``x``, ``shape=1``, ``hue.cos``; names checked here), for
    the fit-free methods that score samples (InterFaceGAN, StyleSpace)."""
    model = load_regressor(regressor_path(generator, choice, purpose, option="method.regressor"))
    return [AttributeAssessor(model, name) for name in reads]


def keep_extremes(scores: torch.Tensor, items: torch.Tensor, new_scores: torch.Tensor,
                  new_items: torch.Tensor, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest (``largest``) or lowest of kept and new scores ``F x k`` / ``F x n``,
    per row, with their items ``F x k x d`` / ``F x n x d``: a fixed-size buffer of a stream's
    extremes (InterFaceGAN's positives and negatives, StyleSpace's positive examples)."""
    k = scores.shape[1]
    all_scores = torch.cat([scores, new_scores], 1)
    all_items = torch.cat([items, new_items], 1)
    chosen = all_scores.topk(k, dim=1, largest=largest).indices
    return (all_scores.gather(1, chosen),
            all_items.gather(1, chosen[..., None].expand(-1, -1, all_items.shape[2])))


def merged_extremes(strategy, stats: "Stats", ends) -> "Stats":
    """Buffers ``<end>_scores`` / ``<end>_latents`` of every process gathered and merged into
    the global extremes (``ends``: ``(end, largest)`` pairs); each process's own when alone.
    Other entries of ``stats`` are summed over processes."""
    if strategy is None or getattr(strategy, "world_size", 1) == 1:
        return {k: v.clone() for k, v in stats.items()}
    # (collectives in the same order on every process: lists, never sets)
    buffers = [f"{end}_{part}" for end, _ in ends for part in ("scores", "latents")]
    out = {k: strategy.reduce(stats[k].clone(), reduce_op="sum") for k in sorted(stats) if k not in buffers}
    gathered = {k: strategy.all_gather(stats[k]) for k in buffers}  # W x ...
    for end, largest in ends:
        scores = torch.cat(list(gathered[f"{end}_scores"]), 1)
        latents = torch.cat(list(gathered[f"{end}_latents"]), 1)
        init = stats[f"{end}_scores"]
        out[f"{end}_scores"], out[f"{end}_latents"] = keep_extremes(
            torch.full_like(init, -math.inf if largest else math.inf),
            torch.zeros_like(stats[f"{end}_latents"]), scores, latents, largest)
    return out


class FitFreeMethod(pl.Callback):
    """Base of the closed-form methods. A subclass sets ``method_name`` and implements
    ``check``, ``solve`` and, when it reads samples, ``init_stats`` and ``accumulate``.

    Args:
        samples: latents to accumulate over, all processes together (0: the method reads the
            generator's weights only; one batch runs).
        alpha_range: the |alpha| the directions are meant for, in their own units (recorded in
            the directions file; grids and the evaluation use it).
    """

    method_name = "fit_free"
    value_name = "score"  # what ranks the directions (BasisDirections.values), for the plot

    def __init__(self, samples: int = 0, alpha_range: float | None = 3.0) -> None:
        super().__init__()
        if samples < 0:
            raise UserError(f"samples must be >= 0, got {samples}")
        self.samples, self.alpha_range = int(samples), alpha_range
        self.stats: Stats | None = None
        self.seen = 0                    # latents accumulated, all processes together
        self.result: dict | None = None  # {"kind", "config", "state_dict", "metrics"}
        self._restored: dict | None = None
        self._trainer: pl.Trainer | None = None

    # ---- what a method defines ----------------------------------------------------------
    def check(self, generator: Generator) -> None:
        """Raise a ValueError that says what to do when the generator or the options cannot
        work (before any work starts)."""

    def init_stats(self, generator: Generator) -> Stats:
        """Zeroed sums (float64 where precision matters), on the generator's device."""
        return {}

    def accumulate(self, generator: Generator, batch: dict, stats: Stats) -> None:
        """Add a batch to ``stats`` in place (called without a graph)."""

    def solve(self, generator: Generator, stats: Stats) -> tuple[DirectionSet, dict[str, float]]:
        """The directions and the metrics to log, from the statistics summed over processes."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Plain options, recorded in the directions file's config."""
        return {"method": self.method_name, "samples": self.samples,
                "alpha_range": self.alpha_range}

    # ---- helpers for the methods that edit W (SeFa, GANSpace) ---------------------------
    layer_spec: Any = "all"

    def edit_layers(self, generator: Generator) -> list[int] | None:
        """The per-layer codes the directions move (None: every one), from ``layer_spec``; a
        spec out of range fails here, naming the generator's layers."""
        chosen = generator.layers(self.layer_spec)
        return None if chosen == generator.layers("all") else chosen

    def check_w_space(self, generator: Generator, reads: str) -> None:
        """A method whose directions live in W refuses Z, and layer ranges outside W+."""
        if generator.style_based and generator.space == "z":
            raise UserError(f"{self.method_name} {reads}: its directions live in W, so run it "
                             "with generator.space=w (or w+ for layer ranges)")
        self.check_layers(generator)

    def check_layers(self, generator: Generator) -> None:
        """Layer ranges need W+ (and layers the generator has); in S only SeFa takes them."""
        if generator.space == "s" and self.edit_layers(generator) is not None:
            raise UserError(f"layers={self.layer_spec!r}: in S space {self.method_name} runs on every "
                            "style layer (leave method.layers=all); method=sefa and method=voynov "
                            "take S layer ranges, or use generator.space=w+")
        if self.edit_layers(generator) is not None and generator.space != "w+":
            raise UserError(f"layers={self.layer_spec!r} moves some per-layer codes only: it "
                             f"needs generator.space=w+ (the generator is in {generator.space!r})")

    # ---- the machinery ------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return f"fit_free/{self.method_name}"

    def batches_needed(self, batch_size: int, world_size: int = 1) -> int:
        """Batches a process takes to see ``samples`` latents (at least one)."""
        return max(1, math.ceil(self.samples / (batch_size * world_size)))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def start(self, module: "FitFreeCarrier") -> None:
        """At the start of fit (after a checkpoint was restored): zeroed or restored sums. A
        checkpoint holds the sums of all processes: rank 0 takes them, the others start at
        zero, so the total is right on any number of processes."""
        self.stats = self.init_stats(module.generator)
        restored, self._restored = self._restored, None
        if restored is None:
            return
        self.seen, self.result = int(restored["seen"]), restored["result"]
        if module.global_rank == 0:
            for key, value in restored["stats"].items():
                self.stats[key].copy_(value)

    def step(self, module: "FitFreeCarrier", batch: dict) -> bool:
        """Accumulate one batch; solve once every process has its share. True when solved."""
        if self.result is not None:
            return True
        if self.samples:
            # Exactly ``samples`` latents: this process's batch holds the stream's latents
            # seen + rank * n ... (+ n), so the last batches are cut where the count ends, the
            # same on any number of processes.
            n = batch["latent"].shape[0]
            take = max(0, min(n, self.samples - self.seen - module.global_rank * n))
            if take:
                part = {k: v[:take] if torch.is_tensor(v) and v.ndim and v.shape[0] == n else v
                        for k, v in batch.items()}
                self.accumulate(module.generator, part, self.stats)
            self.seen = min(self.samples, self.seen + n * module.trainer.world_size)
        if self.seen >= self.samples:
            self.finish(module)
            return True
        return False

    def reduced_stats(self, strategy) -> Stats:
        """The sums of every process (each process's own when alone)."""
        return {k: strategy.reduce(v.clone(), reduce_op="sum") for k, v in self.stats.items()}

    def finish(self, module: "FitFreeCarrier") -> None:
        directions, metrics = self.solve(module.generator, self.reduced_stats(module.trainer.strategy))
        self.result = {"kind": directions.kind, "config": directions.config(),
                       "state_dict": {k: v.detach().cpu() for k, v in directions.state_dict().items()},
                       "metrics": {k: float(v) for k, v in metrics.items()}}

    @staticmethod
    def held_out_batches(module: "FitFreeCarrier") -> list[dict]:
        """This process's held-out batches of the datamodule (on the module's device), for the
        metrics measured after the solve; none when the datamodule has none."""
        datamodule = module.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return []
        return [{k: v.to(module.device) for k, v in batch.items()}
                for batch in datamodule.val_dataloader()]

    def directions(self, device: torch.device | str | None = None) -> DirectionSet:
        """The solved DirectionSet, rebuilt from the result (also after a resume), on
        ``device`` (the module's, for grids and metrics; the result itself stays on the CPU)."""
        if self.result is None:
            raise RuntimeError(f"{self.method_name} has not solved yet")
        made = build_set(self.result["kind"], self.result["config"])
        made.load_state_dict(self.result["state_dict"])
        return made if device is None else made.to(device)

    # ---- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Every process calls this when a checkpoint is written (LastCheckpoint saves on all
        # ranks), so the sums can be reduced here; rank 0 writes them.
        stats = {}
        if self.stats is not None:
            strategy = self._trainer.strategy if self._trainer is not None else None
            stats = (self.reduced_stats(strategy) if strategy is not None
                     else {k: v.clone() for k, v in self.stats.items()})
            stats = {k: v.cpu() for k, v in stats.items()}
        return {"seen": self.seen, "stats": stats, "result": self.result}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict  # applied by ``start``, which knows this process's rank


class FitFreeCarrier(FrozenGeneratorModule):
    """The module a fit-free method runs on: the frozen generator, a placeholder parameter for
    DDP, and the shared grids and export (see the module docstring).

    Args:
        generator: the frozen generator.
        method: the FitFreeMethod (a nested ``_target_`` in config).
        traversal: see FrozenGeneratorModule.
    """

    # The solved directions are rebuilt from the method's result (its callback state) on every
    # start: the module's copy stays out of checkpoints, like the generator.
    frozen_submodules = ("generator", "directions")

    def __init__(self, generator: Generator, method: FitFreeMethod,
                 traversal: dict | None = None) -> None:
        super().__init__(generator, traversal, alpha_range=method.alpha_range)
        method.check(self.generator)
        self.method = method
        self.method_name = method.method_name
        self.placeholder = nn.Parameter(torch.zeros(()))
        self.automatic_optimization = False
        self.save_hyperparameters({"fit_free": method.describe(),
                                   "traversal": self.traversal})

    def required_batches(self, batch_size: int) -> int:
        """The run's length when the config leaves ``trainer.max_steps`` to the method."""
        return self.method.batches_needed(batch_size)

    def configure_callbacks(self):
        return [self.method]

    def configure_optimizers(self):
        return torch.optim.SGD([self.placeholder], lr=0.0)

    def on_fit_start(self) -> None:
        self.method.start(self)
        if self.method.result is not None:
            self.directions = self.method.directions(self.device)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        with torch.no_grad():
            solved = self.method.step(self, batch)
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(self.placeholder * 0.0)  # DDP wants a backward every step
        opt.step()
        self.log("fit_free/samples", float(min(self.method.seen, self.method.samples)),
                 prog_bar=True, batch_size=batch["latent"].shape[0])
        if solved:  # on_train_end adds the metrics to the artifact
            self.directions = self.method.directions(self.device)
            for logger in self.loggers:
                logger.log_metrics({f"{self.method_name}/{k}": v
                                    for k, v in self.method.result["metrics"].items()},
                                   step=batches_done(self.trainer))
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        if stopped_by_signal(self.trainer):  # not finished: resumed later, exported then
            return
        if self.method.result is None:  # trainer.max_steps cut it short: nothing to export yet
            log.warning("%s stopped after %d of %d samples, before solving: no directions were "
                        "written; resume with ckpt_path=last (and trainer.max_steps=null) to "
                        "finish the accumulation", self.method_name, self.method.seen,
                        self.method.samples)
            return
        self.final_metrics.update(self.method.result["metrics"])
        super().on_train_end()
        values = getattr(self.directions, "values", None)
        if self.trainer.global_rank == 0 and values is not None:
            path = save_line_plot(Path(self.trainer.default_root_dir) / "values.png",
                                  list(range(len(values))), [(values.tolist(), "o-", self.method_name)],
                                  "direction", self.method.value_name)
            log_image(self.loggers, "values", path, step=self.trainer.global_step,
                      caption=f"{self.method_name}: {self.method.value_name} of each direction")

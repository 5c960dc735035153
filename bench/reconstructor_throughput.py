"""Training throughput of the reconstructor methods (Voynov & Babenko, WarpedGANSpace) on CPU,
against their floor and the reference loop.

For each batch size it prints, as one markdown table:

* **trainer**: ms per training step of the method (``--method voynov`` or ``warped``) run
  through the real Lightning Trainer, from the Hydra config (``method=<m> logger=none
  callbacks=none evaluation.enabled=false``). A
  step is the time between consecutive ``on_train_batch_end`` calls after the warm-up, so it
  counts data loading, the step itself, the optimizer and every hook.
* **floor**: the passes no implementation of the step can avoid, each timed alone with the same
  generator, reconstructor and direction set: (a) the generator on the unshifted batch without
  a graph, (b) the generator on the shifted batch with a graph to the directions and the
  backward through it (the generator's weights frozen; the method's own training shift: a
  linear step, or one RBF-gradient step for warps), (c) the reconstructor's forward and
  backward on the pair and the Adam step of reconstructor and directions. floor = a + b + c.
* **reference**: the reference implementation's step: both generator passes with a graph and
  gradients into the generator's own weights too (then unused), same reconstructor and Adam.

Targets: trainer / floor <= 1.15 (the framework adds little), reference / trainer >= 1.5 (the
frozen-generator step pays off). Every time is the median over the timed steps.

Run from the repository root:

    .venv/bin/python bench/reconstructor_throughput.py
    .venv/bin/python bench/reconstructor_throughput.py --method warped --batch-sizes 32 128 --steps 30

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project is not installed
    sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import train as train_script  # noqa: E402
from generators.weights import WEIGHTS_DIR  # noqa: E402

CONFIG_DIR = ROOT / "configs"
# A val_check_interval no run here reaches: validation is not part of a training step.
NO_VALIDATION = 10**9


class StepTimer(pl.Callback):
    """Wall time between consecutive ends of training batches, after ``warmup`` batches.

    Timing start-to-end of a batch would miss the data loading that happens between batches,
    which is part of what a training step costs.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        self.ends.append(time.perf_counter())

    def step_times(self) -> list[float]:
        ends = self.ends[self.warmup - 1:]
        return [b - a for a, b in zip(ends, ends[1:])]


def resolve_weights(name: str) -> Path | None:
    """The weights file for ``name``: a path as given, else a file shipped in generators/weights/."""
    for candidate in (Path(name), WEIGHTS_DIR / name):
        if candidate.is_file():
            return candidate.resolve()
    return None


def generator_overrides(name: str) -> tuple[list[str], str]:
    """Config overrides selecting the generator, and a description of it for the report."""
    weights = resolve_weights(name)
    if weights is not None:
        return ["generator=dcgan_shapes", f"generator.path={weights}"], str(weights)
    print(f"note: generator weights {name!r} not found (neither as a path nor in {WEIGHTS_DIR}); "
          "falling back to generators.random_generator(latent_dim=16, resolution=32, width=64)\n")
    # The same network size as the shipped DCGAN, so the timings stay representative.
    return (["generator=dcgan_random", "generator.latent_dim=16", "generator.resolution=32",
             "generator.width=64", "generator.init_seed=0", "generator.name=dcgan_random16"],
            "random_generator(latent_dim=16, resolution=32, width=64)")


def compose_config(method: str, batch_size: int, max_steps: int, output_dir: Path,
                   gen_overrides: list[str]) -> DictConfig:
    overrides = [
        f"method={method}", "logger=none", "callbacks=none", "evaluation.enabled=false",
        f"data.batch_size={batch_size}",
        f"method.max_steps={max_steps}",
        f"method.val_every={NO_VALIDATION}",
        "method.module.traversal.every_n_steps=0",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={output_dir}",
        f"run_name=bench_b{batch_size}",
        *gen_overrides,
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def median_ms(times: list[float]) -> float:
    return 1000.0 * statistics.median(times)


def time_repeated(fn: Callable[[], None], prepare: Callable[[], None], warmup: int,
                  reps: int) -> float:
    """Median ms of ``fn``; ``prepare`` runs before each call, outside the timed region."""
    times = []
    for i in range(warmup + reps):
        prepare()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    return median_ms(times)


def measure_trainer(method: str, batch_size: int, steps: int, warmup: int,
                    gen_overrides: list[str]) -> float:
    """Median ms/step of the method through the real Trainer, built as train.train builds it."""
    with tempfile.TemporaryDirectory(prefix="reconstructor_bench_") as tmp:
        # A fresh directory each time: train refuses a run directory that holds a run.
        cfg = compose_config(method, batch_size, warmup + steps, Path(tmp), gen_overrides)
        return measure_trainer_cfg(cfg, steps, warmup)


def measure_trainer_cfg(cfg: DictConfig, steps: int, warmup: int) -> float:
    """Median ms/step of the configured run (max_steps = warmup + steps) through the Trainer."""
    run_dir = train_script.resolve_run_dir(cfg)
    train_script.resolve_ckpt_path(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # as train.train makes it
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    parts = train_script.instantiate_all(cfg)
    # train.train takes no extra callbacks, so the Trainer is built here the same way, plus
    # the timer; the rest of train.train (config and metrics files) is outside the steps.
    timer = StepTimer(warmup)
    trainer: pl.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir),
                                      logger=parts["loggers"] or False,
                                      callbacks=[*parts["callbacks"], timer],
                                      enable_checkpointing=False)
    trainer.fit(parts["module"], datamodule=parts["datamodule"])
    times = timer.step_times()
    if len(times) != steps:
        raise RuntimeError(f"expected {steps} timed steps, got {len(times)}")
    return median_ms(times)


def reconstructor_loss(reconstructor: torch.nn.Module, x0: torch.Tensor, x1: torch.Tensor,
                       k: torch.Tensor, eps: torch.Tensor, shift_weight: float) -> torch.Tensor:
    logits, eps_hat = reconstructor(x0, x1)
    return F.cross_entropy(logits, k) + shift_weight * (eps_hat - eps).abs().mean()


def measure_floor_and_reference(cfg: DictConfig, steps: int, warmup: int
                                ) -> tuple[dict[str, float], float]:
    """(floor parts a, b, c in ms) and the reference step in ms, with the module's own parts."""
    mcfg = cfg.method.module
    batch_size = cfg.data.batch_size
    torch.manual_seed(cfg.seed)
    module = train_script.instantiate_all(cfg)["module"]
    generator = module.generator  # frozen
    directions, reconstructor = module.directions, module.reconstructor
    num = directions.num_directions
    # A fresh copy of the whole module for the reference, so that neither loop's Adam state
    # touches the other's; its train_shift applies the method's shift to its own directions.
    ref_module = copy.deepcopy(module)
    ref_directions, ref_reconstructor = ref_module.directions, ref_module.reconstructor
    ref_generator = ref_module.generator.requires_grad_(True)
    ref_shift = ref_module.train_shift
    lr = mcfg.optimizer.lr
    optimizer = torch.optim.Adam([*reconstructor.parameters(), *directions.parameters()], lr=lr)
    ref_optimizer = torch.optim.Adam([*ref_reconstructor.parameters(),
                                      *ref_directions.parameters()], lr=lr)
    rng = torch.Generator().manual_seed(cfg.seed)

    def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = generator.sample(batch_size, generator=rng)
        k = torch.randint(num, (batch_size,), generator=rng)
        eps = module.sample_eps(batch_size, rng)
        return z, k, eps

    z, k, eps = draw()
    with torch.no_grad():
        x0 = generator(z)
        x1_data = generator(module.train_shift(z, k, eps))
    # A dense upstream gradient, as the reconstructor's backward hands to the generator's output.
    upstream = torch.randn_like(x1_data)
    x1 = x1_data.clone().requires_grad_(True)

    def forward_plain() -> None:
        with torch.no_grad():
            generator(z)

    def forward_backward_shifted() -> None:
        generator(module.train_shift(z, k, eps)).backward(upstream)

    def clear_direction_grads() -> None:
        directions.zero_grad(set_to_none=True)

    def prepare_reconstructor() -> None:
        x1.grad = None
        # A gradient on the directions, as (b) leaves one, so that Adam updates them too.
        for p in directions.parameters():
            p.grad = torch.zeros_like(p)

    def reconstructor_step() -> None:
        # x1 requires grad: the real step needs the gradient on the shifted image for (b).
        reconstructor_loss(reconstructor, x0, x1, k, eps, mcfg.shift_weight).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def reference_step() -> None:
        z, k, eps = draw()
        x0 = ref_generator(z)
        x1 = ref_generator(ref_shift(z, k, eps))
        loss = reconstructor_loss(ref_reconstructor, x0, x1, k, eps, mcfg.shift_weight)
        ref_optimizer.zero_grad(set_to_none=True)
        ref_generator.zero_grad(set_to_none=True)
        loss.backward()  # into the generator's weights as well, as the reference does
        ref_optimizer.step()

    nothing = lambda: None  # noqa: E731
    floor = {
        "a": time_repeated(forward_plain, nothing, warmup, steps),
        "b": time_repeated(forward_backward_shifted, clear_direction_grads, warmup, steps),
        "c": time_repeated(reconstructor_step, prepare_reconstructor, warmup, steps),
    }
    reference = time_repeated(reference_step, nothing, warmup, steps)
    if any(p.grad is None for p in ref_generator.parameters()):
        raise RuntimeError("the reference step did not compute the generator's weight gradients")
    return floor, reference


def quiet_lightning() -> None:
    # Lightning's banner lines and advice (workers, logging interval) would break the table.
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="voynov", choices=["voynov", "warped"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps", type=int, default=30, help="timed steps (and repetitions)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (>= 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--generator", default="dcgan_shapes32.pt",
                        help="weights: a path or a name in generators/weights/")
    args = parser.parse_args(argv)
    # A step's time is measured from the end of the previous one, so one must come first.
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    torch.manual_seed(0)
    gen_overrides, gen_desc = generator_overrides(args.generator)
    print(f"torch {torch.__version__}, pytorch_lightning {pl.__version__}, "
          f"{torch.get_num_threads()} threads, CPU")
    print(f"method: {args.method}; generator: {gen_desc}")
    print(f"steps: {args.steps} timed after {args.warmup} warm-up (medians)\n")

    rows = []
    parts_lines = []
    for batch_size in args.batch_sizes:
        trainer_ms = measure_trainer(args.method, batch_size, args.steps, args.warmup, gen_overrides)
        with tempfile.TemporaryDirectory(prefix="reconstructor_bench_") as tmp:
            cfg = compose_config(args.method, batch_size, args.warmup + args.steps, Path(tmp),
                                 gen_overrides)
        floor, reference_ms = measure_floor_and_reference(cfg, args.steps, args.warmup)
        floor_ms = sum(floor.values())
        ratio, speedup = trainer_ms / floor_ms, reference_ms / trainer_ms
        rows.append(f"| {batch_size} | {trainer_ms:.1f} | {floor_ms:.1f} | {ratio:.2f} "
                    f"{'ok' if ratio <= 1.15 else 'MISS'} | {reference_ms:.1f} | {speedup:.2f} "
                    f"{'ok' if speedup >= 1.5 else 'MISS'} |")
        parts_lines.append(f"batch {batch_size}: (a) G(z) no grad {floor['a']:.1f} ms, (b) G(z + "
                           f"shift) fwd+bwd {floor['b']:.1f} ms, (c) reconstructor fwd+bwd+Adam "
                           f"{floor['c']:.1f} ms")

    print("| batch | trainer ms/step | floor ms/step | trainer/floor (<= 1.15) "
          "| reference ms/step | reference/trainer (>= 1.5) |")
    print("|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nfloor parts:")
    print("\n".join(parts_lines))


if __name__ == "__main__":
    main()

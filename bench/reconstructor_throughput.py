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

The generator (``--generator``) is the shipped DCGAN by default, or a random frozen StyleGAN2
(init_seed 0, editing space ``--space``, W by default): ``stylegan2-<R>`` is the published
config-f network at R px (``stylegan2-256``: 30 M parameters, the ResNet-18 reconstructor),
``stylegan2-builtin32`` the project's built-in 32 px size (bench/stylegan2_forward.py has both).
Above 64 px the defaults become batches 4 and 8, 3 timed steps after 1 warm-up, and the
interleaved schedule (``--interleave``): after each of the Trainer's batches, outside its
timed steps, one (a), (b), (c) and one reference step run, so that a change of the machine's
load (another job on the cores) reaches trainer, floor and reference alike; the per-round
trainer / floor ratios are printed too. Without it, the trainer's steps run first and then each
floor part and the reference, each repeated alone.

Run from the repository root:

    .venv/bin/python bench/reconstructor_throughput.py
    .venv/bin/python bench/reconstructor_throughput.py --method warped --batch-sizes 32 128 --steps 30
    .venv/bin/python bench/reconstructor_throughput.py --generator stylegan2-256 --batch-sizes 4

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
from bench.stylegan2_forward import BUILTIN_32, config_f  # noqa: E402
from generators.weights import WEIGHTS_DIR  # noqa: E402

CONFIG_DIR = ROOT / "configs"
# A val_check_interval no run here reaches: validation is not part of a training step.
NO_VALIDATION = 10**9


class StepTimer(pl.Callback):
    """Wall time between consecutive ends of training batches, after ``warmup`` batches.

    Timing start-to-end of a batch would miss the data loading that happens between batches,
    which is part of what a training step costs. ``between(n)``, if given, runs at the end of
    the n-th batch (1-based) outside the timed steps: a step is timed from the return of this
    hook to its call at the next batch end.
    """

    def __init__(self, warmup: int, between: Callable[[int], None] | None = None) -> None:
        self.warmup, self.between = warmup, between
        self.ends: list[float] = []
        self.resumes: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        self.ends.append(time.perf_counter())
        if self.between is not None:
            self.between(len(self.ends))
        self.resumes.append(time.perf_counter())

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.resumes[self.warmup - 1:], self.ends[self.warmup:])]


def resolve_weights(name: str) -> Path | None:
    """The weights file for ``name``: a path as given, else a file shipped in generators/weights/."""
    for candidate in (Path(name), WEIGHTS_DIR / name):
        if candidate.is_file():
            return candidate.resolve()
    return None


def stylegan2_preset(name: str) -> dict | None:
    """The random StyleGAN2 a ``--generator`` name asks for (``random_generator`` keyword
    arguments), or None: ``stylegan2-<R>`` is config-f at R px (bench/stylegan2_forward.py),
    ``stylegan2-builtin32`` the project's built-in 32 px size."""
    if name == "stylegan2-builtin32":
        return dict(BUILTIN_32)
    prefix, _, resolution = name.partition("-")
    if prefix == "stylegan2" and resolution.isdigit():
        return config_f(int(resolution))
    return None


def hydra_value(value) -> str:
    """A value as a Hydra override writes it (strings quoted: ``w+`` is not a bare word)."""
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(hydra_value, value)) + "]"
    return f"'{value}'" if isinstance(value, str) else str(value)


def generator_overrides(name: str, space: str | None = None) -> tuple[list[str], str]:
    """Config overrides selecting the generator, and a description of it for the report.
    ``space``: the editing space (None: the generator config's own, ``w`` for a StyleGAN2
    preset). ``++``: set whether or not the config has the key."""
    space_overrides = [f"++generator.space={hydra_value(space)}"] if space is not None else []
    weights = resolve_weights(name)
    if weights is not None:
        return (["generator=dcgan_shapes", f"generator.path={weights}", *space_overrides],
                f"{weights}" + (f", space {space}" if space else ""))
    preset = stylegan2_preset(name)
    if preset is not None:
        # The random StyleGAN2 config resized; no regressor: the benchmark evaluates nothing.
        kwargs = {"init_seed": 0, "space": space or "w", **preset}
        overrides = ["generator=stylegan2_random", f"++generator.name={name.replace('-', '_')}",
                     "++generator.regressor=null"]
        overrides += [f"++generator.{key}={hydra_value(value)}" for key, value in kwargs.items()]
        described = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        return overrides, f"random_generator('stylegan2', {described})"
    print(f"note: generator weights {name!r} not found (neither as a path nor in {WEIGHTS_DIR}); "
          "falling back to generators.random_generator(latent_dim=16, resolution=32, width=64)\n")
    # The same network size as the shipped DCGAN, so the timings stay representative.
    return (["generator=dcgan_random", "generator.latent_dim=16", "generator.resolution=32",
             "generator.width=64", "generator.init_seed=0", "generator.name=dcgan_random16",
             *space_overrides],
            "random_generator(latent_dim=16, resolution=32, width=64)")


def compose_config(method: str, batch_size: int, max_steps: int, output_dir: Path,
                   gen_overrides: list[str]) -> DictConfig:
    overrides = [
        f"method={method}", "logger=none", "callbacks=none", "evaluation.enabled=false",
        f"data.batch_size={batch_size}",
        f"trainer.max_steps={max_steps}",
        f"trainer.val_check_interval={NO_VALIDATION}",
        "method.traversal.every_n_steps=0",
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
    return median_ms(trainer_step_times(cfg, steps, warmup))


def trainer_step_times(cfg: DictConfig, steps: int, warmup: int,
                       between: Callable[[int], None] | None = None) -> list[float]:
    """Seconds of each timed step of the configured run (max_steps = warmup + steps) through
    the Trainer; ``between(n)`` runs after the n-th batch, outside the timed steps (StepTimer)."""
    run_dir = train_script.resolve_run_dir(cfg)
    train_script.resolve_ckpt_path(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # as train.train makes it
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    parts = train_script.instantiate_all(cfg)
    # The end of fit (final RCA, traversal grid, directions file) comes after the timed steps
    # and is no part of a step: skipped, as it takes minutes with a 256 px generator.
    parts["module"].on_train_end = lambda: None
    # train.train takes no extra callbacks, so the Trainer is built here the same way, plus
    # the timer; the rest of train.train (config and metrics files) is outside the steps.
    timer = StepTimer(warmup, between)
    # As train.train: trainer.max_steps counts batches, Lightning counts optimizer steps.
    per_batch = getattr(parts["module"], "optimizer_steps_per_batch", 1)
    # config-from-command-line
    trainer: pl.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir),
                                      max_steps=int(cfg.trainer.max_steps) * per_batch,
                                      logger=parts["loggers"] or False,
                                      callbacks=[*parts["callbacks"], timer],
                                      enable_checkpointing=False)
    trainer.fit(parts["module"], datamodule=parts["datamodule"])
    times = timer.step_times()
    if len(times) != steps:
        raise RuntimeError(f"expected {steps} timed steps, got {len(times)}")
    return times


def reconstructor_loss(reconstructor: torch.nn.Module, x0: torch.Tensor, x1: torch.Tensor,
                       k: torch.Tensor, eps: torch.Tensor, shift_weight: float) -> torch.Tensor:
    logits, eps_hat = reconstructor(x0, x1)
    return F.cross_entropy(logits, k) + shift_weight * (eps_hat - eps).abs().mean()


class StepParts:
    """The floor's passes and the reference step, with the module's own parts (a module built
    from ``cfg``, apart from any Trainer's).

    ``floor``: name -> (prepare, fn) for (a), (b), (c); ``reference``: (prepare, fn). Each
    ``prepare`` runs before its ``fn``, outside the timed region.
    """

    def __init__(self, cfg: DictConfig) -> None:
        mcfg = cfg.method
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
        self.ref_generator = ref_generator = ref_module.generator.requires_grad_(True)
        ref_shift = ref_module.train_shift
        lr = mcfg.optimizer.lr
        optimizer = torch.optim.Adam([*reconstructor.parameters(), *directions.parameters()],
                                     lr=lr)
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
        # A dense upstream gradient, as the reconstructor's backward hands to the generator's
        # output.
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
        self.floor = {"a": (nothing, forward_plain),
                      "b": (clear_direction_grads, forward_backward_shifted),
                      "c": (prepare_reconstructor, reconstructor_step)}
        self.reference = (nothing, reference_step)

    def check_reference(self) -> None:
        # Not every weight: in W and W+ the mapping network is not on the step's path.
        if all(p.grad is None for p in self.ref_generator.parameters()):
            raise RuntimeError("the reference step did not compute the generator's weight "
                               "gradients")


def measure_floor_and_reference(cfg: DictConfig, steps: int, warmup: int
                                ) -> tuple[dict[str, float], float]:
    """(floor parts a, b, c in ms) and the reference step in ms, each timed alone in turn."""
    parts = StepParts(cfg)
    floor = {name: time_repeated(fn, prepare, warmup, steps)
             for name, (prepare, fn) in parts.floor.items()}
    reference = time_repeated(parts.reference[1], parts.reference[0], warmup, steps)
    parts.check_reference()
    return floor, reference


def measure_interleaved(cfg: DictConfig, steps: int, warmup: int
                        ) -> tuple[list[float], dict[str, list[float]], list[float]]:
    """Trainer steps, floor parts and reference steps in rounds: after each batch of the
    Trainer (outside its timed steps) one (a), (b), (c) and one reference step run, so that a
    change in the machine's load reaches all of them alike. The first ``warmup`` rounds are
    untimed. Returns ms per round: (trainer, floor parts by name, reference)."""
    parts = StepParts(cfg)
    floor: dict[str, list[float]] = {name: [] for name in parts.floor}
    reference: list[float] = []

    def timed(prepare: Callable[[], None], fn: Callable[[], None]) -> float:
        prepare()
        start = time.perf_counter()
        fn()
        return 1000.0 * (time.perf_counter() - start)

    def one_round(n: int) -> None:
        times = {name: timed(*pair) for name, pair in parts.floor.items()}
        ref = timed(*parts.reference)
        if n > warmup:
            for name, t in times.items():
                floor[name].append(t)
            reference.append(ref)

    trainer = [1000.0 * t for t in trainer_step_times(cfg, steps, warmup, between=one_round)]
    parts.check_reference()
    return trainer, floor, reference


def quiet_lightning() -> None:
    # Lightning's banner lines and advice (workers, logging interval) would break the table.
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")


# Defaults by generator: a large StyleGAN2 (over 64 px) takes seconds a step on a CPU.
DEFAULTS = {"small": {"batch_sizes": [32, 128], "steps": 30, "warmup": 5, "interleave": False},
            "large": {"batch_sizes": [4, 8], "steps": 3, "warmup": 1, "interleave": True}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="voynov", choices=["voynov", "warped"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="default: 32 128; 4 8 for a StyleGAN2 over 64 px")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps (and repetitions); default: 30; 3 for a StyleGAN2 "
                             "over 64 px")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (>= 1); default: 5; 1 for a StyleGAN2 over 64 px")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--generator", default="dcgan_shapes32.pt",
                        help="weights: a path or a name in generators/weights/; or a random "
                             "StyleGAN2: stylegan2-<R> (config-f at R px, e.g. stylegan2-256) or "
                             "stylegan2-builtin32 (the built-in 32 px size)")
    parser.add_argument("--space", default=None, choices=["z", "w", "w+"],
                        help="editing space (default: the generator config's; w for a random "
                             "StyleGAN2)")
    parser.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                        help="time the floor parts and the reference step between the Trainer's "
                             "steps, one each per step, instead of each alone afterwards "
                             "(default: on for a StyleGAN2 over 64 px)")
    args = parser.parse_args(argv)
    preset = stylegan2_preset(args.generator) if resolve_weights(args.generator) is None else None
    size = "large" if preset is not None and preset["resolution"] > 64 else "small"
    for key, value in DEFAULTS[size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
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
    gen_overrides, gen_desc = generator_overrides(args.generator, args.space)
    print(f"torch {torch.__version__}, pytorch_lightning {pl.__version__}, "
          f"{torch.get_num_threads()} threads, CPU")
    print(f"method: {args.method}; generator: {gen_desc}")
    schedule = ("interleaved: after each Trainer step, one of each floor part and one "
                "reference step" if args.interleave else "trainer, then each floor part and the "
                "reference alone")
    print(f"steps: {args.steps} timed after {args.warmup} warm-up (medians); {schedule}\n")

    rows = []
    parts_lines = []
    for batch_size in args.batch_sizes:
        with tempfile.TemporaryDirectory(prefix="reconstructor_bench_") as tmp:
            # A fresh directory each time: train refuses a run directory that holds a run.
            cfg = compose_config(args.method, batch_size, args.warmup + args.steps, Path(tmp),
                                 gen_overrides)
            if args.interleave:
                trainer, floor_rounds, reference = measure_interleaved(cfg, args.steps,
                                                                       args.warmup)
                trainer_ms, reference_ms = statistics.median(trainer), statistics.median(reference)
                floor = {name: statistics.median(t) for name, t in floor_rounds.items()}
                per_round = [t / sum(f) for t, *f in zip(trainer, *floor_rounds.values())]
            else:
                trainer_ms = measure_trainer_cfg(cfg, args.steps, args.warmup)
                floor, reference_ms = measure_floor_and_reference(cfg, args.steps, args.warmup)
                per_round = None
        floor_ms = sum(floor.values())
        ratio, speedup = trainer_ms / floor_ms, reference_ms / trainer_ms
        rows.append(f"| {batch_size} | {trainer_ms:.1f} | {floor_ms:.1f} | {ratio:.2f} "
                    f"{'ok' if ratio <= 1.15 else 'MISS'} | {reference_ms:.1f} | {speedup:.2f} "
                    f"{'ok' if speedup >= 1.5 else 'MISS'} |")
        parts_lines.append(f"batch {batch_size}: (a) G(z) no grad {floor['a']:.1f} ms, (b) G(z + "
                           f"shift) fwd+bwd {floor['b']:.1f} ms, (c) reconstructor fwd+bwd+Adam "
                           f"{floor['c']:.1f} ms"
                           + (f"; trainer/floor by round: {' '.join(f'{r:.2f}' for r in per_round)}"
                              if per_round is not None else ""))

    print("| batch | trainer ms/step | floor ms/step | trainer/floor (<= 1.15) "
          "| reference ms/step | reference/trainer (>= 1.5) |")
    print("|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nfloor parts:")
    print("\n".join(parts_lines))


if __name__ == "__main__":
    main()

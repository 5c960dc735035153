"""Training throughput of GANalyze and GAN Steerability on CPU, against their floors.

For each method and batch size it prints one row of a markdown table:

* **trainer**: ms per training step of the method through the real Lightning Trainer, from the
  Hydra config (``method=<m> logger=none callbacks=none evaluation.enabled=false``); a step is
  the time between consecutive ``on_train_batch_end`` calls after the warm-up (data, step,
  optimizer and hooks).
* **floor**: the passes no implementation of the step can avoid, each timed alone with the
  module's own parts:
  - GANalyze: (a) A(G(z)) without a graph, (b) A(G(T(z, alpha))) forward and backward to theta,
    (c) the Adam step on theta;
  - Steerability: (a) the edit of G(z) without a graph, (b) G(walk(z, alpha)) and the masked
    loss forward and backward to the walk, (c) the Adam step on the walk.

Target: trainer / floor <= 1.15. Every time is the median over the timed steps.

    .venv/bin/python bench/single_direction_throughput.py [--methods ganalyze steerability]
        [--batch-sizes 32 64] [--steps 30] [--warmup 5]

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import train as train_script  # noqa: E402
from bench.reconstructor_throughput import NO_VALIDATION, measure_trainer_cfg, quiet_lightning, time_repeated  # noqa: E402


def compose_config(method: str, batch_size: int, max_steps: int, output_dir: Path):
    overrides = [f"method={method}", "logger=none", "callbacks=none", "evaluation.enabled=false",
                 f"data.batch_size={batch_size}", f"trainer.max_steps={max_steps}",
                 f"trainer.val_check_interval={NO_VALIDATION}", "method.traversal.every_n_steps=0",
                 "trainer.enable_progress_bar=false", f"paths.output_dir={output_dir}",
                 f"run_name=bench_{method}_b{batch_size}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides)


def floor_parts(cfg, steps: int, warmup: int) -> dict[str, float]:
    torch.manual_seed(cfg.seed)
    module = train_script.instantiate_all(cfg)["module"]
    module.train()
    optimizer = module.configure_optimizers()
    rng = torch.Generator().manual_seed(cfg.seed)
    batch = {"latent": module.generator.sample(cfg.data.batch_size, generator=rng),
             "seed": torch.tensor(1)}
    nothing = lambda: None  # noqa: E731
    if cfg.method.name == "ganalyze":
        z, alpha, _ = module.draw(batch)

        def unshifted() -> None:
            with torch.no_grad():
                module.assessor(module.generator(z))

        def shifted() -> None:
            module.assessor(module.generator(module.directions.shift(z, 0, alpha))).sum().backward()
    else:
        z = batch["latent"]
        res = module.generator.resolution
        alpha = module.edit.sample(z.shape[0], rng, res)
        with torch.no_grad():
            target, mask = module.edit.apply(module.generator(z), alpha)
        slider = module.edit.to_walk(alpha, res)

        def unshifted() -> None:
            with torch.no_grad():
                module.edit.apply(module.generator(z), alpha)

        def shifted() -> None:
            module.distance(module.generator(module.walk(z, slider)), target, mask).mean().backward()

    def clear() -> None:
        optimizer.zero_grad(set_to_none=True)

    def prepare_step() -> None:
        for p in module.directions.parameters():
            p.grad = torch.zeros_like(p)

    return {"a": time_repeated(unshifted, nothing, warmup, steps),
            "b": time_repeated(shifted, clear, warmup, steps),
            "c": time_repeated(optimizer.step, prepare_step, warmup, steps)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["ganalyze", "steerability"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    quiet_lightning()
    print(f"torch {torch.__version__}, pytorch_lightning {pl.__version__}, "
          f"{torch.get_num_threads()} threads, CPU; shipped generator; medians of {args.steps} steps\n")
    print("| method | batch | trainer ms/step | floor ms/step (a + b + c) | trainer/floor (<= 1.15) |")
    print("|---|---:|---:|---:|---:|")
    for method in args.methods:
        for batch_size in args.batch_sizes:
            with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
                cfg = compose_config(method, batch_size, args.warmup + args.steps, Path(tmp))
                trainer_ms = measure_trainer_cfg(cfg, args.steps, args.warmup)
            with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
                cfg = compose_config(method, batch_size, args.warmup + args.steps, Path(tmp))
                parts = floor_parts(cfg, args.steps, args.warmup)
            floor = sum(parts.values())
            ratio = trainer_ms / floor
            print(f"| {method} | {batch_size} | {trainer_ms:.1f} | {floor:.1f} ({parts['a']:.1f} + "
                  f"{parts['b']:.1f} + {parts['c']:.2f}) | {ratio:.2f} {'ok' if ratio <= 1.15 else 'MISS'} |",
                  flush=True)


if __name__ == "__main__":
    main()

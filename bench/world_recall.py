"""Can a generator draw the world when asked, or only when sampled? Sampled precision against
optimised recall, for generators trained on the shapes world.

``python -m generators.assess`` measures the samples: each sample is explained by the world
render that matches it best, and ``rerender_l1`` is the mean L1 of that fit. That mixes two
causes of a high figure: the generator cannot draw clean shapes at all (capacity), or it can
but its prior puts mass between them (its samples land on hybrids). This script tells them
apart. For ``--images`` renders of the world (seeded factors, drawn by the world's renderer) it
inverts each render into every editing space of the generator (Z, and W and W+ for a
style-based one) with the project's inversion (``editing.inversion.invert``: Adam on
L2 + Lap1, several starts, the best kept) and prints, as a markdown table, the mean L1 between
the reconstruction and its render, beside the samples' ``rerender_l1`` on ``--samples``.
A reconstruction error well below the samples' error says the generator can draw the world and
its sampling is what falls short.

    .venv/bin/python bench/world_recall.py generators/weights/stylegan2_shapes32.pt generators/weights/dcgan_shapes32.pt

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project is not installed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from datamodules.world import ShapesWorld  # noqa: E402
from editing.inversion import invert  # noqa: E402
from generators import load_generator  # noqa: E402
from generators.assess import assess  # noqa: E402


def recall(weights: str, images: int, steps: int, starts: int, seed: int) -> dict[str, float]:
    """The mean L1 of the best reconstruction of ``images`` world renders, per editing space."""
    generator = load_generator(weights)
    world = ShapesWorld(generator.resolution)
    renders = world.render(world.sample_factors(images, torch.Generator().manual_seed(seed + 1)))
    row = {}
    for space in ("z", "w", "w+") if generator.style_based else ("z",):
        generator.set_view(space)
        found = invert(generator, renders, steps=steps, starts=starts, seed=seed, progress=False)
        row[f"inverted_{space}_l1"] = (found.images.cpu() - renders).abs().mean().item()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="+", help="generator weights files")
    parser.add_argument("--images", type=int, default=64, help="world renders to invert")
    parser.add_argument("--samples", type=int, default=256, help="samples for rerender_l1")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps of each inversion")
    parser.add_argument("--starts", type=int, default=4, help="starts per image (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = {}
    for weights in args.weights:
        start = time.perf_counter()
        stats, _ = assess(weights, samples=args.samples, seed=args.seed)
        name = list(stats)[1]
        rows[name] = {"sampled_rerender_l1": stats[name]["rerender_l1"],
                      **recall(weights, args.images, args.steps, args.starts, args.seed),
                      "seconds": time.perf_counter() - start}
    columns = sorted({c for row in rows.values() for c in row}, key=lambda c: (c == "seconds", c))
    print("| generator | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.4f}" if c in row else "-" for c in columns) + " |")


if __name__ == "__main__":
    main()

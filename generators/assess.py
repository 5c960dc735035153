"""How much a generator's samples look like the shapes world, as figures.

Each sample is explained by inverse rendering (``ShapesWorld.fit_factors``): the world's
factors whose render matches it best. The re-render error says how clean the sample is
(real renders score about 0.003), and the fitted factors say whether the generator covers
the world: the mix of shape kinds (a third each in the world), the spread of position and size
(a uniform factor has standard deviation 0.289) and of hue (circular spread 1 for uniform hues).

    python -m generators.assess dcgan_shapes32.pt --samples 512
"""
from __future__ import annotations

import argparse
import math

import torch

from datamodules.world import SHAPES, ShapesWorld
from generators import load_generator


@torch.no_grad()
def _draw(generator, n: int, seed: int, batch: int = 256) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    return torch.cat([generator(generator.sample(min(batch, n - i), generator=rng))
                      for i in range(0, n, batch)])


def world_statistics(images: torch.Tensor, world: ShapesWorld, batch: int = 128) -> dict[str, float]:
    fitted, errors = zip(*(world.fit_factors(images[i:i + batch])
                           for i in range(0, len(images), batch)))
    factors, error = torch.cat(fitted), torch.cat(errors)
    shape = factors[:, 0].long()
    hue_angle = factors[:, 5] * 2 * math.pi
    resultant = torch.complex(hue_angle.cos(), hue_angle.sin()).mean().abs().item()
    stats = {"rerender_l1": error.mean().item(), "clean_fraction": (error < 0.05).float().mean().item()}
    stats.update({f"share_{name}": (shape == i).float().mean().item() for i, name in enumerate(SHAPES)})
    stats.update({f"std_{name}": factors[:, col].clamp(0, 1).std().item()
                  for name, col in (("x", 3), ("y", 4), ("scale", 1))})
    stats["hue_spread"] = 1 - resultant
    return stats


def assess(weights: str, samples: int = 512, seed: int = 0) -> dict[str, dict[str, float]]:
    generator = load_generator(weights)
    world = ShapesWorld(generator.resolution)
    real = world.render(world.sample_factors(samples, torch.Generator().manual_seed(seed)))
    return {"real renders": world_statistics(real, world),
            generator.name: world_statistics(_draw(generator, samples, seed), world)}


def markdown(rows: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(rows.values())))
    lines = ["| images | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in stats.values()) + " |"
              for name, stats in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help="a generator.pt, or a name in generators/weights/")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(markdown(assess(args.weights, args.samples, args.seed)))


if __name__ == "__main__":
    main()

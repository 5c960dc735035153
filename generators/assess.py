"""How much a generator's samples look like the shapes world, as figures.

Each sample is explained by inverse rendering (``ShapesWorld.fit_factors``): the world's
factors whose render matches it best. The re-render error says how clean the sample is
(real renders score about 0.003), and the fitted factors say whether the generator covers
the world: the mix of shape kinds (a third each in the world), the spread of position and size
(a uniform factor has standard deviation 0.289) and of hue (circular spread 1 for uniform hues).
With ``--regions`` it also says where the error lies: on the one-pixel band around each fitted
shape's outline (wrong outlines), on the background (speckle, haze) or inside (wrong colour).

    python -m generators.assess dcgan_shapes32.pt --samples 512 [--regions]
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from datamodules.world import SHAPES, ShapesWorld
from generators import load_generator


@torch.no_grad()
def _draw(generator, n: int, seed: int, batch: int = 256) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    return torch.cat([generator(generator.sample(min(batch, n - i), generator=rng))
                      for i in range(0, n, batch)])


def fit(images: torch.Tensor, world: ShapesWorld, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``world.fit_factors`` over ``images`` in batches: the fitted factors and the errors."""
    fitted, errors = zip(*(world.fit_factors(images[i:i + batch])
                           for i in range(0, len(images), batch)))
    return torch.cat(fitted), torch.cat(errors)


def world_statistics(factors: torch.Tensor, error: torch.Tensor) -> dict[str, float]:
    """Cleanliness and coverage of the world, from the fitted factors and errors of images."""
    shape = factors[:, 0].long()
    hue_angle = factors[:, 5] * 2 * math.pi
    resultant = torch.complex(hue_angle.cos(), hue_angle.sin()).mean().abs().item()
    stats = {"rerender_l1": error.mean().item(), "clean_fraction": (error < 0.05).float().mean().item()}
    stats.update({f"share_{name}": (shape == i).float().mean().item() for i, name in enumerate(SHAPES)})
    stats.update({f"std_{name}": factors[:, col].clamp(0, 1).std().item()
                  for name, col in (("x", 3), ("y", 4), ("scale", 1))})
    stats["hue_spread"] = 1 - resultant
    return stats


@torch.no_grad()
def error_regions(images: torch.Tensor, factors: torch.Tensor, world: ShapesWorld) -> dict[str, float]:
    """Where the re-render error of ``images`` (fitted as ``factors``) lies. The fitted render's
    shape is split into its outline band (pixels within one of the edge: 3 x 3 dilation minus
    erosion), its inside and the background; for each, the share of the pixels, the mean L1
    there and its share of the whole error."""
    render = world.render(factors)
    residual = (images - render).abs().mean(1)  # N x H x W
    shape = ((render * 0.5 + 0.5).amax(1, keepdim=True) > 0.02).float()
    grown = F.max_pool2d(shape, 3, 1, 1)[:, 0] > 0
    shrunk = -F.max_pool2d(-shape, 3, 1, 1)[:, 0] > 0
    total = residual.sum()
    stats = {}
    for name, mask in (("edge", grown & ~shrunk), ("background", ~grown), ("inside", shrunk)):
        stats.update({f"{name}_pixels": mask.float().mean().item(),
                      f"{name}_l1": residual[mask].mean().item() if mask.any() else 0.0,
                      f"{name}_error_share": (residual[mask].sum() / total).item()})
    return stats


def assess(weights: str, samples: int = 512, seed: int = 0,
           regions: bool = False) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The statistics of real renders and of the generator's samples; with ``regions`` also
    where their re-render error lies (else that second table is empty)."""
    generator = load_generator(weights)
    world = ShapesWorld(generator.resolution)
    real = world.render(world.sample_factors(samples, torch.Generator().manual_seed(seed)))
    stats, where = {}, {}
    for name, images in (("real renders", real), (generator.name, _draw(generator, samples, seed))):
        factors, error = fit(images, world)
        stats[name] = world_statistics(factors, error)
        if regions:
            where[name] = {**error_regions(images, factors, world),
                           **error_by_kind_and_size(factors, error)}
    return stats, where


SIZE_BANDS = ("small", "medium", "large")  # thirds of the fitted scale


def error_by_kind_and_size(factors: torch.Tensor, error: torch.Tensor) -> dict[str, float]:
    """The mean re-render error of the images fitted as each shape kind, and as small, medium
    and large shapes (thirds of the fitted scale): which shapes a generator draws worst."""
    kind = factors[:, 0].long()
    band = (factors[:, 1].clamp(0, 1) * len(SIZE_BANDS)).long().clamp(max=len(SIZE_BANDS) - 1)
    groups = [(f"{name}_l1", kind == i) for i, name in enumerate(SHAPES)]
    groups += [(f"{name}_l1", band == i) for i, name in enumerate(SIZE_BANDS)]
    return {key: error[mask].mean().item() if mask.any() else float("nan") for key, mask in groups}


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
    parser.add_argument("--regions", action="store_true",
                        help="say where the re-render error lies (outline band, background, "
                        "inside) and on which shapes (kind, size)")
    args = parser.parse_args()
    stats, where = assess(args.weights, args.samples, args.seed, args.regions)
    print(markdown(stats))
    if where:
        print("\nWhere the re-render error lies:\n")
        print(markdown(where))


if __name__ == "__main__":
    main()

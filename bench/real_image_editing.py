"""Real-image editing, measured: world renders that no generator made are inverted into a
generator, then moved along a direction, and the regressor reads the edited factor.

For ``--images`` renders of the shapes world (seeded factors, drawn by the world's renderer,
not by any generator) this prints, as markdown tables:

* the inversion: the reconstruction PSNR (mean, lowest, share above 20 dB) in the directions'
  space, and in W+ for comparison (more freedom, a better fit);
* the edit: for each alpha, the regressor's mean reading of ``--factor`` on the edited
  reconstructions minus its reading on the reconstruction, with the slope and R^2 of that
  change against alpha (an EYE direction is in the factor's units: slope 1 is exact), and the
  change of the real image's true factor value for reference (how well the reconstruction
  reads like the image).

    .venv/bin/python bench/real_image_editing.py outputs/eye-w-full/directions.pt --direction 0 --factor x

Uses the generator the directions file records (its run's config, else its
``generator_source``). A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.images import save_grid  # noqa: E402
from datamodules.world import FACTORS, ShapesWorld  # noqa: E402
from directions import Directions  # noqa: E402
from editing.inversion import invert  # noqa: E402
from generators import load_generator  # noqa: E402
from metrics.curves import linear_fit  # noqa: E402
from regressors.attributes import AttributeAssessor, load_regressor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directions")
    parser.add_argument("--direction", type=int, default=0)
    parser.add_argument("--factor", default="x", help="the regressor's read of the edited factor")
    parser.add_argument("--alphas", type=float, nargs="+", default=[-0.3, -0.15, 0.0, 0.15, 0.3])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--starts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", default=None, help="a PNG of images, reconstructions and edits")
    args = parser.parse_args()

    directions = Directions.load(args.directions)
    source = dict(directions.meta["generator_source"])
    generator = load_generator(**{k: v for k, v in source.items() if k != "_target_"})
    directions.check_generator(generator, source=args.directions)
    regressor = load_regressor(source["regressor"]["path"])
    assessor = AttributeAssessor(regressor, args.factor)

    world = ShapesWorld(generator.resolution)
    factors = world.sample_factors(args.images, torch.Generator().manual_seed(args.seed))
    images = world.render(factors)
    rows = []
    fits = {}
    for space in dict.fromkeys([generator.space, "w+"] if generator.style_based else [generator.space]):
        view = load_generator(**{**{k: v for k, v in source.items() if k != "_target_"}, "space": space})
        start = time.perf_counter()
        fits[space] = invert(view, images, steps=args.steps, starts=args.starts, progress=True)
        seconds = time.perf_counter() - start
        p = fits[space].psnr
        rows.append(f"| {space} | {args.images} | {float(p.mean()):.2f} | {float(p.min()):.2f} | "
                    f"{float((p > 20).float().mean()):.2f} | {seconds:.0f} |")
    print(f"\nInversion of {args.images} world renders into {generator.name} (L2 + Lap1, "
          f"{args.steps} Adam steps, {args.starts} starts):\n")
    print("| space | images | PSNR mean (dB) | PSNR min | share > 20 dB | seconds |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))

    latents = fits[generator.space].latents
    with torch.no_grad():
        base = assessor(generator(latents))
        truth = factors[:, FACTORS.index(args.factor.split("=")[0].split(".")[0])]
        changes, edited = [], []
        for alpha in args.alphas:
            image = generator(directions.shift(latents, args.direction, alpha))
            edited.append(image)
            changes.append(assessor(image) - base)
    change = torch.stack(changes, 1)
    alphas = torch.tensor(args.alphas)
    slope, intercept, r2 = linear_fit(alphas, change.mean(0))
    print(f"\nEdit along direction {args.direction} of {args.directions} (space "
          f"{generator.space}), read as {args.factor!r} by the regressor:\n")
    print("| alpha | mean change of the reading | std across images |")
    print("|---|---|---|")
    for a, c in zip(args.alphas, change.T):
        print(f"| {a:+.2f} | {float(c.mean()):+.4f} | {float(c.std()):.4f} |")
    print(f"\nslope {slope:.3f}, intercept {intercept:+.4f}, R^2 {r2:.4f}; reading of the "
          f"reconstructions against the images' true {args.factor}: mean |error| "
          f"{float((base - truth).abs().mean()):.4f}")
    if args.out:
        shown = min(8, args.images)
        grid = torch.stack([images[:shown], fits[generator.space].images[:shown].clamp(-1, 1),
                            *[e[:shown].clamp(-1, 1) for e in edited]], 1)
        save_grid(grid.flatten(0, 1), args.out, nrow=grid.shape[1])
        print(f"\nwrote {args.out}: rows = images; columns = the image, its reconstruction, "
              f"alphas {args.alphas}")


if __name__ == "__main__":
    main()

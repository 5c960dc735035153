"""Does the factor regressor read one factor's change as another's? The effect matrix (and so
coverage and purity) measures edits through it, so its cross-talk sets how pure an edit can
look. Two tables, in the effect matrix's units (metrics/effects.py):

* on renders of the world: each continuous or circular factor moved by +delta with the others
  fixed; a perfect reader gives delta on the diagonal and 0 elsewhere;
* on a generator's images (``--directions``: the run's generator), and on world renders for
  comparison: an image-space hue rotation (a rotation of the colours about the grey axis, the
  shape untouched), and the shape classifier's confidence.

    .venv/bin/python bench/regressor_crosstalk.py
    .venv/bin/python bench/regressor_crosstalk.py --directions results/benchmark/cells/stylegan2-w-sefa-s0/directions.pt

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from datamodules.world import FACTORS, ShapesWorld  # noqa: E402
from metrics.effects import mean_factor_changes  # noqa: E402
from regressors.attributes import load_regressor  # noqa: E402


def hue_rotate(images: torch.Tensor, turn: float) -> torch.Tensor:
    """Images in [-1, 1] with their colours rotated by ``turn`` of a circle about the grey axis."""
    angle = 2 * math.pi * turn
    c, s, k = math.cos(angle), math.sin(angle), 1 / math.sqrt(3)
    cross = torch.tensor([[0, -k, k], [k, 0, -k], [-k, k, 0]])
    rotation = torch.eye(3) * c + s * cross + (1 - c) * torch.full((3, 3), 1 / 3)
    unit = (images + 1) / 2
    return torch.einsum("ij,njhw->nihw", rotation, unit).clamp(0, 1) * 2 - 1


def row(values) -> str:
    return " | ".join(f"{float(v):.3f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regressor", default="shapes_regressor32.pt")
    parser.add_argument("--directions", help="a run's directions file: its generator's images too")
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    torch.manual_seed(0)
    regressor = load_regressor(args.regressor).eval()
    names = [t.name for t in regressor.targets]
    world = ShapesWorld(regressor.resolution)
    base = world.sample_factors(args.samples, torch.Generator().manual_seed(1))
    base[:, 1:] = 0.15 + 0.7 * base[:, 1:]  # continuous factors away from their range's ends
    before = regressor.predict(world.render(base))
    print(f"World renders, one factor moved (measured change of {', '.join(names)}):\n")
    print("| moved | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for f, name in enumerate(FACTORS[1:], start=1):
        for delta in (0.05, 0.1):
            moved = base.clone()
            moved[:, f] += delta
            if name in ("rotation", "hue"):
                moved[:, f] %= 1.0
            after = regressor.predict(world.render(moved))
            print(f"| {name} +{delta} | {row(mean_factor_changes(regressor.targets, before, after))} |")
    sets = {"world": world.render(world.sample_factors(args.samples, torch.Generator().manual_seed(2)))}
    if args.directions:
        from directions import Directions
        from generators.recorded import load_run_generator

        path = Path(args.directions)
        generator = load_run_generator(path, None, True, Directions.load(path).meta.get("generator_source"),
                                       torch.device("cpu"))
        with torch.no_grad():
            z, y = generator.draw(args.samples, generator=torch.Generator().manual_seed(0))
            sets["generated"] = torch.cat([generator(z[i:i + 250], None if y is None else y[i:i + 250])
                                           for i in range(0, args.samples, 250)])
    print("\nImage-space hue rotation (the shape untouched):\n")
    print("| images | shape confidence (share < 0.9) | rotation | " + " | ".join(names) + " |\n|---|---|---|"
          + "---|" * len(names))
    for label, images in sets.items():
        read = regressor.predict(images)
        confidence = read["probs"]["shape"].max(1).values
        for turn in (0.05, 0.1):
            after = regressor.predict(hue_rotate(images, turn))
            print(f"| {label} | {float(confidence.mean()):.3f} ({float((confidence < 0.9).float().mean()):.3f}) "
                  f"| {turn} | {row(mean_factor_changes(regressor.targets, read, after))} |")


if __name__ == "__main__":
    main()

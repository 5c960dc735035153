"""The floor of Plumerault et al.'s spread metric: the best linear direction a label could give.

``method=plumerault`` reports, for its fitted direction u and for the mean-difference baseline,
the spread of the edited factor across latents moved to fixed coordinates along the direction.
How low can any linear direction go in a given generator? This script fits the *supervised*
direction that a method without labels cannot know: least squares of the regressor's reading
of the factor on the latent, over ``--samples`` labelled samples. Its spread, measured with the
method's own metric code (``Plumerault.coordinates`` / ``response_sums``) on held-out latents,
is the floor the unsupervised fit is compared with. Prints one markdown table row a generator.

    .venv/bin/python bench/plumerault_oracle.py --generator dcgan_shapes --space z
    .venv/bin/python bench/plumerault_oracle.py --generator stylegan2_shapes --space w

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lightning_modules.fit_free.plumerault import Plumerault  # noqa: E402


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", default="dcgan_shapes", help="a config of configs/generator/")
    parser.add_argument("--space", default="z", help="z or w")
    parser.add_argument("--edit", default="scale", help="the edit whose factor is read (scale, shift_x, ...)")
    parser.add_argument("--samples", type=int, default=4096, help="labelled samples of the fit")
    parser.add_argument("--eval-samples", type=int, default=128, help="held-out latents of the metric")
    args = parser.parse_args()

    cfg = OmegaConf.load(ROOT / "configs" / "generator" / f"{args.generator}.yaml")
    cfg.space = args.space
    # config-from-command-line: the project's own shipped generator config, chosen by --generator
    generator = instantiate(cfg).eval()
    method = Plumerault(edit=args.edit)
    method.check(generator)
    if method.regressor is None:
        raise SystemExit(f"{args.generator} names no regressor: nothing reads the factor")
    method.regressor.eval()

    rng = torch.Generator().manual_seed(1)
    latents = generator.sample(args.samples, generator=rng)
    factor = torch.cat([method.factor_of(generator(latents[i:i + 256]))
                        for i in range(0, len(latents), 256)]).double()
    design = torch.cat([latents.double(), torch.ones(len(latents), 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, factor[:, None]).solution
    r2 = 1 - float(((design @ solution)[:, 0] - factor).var() / factor.var())
    direction = solution[:-1, 0]
    direction = (direction / direction.norm()).float()

    held_out = generator.sample(args.eval_samples, generator=torch.Generator().manual_seed(7))
    coords = method.coordinates(direction, latents[:512])
    sums = method.response_sums(generator, direction, coords, [{"latent": held_out}])
    metrics, _ = method.response_metrics(sums)
    print("| generator | space | factor | linear R^2 | spread | monotone share | Spearman | effect |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.generator} | {args.space} | {method.factor} | {r2:.3f} | {metrics['spread']:.3f} "
          f"| {metrics['monotone_share']:.2f} | {metrics['spearman']:.3f} | {metrics['effect']:.2f} |")


if __name__ == "__main__":
    main()

"""Forward time of the StyleGAN3 generator (generators/stylegan3.py) on CPU, beside
StyleGAN2's (generators/stylegan2.py) at the same sizes.

Networks (random, init_seed 0, frozen, W view: synthesis only, w mapped beforehand):

* StyleGAN3-T at the published 256 px configuration (``--cfg=stylegan3-t --cbase=16384``:
  w_dim 512, 14 layers, channel_max 512, margin 10), and -R (``conv_kernel=1``, channel_base
  doubled, radial down-sampling filters);
* the same hyperparameters at 32 px;
* StyleGAN2 config-f at 256 px and the project's built-in size at 32 px
  (bench/stylegan2_forward.py's).

For each batch size, the median over ``--repeats`` rounds of the milliseconds an image, after
``--warmup`` untimed rounds; every cell is timed once a round so that a change of load reaches
all of them alike.

    .venv/bin/python bench/stylegan3_forward.py
    .venv/bin/python bench/stylegan3_forward.py --batch-sizes 1 8 --repeats 5

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project is not installed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from generators import random_generator  # noqa: E402

T_256 = {"channel_base": 16384, "channel_max": 512}          # --cfg=stylegan3-t --cbase=16384
R_256 = {"channel_base": 32768, "channel_max": 1024, "conv_kernel": 1, "use_radial_filters": True}


def networks(resolutions: list[int]) -> dict[str, torch.nn.Module]:
    out = {}
    for res in resolutions:
        out[f"StyleGAN3-T {res} px"] = random_generator("stylegan3", resolution=res, w_dim=512, space="w",
                                                        geometry=T_256)
        out[f"StyleGAN3-R {res} px"] = random_generator("stylegan3", resolution=res, w_dim=512, space="w",
                                                        geometry=R_256)
        sg2 = ({"style_dim": 512, "n_mlp": 8, "channels": None, "channel_multiplier": 2} if res >= 64
               else {"style_dim": 64, "n_mlp": 4, "channels": [64, 64, 64, 32]})
        name = "StyleGAN2 config-f" if res >= 64 else "StyleGAN2 built-in size"
        out[f"{name} {res} px"] = random_generator("stylegan2", resolution=res, space="w", **sg2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 32])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    nets = networks(args.resolutions)
    inputs = {(name, b): g.sample(b, torch.Generator().manual_seed(b)) for name, g in nets.items()
              for b in args.batch_sizes}
    times: dict[tuple[str, int], list[float]] = {key: [] for key in inputs}
    with torch.no_grad():
        for round_ in range(args.warmup + args.repeats):
            for (name, b), w in inputs.items():
                start = time.perf_counter()
                nets[name](w)
                if round_ >= args.warmup:
                    times[(name, b)].append((time.perf_counter() - start) * 1000 / b)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms an image (median of "
          f"{args.repeats}), W view (synthesis only)\n")
    print("| network | parameters | " + " | ".join(f"batch {b}" for b in args.batch_sizes) + " |")
    print("|---|---:|" + "---:|" * len(args.batch_sizes))
    for name, g in nets.items():
        params = sum(p.numel() for p in g.parameters())
        cells = " | ".join(f"{statistics.median(times[(name, b)]):,.1f}" for b in args.batch_sizes)
        print(f"| {name} | {params:,} | {cells} |")


if __name__ == "__main__":
    main()

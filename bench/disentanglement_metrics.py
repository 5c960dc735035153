"""How long each disentanglement metric of ``metrics.disentanglement`` takes, at 1,000 and
10,000 points of K codes (32) about the shapes world's six factors.

The codes stand in for an encoder's: each of the first six follows one factor through a
monotone nonlinearity (a circular factor as a sawtooth, the shape as its label), mixed with a
little of the others and noise; the rest are random mixtures of all factors. The FactorVAE
score draws world factors and encodes them with the same map (no rendering: the metric's own
time), with ``num_train`` = the points and ``num_eval`` = half of them. Prints a markdown table
of seconds (and each metric's value) per metric and size; one process, one core's worth of
threads as given (run it under ``taskset -c 0`` to pin it).

    .venv/bin/python bench/disentanglement_metrics.py
    .venv/bin/python bench/disentanglement_metrics.py --dci-models hist_gbt   # leave out the slow gbt

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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from datamodules.world import ShapesWorld  # noqa: E402
from metrics.disentanglement import (  # noqa: E402
    WORLD_KINDS,
    dci,
    factor_vae,
    fixed_factor_sampler,
    mig,
    modularity,
    sap,
)


def make_encoder(num_codes: int, seed: int):
    """A fixed map from world factors (``N x 6``) to ``N x num_codes`` codes (see the docstring)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(6, num_codes)) * 0.1
    mixing[:, 6:] *= 10.0
    noise = np.random.default_rng(seed + 1)

    def encode(factors):
        f = np.asarray(factors, dtype=np.float64)
        base = np.tanh(2.0 * (f - 0.5))  # monotone in every factor; circular ones stay sawtooths
        codes = base @ mixing
        codes[:, :6] += base * 3.0
        return codes + 0.05 * noise.normal(size=codes.shape)

    return encode


def timed(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--codes", type=int, default=32, help="K, codes per point")
    parser.add_argument("--dci-models", nargs="+", default=["hist_gbt", "gbt"], choices=["hist_gbt", "gbt"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    world = ShapesWorld()
    encode = make_encoder(args.codes, args.seed)
    rows: dict[str, list[str]] = {}
    for n in args.points:
        factors = world.sample_factors(n, torch.Generator().manual_seed(args.seed)).double().numpy()
        codes = encode(factors)
        generator = torch.Generator().manual_seed(args.seed + 1)
        sampler = fixed_factor_sampler(lambda m: world.sample_factors(m, generator).double().numpy(), encode)
        calls = {
            "MIG": lambda: mig(codes, factors, WORLD_KINDS)["mig"],
            "Modularity": lambda: modularity(codes, factors, WORLD_KINDS)["modularity"],
            "SAP": lambda: sap(codes, factors, WORLD_KINDS)["sap"],
            **{f"DCI ({model})": (lambda model=model: dci(codes, factors, WORLD_KINDS, model=model)["disentanglement"])
               for model in args.dci_models},
            "FactorVAE": lambda: factor_vae(codes, sampler, 6, num_train=n, num_eval=n // 2)["eval_accuracy"],
        }
        for name, call in calls.items():
            print(f"{n} points: {name} ...", file=sys.stderr, flush=True)
            seconds, value = timed(call)
            rows.setdefault(name, []).append(f"{seconds:.2f} s ({value:.3f})")
    print(f"\nK = {args.codes} codes, F = 6 world factors ({', '.join(WORLD_KINDS)}); seconds (value)\n")
    print("| metric | " + " | ".join(f"{n:,} points" for n in args.points) + " |")
    print("| --- |" + " --- |" * len(args.points))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

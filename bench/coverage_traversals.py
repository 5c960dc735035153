"""Traversals of chosen directions of evaluated runs, each labelled with its effects in units of
each factor's spread (the evaluation's effect matrix) and its purity: the figure that tells
whether coverage or MIG / DCI is right about a direction (docs/results.md, "Coverage against
MIG"). Each direction is given as ``RUN:K``; the run folder holds directions.pt, config.yaml and
an evaluation.json of report version 5 (or re-summarised by bench/effect_units.py).

    .venv/bin/python bench/coverage_traversals.py results/benchmark/cells/stylegan2-w-ganspace-s0:0 \\
        results/benchmark/cells/stylegan2-w-sefa-s0:1 --out docs/images/coverage_traversals.png

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from common.seeds import TRAVERSAL_SEED  # noqa: E402
from directions import Directions  # noqa: E402
from generators.recorded import load_run_generator  # noqa: E402
from metrics.report import annotated_traversal  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directions", nargs="+", help="RUN:K, a run folder and a direction index")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rows, labels = [], []
    for spec in args.directions:
        folder, _, k = spec.rpartition(":")
        run, k = Path(folder), int(k)
        report = json.loads((run / "evaluation.json").read_text())
        result = report["results"][report["label"]]
        if "factor_spread" not in result:
            raise SystemExit(f"{run}: its evaluation is in the factors' own units; "
                             "run bench/effect_units.py --rewrite on it first")
        effects = torch.tensor(result["effect_matrix"][k])
        purity = effects / effects.sum().clamp_min(1e-12)
        top = effects.argsort(descending=True)[:3].tolist()
        generator = load_run_generator(run / "directions.pt", None)
        directions = Directions.load(run / "directions.pt", generator=generator)
        latents, y = generator.draw(args.seeds, torch.Generator().manual_seed(TRAVERSAL_SEED))
        alpha = 2 * report["settings"]["alpha"]
        alphas = torch.linspace(-alpha, alpha, args.steps).tolist()
        rows.append(directions.traversal_rows(generator, latents, [k], alphas, y=y)[0])
        labels.append(f"{report['label']} dir {k} ({run.name.rsplit('-', 1)[-1]})\n"
                      + ", ".join(f"{result['factors'][f]} {effects[f]:.2f}" for f in top)
                      + f"\npurity {purity[top[0]]:.2f}")
    annotated_traversal(rows, labels, args.out, columns=args.seeds * args.steps, label_width=190)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

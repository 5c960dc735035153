"""The effect matrix in the factors' own units against units of each factor's spread (issue 31,
part 6). Until report version 5 an evaluation divided each factor's change by nothing: a shape
flip counted up to 1 (total variation of the class probabilities), a hue turn at most 0.5
(distance on the circle), so two random samples differ by 0.67 in shape and by 0.25 in hue, and
a direction that turns only the hue lost its purity to the small shape flips of any edit.
Version 5 (metrics/effects.py) divides by each factor's spread on the generator's images.

This script measures the spread of each run's generator (``--samples`` draws, read by its
regressor through ``EffectMatrix.observe``, as an evaluation does) and prints, for every
evaluation.json under the folders given that is still in the factors' own units, coverage and
purity both ways (version 4's least effect, 0.01 per unit step in own units, against version
5's, 0.1 spreads at the measured step). ``--rewrite`` re-summarises those files in place (evaluation.json and
evaluation.md; the figures are left as they were) from their stored effect matrices: what a new
evaluation would report, up to the spread's sampling noise (the evaluation reads it from its own
512 samples).

    .venv/bin/python bench/effect_units.py results/benchmark/cells
    .venv/bin/python bench/effect_units.py results/benchmark/cells --rewrite

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

from common.io import atomic_write, atomic_write_json  # noqa: E402
from evaluation.run import report_text, results_table  # noqa: E402
from generators.recorded import load_run_generator  # noqa: E402
from metrics.effects import EffectMatrix, summarise  # noqa: E402
from metrics.evaluation import EvaluationSettings, effect_details, summary_metrics  # noqa: E402
from regressors.attributes import load_regressor  # noqa: E402

NOTE = ("Effects re-summarised in units of each factor's spread by bench/effect_units.py "
        "(spread from {samples} samples of the generator, seed 0; least effect 0.1 spreads at "
        "the step); the figures "
        "(effect_matrix.png, traversal_annotated.png) are still in the factors' own units.")


def spread_of(generator, regressor, samples: int, batch_size: int = 256) -> torch.Tensor:
    """Each factor's mean change between independent samples of the generator."""
    effect = EffectMatrix(1, regressor.factor_names, [t.kind for t in regressor.targets])
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for first in range(0, samples, batch_size):
            z, y = generator.draw(min(batch_size, samples - first), generator=rng)
            effect.observe(regressor.predict(generator(z, y)))
    return effect.spread()


def resummarise(report: dict, spread: torch.Tensor, samples: int) -> dict:
    """The report with every set's effects divided by ``spread`` and summarised again."""
    # version 5's least effect: a change at the measured step alpha, in spreads
    report["settings"]["min_effect"] = min_effect = EvaluationSettings().min_effect
    threshold, step = report["settings"]["threshold"], abs(report["settings"]["alpha"])
    for result in report["results"].values():
        matrix = torch.tensor(result["effect_matrix"]) / spread
        summary = summarise(matrix, threshold, min_effect, step)
        result.update(effect_details(summary, result["factors"], matrix, spread))
        result["metrics"].update(summary_metrics(summary, len(matrix)))
    report["results"] = {name: report["results"][name] for name in report["order"]}  # the label first
    report["table"] = results_table(report["results"], report["label"])
    report["notes"] = [*report["notes"], NOTE.format(samples=samples)]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders searched for evaluation.json")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--rewrite", action="store_true", help="re-summarise the files in place")
    args = parser.parse_args()
    spreads: dict[tuple, torch.Tensor] = {}
    print("| run | set | coverage (own units) | purity | coverage (spreads) | purity | best factor |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(p for folder in args.folders for p in folder.rglob("evaluation.json")):
        report = json.loads(path.read_text())
        label = report["label"]
        if "effect_matrix" not in report["results"][label] or "factor_spread" in report["results"][label]:
            continue  # no regressor, or already in spreads
        directions = Path(path.parent / Path(report["directions"]).name)
        generator = load_run_generator(directions, None)
        key = (json.dumps(generator.identity(), sort_keys=True), report["regressor"]["sha256"])
        if key not in spreads:
            regressor = load_regressor(generator.regressor_spec["path"])
            if regressor.sha256 != report["regressor"]["sha256"]:
                raise SystemExit(f"{path}: scored with another regressor ({report['regressor']['path']})")
            spreads[key] = spread_of(generator, regressor, args.samples)
            print(f"<!-- spread of {generator.name} ({', '.join(regressor.factor_names)}): "
                  f"{[round(v, 3) for v in spreads[key].tolist()]} -->")
        before = {name: dict(r["metrics"]) for name, r in report["results"].items()}
        report = resummarise(report, spreads[key], args.samples)
        for name, result in report["results"].items():
            old, new = before[name], result["metrics"]
            best = [result["factors"][f] for f, k in enumerate(result["best_direction"]) if k is not None]
            print(f"| {path.parent.name} | {name} | {old['coverage']} | {old.get('purity', float('nan')):.2f} | "
                  f"{new['coverage']} | {new.get('purity', float('nan')):.2f} | {', '.join(best)} |")
        if args.rewrite:
            atomic_write_json(report, path)
            text = report_text(report)
            atomic_write(path.parent / "evaluation.md", lambda handle: handle.write(text.encode()))


if __name__ == "__main__":
    main()

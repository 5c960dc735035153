"""Does text reach the supervised direction? For directions made from prompts that name one
factor of the world (StyleCLIP's global directions, text-guided learning) and InterFaceGAN's
supervised directions for the same factors, on the same generator: what each does to the factor
it is meant for and to the others, read by the shapes regressor.

Each row: a run folder's direction (``run:index``), the factor and the way the text asks for
(``scale+``: larger, ``hue->red``: toward hue 0, ``x-``: to the left, ``shape=1``: a circle),
then over ``--samples`` latents moved by +alpha (each file's own alpha range, halved: the
evaluation's step):

* ``target``: the mean change of that reading the way asked for (scale, x in [0, 1] units; the
  hue's circular distance to red, shrinking counts positive; the circle probability);
* ``purity`` and ``side``: from the run's evaluation.json (the effect matrix: the target
  factor's share of the direction's total effect, and the sum of the other factors' changes);
* ``lap1``: the content change from evaluation.json (per unit step).

    .venv/bin/python bench/text_directions.py outputs/text-styleclip:0:scale+ outputs/text-interfacegan:0:scale+ ...

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

from directions import Directions  # noqa: E402
from generators.recorded import load_run_generator  # noqa: E402
from regressors.attributes import circular_distance, load_regressor  # noqa: E402

TARGETS = {"scale+": ("scale", 1.0), "x-": ("x", -1.0), "x+": ("x", 1.0), "y-": ("y", -1.0),
           "y+": ("y", 1.0), "hue->red": ("hue", 0.0), "shape=0": ("shape", 0), "shape=1": ("shape", 1),
           "shape=2": ("shape", 2)}


def reading(regressor, images: torch.Tensor, target: str) -> torch.Tensor:
    """The per-image reading the target asks to raise."""
    factor, how = TARGETS[target]
    out = regressor.predict(images)
    column = regressor.factor_names.index(factor)
    if factor == "shape":
        return out["probs"]["shape"][:, int(how)]
    if factor == "hue":
        return -circular_distance(out["values"][:, column], torch.zeros(len(images)))
    return how * out["values"][:, column]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="+", help="run_folder:direction_index:target (targets: "
                        f"{', '.join(TARGETS)})")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--regressor", default="shapes_regressor32.pt")
    args = parser.parse_args()
    regressor = load_regressor(args.regressor).eval()
    print("| run | direction | asks | target change | purity (target) | side effects | lap1 |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.rows:
        folder, index, target = spec.rsplit(":", 2)
        run, k = Path(folder), int(index)
        path = run / "directions.pt"
        directions = Directions.load(path)
        generator = load_run_generator(path, None)
        directions.check_generator(generator, source=str(path))
        alpha = directions.alpha_range()[0] / 2
        latents, classes = generator.draw(args.samples, torch.Generator().manual_seed(7))
        with torch.no_grad():
            before = reading(regressor, generator(latents, classes), target)
            after = reading(regressor, generator(directions.shift(latents, k, alpha), classes), target)
        report = json.loads((run / "evaluation.json").read_text())
        result = report["results"][report["label"]]
        effects = torch.tensor(result["effect_matrix"][k])
        column = result["factors"].index(TARGETS[target][0])
        purity = float(effects[column] / effects.sum().clamp_min(1e-12))
        side = float(effects.sum() - effects[column])
        config = directions.meta.get("config", {}).get("fit_free", {})
        name = (config.get("targets") or [None] * (k + 1))[k] if config.get("targets") else \
            (directions.meta.get("config", {}).get("prompts") or [None] * (k + 1))[k]
        label = f"{k}" + (f" ({name})" if name else "")
        print(f"| {run.name} | {label} | {target} | {float((after - before).mean()):+.3f} | "
              f"{purity:.2f} | {side:.3f} | {result['metrics'].get('lap1', float('nan')):.3f} |")


if __name__ == "__main__":
    main()

"""What the first evaluation of a run costs (a directions file and its two baselines, random and
coordinate, nothing cached), with the evaluation's settings variants side by side, on the CPU.

Variants (each the whole of ``metrics.evaluation.evaluate_sets``: effects, content, realism and
RCA, timed from the first draw to the last number):

* ``separate``: each set scored alone: the protocol before issue 30 (the same numbers as the
  old code: tests/test_evaluation_speed.py);
* ``default``: the three sets in one pass on shared draws (G(z) rendered once), every
  reconstructor ``steps`` batches: the shipped settings (the same numbers as ``separate``);
* ``early-stop``: and each reconstructor stops on its held-out validation accuracy
  (``rca.patience=3``; not a default: it moved the figures);
* ``half-size``: and the reconstructor reads the images at half their side
  (``rca.image_size``; not a default: it lowers RCA at 64 px).

Prints one markdown row per generator and variant: seconds (effects / RCA / total), the RCA
of each set and the batches each reconstructor trained.

    .venv/bin/python bench/evaluation_speed.py outputs/<run>/directions.pt [more files]
    .venv/bin/python bench/evaluation_speed.py <file> --variants separate default early-stop --seed 1
    .venv/bin/python bench/evaluation_speed.py <file> --quick          # a smoke run

The generator is the one the file's run recorded (config.yaml beside it); 1 thread unless
``--threads``. A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project is not installed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from common.runs import register_resolvers  # noqa: E402
from directions import Directions  # noqa: E402
from evaluation.run import baseline_directions, check_evaluation, load_evaluation_regressor  # noqa: E402
from generators.recorded import load_run_generator  # noqa: E402
from metrics.evaluation import evaluate_sets  # noqa: E402

VARIANTS = ("separate", "default", "early-stop", "half-size")
CONFIG = ROOT / "configs" / "evaluation" / "default.yaml"


def variant_settings(settings, variant: str, resolution: int):
    """The shipped settings changed to one variant's (``separate``, ``default``: as shipped)."""
    rca = settings.rca
    if variant == "early-stop":
        rca = replace(rca, patience=3, check_every=50)
    elif variant == "half-size":
        rca = replace(rca, image_size=resolution // 2)
    return replace(settings, rca=rca)


def time_variant(sets: dict, generator, regressor, settings, variant: str) -> dict:
    """Seconds and per-set RCA of one variant."""
    settings = variant_settings(settings, variant, generator.resolution)
    start = time.perf_counter()
    if variant == "separate":
        results, effects, rca = {}, 0.0, 0.0
        for name, directions in sets.items():
            scored = evaluate_sets({name: directions}, generator, regressor, settings, progress=False)
            results.update(scored["results"])
            effects += scored["seconds"]["effects"]
            rca += scored["seconds"]["rca"]
    else:
        scored = evaluate_sets(sets, generator, regressor, settings, progress=False)
        results, effects, rca = scored["results"], scored["seconds"]["effects"], scored["seconds"]["rca"]
    return {"seconds": (effects, rca, time.perf_counter() - start),
            "rca": {n: r["metrics"].get("rca") for n, r in results.items()},
            "batches": {n: r["metrics"].get("rca_steps") for n, r in results.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directions", nargs="+", help="directions files of runs (config.yaml beside)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=0, help="settings.seed and settings.rca.seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trusted-modules", nargs="*", default=None,
                        help="your own network's class a run's config names (as train.py's trusted_modules)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 64 samples, RCA 20 batches (checks every 5), 128 scored shifts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_resolvers()
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG), {"cache_dir": "unused",
                                                   "settings": {"seed": args.seed, "rca": {"seed": args.seed}}})
    if args.quick:
        cfg = OmegaConf.merge(cfg, {"settings": {"samples": 64, "fid": False, "rca": {
            "steps": 20, "check_every": 5, "eval_samples": 128, "val_samples": 64}}})
    shipped = check_evaluation(cfg)
    print("| generator | variant | seconds: effects / RCA / total | RCA: directions / random / coordinate "
          "| RCA batches |\n|---|---|---|---|---|")
    for file in args.directions:
        path = Path(file)
        recorded = Directions.load(path).meta.get("generator_source")
        generator = load_run_generator(path, None, True, recorded, torch.device("cpu"),
                                       trusted_modules=args.trusted_modules)
        directions = Directions.load(path, generator=generator)
        alpha_range, _ = directions.alpha_range()
        settings = shipped.resolve(alpha_range)
        regressor = load_evaluation_regressor(cfg, generator)
        sets = {"directions": directions}
        for name in ("random", "coordinate"):
            sets[name] = baseline_directions(name, directions, settings.seed, alpha_range)
        for variant in args.variants:
            row = time_variant(sets, generator, regressor, settings, variant)
            effects, rca, total = row["seconds"]
            scores = " / ".join(f"{row['rca'][n]:.3f}" for n in sets)
            batches = " / ".join(str(row["batches"][n]) for n in sets)
            print(f"| {generator.name} ({generator.resolution} px, {generator.space}) | {variant} "
                  f"| {effects:.0f} / {rca:.0f} / {total:.0f} | {scores} | {batches} |", flush=True)


if __name__ == "__main__":
    main()

"""Gather the evaluations of many runs into one markdown table (method x metric), baselines
included once per generator and direction count.

    python leaderboard.py                      # every outputs/*/evaluation.json
    python leaderboard.py outputs/a outputs/b --out results.md

Only evaluations made with the same settings are comparable: each distinct setting (samples,
step, RCA budget, regressor) gets its own table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metrics.report import markdown_table


def find_evaluations(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "evaluation.json":
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.glob("evaluation.json")) + sorted(p.glob("*/evaluation.json")))
    return sorted(set(found))


def generator_view(identity: dict) -> str:
    """The generator's name, with its space and truncation where they are not the defaults
    (z, psi 1): ``stylegan2_shapes32``, ``stylegan2_shapes32 w``, ``ffhq w+ psi 0.7``."""
    parts = [identity["name"]]
    if identity.get("space", "z") != "z":
        parts.append(identity["space"])
    truncation = identity.get("truncation") or {}
    if truncation.get("psi", 1.0) != 1.0:
        parts.append(f"psi {truncation['psi']:g}" + (f" to layer {truncation['cutoff']}"
                                                     if truncation.get("cutoff") is not None else ""))
    return " ".join(parts)


def layers_view(layers: list[int] | None) -> str:
    """`` layers 3-7`` for the W+ layers a report's directions and baselines move; "" for all."""
    if not layers:
        return ""
    run = layers == list(range(layers[0], layers[-1] + 1))
    return f" layers {layers[0]}-{layers[-1]}" if run and len(layers) > 1 else \
        " layers " + ",".join(map(str, layers))


def leaderboard(files: list[Path]) -> str:
    """One markdown table per distinct evaluation setting."""
    groups: dict[str, list[dict]] = {}
    for f in files:
        report = json.loads(f.read_text())
        key = json.dumps({"settings": report["settings"], "regressor": report["regressor"]["sha256"]},
                         sort_keys=True)
        groups.setdefault(key, []).append(report)
    sections = []
    for i, reports in enumerate(groups.values(), 1):
        rows, baselines = [], {}
        num_factors = None
        for r in sorted(reports, key=lambda r: (r["generator"]["name"], r["label"], r["run_name"])):
            gen = generator_view(r["generator"]) + layers_view(r.get("layers"))
            learned = r["results"][r["label"]]
            num_factors = learned.get("num_factors", num_factors)
            rows.append((f"{r['label']} ({r['run_name']}, {gen})", learned["metrics"]))
            # A baseline is shared by the runs on the same generator, identity whole, and the
            # same W+ layers: the Z and W views of one checkpoint (or two truncations, or two
            # layer ranges) have baselines of their own.
            identity = json.dumps([r["generator"], r.get("layers")], sort_keys=True)
            for name, result in r["results"].items():
                if name != r["label"]:
                    count = len(result["effect_matrix"])
                    baselines.setdefault((identity, name, count),
                                         (f"{name} baseline ({gen}, K={count})", result["metrics"]))
        rows += list(baselines.values())
        settings = reports[0]["settings"]
        head = (f"### Setting {i}: {settings['samples']} samples, step {settings['alpha']}, "
                f"RCA {settings['rca']['steps']} steps\n\n") if len(groups) > 1 else ""
        sections.append(head + markdown_table(rows, num_factors))
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["outputs"],
                        help="run folders, folders of runs, or evaluation.json files (default: outputs)")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    files = find_evaluations(args.paths)
    if not files:
        print(f"no evaluation.json under {' '.join(args.paths)}: evaluate runs first "
              "(python evaluate.py directions=outputs/<run>/directions.pt)", file=sys.stderr)
        return 2
    table = leaderboard(files)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

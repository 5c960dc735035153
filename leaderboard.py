"""Gather the evaluations of many runs into one markdown table (method x metric), baselines
included once per generator and direction count.

    python leaderboard.py                      # every outputs/*/evaluation.json
    python leaderboard.py outputs/a outputs/b --out results.md

Only evaluations made with the same settings are comparable: each distinct setting (samples,
step, RCA budget, regressor, and the effect matrix's units: factor spreads since report version
5, the factors' own units before) gets its own table.

A file that is not a readable evaluation (not JSON, bad UTF-8, nested too deeply, a key missing
or of the wrong type) is skipped with one line on stderr naming it and why; the others still
make the table (exit status 0). When no file is readable: one line, exit status 2. Text from
the files is escaped for markdown (``<``, ``>``, ``&``, ``|``, backslash; newlines: spaces);
a NaN or infinite metric reads ``nan`` / ``inf``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from metrics.report import COLUMNS, markdown_table, one_line, report_describes


class BadReport(UserError):
    """An evaluation.json the table cannot use; the message says why, in one line."""


@dataclass
class Entry:
    """A readable evaluation: the report, its setting (the table it joins) and the identity
    its baselines are shared under."""

    report: dict
    setting: str
    identity: str


def find_evaluations(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "evaluation.json":
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.glob("evaluation.json")) + sorted(p.glob("*/evaluation.json")))
    return sorted(set(found))


def _number(value: Any) -> bool:
    """A JSON number the table can format (NaN and inf included: they are shown as text);
    an integer too large for a float is not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (isinstance(value, float) or abs(value) <= sys.float_info.max)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What a field must hold: a check and its name in the message.
DICT = (lambda v: isinstance(v, dict), "an object")
LIST = (lambda v: isinstance(v, list), "a list")
TEXT = (lambda v: isinstance(v, str), "a string")
NUMBER = (_number, "a number")
INTEGER = (_integer, "an integer")


def _field(value: Any, keys: list[str], kind: tuple, optional: bool = False) -> Any:
    """``value[keys[0]][keys[1]]...``, checked to be of ``kind`` (``optional``: absent or
    null is allowed and read as None)."""
    for i, key in enumerate(keys):
        if not isinstance(value, dict):
            raise BadReport(f"{'.'.join(keys[:i])!r} is {type(value).__name__}, not an object")
        if key not in value:
            if optional:
                return None
            raise BadReport(f"missing key {'.'.join(keys[:i + 1])!r}")
        value = value[key]
    check, name = kind
    if (value is None and optional) or check(value):
        return value
    raise BadReport(f"{'.'.join(keys)!r} is {type(value).__name__}, not {name}")


def read_report(path: Path) -> Entry:
    """The evaluation in ``path``, with every field the table reads checked; ``BadReport``
    says what is wrong with a file that is not one."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise BadReport(f"unreadable ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise BadReport(f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text.strip():
        raise BadReport("empty file")
    try:
        report = json.loads(text)
    except RecursionError:
        raise BadReport("not valid JSON: nested too deeply") from None
    except ValueError as err:  # also integers of more than 4,300 digits
        raise BadReport(f"not valid JSON ({err})") from None
    if not isinstance(report, dict):
        raise BadReport(f"holds a JSON {type(report).__name__}, not an evaluation report (an object)")
    directions = path.parent / Path(str(report.get("directions", "directions.pt"))).name
    if directions.is_file() and not report_describes(report, directions):
        raise BadReport(f"it describes an earlier {directions.name} (the file changed since it "
                        "was evaluated): run evaluate.py on it again")
    for keys, kind in ((["settings", "samples"], INTEGER), (["settings", "alpha"], NUMBER),
                       (["settings", "rca", "steps"], INTEGER), (["regressor"], DICT),
                       (["generator", "name"], TEXT), (["label"], TEXT), (["run_name"], TEXT)):
        _field(report, keys, kind)
    _field(report, ["regressor", "sha256"], TEXT, optional=True)  # none without a regressor
    _field(report, ["generator", "space"], TEXT, optional=True)
    if _field(report, ["generator", "truncation"], DICT, optional=True):
        _field(report, ["generator", "truncation", "psi"], NUMBER, optional=True)
        _field(report, ["generator", "truncation", "cutoff"], INTEGER, optional=True)
    layers = _field(report, ["layers"], LIST, optional=True)
    if layers is not None and not all(map(_integer, layers)):
        raise BadReport("'layers' is not a list of integers")
    label = report["label"]
    if label not in _field(report, ["results"], DICT):
        raise BadReport(f"'results' has no entry for its label {label!r}")
    _field(report, ["results", label, "num_factors"], INTEGER, optional=True)
    for name in report["results"]:
        _field(report, ["results", name, "metrics"], DICT)
        for key, *_ in COLUMNS:
            _field(report, ["results", name, "metrics", key], NUMBER, optional=True)
        # a baseline's row names its direction count (no matrix without a regressor)
        _field(report, ["results", name, "effect_matrix"], LIST, optional=True)
    try:
        # effect-matrix figures in factor spreads (report version 5) and in the factors' own
        # units (before) do not compare: they make tables of their own
        units = "spreads" if "factor_spread" in report["results"][label] else "own units"
        return Entry(report, json.dumps({"settings": report["settings"],
                                         "regressor": report["regressor"].get("sha256"),
                                         "effect_units": units}, sort_keys=True),
                     json.dumps([report["generator"], layers], sort_keys=True))
    except RecursionError:  # within the parser's limit, too deep to write back
        raise BadReport("nested too deeply") from None


def read_reports(files: list[Path]) -> list[Entry]:
    """The readable evaluations among ``files``; each other file is one line on stderr."""
    entries = []
    for f in files:
        try:
            entries.append(read_report(f))
        except BadReport as err:
            print(one_line(f"leaderboard: skipping {f}: {err}"), file=sys.stderr)
    return entries


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
    # pairwise, not against a range(): a file's [0, 10**12] must not build a list that long
    run = all(b == a + 1 for a, b in zip(layers, layers[1:]))
    return f" layers {layers[0]}-{layers[-1]}" if run and len(layers) > 1 else \
        " layers " + ",".join(map(str, layers))


def leaderboard(files: list[Path]) -> str:
    """One markdown table per distinct evaluation setting; unreadable files are skipped with
    a line on stderr ("" when none is readable)."""
    return tables(read_reports(files))


def tables(entries: list[Entry]) -> str:
    """One markdown table per distinct evaluation setting of ``entries``."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.setting, []).append(entry)
    sections = []
    for i, group in enumerate(groups.values(), 1):
        rows, baselines = [], {}
        num_factors = None
        for entry in sorted(group, key=lambda e: (e.report["generator"]["name"], e.report["label"],
                                                  e.report["run_name"])):
            r = entry.report
            gen = generator_view(r["generator"]) + layers_view(r.get("layers"))
            learned = r["results"][r["label"]]
            num_factors = learned.get("num_factors", num_factors)
            rows.append((f"{r['label']} ({r['run_name']}, {gen})", learned["metrics"]))
            # A baseline is shared by the runs on the same generator, identity whole, and the
            # same W+ layers: the Z and W views of one checkpoint (or two truncations, or two
            # layer ranges) have baselines of their own.
            for name, result in r["results"].items():
                if name == r["label"]:
                    continue
                if result.get("effect_matrix") is not None:
                    count = len(result["effect_matrix"])
                    baselines.setdefault((entry.identity, name, count),
                                         (f"{name} baseline ({gen}, K={count})", result["metrics"]))
                else:  # evaluated without a regressor: K unknown, so the run's own baseline
                    baselines.setdefault((entry.identity, name, r["run_name"]),
                                         (f"{name} baseline ({gen}, of {r['run_name']})",
                                          result["metrics"]))
        rows += list(baselines.values())
        settings = group[0].report["settings"]
        units = json.loads(group[0].setting)["effect_units"]
        units = ("" if units == "spreads" else ", effects in the factors' own units (evaluated before "
                 "report version 5: evaluate again to compare)")
        head = (f"### Setting {i}: {settings['samples']} samples, step {settings['alpha']}, "
                f"RCA {settings['rca']['steps']} steps{units}\n\n") if len(groups) > 1 else ""
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
    entries = read_reports(files)
    if not entries:
        print(f"leaderboard: none of the {len(files)} evaluation.json file(s) is readable (see "
              "above): evaluate the runs again (python evaluate.py "
              "directions=outputs/<run>/directions.pt)", file=sys.stderr)
        return 2
    table = tables(entries)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docs/configuration.md against the configs (issue 29): every option path the page names exists
in a composition of the configs, the defaults its tables give are the configs' values, its
tables of choices (methods, generators, data, trainers, experiments) say which choice has which
option, every option of the configs is named on the page, the moved paths are refused with
their new path, and every command the page shows composes. Compose only: nothing is trained."""
from __future__ import annotations

import importlib.util
import re
import shlex
from functools import lru_cache

import pytest
import yaml
from conftest import CONFIGS, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.runs import moved_option, register_resolvers

DOC = ROOT / "docs" / "configuration.md"
GROUPS = ("method", "generator", "clip", "data", "trainer", "logger", "callbacks", "evaluation", "paths",
          "hydra")
SCRIPTS = {"train.py": "train", "evaluate.py": "evaluate", "edit.py": "edit",
           "explore.py": "explore"}
PATH = re.compile(r"(?:%s)(?:\.[A-Za-z_]\w*)+" % "|".join(GROUPS))
FILE_NAME = re.compile(r"\.(json|yaml|py|pt|png|md|ckpt|log|pkl|csv|txt|gif)$")
ABSENT = "—"
VOYNOV_ALL = ("voynov", "voynov_random", "voynov_id", "voynov_ortho")   # the column `voynov*`
COMMON = ("method.num_directions", "method.layers", "method.samples", "method.optimizer.lr",
          "trainer.max_steps", "data.batch_size")
_NOTHING = object()
_SKIP = object()
HAS_SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None

register_resolvers()  # ${parent_dir:...} and ${base_name:...} of the scripts' configs


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


# ---------------------------------------------------------------------------- the page

def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def parse_doc():
    """The page as (backticked mentions, table rows, commands), each mention and row with the
    section it sits in: ``group`` (a ``## `group` `` heading), ``script`` (a ``### `x.py` ``
    heading) and ``moved`` (the moved-paths section)."""
    mentions, rows, commands = [], [], []
    section = {"group": None, "script": None, "moved": False}
    header, in_code = None, False
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            if line.startswith("python "):
                commands.append(line)
            continue
        if line.startswith("## "):
            first = (_ticked(line) or [None])[0]
            section = {"group": first if first in (*GROUPS, "experiment", "cluster") else None,
                       "script": None, "moved": "Moved paths" in line}
        elif line.startswith("### "):
            first = (_ticked(line) or [None])[0]
            section = {**section, "script": SCRIPTS.get(first)}
        if line.startswith("|"):
            cells = _cells(line)
            if header is None:
                header = cells
            elif not all(set(c) <= set("-: ") for c in cells):
                rows.append({"section": dict(section), "header": header, "cells": cells})
        else:
            header = None
        for token in _ticked(line):
            mentions.append((dict(section), token))
    return mentions, rows, commands


MENTIONS, ROWS, COMMANDS = parse_doc()


def row_path(row) -> str | None:
    """The option a table row describes: its first cell, one backticked path."""
    first = row["cells"][0]
    ticked = _ticked(first)
    return ticked[0] if len(ticked) == 1 and first == f"`{ticked[0]}`" else None


def is_matrix(row) -> bool:
    """A table of choices: ``| Option | `choice` | `choice` | ...``."""
    head = row["header"]
    return head[0] == "Option" and len(head) > 1 and all(
        h.startswith("`") and h.endswith("`") for h in head[1:])


def is_option_table(row) -> bool:
    head = row["header"]
    return head[0] == "Option" and not is_matrix(row)


def value_column(row) -> int | None:
    for i, h in enumerate(row["header"]):
        if h == "Default" or h.startswith("Value"):
            return i
    return None


def moved_rows():
    return [r for r in ROWS if r["section"]["moved"] and r["header"][0] == "Old path"]


OLD_PATHS = {_ticked(r["cells"][0])[0] for r in moved_rows()}


def cell_value(cell: str):
    """The value a cell states, or _SKIP where it states none exactly (a note, a mark, a
    mapping): only exact values are compared."""
    text = cell.replace("`", "").strip()
    if text in ("", "✓", ABSENT):
        return _SKIP
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return _SKIP
    if isinstance(value, dict) or (isinstance(value, str) and " " in value):
        return _SKIP
    return value


def same(doc_value, config_value) -> bool:
    if doc_value == config_value:
        return True
    numbers = (int, float)
    if (isinstance(doc_value, numbers) and isinstance(config_value, numbers)
            and not isinstance(doc_value, bool) and not isinstance(config_value, bool)):
        return float(doc_value) == float(config_value)
    return False


# ---------------------------------------------------------------------------- the configs

@lru_cache(maxsize=None)
def composed(name: str, overrides: tuple[str, ...] = ()):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose(name, overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def script_cfg(script: str, directions: bool = True):
    """A script's composition (``directions``: given as x.pt, else left required as written)."""
    if script == "train":
        return composed(script, ("method=voynov",))
    return composed(script, ("directions=x.pt",) if directions else ())


def choice_overrides(group: str, choice: str) -> list[tuple[str, ...]]:
    """The train.py compositions a column of a table of choices stands for."""
    if group == "method":
        return [(f"method={m}",) for m in (VOYNOV_ALL if choice == "voynov*" else (choice,))]
    if group == "experiment":
        return [(f"experiment={choice}",)]
    return [("method=voynov", f"{group}={choice}")]


def train_compositions() -> list[tuple[str, ...]]:
    """Every method, every experiment, every choice of the other groups (with method=voynov)."""
    out = [(f"method={m}",) for m in choices("method")]
    out += [(f"experiment={e}",) for e in choices("experiment")]
    for group in ("generator", "data", "trainer", "logger", "callbacks", "cluster"):
        out += [("method=voynov", f"{group}={c}") for c in choices(group)]
    if HAS_SUBMITIT:
        out.append(("method=voynov", "hydra/launcher=slurm"))
    return out


def needs_submitit(path: str) -> bool:
    """hydra.launcher.* exists with hydra/launcher=slurm, which needs the optional plugin."""
    return path.startswith("hydra.launcher.") and not HAS_SUBMITIT


def exists(cfg, path: str) -> bool:
    """``path`` is an option of ``cfg`` (a null or required value counts: it exists)."""
    try:
        return OmegaConf.select(cfg, path, default=_NOTHING, throw_on_missing=True) is not _NOTHING
    except OmegaConfBaseException:
        # the node is there but its value cannot be computed here (??? or an interpolation)
        return raw(cfg, path) is not _NOTHING


def raw(cfg, path: str):
    """The value at ``path`` as written in the configs (interpolations unresolved)."""
    node = OmegaConf.to_container(cfg, resolve=False)
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return _NOTHING
        node = node[key]
    return node


def leaves(node, prefix: str) -> list[str]:
    if not isinstance(node, dict) or not node:
        return [prefix]
    return [leaf for key, value in node.items() for leaf in leaves(value, f"{prefix}.{key}")]


def where(path: str, script: str | None) -> list:
    """The compositions a path is looked up in: its script's, or train.py's."""
    if script and script != "train":
        return [script_cfg(script)] + [composed("train", o) for o in train_compositions()]
    return [composed("train", o) for o in train_compositions()]


# ---------------------------------------------------------------------------- tests

def test_the_page_names_options_tables_and_commands():
    assert len(MENTIONS) > 300 and len(ROWS) > 200 and len(COMMANDS) >= 15
    assert {"method.layers", "method.num_directions"} <= {t for _, t in MENTIONS}
    assert {r["section"]["script"] for r in ROWS} >= {"train", "edit", "evaluate", "explore"}


@pytest.mark.slow
def test_every_configuration_composes():
    """A config broken under the page (being edited) shows here first, with its message."""
    for overrides in train_compositions():
        composed("train", overrides)
    for script in ("edit", "evaluate", "explore"):
        script_cfg(script)


def test_every_option_path_named_exists():
    missing, choices_missing = [], []
    for section, token in MENTIONS:
        if section["moved"] or token in OLD_PATHS:
            continue
        key = token.split("=", 1)[0]
        if "=" in token and not PATH.fullmatch(key):
            # a group choice: configs/<group>/<choice>.yaml
            if (key in GROUPS or key in ("experiment", "cluster") or "/" in key) and \
                    re.fullmatch(r"\w+", token.split("=", 1)[1]):
                if not (CONFIGS / key / f"{token.split('=', 1)[1]}.yaml").is_file():
                    choices_missing.append(token)
            continue
        if not PATH.fullmatch(key) or FILE_NAME.search(key) or needs_submitit(key):
            continue
        if not any(exists(cfg, key) for cfg in where(key, section["script"])):
            missing.append(key)
    assert not missing, f"option paths on the page that no composition has: {sorted(set(missing))}"
    assert not choices_missing, f"group choices on the page with no config: {choices_missing}"


def test_option_tables_defaults_are_the_configs_values():
    """``| Option | Default | ...``: the option exists (in its script's config, for a script's
    table; else in a train.py composition) and, where the cell states a value exactly, some
    composition has that value."""
    wrong = []
    for row in filter(is_option_table, ROWS):
        path, column, script = row_path(row), value_column(row), row["section"]["script"]
        if path is None or row["section"]["moved"] or needs_submitit(path):
            continue
        cfgs = [script_cfg(script, directions=False)] if script else where(path, None)
        found = [cfg for cfg in cfgs if exists(cfg, path)]
        if not found:
            wrong.append(f"{path}: no such option" + (f" in {script}.yaml" if script else ""))
            continue
        if column is None:
            continue
        stated = cell_value(row["cells"][column])
        if stated is not _SKIP and not any(same(stated, raw(cfg, path)) for cfg in found):
            values = sorted({repr(raw(cfg, path)) for cfg in found})
            wrong.append(f"{path}: the page says {stated!r}, the configs {', '.join(values)}")
    assert not wrong, "\n".join(wrong)


def test_tables_of_choices_match_each_choice():
    """``| Option | `a` | `b` |``: a cell '—' is an option the choice lacks; any other cell one
    it has, with that value where the cell states one exactly."""
    wrong = []
    for row in filter(is_matrix, ROWS):
        group, path = row["section"]["group"], row_path(row)
        assert group and path, f"a table of choices outside a group's section: {row['cells']}"
        for head, cell in zip(row["header"][1:], row["cells"][1:]):
            for overrides in choice_overrides(group, head.strip("`")):
                cfg = composed("train", overrides)
                label = " ".join(overrides)
                if cell == ABSENT:
                    if exists(cfg, path):
                        wrong.append(f"{label}: has {path} (the page: —)")
                    continue
                if not exists(cfg, path):
                    wrong.append(f"{label}: has no {path} (the page: {cell})")
                    continue
                stated = cell_value(cell)
                if stated is not _SKIP and not same(stated, raw(cfg, path)):
                    wrong.append(f"{label}: {path} is {raw(cfg, path)!r} (the page: {cell})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("group", ["method", "generator", "data", "trainer", "experiment"])
def test_tables_of_choices_cover_every_choice(group):
    columns = set()
    for row in filter(is_matrix, ROWS):
        if row["section"]["group"] == group:
            for head in row["header"][1:]:
                overrides = choice_overrides(group, head.strip("`"))
                columns |= {o[-1].split("=", 1)[1] for o in overrides}
    assert columns == set(choices(group)), f"{group}: the page's columns {sorted(columns)}"


@pytest.mark.parametrize("path", COMMON)
def test_common_method_options_exist_where_the_page_says(path):
    """The page's table of methods says which method has method.num_directions, .layers,
    .samples, .optimizer.lr, trainer.max_steps, data.batch_size: each such method has it."""
    rows = [r for r in ROWS if is_matrix(r) and r["section"]["group"] == "method"
            and row_path(r) == path]
    assert len(rows) == 1, f"the table of methods has no row {path}"
    row = rows[0]
    has = [h.strip("`") for h, c in zip(row["header"][1:], row["cells"][1:]) if c != ABSENT]
    assert has
    for head in has:
        for overrides in choice_overrides("method", head):
            assert exists(composed("train", overrides), path), f"{overrides[0]}: no {path}"


def test_every_option_of_the_configs_is_on_the_page():
    """Completeness: each option of every train.py composition (the groups, not hydra) and each
    top-level option of a script is named on the page (_target_ and _partial_ may go unnamed)."""
    named = {t.split("=", 1)[0] for _, t in MENTIONS}
    unnamed = set()
    for overrides in train_compositions():
        container = OmegaConf.to_container(composed("train", overrides), resolve=False)
        for group in GROUPS:
            if group == "hydra" or not isinstance(container.get(group), dict):
                continue
            for leaf in leaves(container[group], group):
                if leaf.rsplit(".", 1)[-1] not in ("_target_", "_partial_") and leaf not in named:
                    unnamed.add(leaf)
    assert not unnamed, f"options missing from docs/configuration.md: {sorted(unnamed)}"
    for script in ("train", "edit", "evaluate", "explore"):
        listed = {row_path(r).split(".")[0] for r in ROWS
                  if r["section"]["script"] == script and row_path(r)}
        container = OmegaConf.to_container(script_cfg(script), resolve=False)
        own = [k for k in container if k not in (*GROUPS, "hydra")]
        assert not set(own) - listed, f"{script}.yaml options missing from its table: " \
                                      f"{sorted(set(own) - listed)}"


@pytest.mark.parametrize("row", moved_rows(), ids=lambda r: _ticked(r["cells"][0])[0])
def test_moved_paths_are_refused_with_their_new_path(row):
    old = _ticked(row["cells"][0])[0].replace("<option>", "num_directions")
    message = moved_option(old)
    assert message, f"{old} is not refused"
    new = [t.replace("<option>", "num_directions") for t in _ticked(row["cells"][1])]
    paths = [t for t in new if PATH.fullmatch(t)]
    if row["cells"][1].startswith("gone"):
        assert "is gone" in message and all(p in message for p in paths), message
    elif paths:
        assert f"it is {paths[0]} now" in message, message
        assert exists(composed("train", ("method=voynov",)), paths[0])
    assert not any(exists(composed("train", o), old) for o in train_compositions())


def _command_overrides(line: str) -> tuple[str, list[str]]:
    words = shlex.split(line, comments=True)
    assert words[0] == "python" and words[1] in SCRIPTS, line
    multirun = any(w in ("-m", "--multirun") for w in words)
    overrides, skip_next = [], False
    for word in words[2:]:
        if skip_next:
            skip_next = False
        elif word in ("--cfg", "-c", "--package", "-p"):
            skip_next = True
        elif not word.startswith("-"):
            key, _, value = word.partition("=")
            if multirun and "," in value and not value.startswith("["):
                value = value.split(",")[0]   # a sweep: its first job
            overrides.append(f"{key}={value}")
    return SCRIPTS[words[1]], overrides


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.split()[1] in SCRIPTS])
def test_every_command_on_the_page_composes(line):
    script, overrides = _command_overrides(line)
    if any(o.startswith("hydra/launcher=") for o in overrides) and not HAS_SUBMITIT:
        pytest.skip("hydra-submitit-launcher is not installed")
    for override in overrides:
        assert moved_option(override.lstrip("+~").split("=", 1)[0]) is None, override
    composed(script, tuple(overrides))

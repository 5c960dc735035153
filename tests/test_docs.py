"""The documents against the repository: README.md, every page of docs/ and the shipped weights'
READMEs. Every relative link and every repository path a page names in backticks exists (and
stays inside the repository); every command line of a code block that runs a script composes
its config the way the script's main() checks it before Hydra runs (common.runs.
check_command_line: the moved-path refusal included), leaderboard.py's through its own argument
parser; every `python -m` module, `python <file>.py` and `pip install '.[extra]'` a block names
exists; README.md stays a short guide. Fast: nothing is trained, loaded or written.

A failure names the document and line: ``README.md:52: python train.py ...: <what failed>``."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
from conftest import ROOT

from common.runs import check_command_line, register_resolvers

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "generators" / "weights" / "README.md", ROOT / "regressors" / "weights" / "README.md",
        ROOT / "clip_models" / "weights" / "README.md"]
README_MAX_LINES = 260
# docs/bad_inputs.md is generated from the bad-input suite: its commands are meant to be refused,
# and its paths are the suite's fixture folder ($PWD there), so only its links are checked.
GENERATED = {ROOT / "docs" / "bad_inputs.md"}

SCRIPTS = ("train", "evaluate", "edit", "explore", "leaderboard", "benchmark")
PYTHON = re.compile(r"^(?:\S*/)?python3?$")          # python, python3, .venv/bin/python
PATH_EXTENSIONS = (".py", ".yaml", ".pt", ".md", ".json")
# Where generator.path= and regressor names are looked up (generators.load_generator and
# regressors.attributes): a bare file name there is a shipped file.
WEIGHTS = (ROOT / "generators" / "weights", ROOT / "regressors" / "weights", ROOT / "clip_models" / "weights")
# Names of the files a run writes (in outputs/<run>/): file names, not repository paths.
WRITTEN = {"directions.pt", "metrics.json", "evaluation.json", "evaluation.md", "config.yaml",
           "generator.pt", "regressor.pt", "regressor_scores.json", "groundtruth.json", "clip.pt",
           "clip_scores.json"}
# Folders inside a run folder (outputs/<run>/...): what the pages list a run writes.
RUN_FOLDERS = {"checkpoints", "traversals", "edits", "reconstructions", "samples", "wandb"}
# Made by the install command, not shipped.
INSTALLED = {".venv"}
# Files of other projects the pages name (the converters and layouts of published checkpoints).
OTHER_PROJECTS = {"convert_weight.py", "legacy.py", "config.json", "biggan-deep-128-config.json"}
# Command lines a code block shows that cannot be composed here, each with why. None today: the
# pages' placeholders (<run>, <dir>) are read as plain names, Hydra's flags (-m, --cfg, --help)
# are left out, and a sweep composes its first job. A command that needs an optional plugin
# (hydra/launcher=slurm: pip install -e '.[slurm]') is passed over where the plugin is missing.
CANNOT_COMPOSE: dict[str, str] = {}

register_resolvers()  # ${parent_dir:...} and ${base_name:...} of evaluate/edit/explore.yaml


# ---------------------------------------------------------------------------- the pages

@dataclass(frozen=True)
class Line:
    doc: Path
    number: int
    text: str

    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.number}"


SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}


def parse(doc: Path) -> tuple[list[Line], list[Line]]:
    """(shell lines of the page's code blocks: fenced in a shell language or indented by four
    spaces, backslash continuations joined; prose lines, outside every code block)."""
    code, prose = [], []
    fence, language, previous_blank, indented = None, "", True, False
    pending: Line | None = None
    for number, text in enumerate(doc.read_text().splitlines(), 1):
        stripped = text.strip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence, language = stripped[:3], stripped[3:].strip().lower()
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            elif language in SHELL_LANGUAGES:
                pending = _add_code(code, pending, Line(doc, number, text))
            continue
        indented = text.startswith("    ") and bool(stripped) and (previous_blank or indented)
        if indented:
            pending = _add_code(code, pending, Line(doc, number, text))
        else:
            prose.append(Line(doc, number, text))
        previous_blank = not stripped
    return code, prose


def _add_code(code: list[Line], pending: Line | None, line: Line) -> Line | None:
    """Append a code line, joining it to the one before when that ended with a backslash."""
    if pending is not None:
        line = Line(pending.doc, pending.number, pending.text[:-1].rstrip() + " " + line.text.strip())
    if line.text.rstrip().endswith("\\"):
        return Line(line.doc, line.number, line.text.rstrip())
    code.append(line)
    return None


@lru_cache(maxsize=None)
def parsed(doc: Path) -> tuple[list[Line], list[Line]]:
    return parse(doc)


# ---------------------------------------------------------------------------- commands

@dataclass(frozen=True)
class Command:
    line: Line
    words: tuple[str, ...]          # from the interpreter on

    def __str__(self) -> str:
        return " ".join(self.words)


def commands(doc: Path) -> list[Command]:
    """Every command of the page's code blocks that runs python, one per `&&`- or `;`-separated
    part of a line (environment assignments and srun in front of it left out)."""
    found = []
    for line in parsed(doc)[0]:
        text = line.text.strip()
        if text.startswith("#"):
            continue
        for part in re.split(r"&&|;", text):
            try:
                words = shlex.split(_placeholders(part), comments=True)
            except ValueError:
                continue
            while words and (re.fullmatch(r"[A-Z_]+=\S*", words[0]) or words[0] in ("srun", "time")):
                words = words[1:]
            if words and PYTHON.match(words[0]):
                found.append(Command(line, tuple(words)))
    return found


def _placeholders(text: str) -> str:
    """``<run>``, ``<dir>``, ``<regressor.pt>``: a placeholder for the reader's own value
    (also a shell redirection as written): the name inside it, so the command parses."""
    return re.sub(r"<([\w.]+)>", r"\1", text)


def script_of(command: Command) -> str | None:
    words = command.words
    if len(words) > 1 and words[1].endswith(".py") and Path(words[1]).stem in SCRIPTS \
            and "/" not in words[1]:
        return Path(words[1]).stem
    return None


@lru_cache(maxsize=None)
def config_name(script: str) -> str:
    """The config a script's @hydra.main composes, read from the script."""
    match = re.search(r'config_name="(\w+)"', (ROOT / f"{script}.py").read_text())
    assert match, f"{script}.py names no config_name"
    return match.group(1)


def hydra_overrides(words: tuple[str, ...]) -> list[str]:
    """The overrides of a script's command line as one job composes them: Hydra's flags left
    out (-m / --multirun: a sweep's first value; --cfg / --package / --help: shown, not run),
    an elision (``...``) left out."""
    multirun = any(w in ("-m", "--multirun") for w in words)
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--info"):
            skip = word != "--info"
        elif word.startswith("-") or word == "...":
            continue
        else:
            key, sep, value = word.partition("=")
            if multirun and "," in value and not value.startswith(("[", "{", "'", '"')):
                value = value.split(",")[0]   # a sweep: its first job
            out.append(f"{key}{sep}{value}")
    return out


def check_script_command(command: Command) -> str | None:
    """What is wrong with a script's command line, or None."""
    script = script_of(command)
    args = list(command.words[2:])
    if script == "leaderboard":
        return _check_leaderboard(args)
    overrides = hydra_overrides(tuple(args))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cfg = check_command_line(config_name(script), overrides, script)
    except SystemExit as exit_:
        return f"refused (exit {exit_.code}): {err.getvalue().strip()}"
    except Exception as error:  # noqa: BLE001 - reported with the line it came from
        return f"{type(error).__name__}: {error}"
    if cfg is None:
        return "not composed (check_command_line left it to Hydra)"
    return None


def needs_missing_plugin(command: Command) -> bool:
    """hydra/launcher=slurm composes only with hydra-submitit-launcher installed."""
    return any(w.startswith("hydra/launcher=") for w in command.words) and not _has_submitit()


def _check_leaderboard(args: list[str]) -> str | None:
    """leaderboard.py's own parser reads the arguments; it then finds no evaluation (a stand-in
    for its search) and returns before writing anything."""
    spec = importlib.util.spec_from_file_location("leaderboard_doc", ROOT / "leaderboard.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    seen = []
    module.find_evaluations = lambda paths: seen.append(paths) or []
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            module.main(args)
    except SystemExit as exit_:
        return f"refused by its parser (exit {exit_.code}): {err.getvalue().strip()}"
    return None if seen else "its parser did not run"


@lru_cache(maxsize=None)
def _has_submitit() -> bool:
    return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None


def check_other_command(command: Command) -> str | None:
    """`python -m <module>`, `python <file>.py`: the module or the file exists."""
    words = command.words
    if len(words) > 2 and words[1] == "-m":
        module = words[2]
        top = module.split(".")[0]
        if (ROOT / top).is_dir() or (ROOT / f"{top}.py").is_file():
            path = ROOT / Path(*module.split("."))
            return None if path.with_suffix(".py").is_file() or (path / "__main__.py").is_file() \
                else f"no module {module} in the repository"
        return None if importlib.util.find_spec(top) else f"no module {module} installed"
    if len(words) > 1 and words[1].endswith(".py"):
        return None if (ROOT / words[1]).is_file() else f"no file {words[1]}"
    return None


@lru_cache(maxsize=None)
def _extras() -> set[str]:
    """The extras of pyproject.toml's [project.optional-dependencies] (read without tomllib,
    which Python 3.10 lacks)."""
    text = (ROOT / "pyproject.toml").read_text()
    table = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[)", text, re.M | re.S)
    return set(re.findall(r"^([\w-]+)\s*=", table.group(1), re.M)) if table else set()


def check_pip_extras(doc: Path) -> list[str]:
    """`pip install -e '.[extra]'`: every extra is one pyproject.toml defines."""
    wrong = []
    for line in parsed(doc)[0] + parsed(doc)[1]:
        for extras in re.findall(r"pip install -e '?\.\[([\w,]+)\]", line.text):
            for extra in extras.split(","):
                if extra not in _extras():
                    wrong.append(f"{line.where()}: no extra [{extra}] in pyproject.toml")
    return wrong


def override_paths(command: Command) -> list[str]:
    """Repository paths an override names (``ckpt_path=generators/weights/...``,
    ``hydra.searchpath=[file://examples/my_generator]``)."""
    found = []
    for word in command.words[2:]:
        value = word.partition("=")[2]
        for path in re.findall(r"(?:file://)?([\w.-]+/[\w./*-]+)", value):
            if _top_level(path.split("/")[0]):
                found.append(path)
    return found


# ---------------------------------------------------------------------------- paths and links

def _top_level(name: str) -> bool:
    """A top-level entry of the repository (outputs/ and the venv are made by runs and installs)."""
    return name not in ("outputs", *INSTALLED) and (ROOT / name).exists()


@lru_cache(maxsize=None)
def _file_names() -> frozenset[str]:
    """The names of the repository's files and folders (not the venv's, runs' or caches')."""
    skip = {".git", *INSTALLED, "outputs", "multirun", "wandb", "__pycache__", ".pytest_cache",
            ".ruff_cache"}
    names = set()
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in skip and not d.endswith(".egg-info")]
        names.update(subfolders, files)
    return frozenset(names)


def looks_like_path(token: str) -> bool:
    if any(c.isspace() for c in token) or any(c in token for c in "=(){}$@:<>,;|'\"`\\") \
            or "..." in token:
        return False   # a phrase, an override, a placeholder, an elision (eval/...)
    if token.startswith(("outputs/", "~", "/", "-", ".")) and not token.startswith((".venv/", "./")):
        return False   # a run's output, the user's own files, a flag
    return "/" in token or token.endswith(PATH_EXTENSIONS)


def check_path(token: str, doc: Path) -> str | None:
    """What is wrong with a path a page names, or None."""
    path = token.rstrip("/")
    first = path.split("/")[0]
    if first in INSTALLED or first in RUN_FOLDERS:
        return None   # made by the install command; inside a run folder (outputs/<run>/)
    if "/" not in path:
        if path in WRITTEN | OTHER_PROJECTS or path in _file_names() \
                or any((w / path).exists() for w in WEIGHTS):
            return None
        return f"`{token}`: no such file in the repository"
    outside = False
    for base in (ROOT, doc.parent):   # from the repository root, or from the page's folder
        target = (base / path).resolve()
        if not target.is_relative_to(ROOT):
            outside = True
        elif "*" in path and list(base.glob(path)) or "*" not in path and target.exists():
            return None
    return f"`{token}`: " + ("outside the repository" if outside else "no such path in the repository")


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _strip_code(text: str) -> str:
    return re.sub(r"`[^`]*`", "", text)


@lru_cache(maxsize=None)
def anchors(doc: Path) -> frozenset[str]:
    """GitHub's heading anchors of a page."""
    seen: dict[str, int] = {}
    out = set()
    fence = False
    for text in doc.read_text().splitlines():
        if text.strip().startswith("```"):
            fence = not fence
        if fence or not re.match(r"#{1,6} ", text):
            continue
        title = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", text.lstrip("#").strip())
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(out)


def check_link(target: str, doc: Path) -> str | None:
    if re.match(r"[a-z][a-z0-9+.-]*:", target):
        return None   # https:, mailto:
    path, _, anchor = target.partition("#")
    file = (doc.parent / path).resolve() if path else doc
    if not file.is_relative_to(ROOT):
        return f"({target}): outside the repository"
    if not file.exists():
        return f"({target}): no such file"
    if anchor and file.suffix == ".md" and anchor not in anchors(file):
        return f"({target}): {file.relative_to(ROOT)} has no heading #{anchor}"
    return None


def inline_code(line: Line) -> list[str]:
    return re.findall(r"`([^`]+)`", line.text)


# ---------------------------------------------------------------------------- tests

def _ids(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


@pytest.fixture
def in_root(monkeypatch):
    """Commands run from the repository root (hydra.searchpath=[file://examples/...])."""
    monkeypatch.chdir(ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOCS if d not in GENERATED], ids=_ids)
def test_every_command_works_as_written(doc, in_root):
    wrong = check_pip_extras(doc)
    for command in commands(doc):
        text = str(command)
        if text in CANNOT_COMPOSE or needs_missing_plugin(command):
            continue
        if script_of(command):
            problem = check_script_command(command)
            problems = [problem] if problem else []
            problems += [f"`{p}`: no such path" for p in override_paths(command)
                         if not (list(ROOT.glob(p)) if "*" in p else (ROOT / p).exists())]
        else:
            problem = check_other_command(command)
            problems = [problem] if problem else []
        wrong += [f"{command.line.where()}: {text}: {p}" for p in problems]
    assert not wrong, "\n" + "\n".join(wrong)


@pytest.mark.parametrize("doc", [d for d in DOCS if d not in GENERATED], ids=_ids)
def test_every_path_named_exists(doc):
    wrong = []
    for line in parsed(doc)[1]:
        for token in inline_code(line):
            if looks_like_path(token):
                problem = check_path(token, doc)
                if problem:
                    wrong.append(f"{line.where()}: {problem}")
    assert not wrong, "\n" + "\n".join(wrong)


@pytest.mark.parametrize("doc", DOCS, ids=_ids)
def test_every_link_leads_somewhere_in_the_repository(doc):
    wrong = []
    for line in parsed(doc)[1]:
        for target in LINK.findall(_strip_code(line.text)):
            problem = check_link(target, doc)
            if problem:
                wrong.append(f"{line.where()}: {problem}")
    assert not wrong, "\n" + "\n".join(wrong)


def test_the_pages_show_commands_and_paths():
    """The collectors find what the pages hold (an empty collection would pass everything)."""
    found = {d: commands(d) for d in DOCS}
    scripts = {script_of(c) for cs in found.values() for c in cs} - {None}
    assert scripts == set(SCRIPTS), scripts
    assert len(found[README]) >= 20
    paths = [t for d in DOCS for line in parsed(d)[1] for t in inline_code(line) if looks_like_path(t)]
    assert len(paths) >= 50


def test_readme_is_a_short_guide():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most " \
                                           f"{README_MAX_LINES}): move the detail into docs/"
    assert not re.search(r"\b[Ii]ssue \d+|#\d+\b", text), "README.md names an issue"


@pytest.mark.parametrize("doc", DOCS, ids=_ids)
def test_no_hand_kept_test_count(doc):
    """A count of tests goes stale with the next test: the pages give none."""
    counts = [f"{Line(doc, n, t).where()}: {m.group(0)}" for n, t in
              enumerate(doc.read_text().splitlines(), 1)
              for m in re.finditer(r"\b\d[\d,]* (?:tests|test cases)\b", t)]
    assert not counts, counts


def test_the_checks_catch_what_they_should(in_root):
    """Each check fails on a broken example: a moved option, an unknown choice, a missing path,
    a link out of the repository or to a missing heading."""
    def command(text: str) -> Command:
        return Command(Line(README, 0, text), tuple(shlex.split(text)))

    assert check_script_command(command("python train.py method=voynov")) is None
    assert "has moved" in check_script_command(command("python train.py method=voynov method.max_steps=5"))
    assert "nosuch" in (check_script_command(command("python train.py method=nosuch")) or "")
    assert "nosuch" in (check_script_command(command("python evaluate.py directions=x.pt nosuch=1"))
                        or "")
    assert check_script_command(command("python leaderboard.py outputs/ --out results.md")) is None
    assert "nosuch" in (check_script_command(command("python leaderboard.py --nosuch")) or "")
    assert check_other_command(command("python -m generators.nosuch")) is not None
    assert check_path("lightning_modules/nosuch.py", README) is not None
    assert "outside" in check_path("../shared/DESIGN.md", README)
    assert "outside" in check_link("../shared/DESIGN.md", README)
    assert "no heading" in check_link("docs/results.md#nosuch", README)
    assert check_link("docs/results.md#benchmarks", README) is None

"""Checks of the numbers a user gives, where they enter: finite, in range, of the right type.

Every script and constructor checks its options with these, so a mistake is one line that names
the option and the value as given (``alphas=[nan]: expected ...``), raised as a ``UserError``
(common/errors.py) before any work. Values
from Hydra (ListConfig, DictConfig) are read as plain Python.
"""
from __future__ import annotations

import math
import numbers as _numbers
from typing import Any, Callable, Sequence

from common.errors import UserError

_SHOWN = 80  # characters of a value shown in a message


def plain(value: Any) -> Any:
    """Plain Python containers for a value from Hydra (ListConfig / DictConfig)."""
    if type(value).__name__ in ("ListConfig", "DictConfig"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def show(value: Any) -> str:
    """The value as a message shows it (its repr, shortened)."""
    text = "null" if value is None else repr(plain(value))
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def is_real(value: Any) -> bool:
    """A real number (int or float; a bool is no number here)."""
    return isinstance(value, _numbers.Real) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    """An integer (a bool is none; nor is 3.0: counts and indices are given as integers)."""
    return isinstance(value, _numbers.Integral) and not isinstance(value, bool)


def describe_range(low: float | None = None, high: float | None = None, low_open: bool = False,
                   high_open: bool = False, integers: bool = False) -> str:
    """`` in [a, b]``, `` > a``, `` <= b`` ... (`` in a..b`` for ``integers``; "" without
    bounds)."""
    def fmt(v: float) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    if integers and low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{fmt(low)}, {fmt(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {fmt(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {fmt(high)}"
    return ""


def _in_range(value: float, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    if high is not None and (value >= high if high_open else value > high):
        return False
    return True


def _refuse(name: str, value: Any, what: str, hint: str | None) -> None:
    raise UserError(f"{name}={show(value)}: {what}" + (f"; {hint}" if hint else ""))


def number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, words: tuple[str, ...] = (),
           none: bool = False, what: str | None = None, hint: str | None = None) -> Any:
    """A finite number in the range (``low_open``/``high_open``: the bound itself excluded),
    returned as a float; or one of ``words`` (e.g. ``"auto"``) as given, or None with ``none``.

    Args:
        value: the option's value.
        name: the option as the user writes it (``evaluation.settings.alpha``).
        what: the expectation the message states (default: "expected a finite number ...").
        hint: how to fix it, after the expectation.
    """
    if (none and value is None) or (isinstance(value, str) and value in words):
        return value
    if not is_real(value) or not math.isfinite(value) or \
            not _in_range(value, low, high, low_open, high_open):
        _refuse(name, value, what or "expected " + _describe(
            "a finite number", low, high, low_open, high_open, words, none), hint)
    return float(value)


def integer(value: Any, name: str, *, low: int | None = None, high: int | None = None,
            words: tuple[str, ...] = (), none: bool = False, what: str | None = None,
            hint: str | None = None) -> Any:
    """An integer in ``low..high`` (inclusive), returned as an int; or one of ``words`` as given,
    or None with ``none``. Arguments as ``number``'s."""
    if (none and value is None) or (isinstance(value, str) and value in words):
        return value
    if not is_integer(value) or not _in_range(value, low, high, False, False):
        _refuse(name, value, what or "expected " + _describe(
            "an integer", low, high, False, False, words, none), hint)
    return int(value)


def numbers(value: Any, name: str, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, single: bool = True,
            empty: bool = True, what: str | None = None, hint: str | None = None) -> list[float]:
    """A list of finite numbers in the range (``single``: one number stands for a list of one;
    ``empty``: [] is accepted). The message names the first bad item."""
    expect = what or ("expected a list of " + _describe("finite numbers", low, high, low_open,
                                                         high_open)
                      + (" (or one number)" if single else ""))
    items = _items(value, single)
    if items is None or (not items and not empty):
        _refuse(name, value, expect, hint)
    for i, item in enumerate(items):
        if not is_real(item) or not math.isfinite(item) or \
                not _in_range(item, low, high, low_open, high_open):
            _refuse(name, value, expect + _which(value, i, item), hint)
    return [float(v) for v in items]


def integers(value: Any, name: str, *, low: int | None = None, high: int | None = None,
             single: bool = True, empty: bool = True, unique: bool = False,
             what: str | None = None, hint: str | None = None) -> list[int]:
    """A list of integers in ``low..high`` (``unique``: none twice); arguments as ``numbers``'."""
    expect = what or ("expected a list of " + _describe("integers", low, high, False, False)
                      + (" (or one integer)" if single else ""))
    items = _items(value, single)
    if items is None or (not items and not empty):
        _refuse(name, value, expect, hint)
    for i, item in enumerate(items):
        if not is_integer(item) or not _in_range(item, low, high, False, False):
            _refuse(name, value, expect + _which(value, i, item), hint)
    if unique and len(set(items)) != len(items):
        _refuse(name, value, f"{expect}, each once", hint)
    return [int(v) for v in items]


def _items(value: Any, single: bool) -> list | None:
    value = plain(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value] if single and not isinstance(value, dict) else None


def _which(value: Any, index: int, item: Any) -> str:
    """Which item of a list is wrong ("" for a single value)."""
    listed = isinstance(plain(value), (list, tuple))
    return f" (item {index} is {show(item)})" if listed and len(plain(value)) > 1 else ""


def _describe(kind: str, low, high, low_open: bool, high_open: bool, words: tuple[str, ...] = (),
              none: bool = False) -> str:
    text = kind + describe_range(low, high, low_open, high_open, integers="integer" in kind)
    alternatives = [*words] + (["null"] if none else [])
    return text + (f" (or {' or '.join(alternatives)})" if alternatives else "")


def target_numbers(target: Any) -> dict[str, tuple[type, bool]]:
    """The parameters of a config's ``_target_`` (a class's ``__init__`` or a function) that are
    annotated as a number: ``{name: (float or int, whether None is allowed)}``; {} where the
    target or its annotations cannot be read (instantiating it will say why)."""
    import inspect
    import types
    import typing

    try:
        from hydra.utils import get_object

        obj = get_object(str(target))
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # noqa: BLE001 - a bad _target_ is instantiate's to report
        return {}
    kinds: dict[str, tuple[type, bool]] = {}
    for name, hint in hints.items():
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        args = set(typing.get_args(hint)) if union else {hint}
        optional = type(None) in args
        args.discard(type(None))
        if args in ({float}, {int, float}):
            kinds[name] = (float, optional)
        elif args == {int}:
            kinds[name] = (int, optional)
    return kinds


def check_config_numbers(node: Any, where: str, rules: Sequence[tuple[str, Callable[[Any, str], Any]]]) -> None:
    """Walk a config (a DictConfig) and check every number in it, each named by its path
    (``where.key``):

    - a parameter of a node's ``_target_`` annotated ``float`` is a finite number, one annotated
      ``int`` an integer (None where the annotation allows it);
    - a key matching one of ``rules`` (a regular expression over the whole key, the first that
      matches) passes its check ``check(value, name)``;
    - every other float (alone or in a list) is finite.
    Keys starting with ``_`` (``_target_``, ``_partial_``) and missing values (``???``) are
    left to instantiate."""
    import re

    from omegaconf import DictConfig, ListConfig, OmegaConf

    compiled = [(re.compile(pattern), check) for pattern, check in rules]
    kinds = target_numbers(node.get("_target_")) if "_target_" in node else {}
    for key in node:
        key = str(key)
        if key.startswith("_") or OmegaConf.is_missing(node, key):
            continue
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - an interpolation that fails: instantiate reports it
            continue
        name = f"{where}.{key}"
        if isinstance(value, DictConfig):
            check_config_numbers(value, name, rules)
            continue
        if key in kinds and not isinstance(value, ListConfig):
            kind, optional = kinds[key]
            (number if kind is float else integer)(value, name, none=optional)
        rule = next((check for pattern, check in compiled if pattern.fullmatch(key)), None)
        if rule is not None:
            rule(value, name)
        items = list(value) if isinstance(value, ListConfig) else [value]
        for i, item in enumerate(items):
            if is_real(item) and not math.isfinite(item):
                _refuse(name, value, "expected a finite number" + _which(value, i, item),
                        None)

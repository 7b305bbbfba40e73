"""Dataclass fields as validated command-line options.

A field's metadata holds an `Option` (help text, allowed values, numeric
range). The same record validates a value on construction (`check_options`,
called from the dataclass's `__post_init__`) and makes the field's flag
(`add_options`), so a key's help, default, allowed values and range are
written once. Plain Python: no torch, so a command line rejects bad input
before loading it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

OPTION = "fpstab.option"  # the metadata key


@dataclass(frozen=True)
class Option:
    """How a dataclass field is checked and offered as a flag.

    choices: allowed values (None means "unset" where the field is Optional);
    low / high: numeric bounds (low_open: low itself excluded);
    parse: argparse type, where the annotation alone does not say (e.g. str | int);
    default_text: the default as
    --help shows it, where the field's default is a placeholder;
    checked_by: who validates the field instead of `check_options` (shown to
    readers of the code; the dataclass's __post_init__ does it).
    """

    help: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    parse: Callable[[str], Any] | None = None
    default_text: str | None = None
    checked_by: str | None = None


def option(help: str, **kw: Any) -> dict[str, Option]:
    """Field metadata: `field(default=..., metadata=option("what it is", low=1))`."""
    return {OPTION: Option(help, **kw)}


def options_of(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Option, Any]]:
    """(field, its Option, its resolved type hint) for every field of `cls` that has an Option."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if OPTION in f.metadata:
            yield f, f.metadata[OPTION], hints[f.name]


def sequence_fields(cls: type) -> tuple[str, ...]:
    """The Option fields of `cls` whose value is a tuple (a list in JSON, TOML and on the command line)."""
    return tuple(f.name for f, _, hint in options_of(cls) if typing.get_origin(_strip_none(hint)[0]) is tuple)


def _strip_none(hint: Any) -> tuple[Any, bool]:
    """(hint without None, whether None is allowed)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = tuple(a for a in args if a is not type(None))
        return (rest[0] if len(rest) == 1 else hint), len(rest) < len(args)
    return hint, False


# ---- validation ---------------------------------------------------------------------------
def check_options(obj: Any) -> None:
    """Check every Option field of the dataclass instance `obj`; ValueError names key, value and what is allowed."""
    for f, opt, hint in options_of(type(obj)):
        if opt.checked_by is None:
            check_value(f.name, getattr(obj, f.name), opt, hint)


def check_value(key: str, value: Any, opt: Option, hint: Any) -> None:
    base, optional = _strip_none(hint)
    if value is None and optional:
        return
    if opt.choices is not None:
        check_choice(key, value, opt.choices)
    elif base is int:
        check_int(key, value, low=opt.low, high=opt.high)
    elif base is float:
        check_float(key, value, low=opt.low, high=opt.high, low_open=opt.low_open)
    elif base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}={value!r} must be true or false")
    elif base is str and (not isinstance(value, str) or not value):
        raise ValueError(f"{key}={value!r} must be a non-empty string")


def check_choice(key: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {list(allowed)}")


def check_int(key: str, value: Any, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise ValueError(f"{key}={value!r} must be an int" + (f" >= {low:g}" if low is not None else ""))
    if high is not None and value > high:
        raise ValueError(f"{key}={value!r} must be <= {high:g}")


def check_float(key: str, value: Any, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key}={value!r} must be a finite number")
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{key}={value!r} must be {bound}" + (f" and <= {high}" if high is not None else ""))
    if high is not None and value > high:
        raise ValueError(f"{key}={value!r} must be <= {high}")


# ---- flags --------------------------------------------------------------------------------
def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                exclude: tuple[str, ...] = (), note: Callable[[str], str] = lambda name: "") -> None:
    """One flag per Option field of `cls` (not in `exclude`), dest = the field name, default None
    (so a caller can tell a given flag from an absent one); --help shows what the field is, its
    allowed values or range, its default and `note(name)` (e.g. what presets set it to)."""
    for f, opt, hint in options_of(cls):
        if f.name in exclude:
            continue
        kw = _argparse_kwargs(f.name.upper(), opt, hint)
        extra = note(f.name)
        kw["help"] = (f"{opt.help} ({_allowed_text(opt, hint)}default: {_default_text(f, opt)}"
                      f"{'; ' + extra if extra else ''})").replace("%", "%%")
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, **kw)


def _argparse_kwargs(metavar: str, opt: Option, hint: Any) -> dict[str, Any]:
    base, _ = _strip_none(hint)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if opt.parse is not None:
        return {"type": opt.parse, "metavar": metavar}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": args[0], "nargs": "*", "metavar": metavar}
    if origin is tuple:
        return {"type": args[0], "nargs": len(args), "metavar": metavar}
    kw: dict[str, Any] = {"type": base, "metavar": metavar}
    if opt.choices is not None:
        kw["choices"] = [c for c in opt.choices if c is not None]
    return kw


def _allowed_text(opt: Option, hint: Any) -> str:
    if opt.choices is not None:
        return "one of " + " | ".join(str(c) for c in opt.choices if c is not None) + "; "
    base, _ = _strip_none(hint)
    if opt.low is None and opt.high is None:
        return ""
    kind = {int: "int", float: "number"}.get(base, "value")
    low = "" if opt.low is None else f" {'>' if opt.low_open else '>='} {opt.low:g}"
    high = "" if opt.high is None else f"{',' if low else ''} <= {opt.high:g}"
    return f"{kind}{low}{high}; "


def _default_text(f: dataclasses.Field[Any], opt: Option) -> str:
    if opt.default_text is not None:
        return opt.default_text
    value = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)

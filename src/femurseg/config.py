"""Frozen-dataclass configuration to and from JSON, with validation.

Every configuration in femurseg (network, preprocessing, training, phantom options) is a frozen dataclass with
defaults.  :func:`to_dict` and :func:`from_dict` convert them to and from plain JSON-able dictionaries; unknown
keys and wrong types are refused with an actionable :class:`femurseg.errors.InputError` rather than ignored.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from femurseg.errors import InputError

T = TypeVar("T")


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-able dictionary of a (possibly nested) dataclass instance; tuples become lists."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(obj).__name__}")
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """An instance of dataclass ``cls`` from ``data``; missing keys take their defaults.

    Raises
    ------
    InputError
        On an unknown key or a value of the wrong type, naming the key.
    """
    if not isinstance(data, dict):
        raise InputError(f"{where or cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(f"{where or cls.__name__}: {err}") from None


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except InputError as err:
                errors.append(str(err))
        raise InputError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where=key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, key) for v in value)
        if len(args) != len(value):
            raise InputError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value))
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{key}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def save_json(obj: Any, path: str | Path) -> Path:
    """Write a dataclass (or a plain dict) as indented JSON, atomically (:mod:`femurseg.atomic`)."""
    from femurseg.atomic import write_text

    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """The parsed content of a JSON file; InputError (one line) when it is missing or unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable JSON file ({err})") from None


def load_json(cls: type[T], path: str | Path) -> T:
    """Read a dataclass from a JSON file, with :func:`from_dict`'s validation."""
    return from_dict(cls, read_json(path), where=Path(path).name)

"""TOML tables <-> typed dataclasses: one validator over dataclass fields, and the TOML writer.

``build_config(cls, table, ...)`` checks every key of a table against ``cls``'s fields and every value
against the field's annotation (``check_value``), then lets the dataclass's own ``__post_init__``
validate; a problem is a ``SettingsError`` naming the file, the table and the key. Used by
``orchestration.config.settings`` for every table of ``streamtune.toml``.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class SettingsError(ValueError):
    """A settings file or environment variable that cannot be read; the message names the file (or the
    variable), the table and the key."""


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file as a dict.

    Raises:
        SettingsError: a syntax error, naming the file and the position.
    """
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc


def build_config(cls: type[T], table: Mapping[str, Any], file: str, section: str, also_known: tuple = ()) -> T:
    """Build the dataclass ``cls`` from one TOML table, every value checked against its field's annotation.

    Args:
        table: key -> value as ``tomllib`` read it (nested tables are dicts).
        file: where the table came from, for messages (a path).
        section: dotted table name for messages (``train``, ``sources.redis``).
        also_known: keys another dataclass reads from the same table (listed as known in the message).

    Raises:
        SettingsError: an unknown key, a missing required key, a value of the wrong type (``check_value``)
            or a ``TypeError``/``ValueError`` from the dataclass itself (its ``__post_init__`` checks).
    """
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(names))
    if unknown:
        known = sorted([*names, *also_known])
        raise SettingsError(f"{file}: [{section}] unknown key(s) {unknown}; known: {known}")
    missing = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.name not in table and f.default is dataclasses.MISSING
        if f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SettingsError(f"{file}: [{section}] needs {missing}")
    kwargs = {k: check_value(v, hints[k], file, f"{section}.{k}") for k, v in table.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc) if str(exc).startswith(f"[{section}]") else f"[{section}] {exc}"
        raise SettingsError(f"{file}: {message}") from exc


def check_value(value: Any, tp: Any, file: str, key: str) -> Any:
    """``value`` checked against the annotation ``tp``; lists become the annotated tuple/list type.

    Handles ``int`` (bool is not an int), ``float`` (ints accepted and kept as they are), ``bool``,
    ``str``, ``X | None``, unions, ``Literal[...]``, ``tuple[X, ...]``, ``list[X]``, ``dict[K, V]``,
    ``Any`` and nested dataclasses (TOML sub-tables; an empty one is None where None is allowed).

    Args:
        key: dotted ``table.key`` (or a top-level ``key``) for the message.

    Raises:
        SettingsError: the value does not fit, naming ``file``, the table and the key.
    """
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (value == {} and any(map(dataclasses.is_dataclass, args)))):
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and dataclasses.is_dataclass(options[0]):  # the sub-table's own message
            return check_value(value, options[0], file, key)
        for arg in options:
            try:
                return check_value(value, arg, file, key)
            except SettingsError:
                continue
    elif origin is Literal:
        if value in args:
            return value
    elif tp in (tuple, list, dict) or origin in (tuple, list, dict):
        return _check_container(value, origin or tp, args, file, key)
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return build_config(tp, value, file, key)
    elif _is_instance(value, tp):
        return value
    raise SettingsError(f"{_where(file, key)}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _check_container(value: Any, kind: type, args: tuple, file: str, key: str) -> Any:
    if kind is dict and isinstance(value, dict):
        kt, vt = args or (Any, Any)
        return {check_value(k, kt, file, key): check_value(v, vt, file, f"{key}.{k}") for k, v in value.items()}
    if kind in (tuple, list) and isinstance(value, (list, tuple)):
        if kind is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            if len(args) != len(value):
                raise SettingsError(f"{_where(file, key)}: expected {len(args)} items, got {value!r}")
            return tuple(check_value(v, a, file, key) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        return kind(check_value(v, item, file, key) for v in value)
    raise SettingsError(f"{_where(file, key)}: expected a {kind.__name__}, got {value!r} ({type(value).__name__})")


def _is_instance(value: Any, tp: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(tp, type) and isinstance(value, tp)


def _where(file: str, key: str) -> str:
    section, _, name = key.rpartition(".")
    return f"{file}: [{section}] {name}" if section else f"{file}: {name}"


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return f"one of {list(get_args(tp))}"
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def toml_lines(table: Mapping[str, Any], name: str) -> list[str]:
    """``table`` as TOML lines: its scalars, then each sub-table under ``[name.key]`` (recursively)."""
    lines = [f"\n[{name}]"] if name else []
    lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict))
    for key, sub in table.items():
        if isinstance(sub, dict):
            lines.extend(toml_lines(sub, f"{name}.{key}" if name else key))
    return lines


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

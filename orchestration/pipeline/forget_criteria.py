"""Step 0 of a deletion request (``orchestration.pipeline.forget``): read ``--where "<field> = <value>"``
and ``--id`` into ``Criterion`` equalities on known fields. ``--where`` is parsed, not interpolated: the
field must be a known column (``record_id`` or the configured id field, ``window_key``, the text field) or
a metadata key present in the warehouse; the value is always a bound parameter."""

from __future__ import annotations

import re

from orchestration.config.settings import Settings
from orchestration.store.erasure import Criterion
from orchestration.store.warehouse import Warehouse

_WHERE = re.compile(
    r"""^\s*(?P<field>[A-Za-z_][A-Za-z0-9_\-]{0,63})\s*(?:=|==)\s*"""
    r"""(?:'(?P<sq>(?:[^'\\]|\\.)*)'|"(?P<dq>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s'"=]+))\s*$""",
    re.DOTALL,
)


class ForgetError(ValueError):
    """A deletion request that cannot be carried out as given (bad --where, unknown field, no home)."""


class EmptyValueError(ForgetError):
    """A ``--where`` or ``--id`` value that is empty or only whitespace (it would match nothing useful, or
    everything blank); refused before the warehouse is opened."""


def check_values(wheres: list[str], ids: list[str]) -> None:
    """Refuse a deletion request with an empty or whitespace-only value, before anything is read or written.

    Raises:
        ForgetError: a malformed ``--where`` (``parse_where``).
        EmptyValueError: a ``--where`` value or an ``--id`` that is empty or whitespace only.
    """
    for i in ids:
        if not str(i).strip():
            raise EmptyValueError(f"--id {i!r} is empty: a record id must have a non-blank value")
    for expr in wheres:
        name, value = parse_where(expr)
        if not value.strip():
            raise EmptyValueError(f"--where {expr!r}: the value of {name!r} is empty; give a non-blank value")


def parse_where(expr: str) -> tuple[str, str]:
    """``'<field> = <value>'`` -> ``(field, value)``. The value may be bare (no spaces or quotes) or in
    single/double quotes (backslash escapes the quote). Anything else is rejected.

    Raises:
        ForgetError: not of that form (e.g. ``OR``, ``;``, a second condition).
    """
    m = _WHERE.match(expr or "")
    if not m:
        raise ForgetError(
            f"cannot read --where {expr!r}: expected <field> = <value>, e.g. \"package = 'pkg3'\" "
            "(one equality; quote values with spaces)"
        )
    raw = next(v for v in (m.group("sq"), m.group("dq"), m.group("bare")) if v is not None)
    value = re.sub(r"\\(.)", r"\1", raw, flags=re.DOTALL)
    return m.group("field"), value


def resolve_criteria(wh: Warehouse, settings: Settings, wheres: list[str], ids: list[str]) -> list[Criterion]:
    """Turn ``--where`` expressions and ``--id`` values into criteria against known fields.

    Raises:
        EmptyValueError: an empty or whitespace-only value (``check_values``).
        ForgetError: a field that is neither a column nor a metadata key seen in the warehouse.
    """
    check_values(wheres, ids)
    out = [Criterion(settings.id_field, "record_id", settings.id_field, str(i)) for i in ids]
    if not wheres:
        return out
    keys = wh.metadata_keys()
    for expr in wheres:
        name, value = parse_where(expr)
        if name in ("record_id", settings.id_field):
            out.append(Criterion(name, "record_id", settings.id_field, value))
        elif name in ("window_key", "window"):
            out.append(Criterion(name, "window_key", "window_key", value))
        elif name in (settings.text_field, "text"):
            out.append(Criterion(name, "text", settings.text_field, value))
        elif name in keys:
            out.append(Criterion(name, "metadata", name, value))
        else:
            known = sorted({"record_id", settings.id_field, "window_key", settings.text_field} | keys)
            raise ForgetError(f"unknown field {name!r} in --where: known fields are {known}")
    return out

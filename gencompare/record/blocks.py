"""Typed dataclass blocks read from and written to JSON: the machinery of
:mod:`gencompare.record.schema` (a block checks each value against its type hint and
writes back exactly the keys its producer wrote)."""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from gencompare.errors import GencompareError

class RecordError(GencompareError):
    """A record file that does not match the schema (wrong type, missing key, bad JSON)."""


class _Block:
    """Base of the schema dataclasses: typed ``from_dict`` and a ``to_dict`` that writes
    exactly the keys the producer wrote (optional fields left as None are omitted;
    required fields are always written, None included)."""

    @staticmethod
    def matches(data: Mapping[str, Any]) -> bool:  # noqa: ARG004
        """Whether ``data`` has this block's shape (blocks that share a key override it)."""
        return True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and _has_default(f):
                continue
            out[f.name] = _dump(value)
        out.update(getattr(self, "extra", {}) or {})
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = ""):
        where = where or cls.__name__
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            if f.name not in data:
                if not _has_default(f):
                    raise RecordError(f"{where}: missing {f.name!r}")
                continue
            kwargs[f.name] = _load(data[f.name], hints[f.name], f"{where}.{f.name}")
        if "extra" in known:
            kwargs["extra"] = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING  # type: ignore[misc]


def _dump(value: Any) -> Any:
    if isinstance(value, _Block):
        return value.to_dict()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _load(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type ``hint`` and build nested blocks."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        blocks = [o for o in options if isinstance(o, type) and issubclass(o, _Block)]
        if blocks and isinstance(value, Mapping):
            for b in blocks:
                if b.matches(value):  # type: ignore[attr-defined]
                    return b.from_dict(value, where)
            raise RecordError(f"{where}: an object of none of the known shapes ({', '.join(b.__name__ for b in blocks)})")
        errors = []
        for o in options:
            if o is type(None):
                continue
            try:
                return _load(value, o, where)
            except RecordError as exc:
                errors.append(exc)
        raise errors[0] if errors else RecordError(f"{where}: unexpected {value!r}")
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, _Block):
        return hint.from_dict(value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_load(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RecordError(f"{where}: expected an object, got {type(value).__name__}")
        _, item = typing.get_args(hint) or (str, Any)
        return {str(k): _load(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(f"{where}: expected a number, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise RecordError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise RecordError(f"{where}: expected true/false, got {value!r}")
        return value
    return value

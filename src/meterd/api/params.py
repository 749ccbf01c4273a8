"""Decode request params into typed msgspec structs, failing with Stripe's messages.

Request structs are the schema: field types, ``Meta`` lengths and ``Literal`` enums say what
is allowed, ``forbid_unknown_fields`` rejects what is not. msgspec's validation message is
translated into the error Stripe gives for the same mistake, naming the param in bracket form.
v1 form values are all strings, so they are converted with ``strict=False`` ("10" -> 10,
"true" -> True); v2 JSON bodies keep their JSON types and are converted strictly.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from msgspec import inspect

from meterd.api.forms import param_name
from meterd.errors import (
    InvalidRequestError,
    empty_param,
    invalid_enum,
    missing_param,
    unknown_param,
)

T = TypeVar("T")

_MESSAGE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_QUOTED = re.compile(r"`([^`]*)`")
_KIND_NAMES = {
    "int": "integer",
    "bool": "boolean",
    "str": "string",
    "object": "hash",
    "array": "array",
    "float": "number",
    "int | object": "integer",
    "str | object": "hash",
    "object | str": "hash",
}


def parse_params(data: Any, into: type[T], *, from_form: bool) -> T:
    """Convert decoded params into ``into``; raise :class:`InvalidRequestError` on any mismatch."""
    try:
        return msgspec.convert(data, into, strict=not from_form)
    except msgspec.ValidationError as exc:
        raise _translate(str(exc), data, into) from None


def _translate(message: str, data: Any, into: type[Any]) -> InvalidRequestError:
    match = _MESSAGE.match(message)
    assert match is not None
    what = match["what"]
    path = _resolve_keys(_parse_path(match["path"] or ""), data, what)
    name = param_name(path)
    if what.startswith("Object missing required field"):
        field = _field_named(what)
        if field is not None:
            return missing_param(param_name([*path, field]))
    if "Object contains unknown field" in message:
        found = _first_unknown(data, inspect.type_info(into), [])
        if found is not None:
            return unknown_param(param_name(found))
    if what.startswith("Object "):
        return InvalidRequestError(f"Invalid request parameters: {what[:200]}", param=name or None)
    if not path:
        return InvalidRequestError("Invalid request: the parameters must be a hash (an object).")
    value = _value_at(data, path)
    if value == "":
        return empty_param(name)
    if what.startswith("Invalid enum value") and (choices := _choices_at(into, path)):
        return invalid_enum(name, choices)
    if what.startswith("Expected `str` of length <="):
        limit = what.rsplit(" ", 1)[-1]
        shown = str(value)[:20] + ("..." if len(str(value)) > 20 else "")
        return InvalidRequestError(
            f"Invalid string: {shown}; must be at most {limit} characters", param=name
        )
    if what.startswith("Expected `") and ", got `" in what:
        expected, got = _QUOTED.findall(what)[:2]
        kind = _KIND_NAMES.get(expected, expected)
        if isinstance(value, dict | list):
            return InvalidRequestError(
                f"Invalid {kind}: {name} was given as {_a(_KIND_NAMES.get(got, got))}", param=name
            )
        return InvalidRequestError(f"Invalid {kind}: {_shown(value)}", param=name)
    return InvalidRequestError(f"Invalid {name}: {what[0].lower()}{what[1:]}", param=name)


def _field_named(what: str) -> str | None:
    """The field msgspec quotes (a struct's field names hold no backtick)."""
    field = _QUOTED.search(what)
    return field[1] if field else None


def _first_unknown(data: Any, info: Any, path: list[str | int]) -> list[str | int] | None:
    """The path of the first key sent that the structs do not have, read from the data itself:
    msgspec's message quotes the key, and a key holding a backtick would garble it."""
    info = _unwrap(info)
    if isinstance(info, inspect.UnionType):
        info = next((t for t in info.types if isinstance(t, inspect.StructType)), None)
    if isinstance(info, inspect.StructType) and isinstance(data, dict):
        fields = {f.encode_name: f.type for f in info.fields}
        for key, value in data.items():
            if key not in fields:
                return [*path, key]
            found = _first_unknown(value, fields[key], [*path, key])
            if found is not None:
                return found
    elif isinstance(info, inspect.ListType) and isinstance(data, list):
        for index, item in enumerate(data):
            found = _first_unknown(item, info.item_type, [*path, index])
            if found is not None:
                return found
    return None


_DICT_KEY = "..."
"""What msgspec writes for a key of a dict (``$.payload[...]``): it does not say which."""


def _parse_path(text: str) -> list[str | int]:
    path: list[str | int] = []
    for key, index in _PATH_PART.findall(text):
        if key:
            path.append(key)
        else:
            path.append(_DICT_KEY if index == _DICT_KEY else int(index))
    return path


def _resolve_keys(path: list[str | int], data: Any, what: str) -> list[str | int]:
    """Name the dict key msgspec left out: the first entry the error describes."""
    resolved: list[str | int] = []
    for part in path:
        if part == _DICT_KEY:
            node = _value_at(data, resolved)
            if not isinstance(node, dict) or not node:
                break
            part = next((k for k, v in node.items() if _fails(v, what)), next(iter(node)))
        resolved.append(part)
    return resolved


def _fails(value: Any, what: str) -> bool:
    if what.startswith("Expected `str` of length <="):
        return isinstance(value, str) and len(value) > int(what.rsplit(" ", 1)[-1])
    if what.startswith("Expected `str` of length >="):
        return isinstance(value, str) and len(value) < int(what.rsplit(" ", 1)[-1])
    if ", got `" in what:
        got = _QUOTED.findall(what)[-1]
        return bool(_KIND_OF.get(type(value), "") == got)
    return False


_KIND_OF = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    dict: "object",
    list: "array",
    type(None): "null",
}


def _value_at(data: Any, path: list[str | int]) -> Any:
    for part in path:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _choices_at(into: type[Any], path: list[str | int]) -> tuple[str, ...]:
    """The ``Literal`` values allowed at ``path`` in the struct type ``into``."""
    info: Any = inspect.type_info(into)
    for part in path:
        info = _unwrap(info)
        if isinstance(info, inspect.StructType) and isinstance(part, str):
            info = next(f.type for f in info.fields if f.encode_name == part)
        elif isinstance(info, inspect.ListType | inspect.DictType):
            info = info.item_type if isinstance(info, inspect.ListType) else info.value_type
    info = _unwrap(info)
    members = info.types if isinstance(info, inspect.UnionType) else (info,)
    choices: list[str] = []
    for member in members:
        if isinstance(member, inspect.LiteralType):
            choices.extend(str(v) for v in member.values)
        elif isinstance(member, inspect.EnumType):
            choices.extend(str(m.value) for m in member.cls)
    return tuple(choices)


def _unwrap(info: Any) -> Any:
    if isinstance(info, inspect.UnionType):
        useful = [t for t in info.types if not isinstance(t, inspect.NoneType)]
        if len(useful) == 1:
            return useful[0]
    return info


def _shown(value: Any) -> str:
    text = msgspec.json.encode(value).decode() if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:40] + "..."


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"

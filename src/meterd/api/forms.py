"""Stripe's v1 bracket encoding: ``a[b][c]=x``, ``a[0]=x``, ``a[]=x``, in bodies and queries.

The decoded value is a tree of ``dict``, ``list`` and ``str`` leaves; types (integers,
booleans) are decided later by the request struct, exactly as Stripe's server does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from meterd.errors import InvalidRequestError

MAX_PARAMS = 1000
MAX_DEPTH = 8

FormValue = dict[str, Any] | list[Any] | str


def param_name(path: list[str | int]) -> str:
    """Stripe's ``param`` name for a path: ``["tiers", 0, "up_to"]`` -> ``tiers[0][up_to]``."""
    if not path:
        return ""
    head, *rest = path
    return str(head) + "".join(f"[{part}]" for part in rest)


def split_key(key: str) -> list[str]:
    """``a[b][]`` -> ``["a", "b", ""]``; raises on unbalanced or stray brackets."""
    bracket = key.find("[")
    if bracket == -1:
        if "]" in key or not key:
            raise _bad_name(key)
        return [key]
    head = key[:bracket]
    if not head or "]" in head:
        raise _bad_name(key)
    parts = [head]
    rest = key[bracket:]
    while rest:
        if not rest.startswith("["):
            raise _bad_name(key)
        close = rest.find("]")
        if close == -1:
            raise _bad_name(key)
        part = rest[1:close]
        if "[" in part:
            raise _bad_name(key)
        parts.append(part)
        rest = rest[close + 1 :]
    return parts


def decode_form(raw: bytes | str) -> dict[str, Any]:
    """Decode a form body or query string into Stripe's nested params."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        pairs = _pairs(text)
    except UnicodeDecodeError:
        raise InvalidRequestError("Invalid request: the body is not valid UTF-8.") from None
    root: dict[str, Any] = {}
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise InvalidRequestError("Invalid request: parameters may not contain NUL bytes.")
        parts = split_key(key)
        if len(parts) > MAX_DEPTH:
            raise InvalidRequestError(
                f"Invalid parameter {key}: nested more than {MAX_DEPTH} levels deep.",
                param=parts[0],
            )
        _assign(root, parts, value)
    # The top level is always a hash, even when every name is a number (``0=x``).
    return {key: _lists_from_index_maps(value) for key, value in root.items()}


def _pairs(text: str) -> list[tuple[str, str]]:
    """``urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")``, faster.

    Meter events arrive thousands of times a second, mostly with nothing to unescape, so
    unescaping is skipped for the fields that need none.
    """
    if text.count("&") >= MAX_PARAMS:
        raise InvalidRequestError(
            f"Too many parameters: at most {MAX_PARAMS} are accepted in one request."
        )
    pairs = []
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in name or "+" in name:
            name = unquote(name.replace("+", " "), errors="strict")
        if "%" in value or "+" in value:
            value = unquote(value.replace("+", " "), errors="strict")
        pairs.append((name, value))
    return pairs


class _Appended(dict[str, Any]):
    """A dict built from ``a[]=`` keys, which always becomes a list."""


def _assign(node: dict[str, Any], parts: list[str], value: str) -> None:
    path: list[str | int] = []
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if part == "":
            if not isinstance(node, _Appended):
                raise _conflict(path)
            part = str(len(node))
            if not last and parts[depth + 1] != "":
                # ``a[][k]=v``: each new key starts a new element unless the open one lacks it.
                open_index = len(node) - 1
                open_element = node.get(str(open_index))
                if (
                    isinstance(open_element, dict)
                    and not isinstance(open_element, _Appended)
                    and parts[depth + 1] not in open_element
                ):
                    part = str(open_index)
        path.append(part)
        if last:
            existing = node.get(part)
            if isinstance(existing, dict):
                raise _conflict(path)
            node[part] = value
            return
        child = node.get(part)
        if child is None:
            child = _Appended() if parts[depth + 1] == "" else {}
            node[part] = child
        elif not isinstance(child, dict) or (
            isinstance(child, _Appended) != (parts[depth + 1] == "")
        ):
            raise _conflict(path)
        node = child


def _lists_from_index_maps(value: Any) -> FormValue:
    if not isinstance(value, dict):
        return value  # type: ignore[no-any-return]
    converted = {
        k: _lists_from_index_maps(v) if isinstance(v, dict) else v for k, v in value.items()
    }
    if isinstance(value, _Appended) or (converted and all(_is_index(k) for k in converted)):
        indexes = sorted(converted, key=_index_order)
        return [converted[i] for i in indexes]
    return converted


def _is_index(key: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts ``"²"`` and other scripts' digits."""
    return key.isascii() and key.isdigit()


def _index_order(key: str) -> tuple[int, str]:
    """Numeric order without ``int()``, which refuses strings of more than 4300 digits."""
    digits = key.lstrip("0")
    return len(digits), digits


def _bad_name(key: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid parameter name: {key!r}.", param=key or None)


def _conflict(path: list[str | int]) -> InvalidRequestError:
    name = param_name(path)
    return InvalidRequestError(
        f"Invalid {name}: it was given both as a value and as a hash or array.", param=name
    )

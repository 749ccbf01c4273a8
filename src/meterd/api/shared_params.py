"""Params several v1 resources share: ``expand``, no params at all, ``created`` ranges."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from meterd.errors import InvalidRequestError
from meterd.storage import CreatedBounds


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    """For endpoints that take no params (a DELETE): anything sent is unknown."""


class ExpandParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The one param every v1 object endpoint takes; resources extend it with their own."""

    expand: list[str] = []


def given(value: Any) -> Any:
    """A param's value, or None when it was not sent (typed loosely: mypy would join a union
    of param types, such as ``dict[str, str] | str``, into one it cannot pass on)."""
    return None if value is UNSET else value


class CreatedRange(msgspec.Struct, forbid_unknown_fields=True):
    gt: int | UnsetType = UNSET
    gte: int | UnsetType = UNSET
    lt: int | UnsetType = UNSET
    lte: int | UnsetType = UNSET


CreatedParam = int | CreatedRange
"""``created=T`` (exactly T) or ``created[gt]=T`` and friends."""


def created_bounds(created: CreatedParam | UnsetType) -> CreatedBounds:
    """The filter as inclusive bounds (timestamps are whole seconds)."""
    if created is UNSET:
        return CreatedBounds()
    if isinstance(created, int):
        return CreatedBounds(low=_clamped(created), high=_clamped(created))
    lows = [created.gte] if created.gte is not UNSET else []
    if created.gt is not UNSET:
        lows.append(created.gt + 1)
    highs = [created.lte] if created.lte is not UNSET else []
    if created.lt is not UNSET:
        highs.append(created.lt - 1)
    low, high = max(lows, default=None), min(highs, default=None)
    return CreatedBounds(
        low=None if low is None else _clamped(low), high=None if high is None else _clamped(high)
    )


def _clamped(timestamp: int) -> int:
    """Within a signed 64-bit integer, what both databases compare against (a bound past it
    keeps its meaning: nothing is older or newer)."""
    return max(-(2**63), min(2**63 - 1, timestamp))


def expansions(expand: list[str], allowed: Collection[str], *, in_list: bool = False) -> set[str]:
    """The fields to expand; a list expands ``data.<field>``. Anything else is a 400."""
    wanted = set()
    for path in expand:
        field = path.removeprefix("data.") if in_list else path
        if (in_list and not path.startswith("data.")) or field not in allowed:
            raise InvalidRequestError(f"This property cannot be expanded ({path}).", param="expand")
        wanted.add(field)
    return wanted

"""Filters shared by v1 lists: ``created`` (a timestamp or a range) and ``expand``."""

from __future__ import annotations

from collections.abc import Collection

import msgspec
from msgspec import UNSET, UnsetType

from meterd.errors import InvalidRequestError
from meterd.storage import CreatedBounds


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
        return CreatedBounds(low=created, high=created)
    lows = [created.gte] if created.gte is not UNSET else []
    if created.gt is not UNSET:
        lows.append(created.gt + 1)
    highs = [created.lte] if created.lte is not UNSET else []
    if created.lt is not UNSET:
        highs.append(created.lt - 1)
    return CreatedBounds(low=max(lows, default=None), high=min(highs, default=None))


def expansions(expand: list[str], allowed: Collection[str], *, in_list: bool = False) -> set[str]:
    """The fields to expand; a list expands ``data.<field>``. Anything else is a 400."""
    wanted = set()
    for path in expand:
        field = path.removeprefix("data.") if in_list else path
        if (in_list and not path.startswith("data.")) or field not in allowed:
            raise InvalidRequestError(f"This property cannot be expanded ({path}).", param="expand")
        wanted.add(field)
    return wanted

"""Cursor pagination: ``limit`` 1..100, ``starting_after`` xor ``ending_before``, list objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from meterd.errors import InvalidRequestError, no_such
from meterd.storage import CursorNotFound, Page, PageRequest

T = TypeVar("T")

MAX_LIMIT = 100


class ListParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The params every v1 list accepts; list endpoints extend it with their filters."""

    limit: int = 10
    starting_after: str | UnsetType = UNSET
    ending_before: str | UnsetType = UNSET
    expand: list[str] = []

    def page_request(self) -> PageRequest:
        if self.limit < 1:
            raise InvalidRequestError(
                "This value must be greater than or equal to 1.", param="limit"
            )
        if self.limit > MAX_LIMIT:
            raise InvalidRequestError(
                f"This value must be less than or equal to {MAX_LIMIT}.", param="limit"
            )
        if self.starting_after is not UNSET and self.ending_before is not UNSET:
            raise InvalidRequestError(
                "You may only specify one of these parameters: ending_before, starting_after.",
                code="parameters_exclusive",
            )
        return PageRequest(
            limit=self.limit,
            starting_after=self.starting_after or None,
            ending_before=self.ending_before or None,
        )


def cursor_missing(kind: str, error: CursorNotFound) -> InvalidRequestError:
    return no_such(kind, error.object_id, param=error.param)


def list_object(page: Page[T], url: str, render: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [render(item) for item in page.items],
        "has_more": page.has_more,
        "url": url,
    }

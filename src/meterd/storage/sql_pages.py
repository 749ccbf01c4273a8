"""Keyset pagination over a table's ``seq``, the order every v1 list uses (newest first)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from meterd.scope import Scope
from meterd.storage.base import CursorNotFound, Page, PageRequest

T = TypeVar("T")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What shared SQL needs of a connection: sqlite3's, or PostgreSQL's behind
    :class:`meterd.storage.postgres.PgConnection` (which takes the same ``?`` placeholders)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...


def keyset_page(
    conn: Connection,
    table: str,
    columns: str,
    where: str,
    args: list[Any],
    scope: Scope,
    page: PageRequest,
) -> list[Any]:
    """One page newest first by ``seq``, with one extra row to tell ``has_more``."""
    order = "DESC"
    for param, cursor_id, op in (
        ("starting_after", page.starting_after, "<"),
        ("ending_before", page.ending_before, ">"),
    ):
        if cursor_id is None:
            continue
        row = conn.execute(
            f"SELECT seq FROM {table} WHERE id = ? AND account_id = ? AND livemode = ?",
            (cursor_id, scope.account_id, scope.livemode),
        ).fetchone()
        if row is None:
            raise CursorNotFound(param, cursor_id)
        where += f" AND seq {op} ?"
        args.append(row[0])
        if op == ">":
            order = "ASC"
    sql = f"SELECT {columns} FROM {table} WHERE {where} ORDER BY seq {order} LIMIT ?"
    return conn.execute(sql, [*args, page.limit + 1]).fetchall()


def page_of(rows: list[Any], page: PageRequest, read: Callable[[Any], T]) -> Page[T]:
    """The page :func:`keyset_page`'s rows make: the extra row only tells ``has_more``."""
    items = [read(row) for row in rows[: page.limit]]
    if page.ending_before is not None:
        items.reverse()
    return Page(items=items, has_more=len(rows) > page.limit)

"""Pick the store for a database URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from meterd.storage.base import Store


class UnsupportedDatabase(ValueError):
    """The URL names a database this build of meterd cannot use."""


class DatabaseUnavailable(Exception):
    """The database the URL names cannot be reached (the message never shows a password)."""


def redacted(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def sqlite_path(url: str) -> str:
    """``sqlite:///meterd.db`` -> ``meterd.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise UnsupportedDatabase(
            f"not a SQLite URL: {url!r} (use sqlite:///relative.db or sqlite:////absolute.db)"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise UnsupportedDatabase(f"the SQLite URL {url!r} names no file")
    return path


async def open_store(url: str, *, index_identifiers: bool = True) -> Store:
    """Open (and migrate) the store ``url`` names. ``index_identifiers=False``: another process
    writes this SQLite file's events, so this store needs no index of their identifiers."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from meterd.storage.sqlite import SQLiteStore

        return await SQLiteStore.open(sqlite_path(url), index_identifiers=index_identifiers)
    if scheme in ("postgresql", "postgres"):
        from meterd.storage.postgres import PostgresStore

        return await PostgresStore.open(url)
    raise UnsupportedDatabase(
        f"unknown database URL scheme {scheme!r}: meterd takes sqlite:/// and postgresql:// URLs"
    )

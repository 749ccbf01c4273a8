"""The database a benchmark runs on: a temporary SQLite file, or a fresh PostgreSQL schema."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import psycopg


@contextlib.contextmanager
def bench_database(postgres: str | None, folder: str, name: str) -> Iterator[str]:
    """``sqlite:///<folder>/<name>.db``, or with a postgresql:// URL a new schema in that
    database (``meterd_bench_<random>``), dropped afterwards."""
    if not postgres:
        yield f"sqlite:///{folder}/{name}.db"
        return
    if not postgres.startswith(("postgresql:", "postgres:")):
        raise SystemExit(f"not a postgresql:// URL: {postgres!r}")
    schema = f"meterd_bench_{secrets.token_hex(4)}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        separator = "&" if "?" in postgres else "?"
        yield f"{postgres}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())

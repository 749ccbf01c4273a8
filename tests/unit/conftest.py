"""Fixtures the unit tests share: a SQLite store on a fresh file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterd.storage.sqlite import SQLiteStore


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    return tmp_path / "meterd.db"


@pytest.fixture
def sqlite_store(sqlite_db: Path) -> Iterator[SQLiteStore]:
    opened = asyncio.run(SQLiteStore.open(str(sqlite_db)))
    yield opened
    asyncio.run(opened.close())

"""Which constraint a failed write broke, whichever database raised it."""

from __future__ import annotations

import sqlite3
from typing import Literal

import psycopg.errors

Violation = Literal["unique", "foreign_key"]


def violation(exc: BaseException) -> Violation | None:
    """``"unique"`` or ``"foreign_key"`` for a constraint error of SQLite or PostgreSQL."""
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return "unique"
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        return "foreign_key"
    if isinstance(exc, sqlite3.IntegrityError):
        message = str(exc)
        if message.startswith("UNIQUE"):
            return "unique"
        if message.startswith("FOREIGN KEY"):
            return "foreign_key"
    return None


INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.errors.IntegrityError)

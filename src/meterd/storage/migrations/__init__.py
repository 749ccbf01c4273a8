"""Versioned schema migrations: ``NNNN_name.sql`` files, one schema for every database.

Each file is written in the SQL that SQLite and PostgreSQL share; the few types they spell
differently are placeholders filled in per dialect.
"""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

DIALECT_TYPES = {
    "sqlite": {"@SERIAL_PK@": "INTEGER PRIMARY KEY", "@BLOB@": "BLOB"},
    "postgresql": {
        "@SERIAL_PK@": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "@BLOB@": "BYTEA",
    },
}


class Migration(NamedTuple):
    version: int
    name: str
    statements: list[str]


def load(dialect: str) -> list[Migration]:
    """Every migration in version order, its statements rendered for ``dialect``."""
    migrations = []
    for entry in resources.files(__package__).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        version, _, name = entry.name.removesuffix(".sql").partition("_")
        sql = entry.read_text(encoding="utf-8")
        for token, spelled in DIALECT_TYPES[dialect].items():
            sql = sql.replace(token, spelled)
        lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
        statements = [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
        migrations.append(Migration(int(version), name, statements))
    return sorted(migrations)

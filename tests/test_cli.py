"""The real ``meterd`` command in a subprocess: keys, database URLs, help texts, serve."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperGroup

from meterd import cli
from meterd.cli import app
from meterd.storage.sqlite import SQLiteStore
from tests.conftest import start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
KEY = re.compile(r"^sk_(test|live)_[0-9A-Za-z]{48}$")
ACCOUNT = re.compile(r"acct_[0-9A-Za-z]{16}")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def meterd(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m meterd`` as a user would, with no terminal and no inherited settings."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "METERD_DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "meterd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**base, **(env or {})},
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr
    return result


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/x.db"


def create_key(tmp_path: Path, url: str, *args: str) -> str:
    return last_line(ok(meterd("keys", "create", *args, "--database", url, cwd=tmp_path)))


# keys ---------------------------------------------------------------------------------------


def test_keys_create_prints_a_test_key_last(tmp_path: Path, url: str) -> None:
    result = ok(meterd("keys", "create", "--database", url, cwd=tmp_path))
    secret = last_line(result)
    assert secret.startswith("sk_test_")
    assert KEY.match(secret), secret
    assert secret not in result.stderr  # the chatter goes to stderr, the key alone to stdout
    assert Path(url.removeprefix("sqlite:///")).exists()
    assert not (tmp_path / "meterd.db").exists()


def test_keys_create_live(tmp_path: Path, url: str) -> None:
    secret = create_key(tmp_path, url, "--mode", "live")
    assert secret.startswith("sk_live_") and KEY.match(secret), secret


def test_keys_create_rejects_an_unknown_mode(tmp_path: Path, url: str) -> None:
    result = meterd("keys", "create", "--mode", "prod", "--database", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "sk_" not in result.stdout


def test_keys_list_shows_mode_time_and_last_four_but_never_the_key(
    tmp_path: Path, url: str
) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    test_key = create_key(tmp_path, url)
    live_key = create_key(tmp_path, url, "--mode", "live")
    after = dt.datetime.now(dt.UTC)

    output = ok(meterd("keys", "list", "--database", url, cwd=tmp_path)).stdout

    assert f"sk_test_...{test_key[-4:]}" in output
    assert f"sk_live_...{live_key[-4:]}" in output
    for secret in (test_key, live_key):
        assert secret not in output
        assert secret[8:] not in output
        assert secret[8:20] not in output
    rows = [line for line in output.splitlines() if "sk_test_" in line or "sk_live_" in line]
    assert len(rows) == 2
    modes = {"test" if "sk_test_" in row else "live": row for row in rows}
    assert re.search(r"\btest\b", modes["test"].replace("sk_test_", ""))
    assert re.search(r"\blive\b", modes["live"].replace("sk_live_", ""))
    for row in rows:
        stamps = TIMESTAMP.findall(row)
        assert len(stamps) == 1, row
        created = dt.datetime.strptime(stamps[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
        assert before <= created <= after
    assert len(set(ACCOUNT.findall(output))) == 1  # both keys belong to the first account


def test_keys_create_new_account(tmp_path: Path, url: str) -> None:
    first = create_key(tmp_path, url)
    same = create_key(tmp_path, url)
    other = create_key(tmp_path, url, "--new-account")

    output = ok(meterd("keys", "list", "--database", url, cwd=tmp_path)).stdout
    accounts: dict[str, str] = {}
    for secret in (first, same, other):
        [row] = [line for line in output.splitlines() if f"...{secret[-4:]}" in line]
        [accounts[secret]] = ACCOUNT.findall(row)
    assert accounts[first] == accounts[same]
    assert accounts[other] != accounts[first]
    assert len(set(ACCOUNT.findall(output))) == 2


def test_keys_list_on_an_empty_database(tmp_path: Path, url: str) -> None:
    result = ok(meterd("keys", "list", "--database", url, cwd=tmp_path))
    assert "sk_" not in result.stdout


def test_database_url_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "from-env.db"
    env = {"METERD_DATABASE_URL": f"sqlite:///{path}"}
    secret = last_line(ok(meterd("keys", "create", cwd=tmp_path, env=env)))
    assert KEY.match(secret)
    assert path.exists()
    assert not (tmp_path / "meterd.db").exists()

    listed = ok(meterd("keys", "list", cwd=tmp_path, env=env)).stdout
    assert f"...{secret[-4:]}" in listed
    explicit = ok(meterd("keys", "list", "--database", f"sqlite:///{path}", cwd=tmp_path)).stdout
    assert f"...{secret[-4:]}" in explicit


def test_relative_sqlite_url_is_relative_to_the_working_directory(tmp_path: Path) -> None:
    create_key(tmp_path, "sqlite:///relative.db")
    assert (tmp_path / "relative.db").exists()


@pytest.mark.parametrize(
    "command", [("keys", "create"), ("keys", "list"), ("serve", "--port", "1")]
)
@pytest.mark.parametrize(
    ("database", "message"),
    [
        ("postgresql://meterd:secret@localhost/meterd", "PostgreSQL"),
        ("mysql://localhost/meterd", "unknown database URL scheme"),
    ],
)
def test_unsupported_database_urls_fail_cleanly(
    tmp_path: Path, command: tuple[str, ...], database: str, message: str
) -> None:
    result = meterd(*command, "--database", database, cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert message in result.stderr
    assert "sk_" not in output
    assert list(tmp_path.iterdir()) == []


# help texts ---------------------------------------------------------------------------------


def command_paths() -> list[tuple[tuple[str, ...], bool]]:
    """Every command in the tree and whether it is a group, found by walking the click groups
    Typer builds (the root is ``()``)."""
    found: list[tuple[tuple[str, ...], bool]] = []

    def walk(path: tuple[str, ...], command: object) -> None:
        found.append((path, isinstance(command, TyperGroup)))
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                walk((*path, name), sub)

    walk((), typer.main.get_command(app))
    return found


COMMANDS = command_paths()
LEAVES = [path for path, is_group in COMMANDS if not is_group]
GROUPS = [path for path, is_group in COMMANDS if is_group]


def test_the_command_tree_is_what_the_readme_documents() -> None:
    assert sorted(LEAVES) == [
        ("drop-events",),
        ("keys", "create"),
        ("keys", "list"),
        ("keys", "revoke"),
        ("keys", "rotate"),
        ("rebuild-rollups",),
        ("serve",),
        ("usage",),
    ]


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_command_has_help_with_an_example(tmp_path: Path, path: tuple[str, ...]) -> None:
    result = ok(meterd(*path, "--help", cwd=tmp_path, env={"COLUMNS": "200"}))
    assert "Example" in result.stdout, f"`meterd {' '.join(path)} --help` shows no example"
    assert f"meterd {' '.join(path)} " in result.stdout, "the example should run this command"
    assert "[bold]" not in result.stdout  # rich markup is rendered, not shown
    assert list(tmp_path.iterdir()) == []  # --help opens no database


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: " ".join(p) or "meterd")
def test_every_group_has_help_listing_its_commands(tmp_path: Path, path: tuple[str, ...]) -> None:
    result = ok(meterd(*path, "--help", cwd=tmp_path, env={"COLUMNS": "200"}))
    children = {
        p[len(path)] for p in LEAVES + GROUPS if len(p) > len(path) and p[: len(path)] == path
    }
    assert children
    for name in children:
        assert re.search(rf"\b{name}\b", result.stdout), f"{name} missing from {path} --help"
    assert "Example: meterd" in result.stdout, f"`meterd {' '.join(path)} --help` shows no example"


def test_readme_mentions_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [f"meterd {' '.join(path)}" for path in LEAVES]
    missing = [name for name in missing if name not in readme]
    assert not missing, f"README.md does not document these commands: {', '.join(missing)}"


# serve --------------------------------------------------------------------------------------


def test_serve_prints_a_key_once_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/served.db"

    first = start_server(url)
    try:
        assert KEY.match(first.secret_key) and first.secret_key.startswith("sk_test_")
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=10) == 0
        assert first.process.stdout is not None
        rest = first.process.stdout.read()
        assert "sk_test_" not in rest and "Traceback" not in rest, rest
    finally:
        if first.process.poll() is None:
            stop_server(first)
    assert not (tmp_path / "served.db-wal").exists(), "the database was not closed on SIGTERM"

    listed = ok(meterd("keys", "list", "--database", url, cwd=tmp_path)).stdout
    assert f"sk_test_...{first.secret_key[-4:]}" in listed
    assert first.secret_key not in listed

    second = start_server(url)
    try:
        assert second.secret_key == ""
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(timeout=10) == 0
        assert second.process.stdout is not None
        rest = second.process.stdout.read()
        assert "sk_test_" not in rest and "Traceback" not in rest, rest
    finally:
        if second.process.poll() is None:
            stop_server(second)
    listed = ok(meterd("keys", "list", "--database", url, cwd=tmp_path)).stdout
    assert len(set(ACCOUNT.findall(listed))) == 1  # the second start made no new account


# drop-events --------------------------------------------------------------------------------


def test_drop_events_needs_postgresql(tmp_path: Path, url: str) -> None:
    create_key(tmp_path, url)
    result = meterd("drop-events", "--before", "2026-01", "--database", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "needs PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_drop_events_takes_a_month(tmp_path: Path, url: str) -> None:
    result = meterd("drop-events", "--before", "January", "--database", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "not a month like 2026-01" in result.stderr


def test_commands_open_the_store_without_the_identifier_index(tmp_path: Path) -> None:
    """No command stores events, and the index is rebuilt from a day of events on open: a
    command on a busy database (or ``serve``'s first look at it) would wait for that."""

    async def opened() -> bool:
        store = await cli._open(f"sqlite:///{tmp_path / 'meterd.db'}")
        try:
            assert isinstance(store, SQLiteStore)
            return store.index_identifiers
        finally:
            await store.close()

    assert asyncio.run(opened()) is False

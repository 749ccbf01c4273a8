"""Fixtures shared by every test: a real ``meterd serve`` process and SDK clients for it."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe

from meterd import keys
from meterd.storage.open import open_store


@dataclass
class RunningServer:
    base_url: str
    secret_key: str
    database_url: str
    process: subprocess.Popen[str]

    def client(self, key: str | None = None) -> stripe.StripeClient:
        return sdk_client(self.base_url, key or self.secret_key)

    def meterd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a ``meterd`` command against this server's database."""
        return run_meterd(*args, "--database", self.database_url)


def sdk_client(base_url: str, key: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": base_url, "meter_events": base_url},
        max_network_retries=0,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_meterd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def start_server(database_url: str, *extra: str) -> RunningServer:
    """Start ``meterd serve`` on a free port; wait until it answers; read the printed key."""
    port = free_port()
    command = [sys.executable, "-m", "meterd", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--database", database_url, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert process.stdout is not None
    secret = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("sk_test_"):
            secret = line.strip()
        if "listening on" in line:
            break
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"meterd serve exited with {process.returncode}") from None
            time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError("meterd serve did not start listening in 30 s")
    return RunningServer(f"http://127.0.0.1:{port}", secret, database_url, process)


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


POSTGRES_URL = os.environ.get("METERD_TEST_POSTGRES_URL", "")
POSTGRES_SKIP_REASON = (
    "PostgreSQL tests need METERD_TEST_POSTGRES_URL (e.g. "
    "postgresql://postgres@127.0.0.1:5432/test); .ci/run sets it"
)
BACKENDS = ["sqlite", "postgresql"]


def process_alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """A database URL nothing else uses: a new SQLite file, or a new PostgreSQL schema
    (dropped afterwards), so that test runs never see each other's rows."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'meterd.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip(POSTGRES_SKIP_REASON)
    schema = f"meterd_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def database_rows(url: str, sql: str) -> list[Any]:
    """Rows of a query straight from a test server's database, whichever backend it is."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return db.execute(sql).fetchall()
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode()).fetchall()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn; tests that take it (or the server) run on both."""
    return str(request.param)


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server per backend for the session; tests isolate themselves with their own
    accounts."""
    with fresh_database(backend, tmp_path_factory.mktemp("meterd")) as url:
        running = start_server(url)
        assert running.secret_key, "meterd serve did not print a test key on an empty database"
        yield running
        stop_server(running)


_postgres_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and POSTGRES_SKIP_REASON in str(report.longrepr):
        _postgres_skips.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On CI, a skipped PostgreSQL test is a failure: CI has PostgreSQL (.ci/run)."""
    if os.environ.get("CI") == "true" and _postgres_skips:
        print(f"\nCI: {len(_postgres_skips)} PostgreSQL tests were skipped; set "
              "METERD_TEST_POSTGRES_URL.")  # fmt: skip
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def account_key(server: RunningServer) -> str:
    """A test key of a brand-new account, so every test starts with no meters."""
    return new_account_key(server, "test")


def new_account_key(server: RunningServer, mode: str) -> str:
    """What ``meterd keys create --new-account`` does, in this process: the command's own tests
    are in tests/test_cli.py, and starting it for each test's account (about 1 s, mostly
    imports) was a third of the whole suite's time."""

    async def create() -> str:
        store = await open_store(server.database_url, index_identifiers=False)
        try:
            now = int(time.time())
            account = keys.new_account(now)
            key, secret = keys.new_api_key(account.id, livemode=mode == "live", now=now)
            await store.create_account(account, key)
            return secret
        finally:
            await store.close()

    return asyncio.run(create())


@pytest.fixture
def client(server: RunningServer, account_key: str) -> stripe.StripeClient:
    return server.client(account_key)

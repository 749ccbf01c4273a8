"""The ``meterd`` command: run the server, manage API keys, rebuild rollups, price usage."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
from collections.abc import Coroutine
from types import FrameType
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from meterd import keys
from meterd.api.http_protocol import CoalescingHttpToolsProtocol
from meterd.api.rate_limits import parse_limits
from meterd.app import WORKER_SETTINGS_VARIABLE, create_app
from meterd.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUED_EVENTS,
    DEFAULT_PORT,
    DEFAULT_SESSION_LIFETIME_SECONDS,
    GIL_SWITCH_SECONDS,
    EventWriter,
    Settings,
)
from meterd.ingest import writes
from meterd.metering.rollups import RollupKey
from meterd.scope import Scope
from meterd.storage import Store, open_store
from meterd.storage.open import DatabaseUnavailable, UnsupportedDatabase
from meterd.usage import UsageProblem, UsageReport, metered_usage

app = typer.Typer(
    help="meterd: a self-hosted usage-metering server that speaks Stripe's Billing Meters API."
    "\n\n[bold]Example[/bold]: meterd serve (then point the Stripe SDK at http://127.0.0.1:8420)",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
keys_app = typer.Typer(
    help="Create, list, revoke and rotate secret API keys.\n\n[bold]Example[/bold]: meterd keys "
    "create --mode test",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

DatabaseOption = Annotated[
    str,
    typer.Option(
        "--database",
        envvar="METERD_DATABASE_URL",
        help="Database URL, e.g. sqlite:///meterd.db (relative) or sqlite:////var/lib/m.db.",
    ),
]


def _now() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp())


async def _open(database: str) -> Store:
    """The store, without the identifier index: no command here stores events (``serve``'s
    app opens its own store), and the index is rebuilt from the last 24 hours of events
    (28.6 s for 6.4 M of them on the bench VM), which ``serve`` paid twice at start-up."""
    try:
        return await open_store(database, index_identifiers=False)
    except (UnsupportedDatabase, DatabaseUnavailable) as exc:
        err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def _answer(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's work; a :class:`UsageProblem` is a one-line error and exit status 2."""
    try:
        return asyncio.run(work)
    except UsageProblem as problem:
        err_console.print(f"[red]error:[/red] {problem}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM means "stop": exit 0, not "killed by a signal".

    uvicorn handles SIGTERM itself while it serves (it drains requests and runs the shutdown),
    then restores this handler and raises the signal again, which lands here.
    """
    raise SystemExit(0)


async def _bootstrap(database: str) -> str | None:
    """On an empty database: one account and a test key. Returns the new secret, if any."""
    store = await _open(database)
    try:
        if await store.has_accounts():
            return None
        account = keys.new_account(_now())
        key, secret = keys.new_api_key(account.id, livemode=False, now=_now())
        await store.create_account(account, key)
        return secret
    finally:
        await store.close()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    database: DatabaseOption = DEFAULT_DATABASE_URL,
    max_body_bytes: Annotated[
        int, typer.Option(envvar="METERD_MAX_BODY_BYTES", help="Largest request body accepted.")
    ] = DEFAULT_MAX_BODY_BYTES,
    session_lifetime: Annotated[
        int,
        typer.Option(
            envvar="METERD_SESSION_LIFETIME_SECONDS",
            help="Seconds a meter event session's token works (Stripe: 900).",
        ),
    ] = DEFAULT_SESSION_LIFETIME_SECONDS,
    workers: Annotated[
        int,
        typer.Option(
            envvar="METERD_WORKERS",
            help="Server processes sharing the port (PostgreSQL only; SQLite serves from one).",
        ),
    ] = 1,
    rate_limit: Annotated[
        list[str] | None,
        typer.Option(
            "--rate-limit",
            envvar="METERD_RATE_LIMITS",
            help="Per account and mode: family=rate or family=rate/burst (requests per "
            "second), family one of events, reads, writes; repeat, or comma-separate in the "
            "variable. Off by default.",
        ),
    ] = None,
    max_queued_events: Annotated[
        int,
        typer.Option(
            envvar="METERD_MAX_QUEUED_EVENTS",
            help="Events waiting for the group commit before new ones get 429 (bounded memory).",
        ),
    ] = DEFAULT_MAX_QUEUED_EVENTS,
    log_requests: Annotated[
        bool,
        typer.Option(
            "--log-requests/--no-log-requests",
            envvar="METERD_LOG_REQUESTS",
            help="One JSON line per request on stderr: request id, account, route, status, "
            "duration.",
        ),
    ] = False,
    event_writer: Annotated[
        EventWriter,
        typer.Option(
            envvar="METERD_EVENT_WRITER",
            help="Where a SQLite file's events are written: a child process (two GILs, the "
            "faster stream) or a thread of the server's.",
        ),
    ] = "process",
) -> None:
    """Run the API server.

    On an empty database it creates an account and prints its test secret key once.
    SIGTERM or Ctrl-C finishes in-flight requests, then closes the database. With PostgreSQL,
    --workers N runs N processes on one port, all sharing the database.

    [bold]Example[/bold]: meterd serve --port 8420 --database sqlite:///meterd.db
    """
    if workers < 1:
        err_console.print("[red]error:[/red] --workers must be at least 1")
        raise typer.Exit(2)
    try:
        limits = parse_limits(rate_limit or [])
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] --rate-limit: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    if workers > 1 and not database.startswith(("postgresql:", "postgres:")):
        err_console.print(
            "[red]error:[/red] --workers above 1 needs PostgreSQL. SQLite takes one writer at a "
            "time and meterd keeps SQLite's identifier index in its one process, so more "
            "processes would only queue for the same lock; one process is right for SQLite.",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    secret = asyncio.run(_bootstrap(database))
    if secret is not None:
        console.print("Created an account. Its test secret key, shown only this once:")
        console.print(secret, soft_wrap=True, highlight=False)
    settings = Settings(
        database_url=database,
        max_body_bytes=max_body_bytes,
        session_lifetime_seconds=session_lifetime,
        rate_limits={str(family): limit for family, limit in limits.items()},
        max_queued_events=max_queued_events,
        log_requests=log_requests,
        event_writer=event_writer,
    )
    shown = f"{workers} processes, " if workers > 1 else ""
    console.print(f"meterd listening on http://{host}:{port} ({shown}database {database})")
    app_or_factory: Any = create_app(settings)
    if workers > 1:
        os.environ[WORKER_SETTINGS_VARIABLE] = msgspec.json.encode(settings).decode()
        app_or_factory = "meterd.app:worker_app"
    uvicorn.run(
        app_or_factory,
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        host=host,
        port=port,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=30,
    )


@keys_app.command("create")
def keys_create(
    mode: Annotated[
        Literal["test", "live"], typer.Option(help="test (sk_test_...) or live (sk_live_...).")
    ] = "test",
    database: DatabaseOption = DEFAULT_DATABASE_URL,
    new_account: Annotated[
        bool, typer.Option("--new-account", help="Create a new account for this key.")
    ] = False,
) -> None:
    """Create a secret key and print it (last line of output).

    The key belongs to the first account, or with --new-account to a new one (each account
    sees only its own objects, and test and live keys see separate data).

    [bold]Example[/bold]: meterd keys create --mode live --database sqlite:///meterd.db
    """

    async def run() -> str:
        store = await _open(database)
        try:
            account = None if new_account else await store.first_account()
            if account is None:
                account = keys.new_account(_now())
                key, secret = keys.new_api_key(account.id, livemode=mode == "live", now=_now())
                await store.create_account(account, key)
            else:
                key, secret = keys.new_api_key(account.id, livemode=mode == "live", now=_now())
                await store.add_api_key(key)
            return secret
        finally:
            await store.close()

    secret = asyncio.run(run())
    err_console.print(f"Created a {mode} secret key. It is shown only this once:")
    print(secret)


@keys_app.command("list")
def keys_list(database: DatabaseOption = DEFAULT_DATABASE_URL) -> None:
    """List keys by mode, creation time and last four characters (never the whole key).

    [bold]Example[/bold]: meterd keys list --database sqlite:///meterd.db
    """

    async def run() -> list[keys.ApiKey]:
        store = await _open(database)
        try:
            return await store.list_api_keys()
        finally:
            await store.close()

    table = Table(title="API keys")
    for column in ("id", "account", "mode", "created (UTC)", "key", "status"):
        # Narrow terminals fold cells rather than cut them: ids and last four stay whole.
        table.add_column(column, overflow="fold", no_wrap=column == "key")
    for key in asyncio.run(run()):
        created = dt.datetime.fromtimestamp(key.created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        prefix = "sk_live_" if key.livemode else "sk_test_"
        table.add_row(
            key.id,
            key.account_id,
            "live" if key.livemode else "test",
            created,
            f"{prefix}...{key.last4}",
            "revoked" if key.revoked_at else "active",
        )
    # Piped or redirected output has no width to fit (rich would assume 80 columns).
    out = console if console.is_terminal else Console(width=1000)
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...), as `keys list` shows.")],
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Revoke a secret key: requests with it get 401 at once, also on a running server.

    [bold]Example[/bold]: meterd keys revoke key_4RzWq0cXyMFbNtJh --database sqlite:///meterd.db
    """

    async def run() -> None:
        store = await _open(database)
        try:
            if not await store.revoke_api_key(key_id, _now()):
                raise UsageProblem(f"No active key with id {key_id!r} (see `meterd keys list`).")
        finally:
            await store.close()

    _answer(run())
    console.print(f"Revoked {key_id}.")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="The key to replace (key_...).")],
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Replace a secret key: a new key of the same account and mode is created and the old one
    revoked, in one transaction; the new secret is printed (last line of output), once.

    [bold]Example[/bold]: meterd keys rotate key_4RzWq0cXyMFbNtJh --database sqlite:///meterd.db
    """

    async def run() -> str:
        store = await _open(database)
        try:
            old = next((k for k in await store.list_api_keys() if k.id == key_id), None)
            if old is None or old.revoked_at is not None:
                raise UsageProblem(f"No active key with id {key_id!r} (see `meterd keys list`).")
            key, secret = keys.new_api_key(old.account_id, livemode=old.livemode, now=_now())
            if not await store.revoke_api_key(key_id, _now(), replacement=key):
                raise UsageProblem(f"The key {key_id!r} was revoked meanwhile.")
            return secret
        finally:
            await store.close()

    secret = _answer(run())
    err_console.print(f"Revoked {key_id}. Its replacement, shown only this once:")
    print(secret)


@app.command("rebuild-rollups")
def rebuild_rollups_command(
    database: DatabaseOption = DEFAULT_DATABASE_URL,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only compare: rebuild inside a transaction, report rows that differ from the "
            "incremental ones, and roll back. Exits 1 when any differ.",
        ),
    ] = False,
) -> None:
    """Recompute every rollup from the raw events, the source of truth.

    Summaries read rollups that are kept current as events arrive; this rebuilds them from
    scratch in one transaction (stop the server first: SQLite has one writer).

    [bold]Example[/bold]: meterd rebuild-rollups --check --database sqlite:///meterd.db
    """

    async def run() -> tuple[int, int, list[RollupKey]]:
        store = await _open(database)
        try:
            if not check:
                events = await store.transact(writes.rebuild_rollups)
                return events, 0, []
            try:
                await store.transact(writes.check_rollups)
            except writes.RollupsChecked as result:
                return result.events, result.rows, result.differing
            raise AssertionError("check_rollups always raises its result")
        finally:
            await store.close()

    with console.status("Reading raw events..."):
        events, rows, differing = asyncio.run(run())
    if not check:
        console.print(f"Rebuilt the rollups from {events:,} raw events.")
        return
    if differing:
        table = Table(title=f"{len(differing)} rollup rows differ from a rebuild")
        for column in ("meter", "customer", "size", "bucket"):
            table.add_column(column)
        for key in differing[:50]:
            table.add_row(*(str(part) for part in key))
        console.print(table)
        raise typer.Exit(1)
    console.print(f"All {rows:,} rollup rows agree with a rebuild from {events:,} raw events.")


def _timestamp(text: str) -> int:
    """Unix seconds, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither unix seconds nor an ISO 8601 date/time (2026-11-01, "
            "2026-11-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def _utc(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@app.command("usage")
def usage_command(
    plan: Annotated[str, typer.Option("--plan", help="The metered plan's id.")],
    customer: Annotated[str, typer.Option("--customer", help="The customer's id (cus_...).")],
    start: Annotated[
        str, typer.Option("--start", help="Period start (inclusive): unix seconds or ISO 8601.")
    ],
    end: Annotated[
        str, typer.Option("--end", help="Period end (exclusive): unix seconds or ISO 8601.")
    ],
    database: DatabaseOption = DEFAULT_DATABASE_URL,
    account: Annotated[
        str | None,
        typer.Option("--account", help="The plan's account (acct_...); default: the first."),
    ] = None,
    live: Annotated[bool, typer.Option("--live", help="Read live-mode data.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print a customer's metered usage over a period and what it costs under a plan.

    The quantity is the plan's meter aggregated for the customer over [start, end), exactly as
    event_summaries answers (start and end on minute boundaries). The amount follows the plan:
    per unit (after transform_usage), or graduated or volume tiers; exact in the currency's
    minor unit, then rounded half up to a whole one, as an invoice line is.

    [bold]Example[/bold]: meterd usage --plan gold-metered --customer cus_123
    --start 2026-11-01 --end 2026-12-01 --database sqlite:///meterd.db
    """
    period = (_timestamp(start), _timestamp(end))

    async def run() -> UsageReport:
        store = await _open(database)
        try:
            owner = account
            if owner is None:
                first = await store.first_account()
                if first is None:
                    raise UsageProblem("The database has no account yet.")
                owner = first.id
            return await metered_usage(store, Scope(owner, live), plan, customer, *period)
        finally:
            await store.close()

    found = _answer(run())
    if as_json:
        print(msgspec.json.encode(found).decode())
        return
    table = Table(title=f"Usage of {found.plan} by {found.customer}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    table.add_row("period", f"{_utc(found.start)} to {_utc(found.end)}")
    table.add_row("meter", f"{found.meter} ({found.formula})")
    table.add_row("quantity", str(found.quantity))
    if found.billed_quantity != found.quantity:
        table.add_row("billed quantity", f"{found.billed_quantity} (after transform_usage)")
    table.add_row("amount (exact)", f"{found.amount_decimal} {found.currency} minor units")
    table.add_row("amount", f"{found.major_units()} {found.currency.upper()}")
    out = console if console.is_terminal else Console(width=1000)
    out.print(table)


@app.command("drop-events")
def drop_events_command(
    before: Annotated[str, typer.Option("--before", help="First month to keep, as YYYY-MM (UTC).")],
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Drop raw events received before a month (PostgreSQL: whole monthly partitions).

    Summaries keep working from the rollups, which stay; what goes is the raw history that
    rebuild-rollups and cancellations read (cancellations only reach back 24 hours, but a
    rebuild after a drop would recount without the dropped months).

    [bold]Example[/bold]: meterd drop-events --before 2026-01 --database postgresql://db/meterd
    """
    try:
        month = dt.datetime.strptime(before, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise typer.BadParameter(f"{before!r} is not a month like 2026-01") from None

    async def run() -> list[str]:
        store = await _open(database)
        try:
            drop = getattr(store, "drop_events_before", None)
            if drop is None:
                raise UsageProblem(
                    "dropping raw events by month needs PostgreSQL, whose events are "
                    "partitioned by arrival month; SQLite keeps them in one table"
                )
            dropped: list[str] = await drop(int(month.timestamp()))
            return dropped
        finally:
            await store.close()

    dropped = _answer(run())
    if not dropped:
        console.print(f"No monthly partition of raw events ends before {before}.")
        return
    console.print(f"Dropped {len(dropped)} monthly partitions: {', '.join(dropped)}")


def main() -> None:
    app()

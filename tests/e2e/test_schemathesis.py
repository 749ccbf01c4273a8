"""Property-based API tests: schemathesis generates requests for every operation in Stripe's own
OpenAPI extracts (``../shared/stripe-spec/``) and sends them to a real ``meterd serve``.

Every response must not be a 5xx, must have a status code and a content type the operation
documents, and must match the documented schema for that status (``200`` or ``default``, which
is Stripe's error envelope). Data is generated in both modes: valid per the spec (positive) and
deliberately invalid (negative); meterd may answer either with 4xx, as long as the body is the
documented error.

Wiring:
- ``base_url`` is the session ``server``; every request carries ``Authorization: Bearer`` with
  a fresh account's secret key, except ``POST /v2/billing/meter_event_stream``, which carries
  the ``authentication_token`` of a meter event session (reopened before it expires). The
  stream operation's own server (``https://meter-events.stripe.com/``) is dropped from the
  loaded spec, so it goes to the local server like everything else.
- Each test (one per operation and backend) creates a few real objects first (an active and
  an inactive meter, three plans); hooks make about half of the generated path ids and event
  names real ones, align about half of the summaries' time ranges to their window, and give
  half of the ``POST /v1/plans`` bodies a valid core, so the examples reach past "not found"
  and "missing param" into the happy paths.

Budget: ``METERD_SCHEMATHESIS_EXAMPLES`` examples per operation in the fuzzing phase (default
50, well under a minute per backend), plus schemathesis's deterministic coverage phase.
``METERD_SCHEMATHESIS_EXAMPLES=1000`` is the longer on-demand run.

What it found (NUL characters reaching PostgreSQL from path ids and v2 bodies, ``created``
filters past 64 bits on SQLite: 500s) is fixed and pinned by ``test_malformed_bodies.py``.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import RunningServer, new_account_key
from tests.e2e.test_malformed_bodies import server_log
from tests.spec import SPEC_DIR

EXAMPLES = int(os.environ.get("METERD_SCHEMATHESIS_EXAMPLES", "50"))
STREAM = "/v2/billing/meter_event_stream"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
TIMEOUT = 30  # seconds per request: a hung server fails the example instead of the whole run


# -- the spec -------------------------------------------------------------------------------


def _adapt(spec: dict[str, Any]) -> dict[str, Any]:
    """The two narrow changes made to Stripe's spec before schemathesis reads it.

    1. Operation-level ``servers`` go (only the stream has one, Stripe's meter-events host):
       every operation is sent to the local ``base_url``.
    2. v2 ``default`` (error) responses are ``oneOf [v2.error.<code>..., v2.error]``. But
       ``v2.error`` is the generic envelope that every specific ``v2.error.<code>`` also
       satisfies, so a correct specific error (``no_meter``, ``invalid_cancel_configuration``,
       ...) matches two branches and ``oneOf`` rejects it. The spec means "any of": ``anyOf``.
    """
    for item in spec["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            operation.pop("servers", None)
            default = operation.get("responses", {}).get("default", {})
            schema = default.get("content", {}).get("application/json", {}).get("schema", {})
            if "oneOf" in schema:
                schema["anyOf"] = schema.pop("oneOf")
    return spec


def _load(name: str) -> Any:
    path = SPEC_DIR / name
    if not path.exists():
        reason = f"Stripe's spec is not at {path} (set METERD_STRIPE_SPEC_DIR)"
        if os.environ.get("CI") == "true":
            raise RuntimeError(reason)
        pytest.skip(reason, allow_module_level=True)
    return schemathesis.openapi.from_dict(_adapt(json.loads(path.read_text())))


v1 = _load("v1-billing-meters.json")
v2 = _load("v2-billing-meters.json")

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


# -- the server under test ------------------------------------------------------------------


@dataclass
class Target:
    """Where and how to send requests, and the real objects examples may refer to."""

    base_url: str
    secret: str
    log: collections.deque[str]
    meters: list[str] = field(default_factory=list)
    event_names: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    _token: str = ""
    _token_expires: float = 0.0

    def token(self) -> str:
        """A meter event session token, reopened a minute before the 15 minutes run out."""
        if time.time() > self._token_expires - 60:
            response = httpx.post(
                f"{self.base_url}/v2/billing/meter_event_session",
                headers={"Authorization": f"Bearer {self.secret}"},
            )
            assert response.status_code == 200, response.text
            session = response.json()
            self._token = session["authentication_token"]
            expires = datetime.fromisoformat(session["expires_at"].replace("Z", "+00:00"))
            self._token_expires = expires.timestamp()
        return self._token

    def authorization(self, path: str) -> str:
        return f"Bearer {self.token() if path == STREAM else self.secret}"


@pytest.fixture(scope="module")
def account(server: RunningServer) -> str:
    """One account for the module. ``server_log`` keeps the server's output pipe drained:
    ``start_server`` stops reading it, and a few 500 tracebacks would fill it and hang the
    server for every later test."""
    server_log(server)
    return new_account_key(server, "test")


# Hooks run while Hypothesis draws, inside the test; they read the current test's objects here.
_current: list[Target] = []


@pytest.fixture
def target(server: RunningServer, account: str) -> Iterator[Target]:
    """A fresh set of real objects in the module's account for each operation's test."""
    client = server.client(account)
    found = Target(server.base_url, account, server_log(server))
    suffix = os.urandom(6).hex()
    for formula in ("sum", "count"):
        meter = client.v1.billing.meters.create(
            {
                "display_name": f"schemathesis {formula}",
                "event_name": f"st_{formula}_{suffix}",
                "default_aggregation": {"formula": formula},
            }
        )
        found.meters.append(meter.id)
        found.event_names.append(meter.event_name)
    client.v1.billing.meters.deactivate(found.meters[-1])
    plans: list[dict[str, Any]] = [
        {"amount": 1200, "product": {"name": "Gold"}},
        {
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 1000, "unit_amount": 5}, {"up_to": "inf", "unit_amount": 3}],
            "product": {"name": "Tiered"},
        },
        {
            "usage_type": "metered",
            "meter": found.meters[0],
            "amount_decimal": "0.25",
            "product": {"name": "Metered"},
        },
    ]
    for extra in plans:
        plan = client.v1.plans.create({"currency": "usd", "interval": "month", **extra})
        found.plans.append(plan.id)
    _current[:] = [found]
    yield found
    _current.clear()


# -- steering some examples to real objects -------------------------------------------------


def _half_real(
    value: Any, options: Callable[[], list[str]], apply: Callable[[Any, str], Any]
) -> Any:
    """The generated value, or (as often) the same value pointed at a real object."""
    if not _current or not options():
        return st.just(value)
    return st.one_of(
        st.just(value), st.sampled_from(options()).map(lambda real: apply(value, real))
    )


def _with_event_name(body: Any, name: str) -> Any:
    body = dict(body)
    body["event_name"] = name
    if isinstance(body.get("payload"), dict):  # a payload the meter can count
        body["payload"] = {**body["payload"], "stripe_customer_id": "cus_st", "value": "3"}
    return body


for schema in (v1, v2):

    @schema.hook("flatmap_path_parameters")
    def _real_ids(context: Any, path_parameters: dict[str, Any]) -> Any:
        if not isinstance(path_parameters, dict):
            return st.just(path_parameters)
        name = "plan" if "plan" in path_parameters else "id"
        if name not in path_parameters:
            return st.just(path_parameters)
        kind = "plans" if name == "plan" else "meters"
        return _half_real(
            path_parameters,
            lambda: getattr(_current[0], kind),
            lambda params, real: {**params, name: real},
        )

    @schema.hook("flatmap_body")
    def _real_event_names(context: Any, body: Any) -> Any:
        if not isinstance(body, dict):
            return st.just(body)
        names = lambda: _current[0].event_names  # noqa: E731
        if isinstance(body.get("event_name"), str):
            return _half_real(body, names, _with_event_name)
        if isinstance(body.get("events"), list):  # the stream: every event to one meter

            def point(value: Any, real: str) -> Any:
                events = [
                    _with_event_name(e, real) if isinstance(e, dict) else e for e in value["events"]
                ]
                return {**value, "events": events}

            return _half_real(body, names, point)
        return st.just(body)


PLAN_KEPT = ("active", "amount", "id", "metadata", "nickname", "trial_period_days")


@v1.hook("flatmap_body")
def _plan_core(context: Any, body: Any) -> Any:
    """``POST /v1/plans`` needs a currency, an interval and a product, and most of the other
    fields only in combinations the schema does not tell; half the time keep a few generated
    fields that stand alone and add a valid core, so plans do get created."""
    operation = context.operation
    if operation is None or (operation.method.upper(), operation.path) != ("POST", "/v1/plans"):
        return st.just(body)
    if not isinstance(body, dict):
        return st.just(body)
    core = {"currency": "usd", "interval": "month", "product": {"name": "schemathesis"}}
    kept = {key: value for key, value in body.items() if key in PLAN_KEPT and value != ""}
    amount = kept.get("amount")
    if not (isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0):
        kept["amount"] = 1200
    return st.sampled_from([body, {**kept, **core}])


@v1.hook("flatmap_query")
def _aligned_summary_range(context: Any, query: Any) -> Any:
    """Summaries want minute (hour, day) aligned ``start_time < end_time``; random integers
    almost never are, so half the time align and order them (a range of 1 to 48 windows)."""
    if context.operation is None or not context.operation.path.endswith("/event_summaries"):
        return st.just(query)
    if not isinstance(query, dict):
        return st.just(query)
    start, end = query.get("start_time"), query.get("end_time")
    if not (isinstance(start, int) and isinstance(end, int)):
        return st.just(query)
    window = query.get("value_grouping_window")
    step = {"hour": 3600, "day": 86400}.get(window, 60) if isinstance(window, str) else 60
    aligned_start = abs(start) % 2_000_000_000 // step * step
    aligned = {
        **query,
        "start_time": aligned_start,
        "end_time": aligned_start + (1 + abs(end) % 48) * step,
    }
    return st.sampled_from([query, aligned])


# -- the property tests ---------------------------------------------------------------------


def _oversized_request_line(response: Any) -> bool:
    """uvicorn itself (before meterd sees anything) answers a request line of 64 KiB or more
    with a plain-text 400 "Invalid HTTP request received."; long ``maxLength: 5000`` strings,
    percent-encoded, reach that. A transport limit, not meterd's JSON API."""
    return (
        response.status_code == 400
        and response.text == "Invalid HTTP request received."
        and len(response.request.path_url) >= 65_000
    )


def _call_and_validate(case: Any, target: Target) -> None:
    response = case.call(
        base_url=target.base_url,
        headers={"Authorization": target.authorization(case.path)},
        timeout=TIMEOUT,
    )
    checks = CHECKS
    if _oversized_request_line(response):
        checks = [c for c in CHECKS if c is not content_type_conformance]
    try:
        case.validate_response(response, checks=checks)
    except Exception as exc:
        if response.status_code >= 500:
            time.sleep(0.2)  # let the traceback arrive
            exc.add_note("meterd's output (tail):\n" + "".join(list(target.log)[-40:]))
        raise


@v1.parametrize()
@SETTINGS
def test_v1_operation(case: Any, target: Target) -> None:
    _call_and_validate(case, target)


@v2.parametrize()
@SETTINGS
def test_v2_operation(case: Any, target: Target) -> None:
    _call_and_validate(case, target)

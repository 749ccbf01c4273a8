"""Isolation: every object belongs to one (account, mode) scope, on every endpoint.

What account A makes is invisible and unusable from account B, and from A's other mode: a
retrieve, update or delete by id is a 404 ``resource_missing``; a list never shows it, not
even as a cursor (404); an event sent with A's event name counts nowhere and becomes the
sender's own ``no_meter_found`` report; a cancel of A's identifier is a 400; A's session token
streams only into A; A's Idempotency-Key means nothing elsewhere (the request runs fresh).

Each test runs for three pairs of (owner, other): A's test mode and account B's test mode, A's
test mode and A's live mode, and A's live mode and A's test mode. A is the first account, the
only one ``meterd keys create`` (without ``--new-account``) can give keys of both modes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
import stripe

from tests.conftest import RunningServer, new_account_key, sdk_client
from tests.e2e.support import raw, total, unique
from tests.e2e.test_malformed_bodies import server_log
from tests.spec import assert_matches

V2 = "v2-billing-meters.json"


@dataclass(frozen=True)
class Side:
    name: str
    key: str
    client: stripe.StripeClient
    livemode: bool


@pytest.fixture(scope="module")
def sides(server: RunningServer) -> dict[str, Side]:
    """Fresh keys: a test and a live key of the first account (A), a test key of a new one (B)."""

    def first_account_key(mode: str) -> str:
        return server.meterd("keys", "create", "--mode", mode).stdout.split()[-1]

    keys = {
        "A-test": first_account_key("test"),
        "A-live": first_account_key("live"),
        "B-test": new_account_key(server, "test"),
    }
    return {
        name: Side(name, key, server.client(key), livemode=name.endswith("live"))
        for name, key in keys.items()
    }


PAIRS = {
    "other-account": ("A-test", "B-test"),
    "test-to-live": ("A-test", "A-live"),
    "live-to-test": ("A-live", "A-test"),
}


@pytest.fixture(params=list(PAIRS))
def pair(request: pytest.FixtureRequest, sides: dict[str, Side]) -> tuple[Side, Side]:
    owner, other = PAIRS[request.param]
    return sides[owner], sides[other]


# --- helpers ----------------------------------------------------------------------------------


def v1_error(
    exc: pytest.ExceptionInfo[stripe.StripeError] | stripe.StripeError, status: int
) -> dict[str, Any]:
    raised = exc if isinstance(exc, stripe.StripeError) else exc.value
    assert raised.http_status == status, raised
    body = raised.json_body
    assert body is not None
    assert_matches(body, "error")
    return body["error"]  # type: ignore[no-any-return]


def v1_missing(
    exc: pytest.ExceptionInfo[stripe.StripeError] | stripe.StripeError, param: str = "id"
) -> None:
    error = v1_error(exc, 404)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "resource_missing"
    assert error["param"] == param


def v2_error(
    exc: pytest.ExceptionInfo[stripe.StripeError], status: int, schema: str = "v2.error"
) -> dict[str, Any]:
    assert exc.value.http_status == status, exc.value
    body = exc.value.json_body
    assert body is not None
    assert_matches(body, "v2.error", V2)
    assert_matches(body, schema, V2)
    return body["error"]  # type: ignore[no-any-return]


def refused(call: Callable[[], Any]) -> pytest.ExceptionInfo[stripe.StripeError]:
    with pytest.raises(stripe.StripeError) as exc:
        call()
    return exc


def meter(side: Side, event_name: str | None = None) -> Any:
    return side.client.v1.billing.meters.create(
        {
            "display_name": "Isolated",
            "event_name": event_name or unique("iso"),
            "default_aggregation": {"formula": "sum"},
        }
    )


def event_v1(side: Side, event_name: str, value: str, ident: str | None = None) -> Any:
    params: Any = {
        "event_name": event_name,
        "payload": {"stripe_customer_id": "c", "value": value},
        "identifier": ident or unique("ev"),
    }
    return side.client.v1.billing.meter_events.create(params)


def ids_listed(page: Any) -> list[str]:
    return [item.id for item in page.auto_paging_iter()]


def reports(side: Side, **params: Any) -> list[dict[str, Any]]:
    """Every error report the side can list, as meterd sent them (all pages)."""
    found: list[dict[str, Any]] = []
    query: Any = {"limit": 100, **params}
    while True:
        body = raw(side.client.v2.core.events.list(query))
        found += body["data"]
        if body["next_page_url"] is None:
            return found
        query = {**query, "page": body["next_page_url"].split("page=")[1].split("&")[0]}


def report_with(side: Side, identifier: str) -> Any:
    """The side's error report that samples the event with ``identifier``, or None."""
    for report in reports(side):
        samples = [
            sample["request"]["identifier"]
            for error_type in report["data"]["reason"]["error_types"]
            for sample in error_type["sample_errors"]
        ]
        if identifier in samples:
            assert raw(side.client.v2.core.events.retrieve(report["id"])) == report
            return report
    return None


def session_client(server: RunningServer, side: Side) -> tuple[stripe.StripeClient, str]:
    session = side.client.v2.billing.meter_event_session.create()
    assert session.livemode is side.livemode
    token = session.authentication_token
    return sdk_client(server.base_url, token), token


def stream(client: stripe.StripeClient, event_name: str, value: str, ident: str) -> None:
    params: Any = {
        "events": [
            {
                "event_name": event_name,
                "payload": {"stripe_customer_id": "c", "value": value},
                "identifier": ident,
            }
        ]
    }
    client.v2.billing.meter_event_stream.create(params)


def replayed(obj: Any) -> bool:
    assert obj.last_response is not None
    return obj.last_response.headers.get("Idempotent-Replayed") == "true"


# --- meters -----------------------------------------------------------------------------------


def test_a_meter_is_invisible_and_untouchable(pair: tuple[Side, Side]) -> None:
    owner, other = pair
    mine = meter(owner)
    meters = other.client.v1.billing.meters
    v1_missing(refused(lambda: meters.retrieve(mine.id)))
    v1_missing(refused(lambda: meters.update(mine.id, {"display_name": "Taken"})))
    v1_missing(refused(lambda: meters.deactivate(mine.id)))
    v1_missing(refused(lambda: meters.reactivate(mine.id)))
    assert mine.id not in ids_listed(meters.list({"limit": 100}))
    assert mine.id not in ids_listed(meters.list({"limit": 100, "status": "active"}))

    again = owner.client.v1.billing.meters.retrieve(mine.id)
    assert (again.display_name, again.status, again.livemode) == (
        "Isolated",
        "active",
        owner.livemode,
    )
    assert mine.id in ids_listed(owner.client.v1.billing.meters.list({"limit": 100}))
    # The event name is the owner's only: the other scope may take it for a meter of its own.
    theirs = meter(other, mine.event_name)
    assert theirs.id != mine.id and theirs.livemode is other.livemode


def test_summaries_count_only_the_owners_events(pair: tuple[Side, Side]) -> None:
    owner, other = pair
    mine = meter(owner)
    event_v1(owner, mine.event_name, "5")
    v1_missing(
        refused(
            lambda: other.client.v1.billing.meters.event_summaries.list(
                mine.id, {"customer": "c", "start_time": 0, "end_time": 60}
            )
        )
    )

    # v1 accepts the event, counts it nowhere, and reports it to its sender.
    ident = unique("stray")
    sent = event_v1(other, mine.event_name, "7", ident)
    assert sent.livemode is other.livemode
    assert total(owner.client, mine.id) == 5
    report = report_with(other, ident)
    assert report is not None
    assert report["type"] == "v1.billing.meter.no_meter_found"
    assert report["livemode"] is other.livemode
    assert "related_object" not in report
    assert report_with(owner, ident) is None

    # v2 answers the same mistake synchronously.
    params: Any = {
        "event_name": mine.event_name,
        "payload": {"stripe_customer_id": "c", "value": "9"},
    }
    exc = refused(lambda: other.client.v2.billing.meter_events.create(params))
    assert v2_error(exc, 400, "v2.error.no_meter")["code"] == "no_meter"
    assert total(owner.client, mine.id) == 5


def test_a_session_token_streams_only_into_its_own_scope(
    server: RunningServer, pair: tuple[Side, Side]
) -> None:
    owner, other = pair
    mine = meter(owner)
    to_owner, owner_token = session_client(server, owner)
    to_other, _ = session_client(server, other)

    stream(to_owner, mine.event_name, "3", unique("own"))
    stray = unique("stray")
    stream(to_other, mine.event_name, "4", stray)
    assert total(owner.client, mine.id) == 3
    assert report_with(other, stray) is not None
    assert report_with(owner, stray) is None

    # The other scope's meter of the same name counts the other's events only.
    theirs = meter(other, mine.event_name)
    stream(to_other, mine.event_name, "6", unique("theirs"))
    assert (total(owner.client, mine.id), total(other.client, theirs.id)) == (3, 6)

    # A session token is no API key, and an API key opens no stream.
    exc = refused(lambda: sdk_client(server.base_url, owner_token).v1.billing.meters.list())
    assert v1_error(exc, 401)["type"] == "invalid_request_error"
    exc = refused(lambda: stream(sdk_client(server.base_url, owner.key), mine.event_name, "1", "x"))
    assert exc.value.http_status == 401
    assert total(owner.client, mine.id) == 3


# --- meter events and adjustments -------------------------------------------------------------


def test_cancel_needs_the_identifier_in_its_own_scope(pair: tuple[Side, Side]) -> None:
    owner, other = pair
    mine = meter(owner)
    ident = unique("cancel")
    event_v1(owner, mine.event_name, "4", ident)
    cancel: Any = {"event_name": mine.event_name, "type": "cancel", "cancel": {"identifier": ident}}

    exc = refused(lambda: other.client.v1.billing.meter_event_adjustments.create(cancel))
    assert v1_error(exc, 400)["param"] == "cancel[identifier]"
    exc = refused(lambda: other.client.v2.billing.meter_event_adjustments.create(cancel))
    assert v2_error(exc, 400)["code"] == "invalid_cancel_configuration"
    assert total(owner.client, mine.id) == 4

    # Identifiers are per scope: the other may use the same one, and cancel only its own.
    theirs = meter(other, mine.event_name)
    exc = refused(lambda: other.client.v1.billing.meter_event_adjustments.create(cancel))
    assert v1_error(exc, 400)["param"] == "cancel[identifier]"  # a meter of that name is not enough
    event_v1(other, mine.event_name, "6", ident)  # not a duplicate of the owner's
    assert total(other.client, theirs.id) == 6
    done = other.client.v2.billing.meter_event_adjustments.create(cancel)
    assert done.livemode is other.livemode
    assert (total(owner.client, mine.id), total(other.client, theirs.id)) == (4, 0)
    owner.client.v1.billing.meter_event_adjustments.create(cancel)
    assert total(owner.client, mine.id) == 0


def test_v2_events_of_one_scope_never_count_in_another(pair: tuple[Side, Side]) -> None:
    owner, other = pair
    mine = meter(owner)
    theirs = meter(other, mine.event_name)
    ident = unique("v2")
    for side, value in ((owner, "2"), (other, "5")):
        params: Any = {
            "event_name": mine.event_name,
            "payload": {"stripe_customer_id": "c", "value": value},
            "identifier": ident,
        }
        assert side.client.v2.billing.meter_events.create(params).livemode is side.livemode
    assert (total(owner.client, mine.id), total(other.client, theirs.id)) == (2, 5)


# --- error reports ----------------------------------------------------------------------------


def test_error_reports_are_invisible(pair: tuple[Side, Side]) -> None:
    owner, other = pair
    mine = meter(owner)
    no_meter, bad_value = unique("nomtr"), unique("bad")
    event_v1(owner, unique("nomtr"), "1", no_meter)
    event_v1(owner, mine.event_name, "-1", bad_value)
    found = [report_with(owner, no_meter), report_with(owner, bad_value)]
    assert all(found)
    ids = [report["id"] for report in found]
    assert found[1]["related_object"]["id"] == mine.id

    for report_id in ids:
        exc = refused(lambda report_id=report_id: other.client.v2.core.events.retrieve(report_id))
        assert v2_error(exc, 404)["code"] == "resource_missing"
    assert not set(ids) & {report["id"] for report in reports(other)}
    assert reports(other, object_id=mine.id) == []
    assert [report["id"] for report in reports(owner, object_id=mine.id)] == [ids[1]]


def test_reports_of_one_event_name_are_kept_per_scope(pair: tuple[Side, Side]) -> None:
    """Both sides send an event nobody has a meter for, in the same minute: two reports."""
    owner, other = pair
    name, idents = unique("nomtr"), {owner.name: unique("o"), other.name: unique("x")}
    for side in (owner, other):
        event_v1(side, name, "1", idents[side.name])
    for side in (owner, other):
        report = report_with(side, idents[side.name])
        assert report is not None and report["livemode"] is side.livemode
        assert report["data"]["reason"]["error_count"] == 1
        foreign = idents[other.name if side is owner else owner.name]
        assert report_with(side, foreign) is None


# --- plans and products -----------------------------------------------------------------------


def test_products_and_plans_are_invisible_and_unusable(pair: tuple[Side, Side]) -> None:
    owner, other = pair
    mine = meter(owner)
    product = owner.client.v1.products.create({"name": "Owned", "id": unique("prod")})
    plan_params: Any = {
        "id": unique("plan"),
        "currency": "usd",
        "interval": "month",
        "amount": 100,
        "usage_type": "metered",
        "meter": mine.id,
        "product": product.id,
    }
    plan = owner.client.v1.plans.create(plan_params)

    products, plans = other.client.v1.products, other.client.v1.plans
    v1_missing(refused(lambda: products.retrieve(product.id)))
    v1_missing(refused(lambda: products.update(product.id, {"name": "Taken"})))
    v1_missing(refused(lambda: products.delete(product.id)))
    v1_missing(refused(lambda: plans.retrieve(plan.id)), "plan")
    v1_missing(refused(lambda: plans.update(plan.id, {"nickname": "Taken"})), "plan")
    v1_missing(refused(lambda: plans.delete(plan.id)), "plan")
    assert product.id not in ids_listed(products.list({"limit": 100}))
    assert products.list({"ids": [product.id]}).data == []
    assert plan.id not in ids_listed(plans.list({"limit": 100}))
    assert plans.list({"product": product.id}).data == []

    # Neither the product nor the meter can be used by a plan of the other scope.
    exc = refused(lambda: plans.create({**plan_params, "id": unique("plan")}))
    error = v1_error(exc, 400)
    assert (error["code"], error["param"]) == ("resource_missing", "meter")
    exc = refused(lambda: plans.create({**plan_params, "meter": meter(other).id}))
    error = v1_error(exc, 400)
    assert (error["code"], error["param"]) == ("resource_missing", "product")

    own_params = {**plan_params, "id": unique("plan"), "meter": meter(other).id}
    own_plan = plans.create({**own_params, "product": {"name": "Their own"}})
    exc = refused(lambda: plans.update(own_plan.id, {"product": product.id}))
    error = v1_error(exc, 400)
    assert (error["code"], error["param"]) == ("resource_missing", "product")

    # Ids are per scope: the other may make a product and a plan with the same ids.
    twin_product = products.create({"name": "Twin", "id": product.id})
    twin_plan = plans.create({**own_params, "id": plan.id, "product": twin_product.id})
    assert (twin_product.livemode, twin_plan.livemode) == (other.livemode, other.livemode)

    # Each plan of that id expands its own scope's product.
    kept = owner.client.v1.plans.retrieve(plan.id, {"expand": ["product"]})
    assert (kept.product.id, kept.product.name, kept.meter) == (product.id, "Owned", mine.id)
    assert kept.nickname is None and kept.livemode is owner.livemode
    twin = plans.retrieve(plan.id, {"expand": ["product"]})
    assert (twin.product.name, twin.meter) == ("Twin", own_params["meter"])
    listed = plans.list({"product": product.id, "expand": ["data.product"]}).data
    assert [(p.id, p.product.name) for p in listed] == [(plan.id, "Twin")]

    # Deleting is scoped too: only the owner's plan goes, and only the other's own plan keeps
    # the other's product from being deleted.
    owner.client.v1.plans.delete(plan.id)
    assert owner.client.v1.plans.list({"product": product.id}).data == []
    assert plans.retrieve(plan.id).product == twin_product.id
    exc = refused(lambda: products.delete(twin_product.id))
    assert "cannot be deleted" in v1_error(exc, 400)["message"]
    assert owner.client.v1.products.delete(product.id).deleted is True
    assert products.retrieve(twin_product.id).name == "Twin"


# --- cursors ----------------------------------------------------------------------------------


def test_cursors_of_another_scope_are_missing(pair: tuple[Side, Side]) -> None:
    owner, other = pair
    mine = meter(owner)
    product = owner.client.v1.products.create({"name": "Cursor"})
    plan: Any = owner.client.v1.plans.create(
        {"currency": "usd", "interval": "month", "amount": 1, "product": product.id}
    )
    for cursor in ("starting_after", "ending_before"):
        for listing, cursor_id in (
            (other.client.v1.billing.meters.list, mine.id),
            (other.client.v1.products.list, product.id),
            (other.client.v1.plans.list, plan.id),
        ):
            exc = refused(lambda listing=listing, c=cursor, i=cursor_id: listing({c: i}))
            v1_missing(exc, cursor)

    # Summary ids name their meter: the owner's are no cursor on the other's meter.
    window = {"customer": "c", "start_time": 0, "end_time": 7200, "value_grouping_window": "hour"}
    summary_id = owner.client.v1.billing.meters.event_summaries.list(mine.id, window).data[0].id
    theirs = meter(other, mine.event_name)
    for cursor in ("starting_after", "ending_before"):
        exc = refused(
            lambda c=cursor: other.client.v1.billing.meters.event_summaries.list(
                theirs.id, {**window, c: summary_id}
            )
        )
        v1_missing(exc, cursor)

    # Error reports: neither a report id nor the owner's next_page_url pages the other's list.
    for _ in range(2):
        event_v1(owner, unique("nomtr"), "1")
    first = owner.client.v2.core.events.list({"limit": 1})
    assert first.next_page_url is not None
    page = first.next_page_url.split("page=")[1].split("&")[0]
    exc = refused(lambda: other.client.v2.core.events.list({"page": page}))
    assert v2_error(exc, 404)["code"] == "resource_missing"
    assert owner.client.v2.core.events.list({"page": page, "limit": 1}).data


# --- Idempotency-Key --------------------------------------------------------------------------


@dataclass
class Keyed:
    """One request sent with an Idempotency-Key: ``run`` sends it as a side, and ``check``
    verifies afterwards that the other side's request ran fresh (not the owner's replay)."""

    setup: Callable[[Side, Side], dict[str, Any]]
    run: Callable[[Side, dict[str, Any], str], Any]
    check: Callable[[Side, Side, dict[str, Any], Any, Any], None]


def _fresh_object(owner: Side, other: Side, ctx: dict[str, Any], mine: Any, theirs: Any) -> None:
    assert theirs.id != mine.id
    assert theirs.livemode is other.livemode


def _meter_pair(owner: Side, other: Side) -> dict[str, Any]:
    mine = meter(owner)
    theirs = meter(other, mine.event_name)
    ident = unique("idem")
    return {"mine": mine, "theirs": theirs, "name": mine.event_name, "ident": ident}


def _events_pair(owner: Side, other: Side) -> dict[str, Any]:
    ctx = _meter_pair(owner, other)
    for side in (owner, other):
        event_v1(side, ctx["name"], "8", ctx["ident"])
    return ctx


def _event_params(ctx: dict[str, Any]) -> Any:
    return {
        "event_name": ctx["name"],
        "payload": {"stripe_customer_id": "c", "value": "3"},
        "identifier": ctx["ident"],
    }


def _cancel_params(ctx: dict[str, Any]) -> Any:
    return {"event_name": ctx["name"], "type": "cancel", "cancel": {"identifier": ctx["ident"]}}


def _counted(value: int) -> Callable[[Side, Side, dict[str, Any], Any, Any], None]:
    def check(owner: Side, other: Side, ctx: dict[str, Any], mine: Any, theirs: Any) -> None:
        assert total(owner.client, ctx["mine"].id) == Decimal(value)
        assert total(other.client, ctx["theirs"].id) == Decimal(value)
        assert theirs.livemode is other.livemode

    return check


def _missing(owner: Side, other: Side, ctx: dict[str, Any], mine: Any, theirs: Any) -> None:
    assert isinstance(theirs, stripe.InvalidRequestError), theirs
    v1_missing(theirs)


KEYED = {
    "meters-create": Keyed(
        lambda o, x: {"name": unique("idem")},
        lambda s, ctx, key: s.client.v1.billing.meters.create(
            {
                "display_name": "Keyed",
                "event_name": ctx["name"],
                "default_aggregation": {"formula": "sum"},
            },
            {"idempotency_key": key},
        ),
        _fresh_object,
    ),
    "products-create": Keyed(
        lambda o, x: {"name": unique("Keyed")},
        lambda s, ctx, key: s.client.v1.products.create(
            {"name": ctx["name"]}, {"idempotency_key": key}
        ),
        _fresh_object,
    ),
    "plans-create": Keyed(
        lambda o, x: {"name": unique("Keyed")},
        lambda s, ctx, key: s.client.v1.plans.create(
            {
                "currency": "usd",
                "interval": "month",
                "amount": 5,
                "product": {"name": ctx["name"]},
            },
            {"idempotency_key": key},
        ),
        _fresh_object,
    ),
    "meter-events-v1": Keyed(
        _meter_pair,
        lambda s, ctx, key: s.client.v1.billing.meter_events.create(
            _event_params(ctx), {"idempotency_key": key}
        ),
        _counted(3),
    ),
    "meter-events-v2": Keyed(
        _meter_pair,
        lambda s, ctx, key: s.client.v2.billing.meter_events.create(
            _event_params(ctx), {"idempotency_key": key}
        ),
        _counted(3),
    ),
    "adjustments-v1": Keyed(
        _events_pair,
        lambda s, ctx, key: s.client.v1.billing.meter_event_adjustments.create(
            _cancel_params(ctx), {"idempotency_key": key}
        ),
        _counted(0),
    ),
    "adjustments-v2": Keyed(
        _events_pair,
        lambda s, ctx, key: s.client.v2.billing.meter_event_adjustments.create(
            _cancel_params(ctx), {"idempotency_key": key}
        ),
        _counted(0),
    ),
    "meter-update": Keyed(
        lambda o, x: {"mine": meter(o)},
        lambda s, ctx, key: s.client.v1.billing.meters.update(
            ctx["mine"].id, {"display_name": "Renamed"}, {"idempotency_key": key}
        ),
        _missing,
    ),
    "product-delete": Keyed(
        lambda o, x: {"mine": o.client.v1.products.create({"name": "Doomed"})},
        lambda s, ctx, key: s.client.v1.products.delete(
            ctx["mine"].id, options={"idempotency_key": key}
        ),
        _missing,
    ),
}


@pytest.mark.parametrize("kind", list(KEYED))
def test_an_idempotency_key_means_nothing_in_another_scope(
    pair: tuple[Side, Side], kind: str
) -> None:
    owner, other = pair
    keyed = KEYED[kind]
    ctx = keyed.setup(owner, other)
    key = unique("idem-key")
    mine = keyed.run(owner, ctx, key)
    assert not replayed(mine)
    try:
        theirs = keyed.run(other, ctx, key)
    except stripe.InvalidRequestError as error:
        theirs = error
    else:
        assert not replayed(theirs), "the owner's answer was replayed to another scope"
    keyed.check(owner, other, ctx, mine, theirs)
    # The key still works where it was used: the owner's retry replays the owner's answer.
    again = keyed.run(owner, ctx, key)
    assert replayed(again)
    assert again.last_response is not None and mine.last_response is not None
    assert json.loads(again.last_response.body) == json.loads(mine.last_response.body)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_one_idempotency_key_raced_from_two_scopes_runs_once_in_each(
    pair: tuple[Side, Side], version: str
) -> None:
    """Requests of both scopes with one key may meet in one group commit: still one per scope."""
    owner, other = pair
    ctx = _meter_pair(owner, other)
    key = unique("race")

    def send(side: Side) -> Any:
        events: Any = getattr(side.client, version).billing.meter_events
        return events.create(_event_params(ctx), {"idempotency_key": key})

    sides = [owner, other] * 6
    with concurrent.futures.ThreadPoolExecutor(len(sides)) as pool:
        answers = list(pool.map(send, sides))
    for side in (owner, other):
        mine = [a for s, a in zip(sides, answers, strict=True) if s is side]
        assert sum(not replayed(a) for a in mine) == 1, side.name
        assert all(a.livemode is side.livemode for a in mine)
    assert total(owner.client, ctx["mine"].id) == 3
    assert total(other.client, ctx["theirs"].id) == 3


# --- one scope's bad request and another scope's requests in the same commit -------------------


def test_a_bad_stream_batch_of_one_account_fails_no_request_of_another(
    request: pytest.FixtureRequest, server: RunningServer, backend: str, sides: dict[str, Side]
) -> None:
    """Events of many requests are written in one transaction (the group commit); a request
    whose events cannot be stored must fail alone, not the other accounts' requests with it."""
    server_log(server)  # B's failures are 500s with tracebacks: keep the server's pipe drained
    victim, attacker = sides["A-test"], sides["B-test"]
    mine = meter(victim)
    token = attacker.client.v2.billing.meter_event_session.create().authentication_token
    poison = {"events": [{"event_name": unique("nomtr"), "payload": {}, "identifier": "i\x00"}]}
    good = {"event_name": mine.event_name, "payload[stripe_customer_id]": "c"}

    done = threading.Event()

    def keep_poisoning() -> None:
        auth = {"Authorization": f"Bearer {token}"}
        while not done.is_set():  # each on a connection of its own: a 500 closes it
            with httpx.Client(base_url=server.base_url, timeout=30) as own:
                own.post("/v2/billing/meter_event_stream", json=poison, headers=auth)

    def send(index: int) -> int | str:
        body = {**good, "payload[value]": "1", "identifier": unique("good")}
        try:
            return http.post("/v1/billing/meter_events", data=body).status_code
        except httpx.TransportError:  # the connection a 500 closed
            return "dropped"

    auth = {"Authorization": f"Bearer {victim.key}"}
    poisoner = threading.Thread(target=keep_poisoning, daemon=True)
    poisoner.start()
    try:
        with (
            httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as http,
            concurrent.futures.ThreadPoolExecutor(8) as pool,
        ):
            statuses = list(pool.map(send, range(sent := 120)))
    finally:
        done.set()
        poisoner.join()
    assert statuses == [200] * sent, collections.Counter(statuses)
    assert total(victim.client, mine.id) == sent

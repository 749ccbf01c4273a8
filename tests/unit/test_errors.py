"""Error classes and their v1/v2 envelopes; list paging params; idempotency fingerprints."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from meterd.api.idempotency import fingerprint
from meterd.api.pagination import MAX_LIMIT, ListParams
from meterd.errors import (
    DOC_URL,
    APIError,
    AuthenticationError,
    IdempotencyError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    StripeError,
    TemporarySessionExpired,
    empty_param,
    invalid_enum,
    missing_param,
    no_such,
    unknown_param,
)
from meterd.storage import PageRequest
from tests.spec import assert_matches

V1_KEYS = ["type", "code", "doc_url", "message", "param"]


def _check(error: StripeError) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both bodies, validated against Stripe's schemas, with the shape rules every error obeys."""
    v1, v2 = error.v1_body(), error.v2_body()
    assert_matches(v1, "error")
    assert_matches(v2, "v2.error", "v2-billing-meters.json")
    assert list(v1) == ["error"]
    assert list(v2) == ["error"]
    assert [k for k in V1_KEYS if k in v1["error"]] == list(v1["error"])
    assert v1["error"]["message"] == error.message
    assert v2["error"]["message"] == error.message
    assert ("param" in v1["error"]) == (error.param is not None)
    assert "param" not in v2["error"]
    assert ("doc_url" in v1["error"]) == ("code" in v1["error"]) == (error.code is not None)
    if error.code is not None:
        assert v1["error"]["doc_url"] == DOC_URL.format(code=error.code)
        assert v2["error"]["doc_url"] == v1["error"]["doc_url"]
    else:
        assert "doc_url" not in v2["error"]
    return v1["error"], v2["error"]


@pytest.mark.parametrize(
    ("cls", "status", "v1_type", "v2_type", "code"),
    [
        (StripeError, 500, "api_error", "api_error", None),
        (APIError, 500, "api_error", "api_error", None),
        (InvalidRequestError, 400, "invalid_request_error", "invalid_request_error", None),
        (NotFoundError, 404, "invalid_request_error", "invalid_request_error", "resource_missing"),
        (AuthenticationError, 401, "invalid_request_error", "invalid_request_error", None),
        (
            TemporarySessionExpired,
            401,
            "invalid_request_error",
            "temporary_session_expired",
            "billing_meter_event_session_expired",
        ),
        (IdempotencyError, 400, "idempotency_error", "idempotency_error", "idempotency_error"),
        (RateLimitError, 429, "invalid_request_error", "rate_limit", "rate_limit"),
    ],
)
def test_classes(
    cls: type[StripeError], status: int, v1_type: str, v2_type: str, code: str | None
) -> None:
    error = cls("Something happened.")
    assert error.http_status == status
    assert error.code == code
    assert str(error) == "Something happened."
    assert error.headers == {}
    v1, v2 = _check(error)
    assert v1["type"] == v1_type
    assert v1.get("code") == code
    assert v2["type"] == v2_type
    assert v2["code"] == (code or v2_type)


def test_hierarchy() -> None:
    assert issubclass(NotFoundError, InvalidRequestError)
    assert issubclass(TemporarySessionExpired, AuthenticationError)
    for cls in (
        InvalidRequestError,
        AuthenticationError,
        IdempotencyError,
        RateLimitError,
        APIError,
    ):
        assert issubclass(cls, StripeError)
        assert issubclass(cls, Exception)


def test_rate_limit_bodies() -> None:
    v1, v2 = _check(RateLimitError("Too many requests."))
    assert v1 == {
        "type": "invalid_request_error",
        "code": "rate_limit",
        "doc_url": "https://stripe.com/docs/error-codes/rate_limit",
        "message": "Too many requests.",
    }
    assert v2 == {
        "code": "rate_limit",
        "message": "Too many requests.",
        "type": "rate_limit",
        "doc_url": "https://stripe.com/docs/error-codes/rate_limit",
    }


def test_session_expired_bodies() -> None:
    error = TemporarySessionExpired("The session has expired.")
    assert error.http_status == 401
    v1, v2 = _check(error)
    assert v1["type"] == "invalid_request_error"
    assert v2 == {
        "code": "billing_meter_event_session_expired",
        "message": "The session has expired.",
        "type": "temporary_session_expired",
        "doc_url": "https://stripe.com/docs/error-codes/billing_meter_event_session_expired",
    }


def test_idempotency_error_bodies() -> None:
    v1, v2 = _check(IdempotencyError("Keys for idempotent requests ..."))
    assert v1["type"] == "idempotency_error"
    assert v2["type"] == "idempotency_error"
    in_use = IdempotencyError("In use.", code="idempotency_key_in_use")
    v1, v2 = _check(in_use)
    assert v1["code"] == v2["code"] == "idempotency_key_in_use"
    assert in_use.http_status == 400


def test_invalid_request_without_code() -> None:
    v1, v2 = _check(InvalidRequestError("Invalid integer: abc", param="limit"))
    assert v1 == {
        "type": "invalid_request_error",
        "message": "Invalid integer: abc",
        "param": "limit",
    }
    assert v2 == {
        "code": "invalid_request_error",
        "message": "Invalid integer: abc",
        "type": "invalid_request_error",
    }


def test_not_found() -> None:
    error = no_such("meter", "mtr_123")
    assert isinstance(error, NotFoundError)
    assert error.http_status == 404
    v1, v2 = _check(error)
    assert v1 == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource_missing",
        "message": "No such meter: 'mtr_123'",
        "param": "id",
    }
    assert v2["code"] == "resource_missing"
    assert no_such("meter", "mtr_9", param="starting_after").param == "starting_after"


def test_overrides() -> None:
    error = InvalidRequestError(
        "Busy.", code="lock_timeout", status=409, headers={"Retry-After": "1"}, param="x"
    )
    assert error.http_status == 409
    assert error.headers == {"Retry-After": "1"}
    v1, _ = _check(error)
    assert (v1["code"], v1["param"]) == ("lock_timeout", "x")


def test_api_error_v2_has_type() -> None:
    _, v2 = _check(APIError("Something went wrong on our end."))
    assert v2 == {
        "code": "api_error",
        "message": "Something went wrong on our end.",
        "type": "api_error",
    }


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            missing_param("default_aggregation[formula]"),
            "parameter_missing",
            "Missing required param: default_aggregation[formula].",
        ),
        (
            unknown_param("customer_mapping[foo]"),
            "parameter_unknown",
            "Received unknown parameter: customer_mapping[foo]",
        ),
        (
            empty_param("display_name"),
            "parameter_invalid_empty",
            "You passed an empty string for 'display_name'. We assume empty values are an attempt "
            "to unset a parameter; however 'display_name' cannot be unset. You should remove "
            "'display_name' from your request or supply a non-empty value.",
        ),
    ],
)
def test_param_helpers(error: InvalidRequestError, code: str, message: str) -> None:
    assert type(error) is InvalidRequestError
    assert (error.code, error.message, error.http_status) == (code, message, 400)
    v1, _ = _check(error)
    assert v1["param"] == error.param


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        (("by_id",), "Invalid p: must be one of by_id"),
        (("day", "hour"), "Invalid p: must be one of day or hour"),
        (("count", "last", "sum"), "Invalid p: must be one of count, last, or sum"),
        (("a", "b", "c", "d"), "Invalid p: must be one of a, b, c, or d"),
    ],
)
def test_invalid_enum(choices: tuple[str, ...], message: str) -> None:
    error = invalid_enum("p", choices)
    assert (error.message, error.param, error.code) == (message, "p", None)
    _check(error)


# --- ListParams.page_request -------------------------------------------------------------


def test_page_request_defaults() -> None:
    request = ListParams().page_request()
    assert request == PageRequest(limit=10, starting_after=None, ending_before=None)


@pytest.mark.parametrize("limit", [1, 50, MAX_LIMIT])
def test_page_request_limits(limit: int) -> None:
    assert ListParams(limit=limit).page_request().limit == limit


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (0, "This value must be greater than or equal to 1."),
        (-5, "This value must be greater than or equal to 1."),
        (101, "This value must be less than or equal to 100."),
        (10_000, "This value must be less than or equal to 100."),
    ],
)
def test_page_request_rejects_limits(limit: int, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ListParams(limit=limit).page_request()
    error = info.value
    assert (error.param, error.message, error.http_status) == ("limit", message, 400)
    _check(error)


def test_page_request_cursors() -> None:
    after = ListParams(starting_after="mtr_1").page_request()
    assert (after.starting_after, after.ending_before) == ("mtr_1", None)
    before = ListParams(ending_before="mtr_2").page_request()
    assert (before.starting_after, before.ending_before) == (None, "mtr_2")


def test_page_request_rejects_both_cursors() -> None:
    with pytest.raises(InvalidRequestError) as info:
        ListParams(starting_after="mtr_1", ending_before="mtr_2").page_request()
    error = info.value
    assert error.code == "parameters_exclusive"
    assert error.http_status == 400
    assert error.message == (
        "You may only specify one of these parameters: ending_before, starting_after."
    )
    _check(error)


def test_list_params_from_a_form() -> None:
    params = msgspec.convert({"limit": "0"}, ListParams, strict=False)
    with pytest.raises(InvalidRequestError):
        params.page_request()


# --- idempotency fingerprints ------------------------------------------------------------


def test_fingerprint_is_stable_under_key_order() -> None:
    one = {"display_name": "d", "default_aggregation": {"formula": "sum", "x": "1"}, "e": ["a"]}
    two = {"e": ["a"], "default_aggregation": {"x": "1", "formula": "sum"}, "display_name": "d"}
    assert fingerprint("POST", "/v1/billing/meters", one) == fingerprint(
        "POST", "/v1/billing/meters", two
    )


def test_fingerprint_is_a_sha256_hex_digest() -> None:
    digest = fingerprint("POST", "/v1/billing/meters", {})
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert digest == fingerprint("POST", "/v1/billing/meters", {})


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("POST", "/v1/billing/meters", {"display_name": "e"}),
        ("POST", "/v1/billing/meters", {"display_name": "d", "x": "1"}),
        ("POST", "/v1/billing/meters", {"display_name": ["d"]}),
        ("POST", "/v1/billing/meters", {}),
        ("POST", "/v1/billing/meters/mtr_1", {"display_name": "d"}),
        ("GET", "/v1/billing/meters", {"display_name": "d"}),
    ],
)
def test_fingerprint_differs(method: str, path: str, params: dict[str, Any]) -> None:
    base = fingerprint("POST", "/v1/billing/meters", {"display_name": "d"})
    assert fingerprint(method, path, params) != base


def test_fingerprint_list_order_matters() -> None:
    path = "/v1/billing/meters"
    assert fingerprint("POST", path, {"e": ["a", "b"]}) != fingerprint(
        "POST", path, {"e": ["b", "a"]}
    )

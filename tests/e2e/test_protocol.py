"""The wire protocol below the SDK: auth schemes, headers, idempotency, raw malformed bodies."""

from __future__ import annotations

import base64
import concurrent.futures
from typing import Any

import httpx
import pytest
import stripe

from tests.conftest import RunningServer
from tests.spec import assert_matches

FORM = "application/x-www-form-urlencoded"
CREATE_FORM = "display_name=Calls&event_name=calls&default_aggregation[formula]=count"


@pytest.fixture
def http(server: RunningServer, account_key: str) -> httpx.Client:
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {account_key}"}
    ) as client:
        yield client  # type: ignore[misc]


def post_form(http: httpx.Client, path: str, body: str | bytes, **headers: str) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": FORM, **headers})


def v1_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert_matches(body, "error")
    assert response.headers["request-id"].startswith("req_")
    return body["error"]  # type: ignore[no-any-return]


def test_basic_auth_with_key_as_username(server: RunningServer, account_key: str) -> None:
    token = base64.b64encode(f"{account_key}:".encode()).decode()
    response = httpx.get(
        f"{server.base_url}/v1/billing/meters", headers={"Authorization": f"Basic {token}"}
    )
    assert response.status_code == 200
    assert response.json()["object"] == "list"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Token abc", "Basic !!!notbase64", "Bearer sk_test_wrong"],
)
def test_missing_or_bad_auth_is_401_in_the_envelope(
    server: RunningServer, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = httpx.get(f"{server.base_url}/v1/billing/meters", headers=headers)
    error = v1_error(response, 401)
    assert error["type"] == "invalid_request_error"


def test_v2_paths_answer_in_the_v2_envelope(server: RunningServer) -> None:
    response = httpx.post(f"{server.base_url}/v2/billing/nothing_here", json={})
    assert response.status_code == 404
    body = response.json()
    assert_matches(body, "v2.error", "v2-billing-meters.json")
    assert set(body["error"]) >= {"code", "message"}


def test_every_response_has_request_id_and_echoes_stripe_version(http: httpx.Client) -> None:
    ok = http.get("/v1/billing/meters", headers={"Stripe-Version": "2026-06-24.dahlia"})
    assert ok.status_code == 200
    assert ok.headers["stripe-version"] == "2026-06-24.dahlia"
    bad = http.get("/v1/billing/meters/mtr_nope", headers={"Stripe-Version": "2020-08-27"})
    assert bad.status_code == 404
    assert bad.headers["stripe-version"] == "2020-08-27"
    ids = {ok.headers["request-id"], bad.headers["request-id"]}
    assert len(ids) == 2 and all(i.startswith("req_") for i in ids)


def test_unknown_route_is_404_and_wrong_method_is_405_in_the_envelope(http: httpx.Client) -> None:
    error = v1_error(http.get("/v1/nothing"), 404)
    assert "Unrecognized request URL (GET: /v1/nothing)" in error["message"]
    response = http.delete("/v1/billing/meters")
    error = v1_error(response, 405)
    assert {"GET", "POST"} <= set(response.headers["allow"].replace(" ", "").split(","))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"display_name=a&display_name[x]=b", "display_name"),
        (b"default_aggregation[formula=count", None),
        (b"display_name=%ff%fe", None),
        (b"display_name=\xff", None),
        (b"event_name=a\x00b", None),
        (b"a" + b"[x]" * 20 + b"=1", "a"),
    ],
)
def test_malformed_form_bodies_are_400(http: httpx.Client, body: bytes, param: str | None) -> None:
    error = v1_error(post_form(http, "/v1/billing/meters", body), 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert http.get("/v1/billing/meters").json()["data"] == []


def test_both_list_encodings_and_query_booleans_are_accepted(http: httpx.Client) -> None:
    created = post_form(http, "/v1/billing/meters", CREATE_FORM + "&expand[]=customer_mapping")
    assert created.status_code == 200, created.text
    meter_id = created.json()["id"]
    for query in ("expand[]=value_settings", "expand[0]=value_settings"):
        assert http.get(f"/v1/billing/meters/{meter_id}?{query}").status_code == 200


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = CREATE_FORM + "&x=" + "a" * (1024 * 1024)
    error = v1_error(post_form(http, "/v1/billing/meters", big), 413)
    assert "too large" in error["message"]


def test_idempotency_key_replays_the_first_answer(http: httpx.Client) -> None:
    first = post_form(http, "/v1/billing/meters", CREATE_FORM, **{"Idempotency-Key": "k1"})
    assert first.status_code == 200
    assert "idempotent-replayed" not in first.headers
    again = post_form(http, "/v1/billing/meters", CREATE_FORM, **{"Idempotency-Key": "k1"})
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(http.get("/v1/billing/meters").json()["data"]) == 1


def test_idempotency_key_with_other_params_is_idempotency_error(http: httpx.Client) -> None:
    assert post_form(http, "/v1/billing/meters", CREATE_FORM, **{"Idempotency-Key": "k"}).is_success
    other = post_form(
        http,
        "/v1/billing/meters",
        CREATE_FORM.replace("Calls", "Other"),
        **{"Idempotency-Key": "k"},
    )
    error = v1_error(other, 400)
    assert error["type"] == "idempotency_error"


def test_idempotency_keys_are_per_account(server: RunningServer, http: httpx.Client) -> None:
    assert post_form(http, "/v1/billing/meters", CREATE_FORM, **{"Idempotency-Key": "x"}).is_success
    other = httpx.post(
        f"{server.base_url}/v1/billing/meters",
        content=CREATE_FORM,
        headers={
            "Authorization": f"Bearer {server.secret_key}",
            "Content-Type": FORM,
            "Idempotency-Key": "x",
        },
    )
    assert "idempotent-replayed" not in other.headers


def test_failed_request_does_not_keep_its_idempotency_key(http: httpx.Client) -> None:
    bad = post_form(http, "/v1/billing/meters", "display_name=x", **{"Idempotency-Key": "f"})
    v1_error(bad, 400)
    fixed = post_form(http, "/v1/billing/meters", CREATE_FORM, **{"Idempotency-Key": "f"})
    assert fixed.status_code == 200


def test_concurrent_requests_with_one_key_execute_once(http: httpx.Client) -> None:
    def send(_: int) -> httpx.Response:
        return post_form(http, "/v1/billing/meters", CREATE_FORM, **{"Idempotency-Key": "race"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(16)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(http.get("/v1/billing/meters").json()["data"]) == 1


def test_sdk_retry_with_same_idempotency_key_does_not_double_create(
    client: stripe.StripeClient,
) -> None:
    params = {"display_name": "x", "event_name": "e", "default_aggregation": {"formula": "sum"}}
    first = client.v1.billing.meters.create(params, {"idempotency_key": "sdk-retry"})  # type: ignore[arg-type]
    second = client.v1.billing.meters.create(params, {"idempotency_key": "sdk-retry"})  # type: ignore[arg-type]
    assert first.id == second.id
    with pytest.raises(stripe.IdempotencyError):
        client.v1.billing.meters.create(
            {**params, "display_name": "y"},  # type: ignore[arg-type]
            {"idempotency_key": "sdk-retry"},
        )

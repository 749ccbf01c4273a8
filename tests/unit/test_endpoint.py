"""The endpoint glue on a test route: v2 JSON bodies, strict types, the v2 envelope, replay."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from meterd import keys
from meterd.api.endpoint import ApiCall, resource, v1, v2
from meterd.config import Settings
from meterd.storage.sqlite import SQLiteStore
from tests.spec import assert_matches


class EchoParams(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=10)]
    count: int = 1
    kind: Literal["a", "b"] = "a"


calls: list[str] = []


async def echo(call: ApiCall) -> dict[str, Any]:
    params = call.parse(EchoParams)
    calls.append(params.name)
    return {"name": params.name, "count": params.count, "livemode": call.scope.livemode}


@pytest.fixture
def http(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    store = asyncio.run(SQLiteStore.open(str(tmp_path / "t.db")))
    account = keys.new_account(0)
    key, secret = keys.new_api_key(account.id, livemode=False, now=0)
    asyncio.run(store.create_account(account, key))
    app = Starlette(
        routes=[resource("/v2/echo", POST=v2(echo)), resource("/v1/echo", POST=v1(echo))]
    )
    app.state.store = store
    app.state.settings = Settings(max_body_bytes=1000)
    calls.clear()
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client, secret
    asyncio.run(store.close())


def v2_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert_matches(body, "v2.error", "v2-billing-meters.json")
    return body["error"]  # type: ignore[no-any-return]


def test_v2_takes_a_json_body(http: tuple[TestClient, str]) -> None:
    client, _ = http
    response = client.post("/v2/echo", json={"name": "x", "count": 3})
    assert response.status_code == 200
    assert response.json() == {"name": "x", "count": 3, "livemode": False}


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"text"', b'{"name": "x", "count": "3"}', b'{"name": 5}', b"\xff"],
)
def test_v2_rejects_bad_json_and_wrong_types(http: tuple[TestClient, str], body: bytes) -> None:
    client, _ = http
    response = client.post("/v2/echo", content=body, headers={"Content-Type": "application/json"})
    error = v2_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert calls == []


def test_v2_unknown_and_missing_fields(http: tuple[TestClient, str]) -> None:
    client, _ = http
    assert (
        "unknown parameter: extra"
        in v2_error(client.post("/v2/echo", json={"name": "x", "extra": 1}), 400)["message"]
    )
    assert v2_error(client.post("/v2/echo", json={}), 400)["code"] == "parameter_missing"


def test_v2_does_not_take_basic_auth(http: tuple[TestClient, str]) -> None:
    client, secret = http
    basic = "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
    response = client.post("/v2/echo", json={"name": "x"}, headers={"Authorization": basic})
    assert v2_error(response, 401)["message"].startswith("Invalid authorization header")
    v1_ok = client.post("/v1/echo", content=b"name=x", headers={"Authorization": basic})
    assert v1_ok.status_code == 200


def test_v2_idempotent_replay(http: tuple[TestClient, str]) -> None:
    client, _ = http
    headers = {"Idempotency-Key": "abc"}
    first = client.post("/v2/echo", json={"name": "x"}, headers=headers)
    second = client.post("/v2/echo", json={"name": "x"}, headers=headers)
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert calls == ["x"]
    conflict = client.post("/v2/echo", json={"name": "y"}, headers=headers)
    assert v2_error(conflict, 400)["type"] == "idempotency_error"


def test_body_limit_applies_to_both_versions(http: tuple[TestClient, str]) -> None:
    client, _ = http
    big = {"name": "x", "pad": "p" * 2000}
    assert v2_error(client.post("/v2/echo", json=big), 413)["message"].startswith("Request body")
    v1_big = client.post("/v1/echo", content=b"name=x&pad=" + b"p" * 2000)
    assert v1_big.status_code == 413
    assert_matches(v1_big.json(), "error")


def test_idempotency_key_longer_than_255_is_rejected(http: tuple[TestClient, str]) -> None:
    client, _ = http
    response = client.post("/v2/echo", json={"name": "x"}, headers={"Idempotency-Key": "k" * 256})
    v2_error(response, 400)
    assert calls == []

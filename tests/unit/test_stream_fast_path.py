"""``StreamFastPath``: what it leaves to the app behind it, and the 500 it answers itself."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from meterd.api import meter_event_stream
from meterd.api.meter_event_stream import STREAM_PATH, StreamFastPath
from meterd.config import Settings
from tests.spec import assert_matches


class BrokenStore:
    """Every session lookup fails, as a database that went away would."""

    async def find_session(self, token_hash: str) -> Any:
        raise RuntimeError("the database went away")


async def other(request: Request) -> PlainTextResponse:
    return PlainTextResponse("behind")


def fast_path() -> TestClient:
    app = Starlette(routes=[*meter_event_stream.routes, Route("/other", other)])
    app.state.store = BrokenStore()
    app.state.settings = Settings()
    return TestClient(StreamFastPath(app), raise_server_exceptions=False)


def test_an_unexpected_failure_is_a_500_in_the_v2_envelope() -> None:
    meter_event_stream._sessions.clear()
    answer = fast_path().post(
        STREAM_PATH, content=b'{"events": []}', headers={"Authorization": "Bearer ek_test_x"}
    )
    assert answer.status_code == 500
    body = answer.json()
    assert_matches(body, "v2.error", "v2-billing-meters.json")
    assert body["error"]["type"] == "api_error"
    assert "database" not in body["error"]["message"]  # the cause goes to the log only


def test_everything_else_goes_to_the_app_behind() -> None:
    client = fast_path()
    assert client.get("/other").text == "behind"
    refused = client.get(STREAM_PATH)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"


def test_without_the_fast_path_the_route_answers_the_same() -> None:
    """Starlette alone (no ``StreamFastPath`` in front) routes POSTs to the same code."""
    meter_event_stream._sessions.clear()
    app = Starlette(routes=meter_event_stream.routes)
    app.state.store = BrokenStore()
    app.state.settings = Settings()
    answer = TestClient(app).post(STREAM_PATH, content=b"{}")
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "invalid_request_error"

"""Prototype."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import RunningServer, new_account_key
from tests.spec import SPEC_DIR

EXAMPLES = int(os.environ.get("METERD_SCHEMATHESIS_EXAMPLES", "50"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def _load(name: str) -> Any:
    raw = json.loads((SPEC_DIR / name).read_text())
    for item in raw["paths"].values():
        for op in item.values():
            if isinstance(op, dict):
                op.pop("servers", None)
                default = op["responses"].get("default", {})
                schema = default.get("content", {}).get("application/json", {}).get("schema", {})
                if "oneOf" in schema:
                    schema["anyOf"] = schema.pop("oneOf")
    return schemathesis.openapi.from_dict(raw)


v1 = _load("v1-billing-meters.json")
v2 = _load("v2-billing-meters.json")


@pytest.fixture(scope="module")
def key(server: RunningServer) -> str:
    return new_account_key(server, "test")


@pytest.fixture(scope="module")
def token(server: RunningServer, key: str) -> str:
    return str(server.client(key).v2.billing.meter_event_session.create().authentication_token)


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@v1.parametrize()
@SETTINGS
def test_v1(case: Any, server: RunningServer, key: str) -> None:
    r = case.call_and_validate(
        base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS
    )
    _log(case, r)


@v2.parametrize()
@SETTINGS
def test_v2(case: Any, server: RunningServer, key: str, token: str) -> None:
    secret = token if case.path == "/v2/billing/meter_event_stream" else key
    r = case.call_and_validate(
        base_url=server.base_url, headers={"Authorization": f"Bearer {secret}"}, checks=CHECKS
    )
    _log(case, r)


def _log(case, r):
    with open("/tmp/st_log.jsonl", "a") as f:
        f.write(json.dumps({"op": f"{case.method} {case.path}", "status": r.status_code, "code": (r.json().get("error") or {}).get("code") if r.status_code >= 400 else None, "mode": str(getattr(case, "_meta", None) and case._meta.generation.mode)}) + "\n")

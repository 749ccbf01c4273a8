"""JSON responses and the error envelopes, v1 and v2."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from starlette.responses import Response

from meterd.errors import StripeError

ApiVersion = Literal["v1", "v2"]

_encoder = msgspec.json.Encoder(decimal_format="number")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return encoded_response(_encoder.encode(body), status, headers)


def encoded_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(error: StripeError, version: ApiVersion) -> Response:
    body = error.v2_body() if version == "v2" else error.v1_body()
    headers = dict(error.headers)
    if error.http_status < 500:
        headers.setdefault("Stripe-Should-Retry", "false")
    return json_response(body, error.http_status, headers)


def version_of_path(path: str) -> ApiVersion:
    return "v2" if path.startswith("/v2/") else "v1"

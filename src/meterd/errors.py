"""Stripe's error types, one class each, and the two envelopes they render to.

Every failure a client can see is raised as one of these and rendered in one place::

    StripeError                     500  api_error
    ├── InvalidRequestError         400  invalid_request_error
    │   └── NotFoundError           404  invalid_request_error, code resource_missing
    ├── AuthenticationError         401  invalid_request_error (Stripe's 401 body type)
    │   └── TemporarySessionExpired 401  v2 type temporary_session_expired
    ├── IdempotencyError            400  idempotency_error
    ├── RateLimitError              429  v1 invalid_request_error + code rate_limit, v2 rate_limit
    └── APIError                    500  api_error

The official SDKs pick their exception class from the HTTP status and, for v2, from ``type``;
so status and type travel together on the class, and the envelope shape (v1 or v2) is chosen by
the path the request came in on.
"""

from __future__ import annotations

from typing import Any, ClassVar

DOC_URL = "https://stripe.com/docs/error-codes/{code}"


class StripeError(Exception):
    """Base of every error meterd answers with; an unexpected one is an ``api_error``."""

    status: ClassVar[int] = 500
    v1_type: ClassVar[str] = "api_error"
    v2_type: ClassVar[str | None] = "api_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.http_status = status if status is not None else self.status
        self.headers = headers or {}

    def v1_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.v1_type}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = DOC_URL.format(code=self.code)
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}

    def v2_body(self) -> dict[str, Any]:
        code = self.code or self.v2_type or self.v1_type
        error: dict[str, Any] = {"code": code, "message": self.message}
        if self.v2_type is not None:
            error["type"] = self.v2_type
        if self.code is not None:
            error["doc_url"] = DOC_URL.format(code=self.code)
        return {"error": error}


class InvalidRequestError(StripeError):
    """The request has invalid parameters (400)."""

    status = 400
    v1_type = "invalid_request_error"
    v2_type = "invalid_request_error"


class NotFoundError(InvalidRequestError):
    """The id in the path (or a cursor) names no object of this account and mode (404)."""

    status = 404
    default_code = "resource_missing"


class AuthenticationError(StripeError):
    """No key, an unknown key, or a revoked key (401); Stripe's 401 body says invalid_request."""

    status = 401
    v1_type = "invalid_request_error"
    v2_type = "invalid_request_error"


class TemporarySessionExpired(AuthenticationError):
    """A meter event session token past its ``expires_at`` (401)."""

    v2_type = "temporary_session_expired"
    default_code = "billing_meter_event_session_expired"


class IdempotencyError(StripeError):
    """An Idempotency-Key reused with other parameters, or still in use (400)."""

    status = 400
    v1_type = "idempotency_error"
    v2_type = "idempotency_error"
    default_code = "idempotency_error"


class RateLimitError(StripeError):
    """Too many requests, or a full ingest queue (429)."""

    status = 429
    v1_type = "invalid_request_error"
    v2_type = "rate_limit"
    default_code = "rate_limit"


class APIError(StripeError):
    """Something went wrong on meterd's side (500)."""


def unexpected_error() -> APIError:
    """The 500 answered when meterd itself failed (the cause goes to the log, not the caller)."""
    return APIError("An unexpected error occurred in meterd; the request was not completed.")


MAX_PARAM_SHOWN = 5000
"""Stripe's schema caps ``param`` at 5,000 characters; a longer name sent is cut."""


def missing_param(param: str) -> InvalidRequestError:
    param = param[:MAX_PARAM_SHOWN]
    return InvalidRequestError(
        f"Missing required param: {param}.", param=param, code="parameter_missing"
    )


def unknown_param(param: str) -> InvalidRequestError:
    param = param[:MAX_PARAM_SHOWN]
    return InvalidRequestError(
        f"Received unknown parameter: {param}", param=param, code="parameter_unknown"
    )


def empty_param(param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"You passed an empty string for '{param}'. We assume empty values are an attempt to "
        f"unset a parameter; however '{param}' cannot be unset. You should remove '{param}' "
        "from your request or supply a non-empty value.",
        param=param,
        code="parameter_invalid_empty",
    )


def invalid_enum(param: str, choices: tuple[str, ...]) -> InvalidRequestError:
    if len(choices) > 2:
        listed = ", ".join(choices[:-1]) + f", or {choices[-1]}"
    else:
        listed = " or ".join(choices)
    return InvalidRequestError(f"Invalid {param}: must be one of {listed}", param=param)


def no_such(kind: str, object_id: str, param: str = "id") -> NotFoundError:
    return NotFoundError(f"No such {kind}: '{object_id}'", param=param)

"""Module-scoped accounts: making one costs a ``meterd keys create``, about half a second."""

from __future__ import annotations

import pytest
import stripe

from tests.conftest import RunningServer, new_account_key


@pytest.fixture(scope="module")
def shared_key(server: RunningServer) -> str:
    """One account per test module; each test makes its own meter and unique identifiers."""
    return new_account_key(server, "test")


@pytest.fixture(scope="module")
def shared(server: RunningServer, shared_key: str) -> stripe.StripeClient:
    return server.client(shared_key)

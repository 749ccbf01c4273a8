"""A product: what plans price. Only the fields plans need, plus Stripe's core ones."""

from __future__ import annotations

import msgspec

from meterd import ids
from meterd.errors import InvalidRequestError
from meterd.scope import Scope

STATEMENT_DESCRIPTOR_FORBIDDEN = set("<>\\'\"*")
PRODUCT_ID_LENGTH = 14


class Product(msgspec.Struct, kw_only=True):
    id: str
    account_id: str
    livemode: bool
    name: str
    active: bool = True
    description: str | None = None
    metadata: dict[str, str] = {}
    statement_descriptor: str | None = None
    unit_label: str | None = None
    tax_code: str | None = None
    created: int
    updated: int


def new_id() -> str:
    """``prod_`` and 14 base62 characters, as Stripe's products look."""
    return "prod_" + ids.random_base62(PRODUCT_ID_LENGTH)


def checked_statement_descriptor(text: str | None, param: str) -> str | None:
    """Stripe's rules for what a card statement can show (the length is checked by type)."""
    if text is None:
        return None
    if STATEMENT_DESCRIPTOR_FORBIDDEN & set(text):
        raise InvalidRequestError(
            "The statement descriptor may not include any of the special characters < > \\ ' \" *",
            param=param,
        )
    if not any(char.isalpha() for char in text):
        raise InvalidRequestError(
            "The statement descriptor must contain at least one letter.", param=param
        )
    return text


def new_product(
    scope: Scope,
    *,
    product_id: str | None,
    name: str,
    active: bool,
    description: str | None,
    metadata: dict[str, str],
    statement_descriptor: str | None,
    unit_label: str | None,
    tax_code: str | None,
    now: int,
    param_prefix: str = "",
) -> Product:
    return Product(
        id=product_id or new_id(),
        account_id=scope.account_id,
        livemode=scope.livemode,
        name=name,
        active=active,
        description=description,
        metadata=metadata,
        statement_descriptor=checked_statement_descriptor(
            statement_descriptor, _named(param_prefix, "statement_descriptor")
        ),
        unit_label=unit_label,
        tax_code=tax_code,
        created=now,
        updated=now,
    )


def _named(prefix: str, field: str) -> str:
    return f"{prefix}[{field}]" if prefix else field

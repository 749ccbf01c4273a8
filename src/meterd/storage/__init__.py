"""Storage: one interface (:class:`meterd.storage.base.Store`), one implementation per database."""

from meterd.storage.base import (
    AlreadyExists,
    CreatedBounds,
    CursorNotFound,
    Page,
    PageRequest,
    PlanFilter,
    ProductFilter,
    ReferenceMissing,
    StillReferenced,
    Store,
)
from meterd.storage.open import open_store

__all__ = [
    "AlreadyExists",
    "CreatedBounds",
    "CursorNotFound",
    "Page",
    "PageRequest",
    "PlanFilter",
    "ProductFilter",
    "ReferenceMissing",
    "StillReferenced",
    "Store",
    "open_store",
]

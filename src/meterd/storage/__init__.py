"""Storage: one interface (:class:`meterd.storage.base.Store`), one implementation per database."""

from meterd.storage.base import AlreadyExists, CursorNotFound, Page, PageRequest, Store
from meterd.storage.open import open_store

__all__ = ["AlreadyExists", "CursorNotFound", "Page", "PageRequest", "Store", "open_store"]

"""A started app leaves the youngest GC generation to grow past what a busy server keeps
alive, and its start-up objects frozen (see ``meterd.garbage_collector.settle``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from meterd.app import create_app
from meterd.config import Settings
from meterd.garbage_collector import YOUNG_COLLECTION_THRESHOLD


@pytest.fixture
def default_thresholds() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.set_threshold(700, *thresholds[1:])
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_startup_raises_the_youngest_threshold_and_freezes(
    tmp_path: Path, default_thresholds: None
) -> None:
    older = gc.get_threshold()[1:]
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/t.db"))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *older)
        assert gc.get_freeze_count() > 0

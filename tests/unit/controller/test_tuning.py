"""The operator process's collector thresholds (controller/tuning.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from modeldeploy.controller import tuning


@pytest.fixture
def restored_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_freezes_start_up_and_raises_the_young_threshold() -> None:
    before = tuning.tune_gc()
    assert before != gc.get_threshold()
    assert gc.get_threshold() == (tuning.YOUNG_THRESHOLD, tuning.MIDDLE_THRESHOLD, tuning.OLD_THRESHOLD)
    assert gc.get_freeze_count() > 0

"""Shared by the controller's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modeldeploy.controller import views


@pytest.fixture(autouse=True)
def fresh_child_views() -> Iterator[None]:
    """Each test starts with no child viewed: tests reuse uids and resourceVersions for objects of other
    content, which an apiserver never does (views.ChildView.from_object keeps one view per version)."""
    views._VIEWS.clear()
    yield
    views._VIEWS.clear()

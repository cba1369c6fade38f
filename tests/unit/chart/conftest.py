"""Chart tests: helm (built from its Go module and cached) renders charts/modeldeploy."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.chart import template  # noqa: E402
from tests.support.tools import ensure_helm  # noqa: E402


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_helm()


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., list[dict[str, Any]]]:
    """`render(*helm_template_args)`, cached per argument list."""
    cache: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def _render(*args: str) -> list[dict[str, Any]]:
        if args not in cache:
            cache[args] = template(helm, *args)
        return cache[args]

    return _render

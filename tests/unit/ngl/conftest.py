"""Fixtures for the auto-NGL tests: GGUF files written once per session by tests/support/ngl_gguf.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support import ngl_gguf  # noqa: E402


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One sparse GGUF file per entry of ngl_gguf.SPECS."""
    d = tmp_path_factory.mktemp("ngl-models")
    return {name: ngl_gguf.write(d / f"{name}.gguf", spec) for name, spec in ngl_gguf.SPECS.items()}

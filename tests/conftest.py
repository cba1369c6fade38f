"""Shared test configuration: the repository root and the shared/ folder beside the checkout.

The API is handed the engine registry by whoever reads ModelDeployments (modeldeploy/loader.py does, for
the CLI and the operator); tests that validate models straight through the API get it here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy.api.v1alpha1 import use_engines
from modeldeploy.engines import registry

use_engines(registry)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO

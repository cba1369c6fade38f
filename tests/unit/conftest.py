"""The API is handed the engine registry by whoever reads ModelDeployments (modeldeploy/loader.py); tests
that validate models straight through the API get it here, as the CLI and the operator do."""

from __future__ import annotations

from modeldeploy.api.v1alpha1 import use_engines
from modeldeploy.engines import registry

use_engines(registry)

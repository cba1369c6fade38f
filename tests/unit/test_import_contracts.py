"""The import contracts in `.importlinter` hold (stages import downwards, engine modules only through the
registry, the llama.cpp entrypoint free of the operator's dependencies)."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    assert lint_imports(config_filename=str(REPO / ".importlinter"), no_cache=True) == 0

"""deploy/ (plain manifests for kubectl) is generated from the chart and committed: it must be fresh."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from tests.support.chart import REPO


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location("gen_manifests", REPO / "scripts" / "gen_manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deploy_is_fresh(helm: Path) -> None:
    gen = _gen()
    stale = gen.stale(gen.generate(helm))
    assert not stale, f"deploy/ is stale ({stale}): run .venv/bin/python scripts/gen_manifests.py"


def test_kustomization_lists_every_manifest() -> None:
    deploy = REPO / "deploy"
    top = yaml.safe_load((deploy / "kustomization.yaml").read_text())
    crds = yaml.safe_load((deploy / "crds" / "kustomization.yaml").read_text())
    assert top["resources"] == ["namespace.yaml", "crds", "operator.yaml"]
    assert sorted(crds["resources"]) == sorted(
        p.name for p in (deploy / "crds").glob("*.yaml") if p.stem != "kustomization"
    )
    for path in top["resources"] + [f"crds/{p}" for p in crds["resources"]]:
        assert (deploy / path).exists(), path


def test_install_yaml_holds_everything_once() -> None:
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "install.yaml").read_text()) if d]
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys))
    kinds = [d["kind"] for d in docs]
    # CRDs and the Namespace come before anything that needs them.
    assert kinds[:4] == ["CustomResourceDefinition"] * 3 + ["Namespace"]
    assert "Deployment" in kinds
    (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

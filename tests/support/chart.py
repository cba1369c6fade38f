"""Rendering charts/modeldeploy with helm, for the chart tests and the cluster install test."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modeldeploy"
NAMESPACE = "modeldeploy-system"
NAMESPACED_VALUES = CHART / "ci" / "namespaced-values.yaml"


def run_helm(helm: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=timeout, check=False)


def template(helm: Path, *args: str, release: str = "md", namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The objects `helm template` prints for the chart (add `--include-crds` for the CRDs)."""
    proc = run_helm(helm, "template", release, str(CHART), "--namespace", namespace, *args)
    if proc.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed: {proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


AGGREGATE_LABEL = "rbac.authorization.k8s.io/aggregate-to-"


def operator_roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ClusterRoles the operator runs with: not those that add ModelDeployments to edit/admin/view."""
    return [
        o
        for o in by_kind(objects, "ClusterRole")
        if not any(k.startswith(AGGREGATE_LABEL) for k in (o["metadata"].get("labels") or {}))
    ]

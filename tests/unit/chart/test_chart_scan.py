"""The rendered chart passes checkov (from PyPI, cached) with every finding explained in .checkov.yaml."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.chart import CHART, NAMESPACED_VALUES, run_helm
from tests.support.tools import ensure_checkov

CONFIG = CHART / ".checkov.yaml"
SKIP_LINE = re.compile(r"^\s*-\s*(CKV2?_[A-Z0-9_]+)\s*(?:#\s*(.*))?$")


def _explained_skips() -> dict[str, str]:
    """check id -> reason, from the `skip-check:` list of .checkov.yaml (the reason is the line's comment)."""
    skips: dict[str, str] = {}
    in_list = False
    for line in CONFIG.read_text().splitlines():
        if line.startswith("skip-check:"):
            in_list = True
            continue
        if in_list and line and not line.startswith(" "):
            break
        match = SKIP_LINE.match(line) if in_list else None
        if match:
            skips[match.group(1)] = (match.group(2) or "").strip()
    return skips


def test_every_skip_has_a_reason() -> None:
    skips = _explained_skips()
    assert skips, "no skip-check list found in .checkov.yaml"
    assert not [check for check, reason in skips.items() if len(reason) < 20], "each skip needs a reason"


@pytest.fixture(scope="module")
def rendered(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    for name, args in (("default", ()), ("namespaced", ("-f", str(NAMESPACED_VALUES)))):
        proc = run_helm(
            helm, "template", "md", str(CHART), "--namespace", "modeldeploy-system", "--include-crds", *args
        )
        assert proc.returncode == 0, proc.stderr
        (out / f"{name}.yaml").write_text(proc.stdout)
    return out


def test_checkov_findings_are_exactly_the_explained_ones(rendered: Path) -> None:
    """Run checkov with no skips: every failed check must be listed with a reason, and every listed one must
    still fire (a stale skip would hide a future regression)."""
    checkov = ensure_checkov()
    cmd = [str(checkov), "-d", str(rendered), "--framework", "kubernetes", "--skip-download", "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.stdout.strip(), proc.stderr
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = {}
    passed = 0
    for report in reports:
        passed += report["summary"]["passed"]
        for check in report["results"]["failed_checks"]:
            failed.setdefault(check["check_id"], set()).add(f"{check['resource']} ({check['check_name']})")
    assert passed > 100  # the scan really ran over the Deployment, RBAC, Service, ...
    skips = _explained_skips()
    unexplained = {k: sorted(v) for k, v in failed.items() if k not in skips}
    assert not unexplained, f"checkov findings without a reason in {CONFIG.name}: {unexplained}"
    stale = sorted(set(skips) - set(failed))
    assert not stale, f"skipped in {CONFIG.name} but no longer found (remove them): {stale}"


def test_checkov_with_the_config_file_passes(rendered: Path) -> None:
    """What a developer runs by hand: `checkov --config-file charts/modeldeploy/.checkov.yaml -d DIR`."""
    checkov = ensure_checkov()
    cmd = [str(checkov), "--config-file", str(CONFIG), "-d", str(rendered)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

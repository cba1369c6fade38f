"""`python scripts/release_versions.py VERSION`: exit 1, naming each file, unless the package and the chart
are all at VERSION.

The release workflow (.github/workflows/release.yaml) runs it on the tag's version before pushing images:
the operator renders `ghcr.io/modeldeploy/<image>:<package version>` and the chart deploys the operator
image at its appVersion, so all three must be the tag for `helm install` to pull images that exist.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def versions() -> dict[str, str]:
    """Where each version lives → its value."""
    init = (REPO / "operator" / "modeldeploy" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', init, flags=re.M)
    chart = yaml.safe_load((REPO / "charts" / "modeldeploy" / "Chart.yaml").read_text())
    return {
        "pyproject.toml project.version": tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"],
        "operator/modeldeploy/__init__.py __version__": found.group(1) if found else "(missing)",
        "charts/modeldeploy/Chart.yaml appVersion": str(chart["appVersion"]),
        "charts/modeldeploy/Chart.yaml version": str(chart["version"]),
    }


def mismatches(version: str) -> list[str]:
    return [f"{where} is {value}, not {version}" for where, value in versions().items() if value != version]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    wrong = mismatches(argv[0])
    for line in wrong:
        print(f"release {argv[0]}: {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

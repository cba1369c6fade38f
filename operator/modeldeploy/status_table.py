"""`kubectl get modeldeployments`-style output, from the objects' status alone.

Used by `modeldeploy dev demo` so a user with no kubectl sees what the printer columns show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

COLUMNS = ("NAMESPACE", "NAME", "ENGINE", "READY", "MODEL", "REASON", "ENDPOINT")


def row(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """One ModelDeployment as the printer columns show it (empty cells as `<none>`, like kubectl)."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}

    def cell(value: Any) -> str:
        return str(value) if value not in (None, "") else "<none>"

    return (
        cell(meta.get("namespace")),
        cell(meta.get("name")),
        cell(status.get("engine")),
        cell(status.get("ready")),
        cell((status.get("model") or {}).get("summary")),  # the shared model cache: Downloading 42%
        cell(status.get("reason")),
        cell(status.get("endpoint")),
    )


def format_table(objects: Iterable[Mapping[str, Any]]) -> str:
    """Left-aligned columns separated by three spaces, sorted by namespace and name."""
    rows = [COLUMNS, *sorted(row(o) for o in objects)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["   ".join(value.ljust(width) for value, width in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"

"""The model-cache download Job reports its progress on the cache's PersistentVolumeClaim.

The operator needs progress while a download runs (`Downloading 42%` in `kubectl get mdep`), and a
container can say nothing to the outside mid-run except through the API. The Job's pod therefore
merges one annotation into the claim it fills, with the in-cluster credentials of the ServiceAccount
the operator gives it (allowed to patch that one claim, nothing else). The operator only reads the
claim. A report that cannot be written is logged and never fails the download; the final outcome also
goes to the termination message, which the operator reads from the Job's pod (docs/model-cache.md).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from modeldeploy.fetch.progress import Log, Reporter

ANNOTATION = "modeldeploy.io/model-cache"
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ClaimReporter(Reporter):
    """Merge-patches `ANNOTATION` on persistentvolumeclaims/<name>, at most every `interval` seconds."""

    def __init__(self, namespace: str, name: str, *, log: Log, interval: float = 5.0) -> None:
        self.namespace, self.name, self.log, self.interval = namespace, name, log, interval
        self.last = 0.0
        self.warned = False
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.server = os.environ.get("MODELDEPLOY_KUBE_API") or (f"https://{host}:{port}" if host else None)
        self.token_file = Path(os.environ.get("MODELDEPLOY_KUBE_TOKEN_FILE", SA_DIR / "token"))
        self.ca = os.environ.get("MODELDEPLOY_KUBE_CA", str(SA_DIR / "ca.crt"))

    def report(self, record: dict[str, Any]) -> None:
        final = record.get("phase") in ("Ready", "Failed")
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        keep = ("phase", "bytes", "total", "revision", "message")
        value = json.dumps({k: record[k] for k in keep if record.get(k) is not None}, sort_keys=True)
        try:
            self._patch({"metadata": {"annotations": {ANNOTATION: value}}})
        except Exception as exc:  # best effort: the download matters more than its report
            if not self.warned:
                self.warned = True
                self.log({"event": "fetch.report_failed", "claim": self.name, "error": f"{type(exc).__name__}: {exc}"})

    def _patch(self, body: dict[str, Any]) -> None:
        import httpx

        if not self.server:
            raise RuntimeError("no API server in the environment (KUBERNETES_SERVICE_HOST)")
        token = self.token_file.read_text().strip()
        url = f"{self.server}/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{self.name}"
        verify: str | bool = self.ca if Path(self.ca).exists() else True
        response = httpx.patch(
            url,
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"},
            verify=verify,
            timeout=10.0,
        )
        response.raise_for_status()

"""The operator process never imports the `kubernetes` package when its credentials need none of it
(controller/run.py `without_kubernetes_package`, docs/operator-at-scale.md "imports"); an exec plugin
brings it back, saying so. Each case runs the real start-up path in a fresh interpreter: run.prepare,
then the startup and login handlers (API client built, Kopf's connection info returned)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from modeldeploy_dev.certs import CertificateAuthority

REPO = Path(__file__).resolve().parents[3]

START_UP = """
import asyncio, json, logging, sys
from modeldeploy.controller import run

memo = run.prepare(run.parser().parse_args(["--standalone", "--metrics-port=0"]))
import kopf
from kopf._cogs.helpers import thirdparty
from modeldeploy.controller import handlers, login

async def start() -> kopf.ConnectionInfo:
    settings = kopf.OperatorSettings()
    await handlers.startup(settings=settings, memo=memo, logger=logging.getLogger("test"))
    assert handlers.state_of(memo).kube.credentials is memo["credentials"]  # one source for both
    info = login.login(memo=memo, settings=settings)
    await handlers.cleanup(memo=memo)
    return info

info = asyncio.run(start())
print(json.dumps({
    "loaded": sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "kubernetes" and v is not None),
    "kopf_sees_client": thirdparty.V1ObjectMetaSync is not None,
    "server": info.server,
    "client_cert": bool(info.certificate_path or info.certificate_data),
}))
"""


def start_up(kubeconfig: Path) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(REPO / "operator")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    done = subprocess.run([sys.executable, "-c", START_UP], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def kubeconfig(path: Path, user: dict[str, Any], ca: Path) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_client_certificates_start_without_the_kubernetes_package(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    client = ca.issue("client", "operator")
    files = kubeconfig(tmp_path / "files", {"client-certificate": str(client.cert), "client-key": str(client.key)},
                       ca.pair.cert)  # fmt: skip
    inline = {k: base64.b64encode(p.read_bytes()).decode() for k, p in
              (("client-certificate-data", client.cert), ("client-key-data", client.key))}  # fmt: skip
    for config in (files, kubeconfig(tmp_path / "data", inline, ca.pair.cert)):
        seen, log = start_up(config)
        assert seen["loaded"] == [], seen["loaded"][:5]
        assert not seen["kopf_sees_client"]
        assert seen["server"] == "https://127.0.0.1:6443" and seen["client_cert"]
        assert "without the kubernetes package" in log


def test_an_exec_plugin_brings_the_kubernetes_package_and_says_so(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    credential = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": "t"}}  # fmt: skip
    plugin = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable,
        "args": ["-c", f"print({json.dumps(json.dumps(credential))})"],
    }
    seen, log = start_up(kubeconfig(tmp_path / "exec", {"exec": plugin}, ca.pair.cert))
    assert "kubernetes.client" in seen["loaded"]
    said = [line for line in log.splitlines() if "credentials loaded by the kubernetes package" in line]
    assert len(said) == 1 and "user.exec" in said[0]

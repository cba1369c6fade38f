"""The operator's credentials (controller/credentials.py): kubeconfig and in-cluster, read without the
`kubernetes` package, used for real TLS against a local HTTPS server that checks the client certificate
and the token; an exec plugin falls back to the `kubernetes` package."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from aiohttp import web

from modeldeploy.controller import credentials, login
from modeldeploy.controller.credentials import CredentialsError, NeedsClient, from_kubeconfig, in_cluster, load
from modeldeploy.controller.kube import AsyncKube, KubeError
from modeldeploy_dev.certs import CertificateAuthority, Pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA, a serving certificate for 127.0.0.1, a client certificate, and a CA nobody trusts."""
    d = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(d)
    other = d / "other"
    other.mkdir()
    return {
        "ca": ca.pair,
        "server": ca.issue("server", "server", server=True),
        "client": ca.issue("client", "operator-test", org="test-group"),
        "other_ca": CertificateAuthority(other).pair,
    }


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, *, clusters: dict[str, dict[str, Any]], users: dict[str, dict[str, Any]],
                     contexts: dict[str, tuple[str, str]], current: str | None) -> Path:  # fmt: skip
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": {"cluster": c, "user": u}} for n, (c, u) in contexts.items()],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def one_context(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    return write_kubeconfig(path, clusters={"c": cluster}, users={"u": user}, contexts={"x": ("c", "u")}, current="x")


@asynccontextmanager
async def tls_server(server: Pair, ca: Pair, accept: set[str] | None = None) -> AsyncIterator[dict[str, Any]]:
    """HTTPS on 127.0.0.1 that answers who called (client certificate CN, Authorization header); 401 for a
    token outside `accept` when given. Yields {"url", "calls"}."""
    seen: dict[str, Any] = {"calls": 0}

    async def whoami(request: web.Request) -> web.Response:
        seen["calls"] += 1
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        cn = next((v for rdn in (cert or {}).get("subject", ()) for k, v in rdn if k == "commonName"), None)
        auth = request.headers.get("Authorization")
        if accept is not None and auth not in {f"Bearer {t}" for t in accept}:
            return web.json_response({"reason": "Unauthorized", "message": "Unauthorized"}, status=401)
        return web.json_response({"cn": cn, "auth": auth})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert))
    context.load_cert_chain(str(server.cert), str(server.key))
    context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate is checked when one is sent
    app = web.Application()
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    seen["url"] = f"https://127.0.0.1:{port}"
    try:
        yield seen
    finally:
        await runner.cleanup()


def call(creds_for: Any, pki: dict[str, Any], accept: set[str] | None = None) -> tuple[dict[str, Any], int]:
    """GET /whoami with AsyncKube built from `creds_for(url)`; (answer, requests the server saw)."""

    async def scenario() -> tuple[dict[str, Any], int]:
        async with tls_server(pki["server"], pki["ca"], accept) as srv:
            kube = AsyncKube(creds_for(srv["url"]))
            try:
                return await kube.request("GET", "/whoami"), srv["calls"]
            finally:
                await kube.close()

    return asyncio.run(scenario())


# --- kubeconfig -------------------------------------------------------------------------------------------


def test_client_certificate_files_relative_to_the_kubeconfig(pki: dict[str, Any], tmp_path: Path) -> None:
    # kubectl reads relative file names against the kubeconfig's own directory
    for stem, pair in (("client", pki["client"]), ("ca", pki["ca"])):
        (tmp_path / f"{stem}.crt").write_bytes(pair.cert.read_bytes())
        (tmp_path / f"{stem}.key").write_bytes(pair.key.read_bytes())
    user = {"client-certificate": "client.crt", "client-key": "client.key"}

    def creds(url: str) -> credentials.Credentials:
        return from_kubeconfig(
            [one_context(tmp_path / "config", {"server": url, "certificate-authority": "ca.crt"}, user)]
        )

    answer, _ = call(creds, pki)
    assert answer == {"cn": "operator-test", "auth": None}
    assert creds("https://x").cert_path == str(tmp_path / "client.crt")


def test_client_certificate_and_ca_as_data(pki: dict[str, Any], tmp_path: Path) -> None:
    user = {"client-certificate-data": b64(pki["client"].cert), "client-key-data": b64(pki["client"].key)}

    def creds(url: str) -> credentials.Credentials:
        cluster = {"server": url, "certificate-authority-data": b64(pki["ca"].cert)}
        return from_kubeconfig([one_context(tmp_path / "config", cluster, user)])

    answer, _ = call(creds, pki)
    assert answer["cn"] == "operator-test"
    info = creds("https://x").connection_info()  # what Kopf's login gets: PEM, no file names
    assert info.ca_data and info.ca_data.startswith("-----BEGIN CERTIFICATE") and info.ca_path is None
    assert info.certificate_data and info.private_key_data and info.certificate_path is None


def test_the_ca_is_checked_and_insecure_skips_it(pki: dict[str, Any], tmp_path: Path) -> None:
    def creds(url: str, **cluster: Any) -> credentials.Credentials:
        return from_kubeconfig([one_context(tmp_path / "config", {"server": url, **cluster}, {"token": "t"})])

    with pytest.raises(KubeError) as refused:  # a server signed by another CA than ours
        call(lambda url: creds(url, **{"certificate-authority": str(pki["other_ca"].cert)}), pki)
    assert refused.value.status == 0 and "certificate" in refused.value.message.lower()
    answer, _ = call(lambda url: creds(url, **{"insecure-skip-tls-verify": True}), pki)
    assert answer == {"cn": None, "auth": "Bearer t"}
    assert creds("https://x", **{"insecure-skip-tls-verify": True}).connection_info().insecure


def test_token_file_read_again_when_old_and_after_a_401(pki: dict[str, Any], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old\n")
    cluster = {"certificate-authority": str(pki["ca"].cert)}
    holder: dict[str, credentials.Credentials] = {}

    def creds(url: str) -> credentials.Credentials:
        holder["c"] = from_kubeconfig(
            [one_context(tmp_path / "config", {**cluster, "server": url}, {"tokenFile": "token"})]
        )
        return holder["c"]

    assert call(creds, pki)[0]["auth"] == "Bearer old"
    c = holder["c"]
    token.write_text("new\n")  # rotated: the cached token is used until it is REREAD_S old
    assert c.authorization() == "Bearer old"
    assert c.read_at is not None
    c.read_at -= credentials.REREAD_S
    assert c.authorization() == "Bearer new"
    info = c.connection_info()
    assert info.token == "new" and info.scheme == "Bearer" and info.expiration is not None  # Kopf asks again
    token.write_text("newer\n")  # Kopf asks our login handler (expired, or a 401): the file is read at once
    assert login.login(memo=kopf.Memo(credentials=c), settings=kopf.OperatorSettings()).token == "newer"
    assert c.authorization() == "Bearer newer"  # the same object our client uses

    def rotated_after_start(url: str) -> credentials.Credentials:
        token.write_text("old\n")
        c = creds(url)
        token.write_text("new\n")  # the server accepts only the new token: 401, read again, retry once
        return c

    answer, calls = call(rotated_after_start, pki, accept={"new"})
    assert answer["auth"] == "Bearer new" and calls == 2
    with pytest.raises(KubeError) as refused:  # a 401 the file cannot fix is not retried forever
        call(creds, pki, accept={"other"})
    assert refused.value.status == 401


def test_a_fixed_token_wins_over_a_token_file(tmp_path: Path) -> None:
    c = from_kubeconfig(
        [one_context(tmp_path / "config", {"server": "https://h"}, {"token": "a", "tokenFile": "/nope"})]
    )
    assert c.authorization() == "Bearer a" and c.token_file is None
    assert c.connection_info().expiration is None


def test_current_context_and_merged_kubeconfigs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_kubeconfig(
        tmp_path / "first",
        clusters={"a": {"server": "https://a"}},
        users={"ua": {"token": "ta"}},
        contexts={"ctx-a": ("a", "ua"), "ctx-b": ("b", "ub")},
        current="ctx-b",
    )
    second = write_kubeconfig(
        tmp_path / "second",
        clusters={"a": {"server": "https://not-this-one"}, "b": {"server": "https://b"}},
        users={"ub": {"token": "tb"}},
        contexts={},
        current="ctx-a",  # the first file's current-context wins
    )
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    c = load()
    assert (c.server, c.authorization()) == ("https://b", "Bearer tb")
    assert "ctx-b" in c.origin
    a = from_kubeconfig([first, second], context="ctx-a")
    assert (a.server, a.authorization()) == ("https://a", "Bearer ta")
    with pytest.raises(CredentialsError, match="no context named 'nope'"):
        from_kubeconfig([first], context="nope")


def test_no_credentials_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(CredentialsError, match="no credentials"):
        load()
    bad = one_context(tmp_path / "config", {"server": "https://h", "certificate-authority-data": "%%%"}, {})
    with pytest.raises(CredentialsError, match="certificate-authority-data is not base64"):
        from_kubeconfig([bad])


def test_exec_plugin_falls_back_to_the_kubernetes_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": "from-plugin"},
    }
    plugin = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable,
        "args": ["-c", f"print({json.dumps(json.dumps(credential))})"],
    }
    config = one_context(tmp_path / "config", {"server": "https://h:6443", "insecure-skip-tls-verify": True},
                         {"exec": plugin})  # fmt: skip
    with pytest.raises(NeedsClient, match="user.exec"):
        from_kubeconfig([config])
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    said: list[str] = []
    c = credentials.load_any(log=said.append)
    assert len(said) == 1 and "user.exec" in said[0] and "kubernetes package" in said[0]
    assert c.server == "https://h:6443" and c.authorization() == "Bearer from-plugin"
    assert c.connection_info().token == "from-plugin"


# --- in-cluster -------------------------------------------------------------------------------------------


def test_in_cluster_service_account(pki: dict[str, Any], tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "ca.crt").write_bytes(pki["ca"].cert.read_bytes())
    (sa / "namespace").write_text("modeldeploy-system\n")
    assert in_cluster({}, sa) is None  # not in a pod
    v6 = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, sa)
    assert v6 is not None and v6.server == "https://[fd00::1]:443"
    c = in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, sa)
    assert c is not None and c.namespace == "modeldeploy-system" and c.authorization() == "Bearer sa-token"
    assert load({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, sa).origin == c.origin
    info = c.connection_info()
    assert info.ca_path == str(sa / "ca.crt") and info.default_namespace == "modeldeploy-system"
    assert info.expiration is not None  # a projected token rotates: Kopf asks our login again

    def creds(url: str) -> credentials.Credentials:
        host, port = url.removeprefix("https://").rsplit(":", 1)
        found = in_cluster({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}, sa)
        assert found is not None
        return found

    answer, _ = call(creds, pki, accept={"sa-token"})
    assert answer == {"cn": None, "auth": "Bearer sa-token"}

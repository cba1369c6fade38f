"""The operator's apiserver credentials, read without the `kubernetes` package.

Why our own loader: importing the `kubernetes` package (its thousand generated model classes) costs the
operator process about a fifth of its idle memory (docs/operator-at-scale.md, "imports"), and the
operator needs nothing of it but the credentials. One `Credentials` object feeds both Kopf's login
(`connection_info`) and our client (`kube.AsyncKube`), so the two always talk to the same server with
the same TLS settings and token.

Where they come from, first match wins (the order of the `kubernetes` package's own loaders):
1. the in-cluster service account: $KUBERNETES_SERVICE_HOST/PORT, its token file, CA and namespace;
2. the kubeconfig: $KUBECONFIG (files joined by the path separator; the first file that names an
   entry wins) or ~/.kube/config, at its current context; a user with a token, a tokenFile, a client
   certificate and key (file or -data), a cluster with a CA (file or -data) or insecure-skip-tls-verify.
   Relative file names are relative to the kubeconfig file that holds them, as kubectl reads them.

A token file is read again when the token is older than `REREAD_S` and after a 401 (`reread_token`):
the kubelet rotates a projected service-account token in place.

A kubeconfig that needs more (an `exec` credential plugin, an `auth-provider`, basic auth, a proxy or a
TLS server name) raises `NeedsClient`: those are loaded by the `kubernetes` package (`client_credentials`),
whose refresh hooks then supply the token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import ssl

    import kopf

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REREAD_S = 60.0  # a token file is read again when its token is older than this
# Kopf's copy of a token read from a file expires after this, and Kopf asks our login handler again (each
# time three INFO lines of Kopf's): the kubelet rotates a projected token at 80 % of its lifetime (1 h by
# default), so the old one still has 12 minutes; a 401 makes Kopf ask at once anyway.
LOGIN_EXPIRES_S = 600.0
NEEDS_CLIENT_USER = ("exec", "auth-provider", "username", "password")
NEEDS_CLIENT_CLUSTER = ("proxy-url", "tls-server-name")


class CredentialsError(Exception):
    """No usable credentials; the message is one sentence naming the file or variable and the field."""


class NeedsClient(Exception):
    """The kubeconfig needs what only the `kubernetes` package implements; the message says what."""


@dataclass
class Credentials:
    """How to reach and authenticate to one apiserver. `origin` says where it came from (for logs)."""

    server: str
    origin: str
    ca_path: str | None = None
    ca_data: str | None = None  # PEM
    insecure: bool = False
    token: str | None = None
    token_file: str | None = None
    cert_path: str | None = None
    cert_data: str | None = None  # PEM
    key_path: str | None = None
    key_data: str | None = None  # PEM
    namespace: str | None = None
    # The `kubernetes` package's Authorization header (with its refresh hooks), when it loaded them.
    header_hook: Callable[[], str | None] | None = None
    read_at: float | None = field(default=None, repr=False)  # monotonic time the token file was read

    def authorization(self) -> str | None:
        """The Authorization header's value now (a token file is read again when due), or None."""
        if self.header_hook is not None:
            return self.header_hook()
        token = self.current_token()
        return f"Bearer {token}" if token else None

    def current_token(self) -> str | None:
        if self.token_file and (self.read_at is None or time.monotonic() - self.read_at >= REREAD_S):
            self.token = read_token(self.token_file, self.token)
            self.read_at = time.monotonic()
        return self.token

    def reread_token(self) -> None:
        """After a 401: the token file (if any) is read again before the next request."""
        self.read_at = None

    def connection_info(self, *, trust_env: bool = False) -> kopf.ConnectionInfo:
        """These credentials for Kopf's login. A token read from a file expires after `LOGIN_EXPIRES_S`, so
        Kopf asks our login handler again and picks up a rotated token."""
        import kopf

        scheme, token = None, None
        if (header := self.authorization()) is not None:
            scheme, _, token = header.partition(" ") if " " in header else (None, "", header)
        expiration = None
        if self.token_file and self.header_hook is None:
            expiration = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LOGIN_EXPIRES_S)
        return kopf.ConnectionInfo(
            server=self.server,
            ca_path=self.ca_path,
            ca_data=self.ca_data,
            insecure=self.insecure,
            scheme=scheme,
            token=token,
            certificate_path=self.cert_path,
            certificate_data=self.cert_data,
            private_key_path=self.key_path,
            private_key_data=self.key_data,
            default_namespace=self.namespace,
            trust_env=trust_env,
            expiration=expiration,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """TLS exactly as Kopf sets it up for the same credentials (CA, client certificate, verification)."""
        return self.connection_info().as_ssl_context()


def read_token(path: str, previous: str | None) -> str | None:
    """The token in `path`; the previous one while the file cannot be read (mid-rotation), if there was one."""
    try:
        return Path(path).read_text().strip() or previous
    except OSError as exc:
        if previous is not None:
            return previous
        raise CredentialsError(f"cannot read the token file {path} ({exc.strerror or exc})") from None


# --- in-cluster -------------------------------------------------------------------------------------------


def in_cluster(env: Mapping[str, str] = os.environ, sa_dir: Path = SA_DIR) -> Credentials | None:
    """The pod's service account, or None outside a pod (no service host or no token file)."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token = sa_dir / "token"
    if not host or not port or not token.exists():
        return None
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    ca, namespace = sa_dir / "ca.crt", sa_dir / "namespace"
    creds = Credentials(
        server=f"https://{host}:{port}",
        origin="the in-cluster service account",
        ca_path=str(ca) if ca.exists() else None,
        token_file=str(token),
        namespace=namespace.read_text().strip() or None if namespace.exists() else None,
    )
    creds.current_token()  # fail now, not on the first request
    return creds


# --- kubeconfig -------------------------------------------------------------------------------------------


def kubeconfig_paths(env: Mapping[str, str] = os.environ) -> list[Path]:
    """$KUBECONFIG's files, or ~/.kube/config when it exists; [] when there is no kubeconfig."""
    value = env.get("KUBECONFIG")
    if value:
        return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]
    default = Path("~/.kube/config").expanduser()
    return [default] if default.exists() else []


@dataclass
class _Merged:
    """The kubeconfig files' entries by name, each with the directory of the file that named it first."""

    current: str | None = None
    entries: dict[str, dict[str, tuple[dict[str, Any], Path]]] = field(
        default_factory=lambda: {"clusters": {}, "users": {}, "contexts": {}}
    )

    def add(self, path: Path) -> None:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise CredentialsError(f"cannot read the kubeconfig {path} ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise CredentialsError(f"the kubeconfig {path} is not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(doc, dict):
            raise CredentialsError(f"the kubeconfig {path} is not a mapping")
        if self.current is None and doc.get("current-context"):
            self.current = str(doc["current-context"])
        for section, inner in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for item in doc.get(section) or ():
                if isinstance(item, dict) and "name" in item:
                    self.entries[section].setdefault(str(item["name"]), (item.get(inner) or {}, path.parent))

    def get(self, section: str, name: str, where: str) -> tuple[dict[str, Any], Path]:
        try:
            return self.entries[section][name]
        except KeyError:
            raise CredentialsError(f"{where}: no {section[:-1]} named {name!r} in the kubeconfig") from None


def from_kubeconfig(paths: list[Path], context: str | None = None) -> Credentials:
    """The credentials of `context` (default: the current context) in the kubeconfig files `paths`."""
    merged = _Merged()
    for path in paths:
        merged.add(path)
    name = context or merged.current
    files = os.pathsep.join(str(p) for p in paths)
    if not name:
        raise CredentialsError(f"the kubeconfig {files} has no current-context")
    ctx, _ = merged.get("contexts", name, f"current-context {name!r}")
    cluster, cluster_dir = merged.get("clusters", str(ctx.get("cluster")), f"context {name!r}")
    user, user_dir = merged.get("users", str(ctx.get("user")), f"context {name!r}") if ctx.get("user") else ({}, Path())
    needs = [f"user.{k}" for k in NEEDS_CLIENT_USER if user.get(k)]
    needs += [f"cluster.{k}" for k in NEEDS_CLIENT_CLUSTER if cluster.get(k)]
    if needs:
        raise NeedsClient(f"context {name!r} of the kubeconfig {files} uses {', '.join(needs)}")
    if not cluster.get("server"):
        raise CredentialsError(f"context {name!r}: cluster {ctx.get('cluster')!r} has no server")

    def file(entry: dict[str, Any], key: str, base: Path) -> str | None:
        value = entry.get(key)
        return str(base / Path(value).expanduser()) if value else None

    def data(entry: dict[str, Any], key: str) -> str | None:
        value = entry.get(key)
        if not value:
            return None
        try:
            return base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsError(f"context {name!r}: {key} is not base64-encoded PEM") from None

    # Inline data wins over a file name, and a token over a token file (as kubectl reads them).
    ca_data, cert_data = data(cluster, "certificate-authority-data"), data(user, "client-certificate-data")
    key_data = data(user, "client-key-data")
    creds = Credentials(
        server=str(cluster["server"]),
        origin=f"context {name!r} of the kubeconfig {files}",
        ca_path=None if ca_data else file(cluster, "certificate-authority", cluster_dir),
        ca_data=ca_data,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=str(user["token"]) if user.get("token") else None,
        token_file=None if user.get("token") else file(user, "tokenFile", user_dir),
        cert_path=None if cert_data else file(user, "client-certificate", user_dir),
        cert_data=cert_data,
        key_path=None if key_data else file(user, "client-key", user_dir),
        key_data=key_data,
        namespace=str(ctx["namespace"]) if ctx.get("namespace") else None,
    )
    creds.current_token()
    return creds


# --- both, and the fallback -------------------------------------------------------------------------------


def load(env: Mapping[str, str] = os.environ, sa_dir: Path = SA_DIR) -> Credentials:
    """In-cluster credentials when in a pod, else the kubeconfig's current context.

    Raises NeedsClient when the kubeconfig needs the `kubernetes` package, CredentialsError when there are
    no usable credentials.
    """
    creds = in_cluster(env, sa_dir)
    if creds is not None:
        return creds
    paths = kubeconfig_paths(env)
    if not paths:
        raise CredentialsError(
            "no credentials: not in a pod (no $KUBERNETES_SERVICE_HOST and service-account token) "
            "and no kubeconfig ($KUBECONFIG or ~/.kube/config)"
        )
    return from_kubeconfig(paths)


def client_credentials(configuration: Any = None, env: Mapping[str, str] = os.environ) -> Credentials:
    """Credentials from the `kubernetes` package's client configuration (loaded here when not given:
    in-cluster, else the kubeconfig of `env`). The token comes from the configuration each time, so its
    refresh hooks (exec plugins, auth-providers) keep it fresh."""
    if configuration is None:
        from kubernetes import client
        from kubernetes import config as kube_config

        configuration = client.Configuration()
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except kube_config.ConfigException:
            try:
                # $KUBECONFIG named here: the package reads its default once, when it is imported
                kube_config.load_kube_config(env.get("KUBECONFIG") or None, client_configuration=configuration)
            except kube_config.ConfigException as exc:
                raise CredentialsError(f"the kubernetes package cannot load the kubeconfig ({exc})") from None

    def header() -> str | None:
        return (configuration.auth_settings().get("BearerToken") or {}).get("value") or None

    return Credentials(
        server=str(configuration.host).rstrip("/"),
        origin="the kubernetes package's configuration",
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        cert_path=configuration.cert_file or None,
        key_path=configuration.key_file or None,
        header_hook=header,
    )


def load_any(env: Mapping[str, str] = os.environ, log: Callable[[str], None] | None = None) -> Credentials:
    """`load`, falling back to the `kubernetes` package for what only it handles (saying so via `log`)."""
    try:
        return load(env)
    except NeedsClient as exc:
        if log is not None:
            log(f"{exc}: credentials loaded by the kubernetes package")
        return client_credentials(env=env)

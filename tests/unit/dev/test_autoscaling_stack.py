"""The dev cluster's autoscaling stack: Prometheus scrapes what the chart's PodMonitors select, the
interceptor resolves Services, KEDA's gRPC pair serves both ends, and the releases are pinned as their CRDs."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from modeldeploy.scaling.objects import load_query
from modeldeploy_dev import addon_crds, autoscaling, build, certs

REPO = Path(__file__).resolve().parents[3]
PODMONITOR = REPO / "charts" / "modeldeploy" / "templates" / "podmonitor.yaml"


def _relabel(config: dict[str, Any], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus's keep/replace relabelling (anchored regexes), enough for this config."""
    out = dict(labels)
    (job,) = config["scrape_configs"]
    for rule in job["relabel_configs"]:
        value = ";".join(out.get(s, "") for s in rule["source_labels"])
        if rule.get("action") == "keep":
            if not re.fullmatch(rule["regex"], value):
                return None
        else:
            out[rule["target_label"]] = value
    return out


def _pod(engine: str, port: str = "http", managed: str = "modeldeploy", metrics_port: str = "") -> dict[str, str]:
    return {
        "__meta_kubernetes_pod_label_modeldeploy_io_metrics_port": metrics_port,
        "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by": managed,
        "__meta_kubernetes_pod_label_modeldeploy_io_engine": engine,
        "__meta_kubernetes_pod_container_port_name": port,
        "__meta_kubernetes_namespace": "ml",
        "__meta_kubernetes_pod_name": "qwen-5d8f7c9b4-x2x7q",
    }


def test_prometheus_scrapes_the_engines_the_chart_podmonitors_select() -> None:
    # The chart renders one PodMonitor per engine in its `list`: the same engines, no more, no less.
    listed = re.search(r'range \$engine := list ((?:"[^"]+" ?)+)', PODMONITOR.read_text())
    assert listed is not None
    assert tuple(re.findall(r'"([^"]+)"', listed.group(1))) == autoscaling.ENGINES
    config = autoscaling.prometheus_config(Path("/kubeconfig"))
    for engine in autoscaling.ENGINES:
        target = _relabel(config, _pod(engine))
        assert target is not None and target["namespace"] == "ml" and target["pod"] == "qwen-5d8f7c9b4-x2x7q"
    # The ScaledObject's query matches on exactly the labels the scrape sets.
    assert 'namespace="ml",pod=~"qwen-' in load_query(("llamacpp:requests_processing",), "ml", "qwen")
    for refused in (_pod("transformers"), _pod("llamaXcpp"), _pod("vllm", port="metrics"), _pod("vllm", managed="")):
        assert _relabel(config, refused) is None, refused
    # A llama.cpp pod with an API key is scraped on its relay port `metrics` only, as the chart's PodMonitor does.
    assert _relabel(config, _pod("llama.cpp", port="metrics", metrics_port="metrics")) is not None
    assert _relabel(config, _pod("llama.cpp", port="http", metrics_port="metrics")) is None


def test_the_interceptor_resolves_each_service_to_its_cluster_ip() -> None:
    def svc(name: str, ns: str, ip: str) -> Any:
        return SimpleNamespace(spec=SimpleNamespace(cluster_ip=ip), metadata=SimpleNamespace(name=name, namespace=ns))

    text = autoscaling.hosts_text([svc("qwen", "ml", "10.0.3.7"), svc("headless", "ml", "None")])
    assert "10.0.3.7 qwen.ml qwen.ml.svc qwen.ml.svc.cluster.local" in text.splitlines()
    assert "headless" not in text


def test_one_pair_serves_and_authenticates_keda_grpc(tmp_path: Path) -> None:
    ca = certs.CertificateAuthority(tmp_path)
    pair = ca.issue("keda", "keda-operator", server=True, client=True, dns=("keda-metrics-apiserver.keda.svc",))
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    usage = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usage == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "keda-metrics-apiserver.keda.svc" in sans.get_values_for_type(x509.DNSName)


def test_the_built_releases_are_those_whose_crds_are_installed() -> None:
    assert build.KEDA.version == addon_crds.KEDA.version
    assert build.KEDA_HTTP.version == addon_crds.KEDA_HTTP.version
    for b, module in ((build.KEDA, addon_crds.KEDA), (build.KEDA_HTTP, addon_crds.KEDA_HTTP)):
        assert b.main_module == f"{module.module}@{module.version}"
        assert b.version.lstrip("v") in b.ldflags  # stamped, as upstream's Makefile does
    # KEDA's operator watches every kind of its own: all its CRDs are installed.
    assert {Path(f).name.split("_")[1] for f in addon_crds.KEDA.files} >= {
        "scaledobjects.yaml",
        "scaledjobs.yaml",
        "triggerauthentications.yaml",
        "clustertriggerauthentications.yaml",
        "cloudeventsources.yaml",
        "clustercloudeventsources.yaml",
    }

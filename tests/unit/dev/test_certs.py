"""Per-run credentials: the chain verifies, names and usages are what the components need."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modeldeploy_dev import certs


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serving_certificate_is_signed_by_the_ca_for_loopback_names(tmp_path: Path) -> None:
    ca = certs.CertificateAuthority(tmp_path)
    pair = ca.issue("apiserver", "kube-apiserver", server=True)
    cert, root = _load(pair.cert), _load(ca.pair.cert)
    cert.verify_directly_issued_by(root)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_certificate_carries_the_rbac_identity(tmp_path: Path) -> None:
    ca = certs.CertificateAuthority(tmp_path)
    pair = ca.issue("admin", "someone", org="system:masters")
    cert = _load(pair.cert)
    cert.verify_directly_issued_by(_load(ca.pair.cert))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "someone"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert pair.key.stat().st_mode & 0o077 == 0  # keys are private to the user


def test_each_run_gets_fresh_keys(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = certs.CertificateAuthority(tmp_path / "a"), certs.CertificateAuthority(tmp_path / "b")
    assert a.pair.key.read_bytes() != b.pair.key.read_bytes()
    sa = certs.service_account_keys(tmp_path)
    assert isinstance(load_pem_public_key(sa.cert.read_bytes()), ec.EllipticCurvePublicKey)

"""The local Xet CAS and the Hub server's Xet answers, read by the real clients (hf_xet, huggingface_hub).

The fetcher's end-to-end use is in tests/unit/fetch/test_fetch_xet.py; here: what the Hub says about a
Xet-backed file, byte ranges across xorb boundaries through hf_xet's own range download, and refusals.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

try:
    import hf_xet
except ImportError:  # huggingface_hub installs it on x86_64 and arm64 only
    hf_xet = None

from modeldeploy_dev.hubserver import HubServer
from modeldeploy_dev.xetcas import CHUNK_SIZE, HEADER_SIZE, XetCas, chunk_header
from tests.support.tools import unavailable

hf = pytest.importorskip("huggingface_hub")

REPO = "org/xet-model"
WEIGHTS = os.urandom(37 * CHUNK_SIZE + 1234)  # 38 chunks, the last one short
CONFIG = b"{}"


@pytest.fixture(autouse=True)
def _needs_hf_xet() -> None:
    if hf_xet is None:
        unavailable("hf_xet is not installed (huggingface_hub installs it on x86_64 and arm64 only)")


@pytest.fixture(autouse=True)
def _hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub():
    # 8 chunks per xorb: the file spans five xorbs, so ranges cross xorb boundaries.
    with HubServer({REPO: {"model.gguf": WEIGHTS, "config.json": CONFIG}}, xet=True, xorb_chunks=8) as server:
        yield server


def test_the_hub_announces_xet_for_lfs_files_only(hub: HubServer) -> None:
    commit = hub.commit(REPO)
    head = httpx.head(f"{hub.url}/{REPO}/resolve/main/model.gguf")
    xet_hash = head.headers["X-Xet-Hash"]
    assert xet_hash in hub.cas.files and len(xet_hash) == 64
    assert head.links["xet-auth"]["url"] == f"{hub.url}/api/models/{REPO}/xet-read-token/{commit}"
    assert head.links["xet-reconstruction-info"]["url"] == f"{hub.cas.url}/v1/reconstructions/{xet_hash}"
    assert "X-Xet-Hash" not in httpx.head(f"{hub.url}/{REPO}/resolve/main/config.json").headers
    tree = {e.path: e for e in hf.HfApi(endpoint=hub.url).list_repo_tree(REPO)}
    assert tree["model.gguf"].xet_hash == xet_hash and tree["config.json"].xet_hash is None
    meta = hf.get_hf_file_metadata(hf.hf_hub_url(REPO, "model.gguf", endpoint=hub.url))
    assert meta.xet_file_data.file_hash == xet_hash and meta.size == len(WEIGHTS)
    grant = httpx.get(head.links["xet-auth"]["url"])
    assert grant.json()["casUrl"] == hub.cas.url == grant.headers["X-Xet-Cas-Url"]
    assert grant.json()["accessToken"] == grant.headers["X-Xet-Access-Token"] == hub.cas.access_token
    # A plain repository has no token endpoint and says nothing about Xet.
    hub.add_repo("org/plain", {"model.gguf": WEIGHTS})
    assert "X-Xet-Hash" not in httpx.head(f"{hub.url}/org/plain/resolve/main/model.gguf").headers
    assert httpx.get(f"{hub.url}/api/models/org/plain/xet-read-token/main").status_code == 404


@pytest.fixture(scope="module")
def session():
    return hf_xet.XetSession()


def _stream(hub: HubServer, session, start: int | None, end: int | None) -> bytes:
    """hf_xet's own ranged download (the group is closed at the end, so its telemetry goes out at once)."""
    assert hub.cas is not None
    grant = hub.cas.grant()
    with session.new_download_stream_group(
        endpoint=grant["casUrl"], token=grant["accessToken"], token_expiry_unix_secs=grant["exp"]
    ) as group:
        info = hf_xet.XetFileInfo(next(iter(hub.cas.files)), len(WEIGHTS))
        return b"".join(group.download_stream(info, start=start, end=end))


@pytest.mark.parametrize(
    ("start", "end"),
    [(None, None), (5, 9), (CHUNK_SIZE - 3, 8 * CHUNK_SIZE + 5), (3 * CHUNK_SIZE, None), (len(WEIGHTS) - 7, None)],
)
def test_hf_xet_reads_any_range_byte_exact(hub: HubServer, session, start: int | None, end: int | None) -> None:
    assert _stream(hub, session, start, end) == WEIGHTS[start:end]
    assert hub.cas is not None and hub.cas.stats()["reconstructions"] >= 1


def test_refusals(hub: HubServer) -> None:
    cas = hub.cas
    assert cas is not None
    file_hash = next(iter(cas.files))
    auth = {"Authorization": f"Bearer {cas.access_token}"}
    assert httpx.get(f"{cas.url}/v2/reconstructions/{file_hash}").status_code == 401
    assert httpx.get(f"{cas.url}/v2/reconstructions/{'0' * 64}", headers=auth).status_code == 404
    past = httpx.get(f"{cas.url}/v1/reconstructions/{file_hash}", headers={**auth, "Range": "bytes=99999999-"})
    assert past.status_code == 416
    plan = httpx.get(f"{cas.url}/v1/reconstructions/{file_hash}", headers={**auth, "Range": "bytes=0-9"}).json()
    (term,) = plan["terms"]
    assert term["range"] == {"start": 0, "end": 1} and term["unpacked_length"] == CHUNK_SIZE
    (fetch,) = plan["fetch_info"][term["hash"]]
    assert fetch["url_range"] == {"start": 0, "end": HEADER_SIZE + CHUNK_SIZE - 1}
    xorb = httpx.get(fetch["url"], headers={"Range": "bytes=0-15"})
    assert xorb.status_code == 206 and xorb.content == chunk_header(CHUNK_SIZE) + WEIGHTS[:8]
    assert httpx.get(fetch["url"].replace(cas.url_key, "forged")).status_code == 403
    # Gated repository: the token endpoint answers like the Hub's files (401 / 403).
    hub.repos[REPO].gated_token = "hf_right"
    url = f"{hub.url}/api/models/{REPO}/xet-read-token/main"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer hf_wrong"}).status_code == 403
    assert httpx.get(url, headers={"Authorization": "Bearer hf_right"}).status_code == 200


def test_the_same_content_is_stored_once() -> None:
    cas = XetCas()
    try:
        first = cas.add("a" * 64, b"x" * 10, 10)
        assert cas.add("a" * 64, b"x" * 10, 10) == first and len(cas.files) == 1 and len(cas.xorbs) == 1
    finally:
        cas.stop()


def test_cli_serves_a_repository_through_xet(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "model.gguf").write_bytes(WEIGHTS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy_dev.hubserver", "--repo", f"{REPO}={repo}", "--xet", REPO],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        target = Path(hf.hf_hub_download(REPO, "model.gguf", local_dir=tmp_path / "out", endpoint=url))
        assert target.read_bytes() == WEIGHTS
        stats = httpx.get(f"{url}/_hubserver/stats").json()
        assert stats["gets"] == 0 and stats["xet"]["bytes"] > len(WEIGHTS)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0

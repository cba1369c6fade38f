"""hf:// through huggingface_hub against the local Hub server: revisions, tokens, failures, progress."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fetchcli import progress_seen
from fetchcli import run as _run
from fetchcli import termination as _termination

from modeldeploy_dev.hubserver import HubServer

pytest.importorskip("huggingface_hub")

REPO = "org/model-GGUF"
BLOB = os.urandom((3 << 20) + 77)
SHA = hashlib.sha256(BLOB).hexdigest()
FILES = {"model.Q4_1.gguf": BLOB, "config.json": b"{}", "tokenizer/tok.json": b'{"a": 1}'}


@pytest.fixture(autouse=True)
def _hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # the fetcher's default is under --dest
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    with HubServer({REPO: FILES}, page_size=2) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_whole_repository_at_the_resolved_commit_then_nothing(hub: HubServer, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "hf" / REPO / "main"
    code, records, err = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(dest))
    assert code == 0, err
    for name, content in FILES.items():
        assert (dest / name).read_bytes() == content
    commit = hub.commit(REPO)
    listing = next(r for r in records if r["event"] == "fetch.listing")
    assert listing == {"event": "fetch.listing", "files": 3, "bytes": sum(map(len, FILES.values())), "revision": commit}
    final = json.loads(_termination(tmp_path))  # what the operator reads from the pod
    assert final == {"phase": "Ready", "revision": commit, "bytes": listing["bytes"], "total": listing["bytes"]}
    assert hub.downloads(REPO, "model.Q4_1.gguf").gets == 1
    asked = hub.stats()["requests"]
    code, records, _ = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(dest))
    assert code == 0 and hub.stats()["requests"] == asked  # a restart asks the Hub nothing
    assert records[0]["event"] == "fetch.present" and records[0]["revision"] == commit


def test_one_file_by_tag_verified_and_the_marker_knows_it(hub: HubServer, tmp_path: Path, capsys) -> None:
    hub.add_repo(REPO, FILES, revision="v1")
    dest = tmp_path / "d"
    args = ["--uri", f"hf://{REPO}@v1", "--dest", str(dest), "--file", "model.Q4_1.gguf", "--sha256", SHA]
    code, records, err = _run(capsys, *args)
    assert code == 0, err
    assert (dest / "model.Q4_1.gguf").read_bytes() == BLOB and not (dest / "config.json").exists()
    assert any(r["event"] == "fetch.verified" for r in records)
    asked = hub.stats()["requests"]
    assert _run(capsys, *args)[0] == 0 and hub.stats()["requests"] == asked
    # Another file of the same repository is not "present" just because the marker exists.
    code, _, _ = _run(capsys, "--uri", f"hf://{REPO}@v1", "--dest", str(dest), "--file", "config.json")
    assert code == 0 and (dest / "config.json").exists()


def test_sha256_mismatch_removes_the_file(hub: HubServer, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "d"
    code, _, err = _run(
        capsys, "--uri", f"hf://{REPO}", "--dest", str(dest), "--file", "model.Q4_1.gguf", "--sha256", "0" * 64
    )
    assert code == 1 and err.startswith(f"Checksum mismatch for model.Q4_1.gguf: expected sha256 {'0' * 64}, got {SHA}")
    assert not (dest / "model.Q4_1.gguf").exists()
    assert _termination(tmp_path).startswith("Checksum mismatch")


@pytest.mark.parametrize(
    ("uri", "file", "token", "words"),
    [
        ("hf://nobody/nothing", None, None, "hf://nobody/nothing@main: HTTP 404, repository not found"),
        (f"hf://{REPO}@v9", None, None, "HTTP 404, the revision does not exist"),
        (f"hf://{REPO}", "missing.gguf", None, "HTTP 404, no file missing.gguf in the repository"),
        (f"hf://{REPO}", None, "GATED", "HTTP 401, the repository is gated; set model.credentialsSecret"),
        (f"hf://{REPO}", None, "wrong", "HTTP 403, the token in credentialsSecret has no access"),
    ],
)
def test_failures_are_one_sentence(hub, tmp_path, capsys, monkeypatch, uri, file, token, words) -> None:
    if token:
        hub.repos[REPO].gated_token = "hf_right"
        if token != "GATED":
            monkeypatch.setenv("HF_TOKEN", token)
    args = ["--uri", uri, "--dest", str(tmp_path / "d")] + (["--file", file] if file else [])
    code, records, err = _run(capsys, *args)
    assert code == 1 and words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _termination(tmp_path) == err.strip()
    assert "hf_right" not in err and "wrong" not in json.dumps(records)


def test_the_right_token_opens_the_gated_repo(hub, tmp_path, capsys, monkeypatch) -> None:
    hub.repos[REPO].gated_token = "hf_right"
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    code, _, err = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"), "--file", "config.json")
    assert code == 0, err


def test_no_space_is_refused_before_downloading(hub, tmp_path, capsys, monkeypatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda _p: usage(10 << 20, 10 << 20, 1000))
    code, _, err = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"))
    assert code == 1 and err.startswith("No space left on the cache volume")
    assert hub.stats()["gets"] == 0


def test_a_model_larger_than_the_claim_is_refused(hub, tmp_path, capsys) -> None:
    args = ["--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"), "--capacity", str(1 << 20)]
    code, _, err = _run(capsys, *args)
    assert code == 1 and err.startswith("No space left on the cache volume: the model needs")
    assert hub.stats()["gets"] == 0


def test_progress_is_reported_while_the_bytes_arrive(hub, tmp_path, capsys) -> None:
    hub.throttle = 4 << 20  # about a second for the weights
    progress = tmp_path / "progress.json"
    with progress_seen(progress) as seen:
        args = ["--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"), "--progress-file", str(progress)]
        code, records, err = _run(capsys, *args, "--progress-interval", "0.1")
    assert code == 0, err
    total = sum(map(len, FILES.values()))
    downloading = [r for r in seen if r["phase"] == "Downloading"]
    assert any(0 < r["bytes"] < total for r in downloading) and all(r["total"] == total for r in downloading)
    assert json.loads(progress.read_text())["phase"] == "Ready"
    assert any(r["event"] == "fetch.progress" and "percent" in r for r in records)


class _ApiStub(BaseHTTPRequestHandler):
    """Stands in for the apiserver's PVC endpoint: records merge patches (the cluster tests use the real one)."""

    patches: list[tuple[str, str, dict]] = []

    def log_message(self, *args) -> None:
        pass

    def do_PATCH(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.patches.append((self.path, self.headers["Authorization"], body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def test_the_claim_is_annotated_with_progress_and_outcome(hub, tmp_path, capsys, monkeypatch) -> None:
    api = ThreadingHTTPServer(("127.0.0.1", 0), _ApiStub)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    (tmp_path / "token").write_text("sa-token\n")
    monkeypatch.setenv("MODELDEPLOY_KUBE_API", f"http://127.0.0.1:{api.server_address[1]}")
    monkeypatch.setenv("MODELDEPLOY_KUBE_TOKEN_FILE", str(tmp_path / "token"))
    try:
        args = ["--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"), "--report-claim", "team-a/mc-abc"]
        assert _run(capsys, *args)[0] == 0
        assert (
            _run(
                capsys, "--uri", "hf://nobody/nothing", "--dest", str(tmp_path / "e"), "--report-claim", "team-a/mc-x"
            )[0]
            == 1
        )
    finally:
        api.shutdown()
        api.server_close()
    paths = {p for p, _, _ in _ApiStub.patches}
    assert paths == {
        "/api/v1/namespaces/team-a/persistentvolumeclaims/mc-abc",
        "/api/v1/namespaces/team-a/persistentvolumeclaims/mc-x",
    }
    assert all(auth == "Bearer sa-token" for _, auth, _ in _ApiStub.patches)
    values = [json.loads(b["metadata"]["annotations"]["modeldeploy.io/model-cache"]) for _, _, b in _ApiStub.patches]
    assert values[0]["phase"] == "Downloading"
    ready = [v for v in values if v["phase"] == "Ready"]
    assert ready == [
        {
            "phase": "Ready",
            "bytes": sum(map(len, FILES.values())),
            "total": sum(map(len, FILES.values())),
            "revision": hub.commit(REPO),
        }
    ]
    failed = values[-1]
    assert failed["phase"] == "Failed" and "repository not found" in failed["message"]


def test_list_only_totals_exactly_what_would_be_downloaded(hub, tmp_path, capsys) -> None:
    dest = tmp_path / "d"
    code, records, err = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(dest), "--list-only")
    assert code == 0, err
    whole = json.loads(_termination(tmp_path))
    assert whole == {
        "files": 3,
        "phase": "Listed",
        "revision": hub.commit(REPO),
        "total": sum(map(len, FILES.values())),
    }
    args = ["--uri", f"hf://{REPO}", "--dest", str(dest), "--list-only", "--file", "model.Q4_1.gguf"]
    code, _, err = _run(capsys, *args)
    assert code == 0 and json.loads(_termination(tmp_path))["total"] == len(BLOB)
    assert hub.stats()["gets"] == 0 and not (dest / "model.Q4_1.gguf").exists()  # listed, nothing downloaded


def test_list_only_fails_like_a_download(hub, tmp_path, capsys) -> None:
    args = ["--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"), "--list-only", "--file", "missing.gguf"]
    code, _, err = _run(capsys, *args)
    assert code == 1 and "HTTP 404, no file missing.gguf in the repository" in err
    assert _termination(tmp_path) == err.strip()

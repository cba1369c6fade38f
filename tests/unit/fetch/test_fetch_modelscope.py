"""modelscope:// through the modelscope library against the local ModelScope server.

Revisions resolved to the commit ModelScope reports, one file or the whole repository, tokens, the
one-sentence failures and the listing that sizes the shared cache. A fetcher killed half-way is
test_fetch_resume.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fetchcli import run as _run
from fetchcli import termination as _termination

from modeldeploy_dev.modelscope_server import ModelScopeServer
from tests.support.tiny_gguf import write_tiny_llama

pytest.importorskip("modelscope")

REPO = "qwen/Tiny-GGUF"
GGUF = "tiny.Q8_0.gguf"


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real (tiny) llama GGUF written by `gguf`: what a GGUF repository on ModelScope holds."""
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / GGUF).read_bytes()


@pytest.fixture
def files(gguf_bytes: bytes) -> dict[str, bytes]:
    return {GGUF: gguf_bytes, "configuration.json": b'{"framework": "gguf"}', "docs/README.md": b"# tiny\n"}


@pytest.fixture(autouse=True)
def _ms_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)


@pytest.fixture
def ms(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]):
    with ModelScopeServer({REPO: files}) as server:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
        yield server


class _Outside(BaseHTTPRequestHandler):
    """Stands for every host but loopback (the proxy all other traffic must take): records, answers 502."""

    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _refuse(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_CONNECT = _refuse  # noqa: N815 - http.server's naming


@pytest.fixture
def outside(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Route everything but 127.0.0.1 to a recording proxy: what the client tried to reach out there."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Outside)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    _Outside.seen = []
    yield _Outside.seen
    server.shutdown()
    server.server_close()


def test_whole_repository_at_the_resolved_commit_then_nothing(ms, files, outside, tmp_path, capsys) -> None:
    dest = tmp_path / "modelscope" / REPO / "main"
    code, records, err = _run(capsys, "--uri", f"modelscope://{REPO}", "--dest", str(dest))
    assert code == 0, err
    for name, content in files.items():
        assert (dest / name).read_bytes() == content
    commit = ms.commit(REPO)  # master, as ModelScope's revisions list names it
    listing = next(r for r in records if r["event"] == "fetch.listing")
    total = sum(map(len, files.values()))
    assert listing == {"event": "fetch.listing", "files": 3, "bytes": total, "revision": commit}
    assert json.loads(_termination(tmp_path)) == {"phase": "Ready", "revision": commit, "bytes": total, "total": total}
    assert ms.downloads(REPO, GGUF).gets == 1
    assert all(f"Revision={commit}" in r for r in ms.requests if f"{REPO}/repo" in r)  # all from that commit
    asked = len(ms.requests)
    code, records, _ = _run(capsys, "--uri", f"modelscope://{REPO}", "--dest", str(dest))
    assert code == 0 and len(ms.requests) == asked  # a restart asks the hub nothing
    assert records[0]["event"] == "fetch.present" and records[0]["revision"] == commit
    assert outside == []  # the library asked only the endpoint it was given: no modelscope.cn, no .ai probe


def test_one_real_gguf_by_tag_verified(ms, gguf_bytes, tmp_path, capsys) -> None:
    tagged = ms.add_repo(REPO, {GGUF: gguf_bytes}, revision="v1.0", tag=True)
    dest = tmp_path / "d"
    sha = hashlib.sha256(gguf_bytes).hexdigest()
    args = ["--uri", f"modelscope://{REPO}@v1.0", "--dest", str(dest), "--file", GGUF, "--sha256", sha]
    code, records, err = _run(capsys, *args)
    assert code == 0, err
    assert (dest / GGUF).read_bytes()[:4] == b"GGUF" and not (dest / "configuration.json").exists()
    assert any(r["event"] == "fetch.verified" for r in records)
    assert json.loads(_termination(tmp_path))["revision"] == tagged
    assert [r for r in ms.requests if "FilePath=" in r] == [
        f"GET /api/v1/models/{REPO}/repo?Revision={tagged}&FilePath={GGUF}"
    ]


def test_a_branch_and_a_commit_id_name_what_they_name(ms, files, tmp_path, capsys) -> None:
    master = ms.commit(REPO)
    dev = ms.add_repo(REPO, {**files, "configuration.json": b'{"dev": true}'}, revision="dev")
    code, _, err = _run(capsys, "--uri", f"modelscope://{REPO}@dev", "--dest", str(tmp_path / "dev"))
    assert code == 0, err
    assert (tmp_path / "dev" / "configuration.json").read_bytes() == b'{"dev": true}'
    assert json.loads(_termination(tmp_path))["revision"] == dev
    # A pinned commit (what status.model.revision records) is downloaded as given, not looked up as a branch.
    code, _, err = _run(capsys, "--uri", f"modelscope://{REPO}@{master}", "--dest", str(tmp_path / "pinned"))
    assert code == 0, err
    assert (tmp_path / "pinned" / "configuration.json").read_bytes() == files["configuration.json"]
    assert json.loads(_termination(tmp_path))["revision"] == master


@pytest.mark.parametrize(
    ("uri", "file", "token", "words"),
    [
        ("modelscope://nobody/nothing", None, None, "modelscope://nobody/nothing@master: HTTP 404, repository not"),
        (f"modelscope://{REPO}@v9", None, None, "HTTP 404, the revision does not exist"),
        (f"modelscope://{REPO}@{'0' * 40}", None, None, "HTTP 404, the revision does not exist"),
        (f"modelscope://{REPO}", "missing.gguf", None, "HTTP 404, no file missing.gguf in the repository"),
        (f"modelscope://{REPO}", None, "PRIVATE", "HTTP 401, the repository is private or gated; set model.cred"),
        (f"modelscope://{REPO}", None, "wrong", "HTTP 403, the token in credentialsSecret has no access"),
    ],
)
def test_failures_are_one_sentence(ms, tmp_path, capsys, monkeypatch, uri, file, token, words) -> None:
    if token:
        ms.repos[REPO].token = "ms-right"
        if token != "PRIVATE":
            monkeypatch.setenv("MODELSCOPE_API_TOKEN", token)
    args = ["--uri", uri, "--dest", str(tmp_path / "d")] + (["--file", file] if file else [])
    code, records, err = _run(capsys, *args)
    assert code == 1 and words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _termination(tmp_path) == err.strip()
    assert "ms-right" not in err and "wrong" not in json.dumps(records)
    assert ms.stats()["gets"] == 0


def test_the_right_token_opens_the_private_repo(ms, tmp_path, capsys, monkeypatch) -> None:
    ms.repos[REPO].token = "ms-right"
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-right")
    code, _, err = _run(capsys, "--uri", f"modelscope://{REPO}", "--dest", str(tmp_path / "d"), "--file", GGUF)
    assert code == 0, err
    assert ms.downloads(REPO, GGUF).gets == 1


def test_list_only_totals_exactly_what_would_be_downloaded(ms, files, tmp_path, capsys) -> None:
    dest = tmp_path / "d"
    code, _, err = _run(capsys, "--uri", f"modelscope://{REPO}", "--dest", str(dest), "--list-only")
    assert code == 0, err
    assert json.loads(_termination(tmp_path)) == {
        "files": 3,
        "phase": "Listed",
        "revision": ms.commit(REPO),
        "total": sum(map(len, files.values())),
    }
    args = ["--uri", f"modelscope://{REPO}", "--dest", str(dest), "--list-only", "--file", GGUF]
    code, _, err = _run(capsys, *args)
    assert code == 0 and json.loads(_termination(tmp_path))["total"] == len(files[GGUF])
    assert ms.stats()["gets"] == 0 and not dest.exists()  # listed, nothing downloaded or written


def test_list_only_fails_like_a_download(ms, tmp_path, capsys) -> None:
    args = ["--uri", f"modelscope://{REPO}", "--dest", str(tmp_path / "d"), "--list-only", "--file", "missing.gguf"]
    code, _, err = _run(capsys, *args)
    assert code == 1 and "HTTP 404, no file missing.gguf in the repository" in err
    assert _termination(tmp_path) == err.strip()


def test_failures_inside_the_library_download_are_unwrapped() -> None:
    """What snapshot_download raises after the listing: requests' HTTPError around a 401/403/404 (its
    compatibility layer) or a FileDownloadError gathering per-file failures; the sentence names the cause."""
    import requests
    from modelscope_hub import errors

    from modeldeploy.fetch.modelscope import _sentence

    def wrapped(cause: Exception) -> Exception:
        try:
            raise requests.exceptions.HTTPError(str(cause)) from cause
        except requests.exceptions.HTTPError as exc:
            return exc

    what, missing = "modelscope://o/r@master", "no such file in the repository (check model.file)"
    denied = wrapped(errors.PermissionDeniedError("denied", status_code=403))
    assert "HTTP 403, the token in credentialsSecret has no access" in str(_sentence(denied, what, missing))
    gone = errors.FileDownloadError("1 of 1 failed", failed_files={"a.gguf": errors.NotExistError("gone")}, total=1)
    assert str(_sentence(gone, what, missing)) == f"{what}: HTTP 404, {missing}."
    full = errors.FileDownloadError("1 of 1 failed", failed_files={"a.gguf": OSError(28, "No space left")}, total=1)
    assert "no space left on the cache volume" in str(_sentence(full, what, missing))

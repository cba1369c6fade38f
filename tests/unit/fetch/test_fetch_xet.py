"""hf:// for a Xet-backed repository: the fetcher, huggingface_hub and hf_xet against the local Hub + CAS.

The local Hub server marks the GGUF Xet-backed (X-Xet-Hash, xet-auth link, xetHash in the tree), so
huggingface_hub hands it to hf_xet, which gets a token from the Hub, asks the local CAS for the file's
reconstruction and fetches the xorb ranges (docs/model-cache.md, "Xet-backed files").
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import hf_xet
except ImportError:  # huggingface_hub installs it on x86_64 and arm64 only
    hf_xet = None

from fetchcli import progress_seen
from fetchcli import run as _run

from modeldeploy_dev.hubserver import HubServer
from tests.support.tiny_gguf import TinyLlama, write_tiny_llama
from tests.support.tools import unavailable

pytest.importorskip("huggingface_hub")

REPO = "org/tiny-GGUF"
GGUF = "tiny.f32.gguf"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real GGUF written by `gguf`: 6.8 MB, 105 chunks of the local CAS, 14 xorbs of 8 chunks."""
    path = tmp_path_factory.mktemp("gguf") / GGUF
    return write_tiny_llama(path, TinyLlama(n_layer=2, n_embd=256, n_ff=768, seed=7))


@pytest.fixture(autouse=True)
def _needs_hf_xet() -> None:
    if hf_xet is None:
        unavailable("hf_xet is not installed (huggingface_hub installs it on x86_64 and arm64 only)")


@pytest.fixture(autouse=True)
def _hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "unused"))  # recorded, so the fetcher's default does not leak
    monkeypatch.delenv("HF_HOME")  # the fetcher's default: under --dest, as in the Job
    monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, weights: Path):
    files = {GGUF: weights, "config.json": b'{"model_type": "llama"}'}
    with HubServer({REPO: files}, xet=True, xorb_chunks=8) as server:  # 512 KiB xorbs: progress in steps
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_the_gguf_comes_through_xet_byte_exact(hub: HubServer, weights: Path, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "d"
    code, records, err = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(dest))
    assert code == 0, err
    data = weights.read_bytes()
    got = (dest / GGUF).read_bytes()
    assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert (dest / "config.json").read_bytes() == b'{"model_type": "llama"}'
    stats = hub.stats()
    cas = stats["xet"]
    # The weights came from the CAS (chunk headers included), none through the plain resolve URL;
    # the small config stayed a plain file, as on the Hub.
    assert hub.downloads(REPO, GGUF).gets == 0 and hub.downloads(REPO, GGUF).bytes == 0
    assert cas["bytes"] >= len(data) and cas["reconstructions"] >= 1 and cas["token_grants"] >= 1
    assert hub.downloads(REPO, "config.json").gets == 1
    final = json.loads((tmp_path / "termination-log").read_text())
    total = len(data) + len(b'{"model_type": "llama"}')
    assert final == {"phase": "Ready", "revision": hub.commit(REPO), "bytes": total, "total": total}
    # A restart finds the completion marker and asks neither the Hub nor the CAS anything.
    code, records, _ = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(dest))
    assert code == 0 and records[0]["event"] == "fetch.present" and hub.stats() == stats


def test_one_file_with_its_sha256(hub: HubServer, weights: Path, tmp_path: Path, capsys) -> None:
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    dest = tmp_path / "d"
    args = ["--uri", f"hf://{REPO}", "--dest", str(dest), "--file", GGUF, "--sha256", sha]
    code, records, err = _run(capsys, *args)
    assert code == 0, err
    assert any(r["event"] == "fetch.verified" for r in records) and not (dest / "config.json").exists()
    assert hub.stats()["xet"]["bytes"] >= weights.stat().st_size and hub.stats()["gets"] == 0


def test_progress_moves_while_hf_xet_writes(hub: HubServer, weights: Path, tmp_path: Path, capsys) -> None:
    size = weights.stat().st_size
    hub.throttle = size / 1.5  # the CAS takes about a second and a half
    progress = tmp_path / "progress.json"
    with progress_seen(progress) as seen:
        args = ["--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"), "--file", GGUF]
        code, _, err = _run(capsys, *args, "--progress-file", str(progress), "--progress-interval", "0.1")
    assert code == 0, err
    downloading = [r["bytes"] for r in seen if r["phase"] == "Downloading"]
    between = [b for b in downloading if 0 < b < size]
    assert between, downloading  # hf_xet's partial file is seen as it grows, not only 0 then all
    assert len(set(between)) >= 2 and between == sorted(between)
    final = json.loads(progress.read_text())
    assert final["phase"] == "Ready" and final["bytes"] == final["total"] == size


def test_list_only_totals_without_touching_the_cas(hub: HubServer, weights: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"), "--list-only")
    assert code == 0, err
    listed = json.loads((tmp_path / "termination-log").read_text())
    assert listed["total"] == weights.stat().st_size + len(b'{"model_type": "llama"}') and listed["files"] == 2
    assert hub.stats()["xet"] == {"reconstructions": 0, "xorb_gets": 0, "bytes": 0, "token_grants": 0, "telemetry": 0}


@pytest.mark.parametrize(
    ("token", "words"),
    [
        (None, "HTTP 401, the repository is gated; set model.credentialsSecret"),
        ("hf_wrong", "HTTP 403, the token in credentialsSecret has no access"),
    ],
)
def test_a_refused_xet_token_is_the_same_one_sentence(hub, tmp_path, capsys, monkeypatch, token, words) -> None:
    hub.repos[REPO].gated_token = "hf_right"
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    code, _, err = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"), "--file", GGUF)
    assert code == 1 and words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (tmp_path / "termination-log").read_text() == err.strip()
    # The token endpoint refused it (the tree listing let huggingface_hub skip the resolve HEAD).
    assert hub.stats()["xet"]["token_grants"] == 0 and hub.downloads(REPO, GGUF).heads == 0
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    code, _, err = _run(capsys, "--uri", f"hf://{REPO}", "--dest", str(tmp_path / "d"), "--file", GGUF)
    assert code == 0 and hub.stats()["xet"]["token_grants"] >= 1, err


def test_the_job_command_sends_the_cas_no_telemetry(hub: HubServer, weights: Path, tmp_path: Path) -> None:
    """As its own process, as in the Job: hf_xet honours the fetcher's HF_HUB_DISABLE_TELEMETRY too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_DISABLE_TELEMETRY", "HF_XET_"))}
    env["MODELDEPLOY_TERMINATION_LOG"] = str(tmp_path / "termination-log")
    dest = tmp_path / "d"
    argv = [sys.executable, "-m", "modeldeploy.fetch", "--uri", f"hf://{REPO}", "--dest", str(dest), "--file", GGUF]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (dest / GGUF).read_bytes() == weights.read_bytes()
    cas = hub.stats()["xet"]
    assert cas["bytes"] >= weights.stat().st_size and cas["telemetry"] == 0 and hub.stats()["gets"] == 0

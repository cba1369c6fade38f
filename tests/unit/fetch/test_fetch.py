"""The fetcher against a local HTTP server: https:// (resume, verification, credentials).

hf:// goes through huggingface_hub and is tested against the local Hub server in test_fetch_hf.py, modelscope://
through the modelscope library against the local ModelScope server in test_fetch_modelscope.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from fetchcli import run as _run
from fileserver import Behaviour, Server

BLOB = os.urandom(3 * (1 << 20) + 12345)  # a few MiB: several chunks, fast
SHA = hashlib.sha256(BLOB).hexdigest()


def _gets(b: Behaviour) -> list[str | None]:
    """Range headers of the file GETs the server saw."""
    return [s.range for s in b.seen if "/files/" in s.path or "resolve" in s.path]


def test_https_download_verifies_and_a_second_start_downloads_nothing(tmp_path, capsys) -> None:
    b = Behaviour(files={"m/model.gguf": BLOB})
    dest = tmp_path / "url" / "model.gguf"
    with Server(b) as srv:
        args = ["--uri", f"{srv.url}/files/m/model.gguf", "--dest", str(dest), "--sha256", SHA]
        code, records, _ = _run(capsys, *args, "--progress-interval", "0")
        assert code == 0 and dest.read_bytes() == BLOB
        assert not dest.with_name("model.gguf.part").exists()
        events = [r["event"] for r in records]
        assert "fetch.start" in events and "fetch.verified" in events
        progress = [r for r in records if r["event"] == "fetch.progress"]
        assert progress[0]["bytes"] == 0 and progress[-1]["bytes"] == len(BLOB)  # measured on disk
        requests_before = len(b.seen)
        code, records, _ = _run(capsys, *args)
        assert code == 0 and len(b.seen) == requests_before  # nothing asked, nothing downloaded
        assert records == [{"event": "fetch.present", "file": str(dest), "downloaded": False}]


def test_progress_lines_are_rate_limited(tmp_path, capsys) -> None:
    b = Behaviour(files={"f.bin": BLOB})
    with Server(b) as srv:
        code, records, _ = _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(tmp_path / "f.bin"))
    assert code == 0
    assert [r["event"] for r in records].count("fetch.progress") <= 2  # default 10 s interval: first and last


def test_interrupted_transfer_resumes_with_a_range_request(tmp_path, capsys) -> None:
    b = Behaviour(files={"f.bin": BLOB}, cut_after=1 << 20, cuts_left=2)
    dest = tmp_path / "f.bin"
    with Server(b) as srv:
        code, records, _ = _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest), "--sha256", SHA)
    assert code == 0 and dest.read_bytes() == BLOB
    ranges = _gets(b)
    assert ranges[0] is None and ranges[1] == f"bytes={1 << 20}-" and ranges[2] == f"bytes={2 << 20}-"
    assert [r["event"] for r in records].count("fetch.retry") == 2
    assert [r["resume_from"] for r in records if r["event"] == "fetch.resume"] == [1 << 20, 2 << 20]


def test_a_part_file_left_by_a_killed_pod_is_resumed(tmp_path, capsys) -> None:
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(BLOB[:777])
    b = Behaviour(files={"f.bin": BLOB})
    with Server(b) as srv:
        code, records, _ = _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest), "--sha256", SHA)
    assert code == 0 and dest.read_bytes() == BLOB
    assert _gets(b) == ["bytes=777-"]
    assert next(r for r in records if r["event"] == "fetch.start")["resume_from"] == 777


def test_a_complete_part_file_is_finished_without_a_body(tmp_path, capsys) -> None:
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(BLOB)
    b = Behaviour(files={"f.bin": BLOB})
    with Server(b) as srv:
        code, _, _ = _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest), "--sha256", SHA)
    assert code == 0 and dest.read_bytes() == BLOB and _gets(b) == [f"bytes={len(BLOB)}-"]


def test_a_server_that_ignores_range_restarts_from_zero(tmp_path, capsys) -> None:
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"x" * 1000)  # stale bytes that must not survive
    b = Behaviour(files={"f.bin": BLOB}, ignore_range=True)
    with Server(b) as srv:
        code, records, _ = _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest), "--sha256", SHA)
    assert code == 0 and dest.read_bytes() == BLOB
    assert any(r["event"] == "fetch.restart" for r in records)


def test_checksum_mismatch_is_refused_and_removed(tmp_path, capsys) -> None:
    b = Behaviour(files={"f.bin": BLOB})
    dest = tmp_path / "f.bin"
    wrong = "0" * 64
    with Server(b) as srv:
        code, _, err = _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest), "--sha256", wrong)
    assert code == 1
    assert f"Checksum mismatch for f.bin: expected sha256 {wrong}, got {SHA}" in err
    assert not dest.exists() and not dest.with_name("f.bin.part").exists()
    assert "Checksum mismatch" in (tmp_path / "termination-log").read_text()


def test_a_changed_expected_checksum_downloads_again(tmp_path, capsys) -> None:
    b = Behaviour(files={"f.bin": BLOB})
    dest = tmp_path / "f.bin"
    with Server(b) as srv:
        assert _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest))[0] == 0
        code, records, _ = _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest), "--sha256", SHA)
    assert code == 0 and any(r["event"] == "fetch.verified" for r in records)


def test_a_truncated_file_on_disk_is_fetched_again(tmp_path, capsys) -> None:
    b = Behaviour(files={"f.bin": BLOB})
    dest = tmp_path / "f.bin"
    with Server(b) as srv:
        assert _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest))[0] == 0
        dest.write_bytes(BLOB[:10])
        assert _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest))[0] == 0
    assert dest.read_bytes() == BLOB


def test_giving_up_keeps_the_part_for_the_next_start(tmp_path, capsys) -> None:
    b = Behaviour(files={"f.bin": BLOB}, cut_after=1000, cuts_left=100)
    dest = tmp_path / "f.bin"
    with Server(b) as srv:
        code, _, err = _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(dest), "--attempts", "3")
    assert code == 1 and "Giving up" in err and "after 3 attempts" in err
    assert dest.with_name("f.bin.part").stat().st_size == 3000


def test_https_bearer_token(tmp_path, capsys, monkeypatch) -> None:
    b = Behaviour(files={"f.bin": b"abc"}, token="bearer-1")
    monkeypatch.setenv("HTTP_BEARER_TOKEN", "bearer-1")
    with Server(b) as srv:
        code, records, err = _run(capsys, "--uri", f"{srv.url}/files/f.bin?sig=secret", "--dest", str(tmp_path / "f"))
    assert code == 0 and (tmp_path / "f").read_bytes() == b"abc"
    assert "sig=secret" not in json.dumps(records) and "bearer-1" not in json.dumps(records) + err


def test_local_and_pvc_paths_download_nothing(tmp_path, capsys) -> None:
    (tmp_path / "m.gguf").write_bytes(b"x")
    code, records, _ = _run(capsys, "--uri", str(tmp_path), "--dest", str(tmp_path), "--file", "m.gguf")
    assert code == 0 and records[0]["event"] == "fetch.local" and records[0]["downloaded"] is False
    code, _, err = _run(capsys, "--uri", "pvc://claim/models", "--dest", str(tmp_path / "absent"))
    assert code == 2 and "does not exist on the mounted volume" in err


def test_s3_without_boto3_says_so(tmp_path, capsys) -> None:
    try:
        import boto3  # noqa: F401
    except ImportError:
        code, _, err = _run(capsys, "--uri", "s3://bucket/prefix", "--dest", str(tmp_path / "s3"))
        assert code == 1 and "s3:// needs boto3" in err
    else:
        pytest.skip("boto3 is installed here")


def test_bad_arguments_exit_2(tmp_path, capsys) -> None:
    code, _, err = _run(capsys, "--uri", "ftp://x/y", "--dest", str(tmp_path))
    assert code == 2 and "unsupported scheme" in err
    code, _, err = _run(capsys, "--uri", "https://h/f", "--dest", str(tmp_path / "f"), "--sha256", "abc")
    assert code == 2 and "64-digit" in err


def test_runs_as_a_process(tmp_path) -> None:
    b = Behaviour(files={"f.bin": b"hello"})
    with Server(b) as srv:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "modeldeploy.fetch",
                "--uri",
                f"{srv.url}/files/f.bin",
                "--dest",
                str(tmp_path / "f"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MODELDEPLOY_TERMINATION_LOG": str(tmp_path / "t")},
        )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "f").read_bytes() == b"hello"
    assert json.loads(proc.stdout.splitlines()[-1])["event"] == "fetch.complete"

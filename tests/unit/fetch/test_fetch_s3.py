"""s3:// through real boto3 against moto's S3 server on loopback (no S3 is reachable from here).

boto3 cannot live in the project's environment (botocore pins python-dateutil < 3, kubernetes needs >= 3),
so the fetcher runs in a venv of its own (tests/support/tools.py), exactly as the fetch image runs it:
`python -m modeldeploy.fetch` with credentials and the endpoint in the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.tools import ensure_s3_venv

REPO = Path(__file__).resolve().parents[3]
BLOB = os.urandom(3 * (1 << 20) + 4321)
FILES = {"config.json": b'{"arch": "qwen2"}', "model.safetensors": BLOB, "tok/tokenizer.json": b"{}"}
CREDS = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t-never-logged",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[Path, dict[str, str]]]:
    """(python of the boto3 venv, env pointing boto3 at a fresh moto S3 server holding the test bucket)."""
    python = ensure_s3_venv()
    port = _free_port()
    server = subprocess.Popen(
        [str(python.parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    env = {**os.environ, **CREDS, "AWS_ENDPOINT_URL": endpoint, "PYTHONPATH": str(REPO / "operator")}
    env |= {"MODELDEPLOY_FETCH_BACKOFF": "0.01"}
    upload = "import boto3, json, sys\nc = boto3.client('s3')\nc.create_bucket(Bucket='models')\n"
    upload += "for key, path in json.loads(sys.argv[1]).items():\n    c.upload_file(path, 'models', key)\n"
    staged = {}
    tmp = Path(tempfile.mkdtemp(prefix="s3-stage-"))  # a fresh name: a port is reused across runs
    for name, content in FILES.items():
        f = tmp / name.replace("/", "_")
        f.write_bytes(content)
        staged[f"qwen/{name}"] = str(f)
    subprocess.run([str(python), "-c", upload, json.dumps(staged)], env=env, check=True, timeout=60)
    try:
        yield python, env
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(python: Path, env: dict[str, str], *args: str) -> tuple[int, list[dict], str]:
    proc = subprocess.run(
        [str(python), "-m", "modeldeploy.fetch", *args, "--progress-interval", "0"],
        env=env | {"MODELDEPLOY_TERMINATION_LOG": os.devnull},
        capture_output=True,
        text=True,
        timeout=120,
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, records, proc.stderr


def test_a_prefix_is_fetched_whole_then_found_present(s3: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    python, env = s3
    dest = tmp_path / "qwen"
    code, records, err = fetch(python, env, "--uri", "s3://models/qwen", "--dest", str(dest))
    assert code == 0, err
    for name, content in FILES.items():
        assert (dest / name).read_bytes() == content
    everything = json.dumps(records) + err
    assert CREDS["AWS_SECRET_ACCESS_KEY"] not in everything and CREDS["AWS_ACCESS_KEY_ID"] not in everything
    code, records, _ = fetch(python, env, "--uri", "s3://models/qwen", "--dest", str(dest))
    assert code == 0 and records[0]["event"] == "fetch.present"


def test_a_part_file_is_resumed_with_a_range_get(s3: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    python, env = s3
    dest = tmp_path / "qwen"
    dest.mkdir()
    (dest / "model.safetensors.part").write_bytes(BLOB[:1000])
    code, records, err = fetch(python, env, "--uri", "s3://models/qwen", "--dest", str(dest))
    assert code == 0, err
    assert (dest / "model.safetensors").read_bytes() == BLOB
    start = next(r for r in records if r["event"] == "fetch.start" and r.get("file", "").endswith("model.safetensors"))
    assert start["resume_from"] == 1000


def test_a_missing_prefix_or_bad_credentials_say_so(s3: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    python, env = s3
    code, _, err = fetch(python, env, "--uri", "s3://models/nothing-here", "--dest", str(tmp_path / "x"))
    assert code != 0 and "No objects under s3://models/nothing-here/" in err
    code, _, err = fetch(python, env, "--uri", "s3://no-such-bucket/m", "--dest", str(tmp_path / "y"))
    assert code != 0 and "s3://no-such-bucket/m/: NoSuchBucket" in err and "Traceback" not in err


def test_an_unreachable_endpoint_is_one_sentence(s3: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    python, env = s3
    env = env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    code, records, err = fetch(python, env, "--uri", "s3://models/qwen", "--dest", str(tmp_path / "z"))
    assert code == 1 and "Could not connect to the endpoint URL" in err and "Traceback" not in err
    assert records[-1]["event"] == "fetch.failed"

"""The llama.cpp entrypoint as a real process: xllamacpp's CPU wheel serving a GGUF the test writes.

This is the pod's engine container minus the container: the same argv the renderer emits, the auto-NGL
file the init container writes, a real `/v1/chat/completions` round trip, and the fast refusals a user
sees when `engine.args` is wrong.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.tiny_gguf import write_tiny_llama

pytest.importorskip("xllamacpp")
pytestmark = [pytest.mark.engine, pytest.mark.timeout(120)]

ENTRYPOINT = [sys.executable, "-m", "modeldeploy.engines.llamacpp"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("model") / "tiny-llama-f32.gguf")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MODELDEPLOY_TERMINATION_LOG"] = str(tmp_path / "termination-log")
    return env


def _run_fast(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(ENTRYPOINT + args, capture_output=True, text=True, timeout=30, env=_env(tmp_path))
    return proc, time.monotonic() - start


def test_serves_chat_completions_with_dotted_params(model: Path, tmp_path: Path) -> None:
    ngl = tmp_path / "ngl.json"
    ngl.write_text(
        json.dumps({"n_gpu_layers": 0, "tensor_split": [], "estimate": {}, "fallback": False, "reason": "no GPU"})
    )
    port = _free_port()
    args = ["--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--ngl-file", str(ngl)]
    args += ["--param", "n_ctx=256", "--param", "sampling.top_k=5", "--param", "n_parallel=1"]
    started = time.monotonic()
    proc = subprocess.Popen(
        ENTRYPOINT + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path)
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    healthy = True
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert healthy, f"no /health within 60 s (exit {proc.poll()})"
        reply = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert "content" in body["choices"][0]["message"]
        assert body["usage"]["completion_tokens"] <= 8
        print(f"engine test: healthy and answered in {time.monotonic() - started:.1f} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    params = next(r for r in records if r["event"] == "llamacpp.params")
    assert params["params"] == {"n_ctx": 256, "sampling.top_k": 5, "n_parallel": 1}
    assert params["n_gpu_layers"] == 0
    assert params["ngl"]["source"] == "auto-ngl"
    assert "CUDA_VISIBLE_DEVICES is empty" in params["ngl"]["gpus_hidden"]  # 0 layers: the GPUs are hidden
    assert params["effective"]["sampling.top_k"] == 5
    # n_ctx 256 in one slot is below what a chat needs: the seed's fix is in the log, but it still serves.
    issues = [r for r in records if r["event"] == "llamacpp.issue"]
    assert [i["issue"] for i in issues] == ["slot-context-too-small"]
    assert "increasing n_ctx or reducing n_parallel" in issues[0]["fix"]


def test_unknown_and_ill_typed_params_fail_fast(model: Path, tmp_path: Path) -> None:
    proc, took = _run_fast(
        ["--model", str(model), "--n-gpu-layers", "0", "--param", "sampling.top_kk=1", "--param", "n_ctx=abc"],
        tmp_path,
    )
    assert proc.returncode == 2
    assert took < 10
    assert "sampling.top_kk" in proc.stderr and "did you mean sampling.top_k" in proc.stderr
    assert "n_ctx must be an integer, got 'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "sampling.top_kk" in (tmp_path / "termination-log").read_text()


def test_missing_ngl_file_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    proc, took = _run_fast(["--model", str(model), "--ngl-file", str(tmp_path / "absent.json")], tmp_path)
    assert proc.returncode == 2 and took < 10
    assert "auto-ngl init container did not write it" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_invalid_ngl_file_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "ngl.json"
    bad.write_text('{"n_gpu_layers": "many"}')
    proc, _ = _run_fast(["--model", str(model), "--ngl-file", str(bad)], tmp_path)
    assert proc.returncode == 2
    assert "n_gpu_layers 'many'" in proc.stderr


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    proc, _ = _run_fast(["--model", str(tmp_path / "nope.gguf"), "--n-gpu-layers", "0"], tmp_path)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_kv_cache_that_cannot_fit_stops_with_the_seed_fix(model: Path, tmp_path: Path) -> None:
    # 2 layers x 2 KV heads x 16 dims x (K+V) x f16 = 256 bytes per cell; 10^9 cells = 238 GiB.
    proc, took = _run_fast(
        ["--model", str(model), "--n-gpu-layers", "0", "--param", "n_ctx=1000000000"],
        tmp_path,
    )
    assert proc.returncode == 3 and took < 10, proc.stderr
    assert "KV cache for n_ctx 1000000000" in proc.stderr
    assert "reducing n_ctx or increasing n_parallel" in proc.stderr
    assert "Not starting llama.cpp" in (tmp_path / "termination-log").read_text()

"""The llama.cpp entrypoint answers to the ModelDeployment's served model name and exports its load signal.

Through the `openai` Python client, as a user of the one OpenAI endpoint would: `/v1/models` lists the
served name (not the GGUF's file path), a chat request naming it is answered, and `/metrics` carries the
two gauges the autoscaler reads (`llamacpp:requests_processing`, `llamacpp:requests_deferred`), with
requests beyond the server's slots counted as deferred while they wait (docs/autoscaling.md).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.tiny_gguf import write_tiny_llama

pytest.importorskip("xllamacpp")
openai = pytest.importorskip("openai")
pytestmark = [pytest.mark.engine, pytest.mark.timeout(120)]

SERVED = "qwen2.5-instruct"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The entrypoint with one slot, as the renderer starts it (`--alias`), on a tiny GGUF."""
    tmp = tmp_path_factory.mktemp("served")
    model = write_tiny_llama(tmp / "tiny-llama-f32.gguf")
    port = _free_port()
    env = dict(os.environ, MODELDEPLOY_TERMINATION_LOG=str(tmp / "termination-log"))
    argv = [sys.executable, "-m", "modeldeploy.engines.llamacpp", "--model", str(model), "--alias", SERVED]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--n-gpu-layers", "0"]
    argv += ["--param", "n_ctx=2048", "--param", "n_parallel=1", "--preflight", "warn"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"the llama.cpp entrypoint did not become healthy (exit {proc.poll()})")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _gauges(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(llamacpp:[a-z_]+) ([0-9.e+-]+)$", text, re.M)}


def test_models_lists_the_served_name(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    ids = [m.id for m in client.models.list()]
    assert ids == [SERVED]


def test_chat_by_served_name(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    reply = client.chat.completions.create(model=SERVED, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4)
    assert reply.choices[0].message.role == "assistant"
    assert reply.model == SERVED


def test_metrics_count_requests_beyond_the_slots_as_deferred(server: str) -> None:
    assert {"llamacpp:requests_processing", "llamacpp:requests_deferred"} <= set(_gauges(server))
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=60)

    def ask() -> None:
        client.completions.create(model=SERVED, prompt="Count:", max_tokens=400, extra_body={"ignore_eos": True})

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    peak = {"llamacpp:requests_processing": 0.0, "llamacpp:requests_deferred": 0.0}
    while any(t.is_alive() for t in threads):
        for name, value in _gauges(server).items():
            if name in peak:
                peak[name] = max(peak[name], value)
        time.sleep(0.01)
    for t in threads:
        t.join()
    print(f"engine test: peak gauges under 4 concurrent requests on 1 slot: {peak}")
    assert peak["llamacpp:requests_processing"] == 1
    assert peak["llamacpp:requests_deferred"] >= 1
    idle = _gauges(server)
    assert idle["llamacpp:requests_processing"] == 0 and idle["llamacpp:requests_deferred"] == 0

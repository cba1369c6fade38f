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
from collections.abc import Callable, Iterator

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
    """The entrypoint with one slot and one compute thread, as the renderer starts it (`--alias`), on a tiny GGUF."""
    tmp = tmp_path_factory.mktemp("served")
    model = write_tiny_llama(tmp / "tiny-llama-f32.gguf")
    port = _free_port()
    env = dict(os.environ, MODELDEPLOY_TERMINATION_LOG=str(tmp / "termination-log"))
    argv = [sys.executable, "-m", "modeldeploy.engines.llamacpp", "--model", str(model), "--alias", SERVED]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--n-gpu-layers", "0"]
    argv += ["--param", "n_ctx=2048", "--param", "n_parallel=1", "--preflight", "warn"]
    # One compute thread: with several, ggml's threads spin on a barrier every step, and on a CPU-starved
    # machine (other tests, other work) a descheduled thread stalls the rest, stretching a few seconds of
    # decoding past the test's timeout. The gauges under test do not depend on the thread count.
    argv += ["--param", "cpuparams.n_threads=1", "--param", "cpuparams_batch.n_threads=1"]
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
    # The server answers /metrics from its single task loop, between decode steps; on a loaded machine one
    # read can take seconds, so the timeout is generous (a hung server still fails the test).
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(llamacpp:[a-z_]+) ([0-9.e+-]+)$", text, re.M)}


def _wait_for(base: str, done: Callable[[dict[str, float]], bool], seconds: float) -> dict[str, float]:
    """Poll the gauges until `done` holds or `seconds` pass; return the last read (the caller asserts on it)."""
    deadline = time.monotonic() + seconds
    gauges = _gauges(base)
    while not done(gauges) and time.monotonic() < deadline:
        time.sleep(0.05)
        gauges = _gauges(base)
    return gauges


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
    """Four requests on one slot: one processing, the others counted as deferred, all back to 0 afterwards.

    Robust on a loaded machine without proving less: the first request is started alone and the other
    three only once the gauges show it processing, so they arrive while the slot is busy (not after it,
    when a CPU-starved client thread starts late); the requests are 1,000 and 400 tokens, so the deferred
    window spans many samples; and the idle state is polled with a bounded deadline, because the gauges
    are read on the server's own task loop and a client can return before that loop has taken its next
    turn.
    """
    processing, deferred = "llamacpp:requests_processing", "llamacpp:requests_deferred"
    assert {processing, deferred} <= set(_gauges(server))
    assert _wait_for(server, lambda g: g[processing] == 0 and g[deferred] == 0, 30)[processing] == 0
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=120, max_retries=0)
    errors: list[BaseException] = []

    def ask(tokens: int) -> None:
        try:
            client.completions.create(model=SERVED, prompt="Count:", max_tokens=tokens, extra_body={"ignore_eos": True})
        except BaseException as exc:  # surfaced by the assert below, not lost in the thread
            errors.append(exc)

    peak = {processing: 0.0, deferred: 0.0}

    def sample() -> None:
        for name, value in _gauges(server).items():
            if name in peak:
                peak[name] = max(peak[name], value)

    # The first request is longer (~0.5 s or more even on an idle machine) so the gauges catch it running.
    threads = [threading.Thread(target=ask, args=(1000 if i == 0 else 400,)) for i in range(4)]
    threads[0].start()
    # Usually seen running; if a starved sampler misses it, the other three still run together below, and
    # the peak assertions decide.
    _wait_for(server, lambda g: g[processing] >= 1 or not threads[0].is_alive(), 60)
    for t in threads[1:]:
        t.start()
    while any(t.is_alive() for t in threads):
        sample()
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert not errors, errors
    print(f"engine test: peak gauges under 4 concurrent requests on 1 slot: {peak}")
    assert peak[processing] == 1
    assert peak[deferred] >= 1
    idle = _wait_for(server, lambda g: g[processing] == 0 and g[deferred] == 0, 10)
    assert idle[processing] == 0 and idle[deferred] == 0, f"gauges did not return to idle within 10 s: {idle}"

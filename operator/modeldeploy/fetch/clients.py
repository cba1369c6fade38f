"""The repository schemes' own client libraries: which module drives which, what they need before import.

hf:// is downloaded by huggingface_hub (hub.py), modelscope:// by the modelscope library (modelscope.py).
Both are imported only when their scheme is fetched, and both read part of their settings from the
environment at import time, so the fetcher sets those first. A killed huggingface_hub run also leaves a
partial file that no later run can use; removing it is here too.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from modeldeploy.fetch.http import MARKER_DIR
from modeldeploy.fetch.progress import Log
from modeldeploy.model_paths import ModelUriError, locate

REPO_CLIENTS = ("hf", "modelscope")


def driver(scheme: str) -> ModuleType:
    """The module that drives a repository scheme's client library (`resolve`, `download`)."""
    if scheme == "hf":
        from modeldeploy.fetch import hub

        return hub
    from modeldeploy.fetch import modelscope

    return modelscope


def prepare_environment(uri: str, dest: Path) -> None:
    """The clients: no progress bars in the log, no telemetry, their own files on the cache volume.

    tqdm (the modelscope library's bars, which it offers no switch for) reads TQDM_DISABLE when it is
    imported, which is after this in the fetcher's process. MODELSCOPE_CACHE holds the library's lock
    files and MODELSCOPE_HOME its session id: on the cache volume, not in a home directory that a
    read-only image may lack. Values already set (the operator's fetchEnv) win.
    """
    try:
        if locate(uri).scheme not in REPO_CLIENTS:
            return  # no client library runs (and for https:// `dest` is a file, not a directory)
    except ModelUriError:
        return  # reported by the fetch in its own words
    meta = dest / MARKER_DIR
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HOME", str(meta / "hf-home"))
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MODELSCOPE_CACHE", str(meta / "modelscope"))
    os.environ.setdefault("MODELSCOPE_HOME", str(meta / "modelscope-home"))


def drop_unresumable_partials(dest: Path, log: Log) -> None:
    """Remove what a killed huggingface_hub run left half-written; the library can never resume it.

    huggingface_hub 2.x downloads each file into a process-unique `<name>.<random>.incomplete` and removes
    it only when its own process sees the failure, so a Job pod killed mid-file leaves one behind for good:
    space the claim was not sized for, and bytes the progress would count. The next run starts that file
    from byte 0 anyway (docs/model-cache.md "Resume"). One fetcher writes a destination at a time (one
    download Job per cache, an init container per pod), so whatever is there is dead.
    """
    partials = dest / ".cache" / "huggingface" / "download"
    if not partials.is_dir():
        return
    for stale in partials.rglob("*.incomplete"):
        size = stale.stat().st_size
        stale.unlink(missing_ok=True)
        log({"event": "fetch.partial_removed", "file": str(stale), "bytes": size})

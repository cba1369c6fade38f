"""Download progress as the bytes on disk, whoever writes them, and where it is reported.

The clients (huggingface_hub, boto3, our single-file downloader) each have their own progress hooks;
counting the bytes under the destination instead works the same for all of them, costs one directory
walk every few seconds, and counts a resumed download from where it really is. The records go to the
log as JSON lines and to a `Reporter` — for the shared model cache, the annotation on the cache's
PersistentVolumeClaim that the operator turns into `status.model` (docs/model-cache.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Log = Callable[[dict[str, Any]], None]


def bytes_under(root: Path) -> int:
    """Size of every regular file below `root` (finished files and the clients' partial ones)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):  # renamed between listing and stat: counted next pass
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


class Reporter:
    """Where progress goes besides the log; the base class reports nowhere."""

    def report(self, record: dict[str, Any]) -> None:
        """`record`: phase (Downloading, Ready, Failed), bytes, total, revision, message."""


class DiskProgress:
    """A thread that measures `dest` every `interval` seconds while a download runs."""

    def __init__(
        self,
        dest: Path,
        total: int | None,
        *,
        interval: float,
        log: Log,
        reporter: Reporter,
        revision: str | None,
        measure: Callable[[], int] | None = None,
    ) -> None:
        self.dest, self.total, self.interval = dest, total, max(interval, 0.05)  # 0 would spin
        self.log, self.reporter, self.revision = log, reporter, revision
        self.measure = measure or (lambda: bytes_under(dest) if dest.exists() else 0)
        self.baseline = self.measure()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fetch-progress", daemon=True)
        self.started = time.monotonic()

    def record(self) -> dict[str, Any]:
        done = self.measure()
        if self.total:
            done = min(done, self.total)
        rate = (done - self.baseline) / max(time.monotonic() - self.started, 1e-6) / (1 << 20)
        rec: dict[str, Any] = {
            "event": "fetch.progress",
            "phase": "Downloading",
            "bytes": done,
            "total": self.total,
            "rate_mib_s": round(max(rate, 0.0), 2),
        }
        if self.revision:
            rec["revision"] = self.revision
        if self.total:
            rec["percent"] = round(100 * done / self.total, 1)
        return rec

    def emit(self) -> None:
        rec = self.record()
        self.log(rec)
        self.reporter.report(rec)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit()

    def __enter__(self) -> DiskProgress:
        self.emit()
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self.emit()  # the last line: where the download ended


class FileReporter(Reporter):
    """Writes the latest record to a file (atomically); what tests and a sidecar can read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def report(self, record: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:
            pass  # progress is best effort; the download itself decides success

"""Running the fetcher's command line inside a test, as every fetch test does."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeploy.fetch.__main__ import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    """(exit code, the JSON records on stdout, stderr) of `python -m modeldeploy.fetch ARGV`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def termination(tmp_path: Path) -> str:
    """The termination message (conftest.py points MODELDEPLOY_TERMINATION_LOG there)."""
    return (tmp_path / "termination-log").read_text()


@contextlib.contextmanager
def progress_seen(progress: Path, every_s: float = 0.05) -> Iterator[list[dict]]:
    """Every state of the `--progress-file` read while the block runs (what the cache claim would show)."""
    seen: list[dict] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            if progress.exists():
                seen.append(json.loads(progress.read_text()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join()

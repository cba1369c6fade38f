"""Fetch tests: keep retries fast, the termination log and the clients' files inside the test's temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELDEPLOY_FETCH_BACKOFF", "0.01")
    monkeypatch.setenv("MODELDEPLOY_TERMINATION_LOG", str(tmp_path / "termination-log"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN", "HTTP_BEARER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # What the fetcher sets (setdefault) for its clients, set here so that nothing outlives the test.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("TQDM_DISABLE", "1")

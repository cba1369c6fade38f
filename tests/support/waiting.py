"""Waiting for a cluster to get somewhere: the one polling helper of the cluster tier."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes.client.rest import ApiException

T = TypeVar("T")

# What a poll may raise while the thing waited for is not there yet: the object is missing (404), a field is
# not set yet, the port does not answer yet (URLError is an OSError), or the check's own assert.
_NOT_YET = (ApiException, AssertionError, KeyError, IndexError, StopIteration, OSError)


def eventually(fn: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.25) -> T:
    """Poll `fn` until it returns something truthy; fail with the last value (or exception) after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except _NOT_YET as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def http_status(url: str, timeout: float = 2) -> int | None:
    """The HTTP status of a GET, or None while nothing answers (connection refused, reset, timed out)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except OSError:
        return None

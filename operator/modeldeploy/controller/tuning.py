"""The interpreter's share of each watch event: the cyclic garbage collector.

Measured with `bench/scale.py` at 500 nodes x 1,000 ModelDeployments (docs/operator-at-scale.md): with
CPython's default thresholds (a young collection every 700 container allocations) the collector ran
about 4,000 times in the run (3,672 young, 334 middle, 27 full), its own callbacks timing 24 s of
collections against the operator's 42 s of CPU. Every watch event allocates thousands of dicts and
lists (its decoded body), and each older collection walks every long-lived object (node facts, views,
Kopf's per-object state). The bodies are short-lived and acyclic: reference counting frees them, the
collector finds nothing. So `tune_gc()` moves what start-up loaded (modules, Kopf, pydantic models)
out of the collector's sight (`gc.freeze`) and collects the young generation every 50,000 allocations
instead of 700. Cycles are still collected, later; RSS did not grow in the bench (the cycles are few).
Measured after: 41 young collections timed at 4.1 s, and 23.3 -> 19.1 ms of CPU per ModelDeployment.

Decoding the watch streams with orjson instead of the standard library (Kopf's `json.loads`) was tried
too: 18.8 -> 18.5 ms, within the runs' noise, so it was left out (a dependency and a patch of Kopf's
internals for nothing measurable).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)
MIDDLE_THRESHOLD = 20  # young collections per middle one (default: 10)
OLD_THRESHOLD = 10  # middle collections per full one (default: 10; a full one also needs 25 % new objects)


def tune_gc() -> tuple[int, int, int]:
    """Freeze what start-up allocated and raise the thresholds; returns the previous thresholds."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    return before


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (musl, macOS: their allocators return memory by themselves)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    return trim


def release_memory(trim: Callable[[int], int] | None = None) -> None:
    """Give the memory a burst used back to the system once it is over.

    A burst's watch bodies, tasks and responses are freed when handled, but glibc keeps the freed pages
    of its heaps for the next allocation, so RSS stayed at the burst's peak (docs/operator-at-scale.md,
    "Node churn"). A full collection first (the young threshold above leaves the burst's few cycles for
    later), then `malloc_trim(0)`, which returns every free page of the heaps to the system.
    """
    gc.collect()
    trim = trim or _malloc_trim()
    if trim is not None:
        trim(0)

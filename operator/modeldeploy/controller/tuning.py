"""The interpreter's share of each watch event: the cyclic garbage collector.

Measured with `bench/scale.py` at 500 nodes x 1,000 ModelDeployments (docs/operator-at-scale.md): with
CPython's default thresholds (a young collection every 700 container allocations) the collector ran
about 4,000 times in the run (3,672 young, 334 middle, 27 full), its own callbacks timing 24 s of
collections against the operator's 42 s of CPU. Every watch event allocates thousands of dicts and
lists (its decoded body), and each older collection walks every long-lived object (node facts, views,
Kopf's per-object state). The bodies are short-lived, and what holds them is freed when handled (the
collector's share of that is below). So `tune_gc()` moves what start-up loaded (modules, Kopf, pydantic models)
out of the collector's sight (`gc.freeze`) and collects the young generation every 50,000 allocations
instead of 700. Cycles are still collected, later; RSS did not grow in the bench (the cycles are few).
Measured after: 41 young collections timed at 4.1 s, and 23.3 -> 19.1 ms of CPU per ModelDeployment.

What the collector found, once the thresholds were raised, was Kopf's own: each event Kopf handles
wraps the decoded object in a `Body`, and each handling cycle has a `Patch`; both keep views of their
parts (`meta`, `spec`, `status`, `meta.labels`) that point back at them, so every handled event left a
reference cycle holding its whole decoded object (a pod or Deployment with its managed fields: hundreds
of dicts and lists) until the next collection: 61,736 objects behind 766 bodies and 986 patches in the
collection after one run's rollouts. `acyclic_bodies()` gives Kopf bodies and patches whose views are made
when read and point one way only, so reference counting frees each event's object as soon as Kopf is done
with it. Measured (docs/operator-at-scale.md, round 9): the collector freed about 4,000 objects in a whole
run instead of about 350,000, RSS after a burst went from 136-137 to 121-124 MiB, and the collection after
a burst from 0.38 to 0.21 s; CPU per object did not move beyond the runs' noise (freeing by reference
counting costs about what the collector's freeing did).

Decoding the watch streams with orjson instead of the standard library (Kopf's `json.loads`) was tried
too: 18.8 -> 18.5 ms, within the runs' noise, so it was left out (a dependency and a patch of Kopf's
internals for nothing measurable).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from kopf._cogs.structs import bodies, dicts, patches, references

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


class AcyclicMeta(bodies.Meta):
    """A body's metadata whose labels and annotations views are made when read (Kopf's Meta keeps
    them, and they point back at it).

    Kopf reads `metadata` six times for each handler it calls (its keyword arguments: meta, uid, name,
    namespace, labels, annotations), so this view is made that often: it sets what MappingView's
    constructor sets without parsing the path, and reads uid, name and namespace from the body's object
    directly instead of through two views (a third of the cost of each, measured)."""

    def __init__(self, src: bodies.Body) -> None:
        self._src = src
        self._path = ("metadata",)  # what MappingView.__init__(src, "metadata") sets

    def _field(self, key: str) -> Any:
        body = self._src
        raw = body._src if isinstance(body, dicts.MappingView) and not body._path else body  # the event's object
        metadata = raw.get("metadata")
        return metadata.get(key) if isinstance(metadata, Mapping) else None

    @property
    def uid(self) -> str:
        return cast(str, self._field("uid"))

    @property
    def name(self) -> str:
        return cast(str, self._field("name"))

    @property
    def namespace(self) -> references.Namespace:
        return cast(references.Namespace, self._field("namespace"))

    @property
    def labels(self) -> bodies.Labels:
        return dicts.MappingView(self, "labels")

    @property
    def annotations(self) -> bodies.Annotations:
        return dicts.MappingView(self, "annotations")


def _drop_views(obj: object) -> None:
    """Take the views Kopf's constructor kept off `obj`, and empty them: with their back references
    gone, reference counting frees them at once."""
    for name in CYCLIC_VIEWS:
        view = obj.__dict__.pop(name, None)
        if view is not None:
            view.__dict__.clear()


CYCLIC_VIEWS = ("_meta", "_spec", "_status")  # what Kopf's Body and Patch keep that points back at them


class AcyclicBody(bodies.Body):
    """Kopf's Body, its `meta`, `spec` and `status` views made when read instead of kept (Kopf's
    constructor makes them; they are dropped, whatever else it sets is kept)."""

    def __init__(self, src: bodies.RawBody | bodies.BodyEssence) -> None:
        super().__init__(src)
        _drop_views(self)

    meta = metadata = property(AcyclicMeta)
    spec = property(bodies.Spec)
    status = property(bodies.Status)


class AcyclicMetaPatch(patches.MetaPatch):
    """A patch's metadata whose labels and annotations views are made when read."""

    def __init__(self, src: patches.Patch) -> None:
        dicts.MutableMappingView.__init__(self, src, "metadata")

    @property
    def labels(self) -> dicts.MutableMappingView[str, str | None]:
        return dicts.MutableMappingView(self, "labels")

    @property
    def annotations(self) -> dicts.MutableMappingView[str, str | None]:
        return dicts.MutableMappingView(self, "annotations")


class AcyclicPatch(patches.Patch):
    """Kopf's Patch, its `meta`, `spec` and `status` views made when read instead of kept (Kopf's
    constructor makes them; they are dropped, whatever else it sets is kept)."""

    def __init__(
        self, src: dict[str, Any] | None = None, /, body: bodies.Body | None = None, fns: Iterable[patches.PatchFn] = ()
    ) -> None:
        super().__init__(src, body=body, fns=fns)
        _drop_views(self)

    meta = metadata = property(AcyclicMetaPatch)
    spec = property(patches.SpecPatch)
    status = property(patches.StatusPatch)


def leaves_cycles(body_type: type[bodies.Body], patch_type: type[patches.Patch]) -> int:
    """How many objects one event's body and patch leave for the collector, used as Kopf uses them."""
    raw: bodies.RawBody = {"metadata": {"name": "n", "labels": {"a": "b"}}, "spec": {"x": [{"y": 1}]}, "status": {}}
    enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        body = body_type(raw)
        patch = patch_type(None, body=body)
        patch.meta.labels["a"] = "c"
        patch.status["phase"] = "p"
        _ = (body.meta.labels, body.meta.name, body.metadata, body.spec, body.status, patch.spec, patch.metadata)
        del raw, body, patch, _
        return gc.collect()
    finally:
        if enabled:
            gc.enable()


def acyclic_bodies() -> bool:
    """Have Kopf wrap each event in an AcyclicBody and an AcyclicPatch; whether it does.

    Kopf looks both classes up in their modules when it handles an event (kopf/_core/reactor/
    processing.py); `kopf.Body` and `kopf.Patch`, the names handlers' type hints use, stay Kopf's (ours
    are subclasses). Checked first: a Kopf whose classes these no longer fit (one that leaves cycles
    with them) is left as it is."""
    if bodies.Body is AcyclicBody:
        return True
    if leaves_cycles(AcyclicBody, AcyclicPatch):
        return False
    bodies.Body = AcyclicBody  # type: ignore[misc]
    patches.Patch = AcyclicPatch  # type: ignore[misc]
    return True


@functools.cache  # looked up once: `find_library` runs `ldconfig -p` in a subprocess
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
    later), then `malloc_trim(0)`, which returns every free page of the heaps to the system. The
    collection walks every live object: about 0.2 s at 1,000 ModelDeployments, once per burst.
    """
    gc.collect()
    trim = trim or _malloc_trim()
    if trim is not None:
        trim(0)

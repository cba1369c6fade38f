"""The operator process's collector thresholds and Kopf's event bodies (controller/tuning.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from kopf._cogs.structs import bodies, patches

from modeldeploy.controller import tuning


@pytest.fixture
def restored_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_freezes_start_up_and_raises_the_young_threshold() -> None:
    before = tuning.tune_gc()
    assert before != gc.get_threshold()
    assert gc.get_threshold() == (tuning.YOUNG_THRESHOLD, tuning.MIDDLE_THRESHOLD, tuning.OLD_THRESHOLD)
    assert gc.get_freeze_count() > 0


@pytest.fixture
def kopf_classes() -> Iterator[None]:
    """Kopf's Body and Patch as they were, whatever a test installed."""
    body, patch = bodies.Body, patches.Patch
    yield
    bodies.Body, patches.Patch = body, patch  # type: ignore[misc]


RAW: bodies.RawBody = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"}, "annotations": {"n": "1"}},
    "spec": {"containers": [{"name": "engine"}]},
    "status": {"phase": "Pending"},
}


def test_kopf_bodies_and_patches_leave_cycles_and_the_acyclic_ones_none() -> None:
    """Why the classes exist: each event Kopf handles left its decoded object to the collector."""
    assert tuning.leaves_cycles(bodies.Body, patches.Patch) > 0
    assert tuning.leaves_cycles(tuning.AcyclicBody, tuning.AcyclicPatch) == 0


def test_a_handled_events_object_is_freed_when_its_body_and_patch_go() -> None:
    """The decoded object itself goes with the last reference to its body, without a collection."""

    class Raw(dict[str, Any]):  # a dict that can be referenced weakly, as a decoded event's object
        pass

    for body_type, patch_type, freed in (
        (bodies.Body, patches.Patch, False),
        (tuning.AcyclicBody, tuning.AcyclicPatch, True),
    ):
        gc.disable()
        try:
            raw = Raw(RAW)
            gone = weakref.ref(raw)
            body = body_type(raw)  # type: ignore[arg-type]
            patch = patch_type(None, body=body)
            patch.status["phase"] = body.status["phase"]
            del raw, body, patch
            assert (gone() is None) is freed, body_type
        finally:
            gc.enable()
            gc.collect()


def test_acyclic_bodies_and_patches_read_and_write_as_kopfs_do() -> None:
    kopf_body, body = bodies.Body(dict(RAW)), tuning.AcyclicBody(dict(RAW))
    for b in (kopf_body, body):
        assert isinstance(b, bodies.Body) and isinstance(b.meta, bodies.Meta)
        assert (b.meta.name, b.meta.namespace, b.meta.uid, b.metadata.name) == ("p", "ns", "u", "p")
        assert dict(b.meta.labels) == {"a": "b"} and dict(b.meta.annotations) == {"n": "1"}
        assert dict(b.spec) == dict(RAW["spec"]) and b.status["phase"] == "Pending"
    body._replace_with({"metadata": {"name": "q"}, "status": {"phase": "Running"}})
    assert body.meta.name == "q" and body.status["phase"] == "Running" and dict(body.meta.labels) == {}
    assert body.meta.uid is None and body.meta.namespace is None  # absent fields read as Kopf's do
    for empty in (bodies.Body({}), tuning.AcyclicBody({})):
        assert (empty.meta.name, empty.meta.uid, empty.meta.namespace, dict(empty.meta)) == (None, None, None, {})

    kopf_patch = patches.Patch(body=kopf_body, fns=[lambda raw: None])
    patch = tuning.AcyclicPatch(body=tuning.AcyclicBody(dict(RAW)), fns=[lambda raw: None])
    for p in (kopf_patch, patch):
        assert isinstance(p, patches.Patch) and isinstance(p.meta, patches.MetaPatch)
        p.meta.labels["a"] = "c"
        p.metadata.annotations["n"] = None
        p.spec["replicas"] = 0
        p.status["phase"] = "Running"
        assert len(p.fns) == 1 and bool(p)
    assert (
        dict(patch)
        == dict(kopf_patch)
        == {
            "metadata": {"labels": {"a": "c"}, "annotations": {"n": None}},
            "spec": {"replicas": 0},
            "status": {"phase": "Running"},
        }
    )
    assert patch.as_json_patch() == kopf_patch.as_json_patch()
    carried = tuning.AcyclicPatch(patch)  # Kopf carries a patch it could not apply into the next one
    assert dict(carried) == dict(patch) and carried.fns == patch.fns


@pytest.mark.usefixtures("kopf_classes")
def test_acyclic_bodies_are_what_kopf_wraps_each_event_in() -> None:
    """Kopf's event processing looks the classes up in their modules at each event; the public names,
    which handlers' type hints use, stay Kopf's."""
    import kopf
    from kopf._core.reactor import processing

    public = kopf.Body, kopf.Patch
    assert tuning.acyclic_bodies() and tuning.acyclic_bodies()  # twice: installed once
    assert processing.bodies.Body is tuning.AcyclicBody and processing.patches.Patch is tuning.AcyclicPatch
    assert not hasattr(processing, "Body") and not hasattr(processing, "Patch")
    assert (kopf.Body, kopf.Patch) == public


@pytest.mark.usefixtures("kopf_classes")
def test_a_kopf_the_acyclic_classes_no_longer_fit_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "CYCLIC_VIEWS", ("_meta",))  # as if Kopf kept its views under other names
    kopf_body = bodies.Body
    assert not tuning.acyclic_bodies()
    assert bodies.Body is kopf_body


def test_the_malloc_trim_lookup_is_made_once() -> None:
    assert tuning._malloc_trim() is tuning._malloc_trim()

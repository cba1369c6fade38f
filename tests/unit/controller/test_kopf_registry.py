"""The operator registers only event, index and activity handlers with Kopf (settings.NoDiffBase relies on it)."""

from __future__ import annotations

import kopf

from modeldeploy.controller.settings import NoDiffBase, configure


def test_no_change_handlers_and_no_daemons() -> None:
    import modeldeploy.controller.cache_handlers  # noqa: F401 - what run.py imports
    import modeldeploy.controller.handlers  # noqa: F401

    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == []  # on.create/update/resume/field/delete need a diff base
    assert registry._spawning.get_all_handlers() == []  # daemons and timers would put finalizers on objects
    ids = {handler.id for handler in registry._watching.get_all_handlers()}
    assert "modeldeployment_event" in ids and "node_event" in ids


def test_kopf_keeps_no_diff_base() -> None:
    settings = kopf.OperatorSettings()
    configure(settings)
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, NoDiffBase)
    body = kopf.Body({"metadata": {"name": "m"}, "spec": {"replicas": 1}})
    assert storage.build(body=body) is None and storage.fetch(body=body) is None

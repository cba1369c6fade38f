"""The zero-to-first-token report adds up when a step does not happen (the shared cache: no fetch)."""

from __future__ import annotations

from modeldeploy_dev import fromzero


def test_every_part_is_counted_from_the_step_before_it() -> None:
    seen = {"sent": 0.0, "replicas": 0.5, "pod": 0.6, "scheduled": 0.7, "fetch": 3.0, "auto-ngl": 4.0}
    seen |= {"running": 4.2, "ready": 6.0, "first_token": 6.3}
    took = dict(fromzero.parts(seen))
    assert took["fetch (init)"] == 3.0 - 0.7
    assert took["auto-NGL (init)"] == 4.0 - 3.0
    assert abs(sum(t for t in took.values() if t is not None) - 6.3) < 1e-9


def test_without_a_fetch_init_container_auto_ngl_counts_from_scheduling_and_fetch_reads_none() -> None:
    seen = {"sent": 0.0, "replicas": 0.5, "pod": 0.6, "scheduled": 0.7, "auto-ngl": 2.0}
    seen |= {"running": 2.1, "ready": 3.9, "first_token": 4.1}
    took = dict(fromzero.parts(seen))
    assert took["fetch (init)"] is None
    assert took["auto-NGL (init)"] == 2.0 - 0.7
    assert abs(sum(t for t in took.values() if t is not None) - 4.1) < 1e-9
    lines = fromzero.report(seen).splitlines()
    assert lines[3].split() == ["fetch", "(init)", "none"]


def test_a_step_not_reached_reads_unknown() -> None:
    report = fromzero.report({"sent": 0.0, "replicas": 0.5})
    assert "?" in report.splitlines()[1]

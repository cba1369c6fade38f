"""Prometheus metrics of the operator, in the text exposition format, served on `/metrics`.

Handwritten (a few metric families) rather than `prometheus_client`: it keeps the operator image's
dependencies to what Kopf already brings (aiohttp serves it), and the format is small and stable:
https://prometheus.io/docs/instrumenting/exposition_formats/.

- `modeldeploy_reconciles_total{trigger,result}`  counter
- `modeldeploy_decisions_total{engine}`            counter (engine "none" when nothing can run)
- `modeldeploy_reconcile_duration_seconds`         histogram
- `modeldeploy_writes_total{kind}`                 counter: writes that changed something (status, Deployment,
  Service); flat while the cluster is quiet, which is how "no churn" is checked and watched
- `modeldeploy_api_requests_total`                 counter: API requests the reconciles made (reads come from
  the watches, so this counts writes, skipped ones excluded); flat while the cluster is quiet
- `modeldeploy_api_client_requests_total{verb}`   counter: every request of the operator's API client, by
  HTTP method (the reconciles' and everything they call, the model cache's included; Kopf's own watches,
  status.kopf patches and Events are not in it): how "a steady reconcile makes no request" is checked
- `modeldeploy_watch_events_total{resource,outcome}` counter: watch events of the Deployments, Services, pods
  and Nodes, `passed` to Kopf's handlers or `skipped` (they changed nothing the operator reads, event_gate.py)
- `modeldeploy_events_total{result}`               counter: the reconciles' Events, `posted`, `refused` by the
  apiserver or `dropped` on a full queue (event_poster.py)
- `python_gc_collections_total{generation}`, `python_gc_objects_collected_total{generation}` counters: the
  cyclic collector's runs and what they freed, under prometheus_client's names; the operator's share of
  each watch event that only the collector frees (tuning.py)
"""

from __future__ import annotations

import bisect
import gc
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in pairs)
    return "{" + ",".join(escaped) + "}"


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else f"{int(value)}"


class Metrics:
    """The operator's metrics; thread-safe because reconciles run in worker threads."""

    def __init__(self, buckets: Sequence[float] = BUCKETS) -> None:
        self._lock = threading.Lock()
        self.buckets = tuple(sorted(buckets))
        self.reconciles: Counter[tuple[str, str]] = Counter()
        self.decisions: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()
        self.requests = 0
        self.client_requests: Callable[[], Mapping[str, int]] | None = None  # the API client's, by verb
        self.watch_events: Callable[[], Mapping[tuple[str, str], int]] | None = None  # (resource, outcome)
        self.events: Callable[[], Mapping[str, int]] | None = None  # the Events, by result
        self._bucket_counts = [0] * len(self.buckets)
        self._sum = 0.0
        self._count = 0

    def reconciled(self, trigger: str, result: str, seconds: float, engine: str | None) -> None:
        """Record one reconcile: what triggered it, how it ended, how long it took, what it decided."""
        with self._lock:
            self.reconciles[(trigger, result)] += 1
            if result != "skipped":
                self.decisions[engine or "none"] += 1
            index = bisect.bisect_left(self.buckets, seconds)
            if index < len(self.buckets):
                self._bucket_counts[index] += 1
            self._sum += seconds
            self._count += 1

    def wrote(self, kinds: Sequence[str]) -> None:
        """Record writes that changed an object (`status`, `Deployment`, `Service`)."""
        with self._lock:
            self.writes.update(kinds)

    def requested(self, n: int) -> None:
        """Record API requests made by a reconcile."""
        with self._lock:
            self.requests += n

    def exposition(self) -> str:
        """The text format Prometheus scrapes."""
        with self._lock:
            lines = [
                "# HELP modeldeploy_reconciles_total ModelDeployment reconciles, by trigger and result.",
                "# TYPE modeldeploy_reconciles_total counter",
            ]
            for (trigger, result), n in sorted(self.reconciles.items()):
                lines.append(f"modeldeploy_reconciles_total{_labels([('trigger', trigger), ('result', result)])} {n}")
            lines += [
                "# HELP modeldeploy_decisions_total Engine decisions, by chosen engine (none: nothing can run).",
                "# TYPE modeldeploy_decisions_total counter",
            ]
            for engine, n in sorted(self.decisions.items()):
                lines.append(f"modeldeploy_decisions_total{_labels([('engine', engine)])} {n}")
            lines += [
                "# HELP modeldeploy_writes_total Writes that changed an object, by kind (status, Deployment, Service).",
                "# TYPE modeldeploy_writes_total counter",
            ]
            for kind, n in sorted(self.writes.items()):
                lines.append(f"modeldeploy_writes_total{_labels([('kind', kind)])} {n}")
            lines += [
                "# HELP modeldeploy_api_requests_total API requests made by reconciles.",
                "# TYPE modeldeploy_api_requests_total counter",
                f"modeldeploy_api_requests_total {self.requests}",
                "# HELP modeldeploy_api_client_requests_total Requests of the operator's API client, by verb.",
                "# TYPE modeldeploy_api_client_requests_total counter",
            ]
            for verb, n in sorted((self.client_requests() if self.client_requests else {}).items()):
                lines.append(f"modeldeploy_api_client_requests_total{_labels([('verb', verb)])} {n}")
            lines += [
                "# HELP modeldeploy_watch_events_total Watch events passed to the handlers or skipped (nothing moved).",
                "# TYPE modeldeploy_watch_events_total counter",
            ]
            for (resource, outcome), n in sorted((self.watch_events() if self.watch_events else {}).items()):
                pairs = [("resource", resource), ("outcome", outcome)]
                lines.append(f"modeldeploy_watch_events_total{_labels(pairs)} {n}")
            lines += [
                "# HELP modeldeploy_events_total The reconciles' Events: posted, refused by the apiserver, dropped.",
                "# TYPE modeldeploy_events_total counter",
            ]
            for result, n in sorted((self.events() if self.events else {}).items()):
                lines.append(f"modeldeploy_events_total{_labels([('result', result)])} {n}")
            lines += [
                "# HELP modeldeploy_reconcile_duration_seconds Time to reconcile one ModelDeployment.",
                "# TYPE modeldeploy_reconcile_duration_seconds histogram",
            ]
            cumulative = 0
            for bound, n in zip(self.buckets, self._bucket_counts, strict=True):
                cumulative += n
                lines.append(
                    f"modeldeploy_reconcile_duration_seconds_bucket{_labels([('le', _num(bound))])} {cumulative}"
                )
            lines.append(f'modeldeploy_reconcile_duration_seconds_bucket{{le="+Inf"}} {self._count}')
            lines.append(f"modeldeploy_reconcile_duration_seconds_sum {_num(self._sum)}")
            lines.append(f"modeldeploy_reconcile_duration_seconds_count {self._count}")
        lines += _gc_lines(gc.get_stats())
        return "\n".join(lines) + "\n"


def _gc_lines(stats: Sequence[Mapping[str, int]]) -> list[str]:
    """The collector's counters, by generation (`gc.get_stats()`)."""
    lines = []
    for family, key, text in (
        ("python_gc_collections_total", "collections", "Times the cyclic collector ran, by generation."),
        ("python_gc_objects_collected_total", "collected", "Objects the cyclic collector freed, by generation."),
    ):
        lines += [f"# HELP {family} {text}", f"# TYPE {family} counter"]
        lines += [f"{family}{_labels([('generation', str(g))])} {s[key]}" for g, s in enumerate(stats)]
    return lines


async def serve(metrics: Metrics, port: int, host: str = "0.0.0.0") -> web.AppRunner:  # noqa: S104 - scraped from the pod IP
    """Start the `/metrics` endpoint on the running event loop; the caller cleans the runner up."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition().encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner

"""How long the pure core takes per reconcile, and what the node facts cost in memory, as clusters grow.

Every reconcile runs select_engine over all node facts and render for the winner; a node change
re-evaluates every ModelDeployment. This prints, for clusters of 10 to 5000 nodes (a third GPU, a third
CPU, a third Apple silicon, some cordoned or tainted): microseconds per select, per render, the time
to re-evaluate 500 ModelDeployments after one node event, and the bytes the node facts hold.

    .venv/bin/python bench/decide_and_render.py
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from pathlib import Path

import yaml

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.render import render
from modeldeploy.selection import node_facts, select_engine

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples" / "modeldeployments").glob("*.yaml"))


def node(i: int) -> dict[str, object]:
    kind = i % 3
    labels = {"kubernetes.io/hostname": f"n{i}", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    alloc = {"cpu": "64", "memory": "512Gi", "pods": "110"}
    taints = []
    if kind == 0:
        labels |= {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.count": "4"}
        alloc["nvidia.com/gpu"] = "4"
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    elif kind == 2:
        labels |= {"kubernetes.io/os": "darwin", "kubernetes.io/arch": "arm64"}
    spec: dict[str, object] = {"taints": taints}
    if i % 17 == 0:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": f"n{i}", "labels": labels},
        "spec": spec,
        "status": {"allocatable": alloc, "capacity": alloc, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def per_call_us(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        samples.append((time.perf_counter() - t) / repeat * 1e6)
    return statistics.median(samples)


def main() -> None:
    cfg = OperatorConfig()
    mds = [ModelDeployment.model_validate(yaml.safe_load(p.read_text())) for p in EXAMPLES]
    print(f"{'nodes':>6} {'select µs':>10} {'render µs':>10} {'500 MDs after a node event ms':>30} {'facts KiB':>10}")
    for n in (10, 100, 1000, 5000):
        raw = [node(i) for i in range(n)]
        tracemalloc.start()
        facts = [node_facts(r, cfg.label_mappings) for r in raw]
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        repeat = max(3, 2000 // n)
        select = statistics.mean(per_call_us(lambda m=m, f=facts: select_engine(m.spec, f, cfg), repeat) for m in mds)
        decisions = [select_engine(m.spec, facts, cfg) for m in mds]
        rendered = [(m, d) for m, d in zip(mds, decisions, strict=True) if d.engine is not None]
        rend = statistics.mean(per_call_us(lambda m=m, d=d: render(m, d, cfg), 50) for m, d in rendered)
        sweep_ms = 500 * select / 1000
        print(f"{n:>6} {select:>10.0f} {rend:>10.0f} {sweep_ms:>30.1f} {size / 1024:>10.0f}")


if __name__ == "__main__":
    main()

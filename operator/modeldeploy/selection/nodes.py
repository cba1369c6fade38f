"""Node objects in, NodeFacts out: what selection may rely on, read from labels and status, never guessed.

Input is a Node as plain data: the camelCase shape `kubectl get nodes -o yaml` prints. The fields read here
(`metadata.labels`, `spec.unschedulable`, `spec.taints`, `status.allocatable`, `status.conditions`) are
spelled the same in the kubernetes client's `to_dict()`, so its snake_case output works too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from modeldeploy.config import LabelMappings
from modeldeploy.selection.types import NodeFacts, Taint

OS_LABEL = "kubernetes.io/os"
ARCH_LABEL = "kubernetes.io/arch"
LIST_KINDS = ("List", "NodeList")
# Labels an admin sets by hand where no discovery runs (docs/memory-placement.md, "Node facts"): the
# same meaning and units as GPU Feature Discovery's, read after the operator config's labelMappings.
HAND_MEMORY = "modeldeploy.io/gpu.memory"  # MiB per GPU
HAND_PRODUCT = "modeldeploy.io/gpu.product"
HAND_MAJOR = "modeldeploy.io/gpu.compute.major"
HAND_MINOR = "modeldeploy.io/gpu.compute.minor"
# AMD's node labeller (k8s-device-plugin) and Intel's GPU plugin with NFD publish memory and product, in
# their own units; they carry no CUDA compute capability.
AMD_VRAM = "amd.com/gpu.vram"  # "64G"
AMD_PRODUCT = "amd.com/gpu.product-name"
INTEL_MEMORY = "gpu.intel.com/memory.max"  # bytes
INTEL_PRODUCT = "gpu.intel.com/product"


class NodesFileError(ValueError):
    """A nodes document (what `kubectl get nodes -o yaml` prints) that cannot be read as Nodes."""


def _int_or_none(value: Any) -> int | None:
    """An integer from a label or a resource quantity ("4", 4); None when it is not a plain integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _gpu_count(labels: Mapping[str, str], allocatable: Mapping[str, Any], mappings: LabelMappings) -> int:
    """CUDA GPUs: allocatable count when > 0; else, on a `gpu.present=true` node, the count label, else 1."""
    allocated = _int_or_none(allocatable.get(mappings.gpu_resource)) or 0
    if allocated > 0:
        return allocated
    if str(labels.get(mappings.gpu_present, "")).lower() == "true":
        counted = _int_or_none(labels.get(mappings.gpu_count))
        return counted if counted and counted > 0 else 1
    return 0


def _gpu_memory(labels: Mapping[str, str], mappings: LabelMappings) -> tuple[int | None, str | None]:
    """MiB per GPU and the label that says it in MiB (None when it came from AMD's or Intel's units)."""
    for key in (mappings.gpu_memory, HAND_MEMORY):
        value = _int_or_none(labels.get(key))
        if value:
            return value, key
    vram = labels.get(AMD_VRAM, "")
    if vram[:-1].isdigit() and vram[-1:].upper() in ("G", "M"):
        return int(vram[:-1]) * (1024 if vram[-1:].upper() == "G" else 1), None
    intel = _int_or_none(labels.get(INTEL_MEMORY))
    if intel:
        return intel // (1024 * 1024), None
    return None, None


def _capability(
    labels: Mapping[str, str], mappings: LabelMappings
) -> tuple[tuple[int, int] | None, tuple[str, str] | None]:
    """CUDA compute capability from GFD's labels (or the hand-set ones) and the labels that say it."""
    for major_key, minor_key in ((mappings.gpu_compute_major, mappings.gpu_compute_minor), (HAND_MAJOR, HAND_MINOR)):
        major = _int_or_none(labels.get(major_key))
        if major is not None:
            return (major, _int_or_none(labels.get(minor_key)) or 0), (major_key, minor_key)
    return None, None


def _ready(conditions: Sequence[Mapping[str, Any]]) -> bool:
    """True only when the node reports a Ready condition with status True (no condition: not ready)."""
    return any(c.get("type") == "Ready" and str(c.get("status")) == "True" for c in conditions or ())


def _taints(raw: Sequence[Mapping[str, Any]] | None) -> tuple[Taint, ...]:
    return tuple(Taint(key=t.get("key", ""), value=t.get("value"), effect=t.get("effect", "")) for t in raw or ())


def node_facts(node: Mapping[str, Any], mappings: LabelMappings) -> NodeFacts:
    """Read one Node object (plain dict) into NodeFacts, using the cluster's label mappings."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    labels: dict[str, str] = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    allocatable = status.get("allocatable") or {}
    gpus = _gpu_count(labels, allocatable, mappings)

    memory, memory_label = _gpu_memory(labels, mappings) if gpus else (None, None)
    capability, capability_labels = _capability(labels, mappings) if gpus else (None, None)
    product = labels.get(mappings.gpu_product) or labels.get(HAND_PRODUCT) or labels.get(AMD_PRODUCT)
    product = product or labels.get(INTEL_PRODUCT)
    os_name = labels.get(OS_LABEL)
    arch = labels.get(ARCH_LABEL)
    apple = (os_name == "darwin" and arch == "arm64") or labels.get(
        mappings.accelerator
    ) == mappings.apple_silicon_value
    return NodeFacts(
        name=str(metadata.get("name", "")),
        os=os_name,
        arch=arch,
        gpus=gpus,
        gpu_memory_mib=memory,
        gpu_product=product if gpus else None,
        compute_capability=capability,
        apple_silicon=apple,
        ready=_ready(status.get("conditions") or ()),
        unschedulable=bool(spec.get("unschedulable", False)),
        taints=_taints(spec.get("taints")),
        labels=tuple(sorted(labels.items())),
        gpu_memory_label=memory_label,
        compute_labels=capability_labels,
    )


def _check_node(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise NodesFileError(f"{where} is not a Node: expected a mapping, found {type(obj).__name__}")
    kind = obj.get("kind")
    if kind != "Node":
        raise NodesFileError(f"{where} is not a Node: found kind {kind!r}")
    if not (obj.get("metadata") or {}).get("name"):
        raise NodesFileError(f"{where} is a Node without metadata.name")
    return dict(obj)


def _items_of_list(doc: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    items = doc.get("items")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise NodesFileError(f"{where} ({doc.get('kind')}) has items that are not a list")
    nodes = []
    for i, item in enumerate(items):
        # The apiserver's NodeList omits kind on items (kubectl adds it); a missing kind means Node.
        if isinstance(item, Mapping) and "kind" not in item:
            item = {**item, "kind": "Node"}
        nodes.append(_check_node(item, f"{where} item {i}"))
    return nodes


def parse_nodes_document(source: str | Mapping[str, Any] | Sequence[Any]) -> list[dict[str, Any]]:
    """Node dicts from `kubectl get nodes -o yaml` output: a List/NodeList, or YAML documents of kind Node.

    Accepts the YAML text, one parsed document, or a sequence of parsed documents. Raises NodesFileError
    naming the document (and item) index and the kind found when something is not a Node.
    """
    if isinstance(source, str):
        try:
            docs = [d for d in yaml.safe_load_all(source) if d is not None]
        except yaml.YAMLError as exc:
            raise NodesFileError(f"the nodes file is not valid YAML: {exc}") from exc
    elif isinstance(source, Mapping):
        docs = [source]
    else:
        docs = [d for d in source if d is not None]
    if not docs:
        raise NodesFileError("the nodes file is empty: expected `kubectl get nodes -o yaml` output")
    nodes: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        where = f"document {index}"
        if isinstance(doc, Mapping) and doc.get("kind") in LIST_KINDS:
            nodes.extend(_items_of_list(doc, where))
        else:
            nodes.append(_check_node(doc, where))
    return nodes


def facts_from_document(source: str | Mapping[str, Any] | Sequence[Any], mappings: LabelMappings) -> list[NodeFacts]:
    """Convenience for the CLI: parse a nodes document and read every Node's facts."""
    return [node_facts(n, mappings) for n in parse_nodes_document(source)]

"""Node objects to NodeFacts per docs/selection.md's table, and the nodes-document parser."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from selection_factories import node_dict

from modeldeploy.config import LabelMappings
from modeldeploy.selection.nodes import NodesFileError, facts_from_document, node_facts, parse_nodes_document
from modeldeploy.selection.types import Taint

MAPPINGS = LabelMappings()


def test_gpu_node_with_gfd_labels() -> None:
    f = node_facts(node_dict("gpu-a", gpus=4), MAPPINGS)
    assert (f.name, f.os, f.arch, f.gpus) == ("gpu-a", "linux", "amd64", 4)
    assert (f.gpu_memory_mib, f.gpu_product, f.compute_capability) == (23034, "NVIDIA-L4", (8, 9))
    assert f.apple_silicon is False
    assert (f.ready, f.unschedulable) == (True, False)
    assert f.taints == (Taint("nvidia.com/gpu", "present", "NoSchedule"),)
    assert f.label("kubernetes.io/hostname") == "gpu-a"
    assert f.labels == tuple(sorted(f.labels))


def test_cpu_node_has_no_gpu_facts() -> None:
    f = node_facts(node_dict("cpu-a"), MAPPINGS)
    assert (f.gpus, f.gpu_memory_mib, f.gpu_product, f.compute_capability, f.taints) == (0, None, None, None, ())


@pytest.mark.parametrize(
    ("allocatable", "labels", "expected"),
    [
        ({"nvidia.com/gpu": "2"}, {}, 2),  # allocatable wins
        ({"nvidia.com/gpu": "2"}, {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": "8"}, 2),
        ({}, {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": "8"}, 8),  # count label
        ({"nvidia.com/gpu": "0"}, {"nvidia.com/gpu.present": "true"}, 1),  # present alone: 1
        ({}, {"nvidia.com/gpu.present": "True"}, 1),
        ({}, {"nvidia.com/gpu.present": "false", "nvidia.com/gpu.count": "8"}, 0),
        ({"nvidia.com/gpu": "0"}, {}, 0),
        ({"nvidia.com/gpu": 3}, {}, 3),  # the client's to_dict may give numbers
    ],
)
def test_gpu_count(allocatable: dict, labels: dict, expected: int) -> None:
    node = node_dict("n", labels=labels)
    node["status"]["allocatable"].update(allocatable)
    assert node_facts(node, MAPPINGS).gpus == expected


def test_custom_label_mappings() -> None:
    mappings = LabelMappings(gpu_resource="amd.com/gpu", gpu_present="example.com/has-gpu", gpu_count="example.com/n")
    node = node_dict("n", labels={"example.com/has-gpu": "true", "example.com/n": "2"})
    assert node_facts(node, mappings).gpus == 2
    node = node_dict("n")
    node["status"]["allocatable"]["amd.com/gpu"] = "4"
    assert node_facts(node, mappings).gpus == 4
    assert node_facts(node, MAPPINGS).gpus == 0


@pytest.mark.parametrize(
    ("os", "arch", "labels", "apple"),
    [
        ("darwin", "arm64", {}, True),
        ("darwin", "amd64", {}, False),  # an Intel Mac
        ("linux", "arm64", {}, False),
        ("linux", "arm64", {"modeldeploy.io/accelerator": "apple-silicon"}, True),
        ("linux", "arm64", {"modeldeploy.io/accelerator": "other"}, False),
    ],
)
def test_apple_silicon(os: str, arch: str, labels: dict, apple: bool) -> None:
    assert node_facts(node_dict("m", os=os, arch=arch, labels=labels), MAPPINGS).apple_silicon is apple


@pytest.mark.parametrize(
    ("conditions", "ready"),
    [
        ([{"type": "Ready", "status": "True"}], True),
        ([{"type": "Ready", "status": "False"}], False),
        ([{"type": "Ready", "status": "Unknown"}], False),
        ([{"type": "MemoryPressure", "status": "False"}], False),  # no Ready condition: not ready
        ([], False),
    ],
)
def test_ready_condition(conditions: list, ready: bool) -> None:
    node = node_dict("n")
    node["status"]["conditions"] = conditions
    assert node_facts(node, MAPPINGS).ready is ready


def test_cordoned_and_taints() -> None:
    taints = [{"key": "dedicated", "value": "infra", "effect": "NoExecute"}, {"key": "x", "effect": "NoSchedule"}]
    f = node_facts(node_dict("n", cordoned=True, taints=taints), MAPPINGS)
    assert f.unschedulable is True
    assert f.taints == (Taint("dedicated", "infra", "NoExecute"), Taint("x", None, "NoSchedule"))


def test_missing_sections_are_tolerated() -> None:
    f = node_facts({"kind": "Node", "metadata": {"name": "bare"}}, MAPPINGS)
    assert (f.name, f.os, f.gpus, f.ready, f.unschedulable) == ("bare", None, 0, False, False)


def test_compute_capability_needs_major() -> None:
    node = node_dict("g", gpus=1)
    del node["metadata"]["labels"]["nvidia.com/gpu.compute.major"]
    assert node_facts(node, MAPPINGS).compute_capability is None


# --- parse_nodes_document ---


def as_list(*nodes: dict, kind: str = "List") -> dict:
    return {"apiVersion": "v1", "kind": kind, "items": list(nodes), "metadata": {"resourceVersion": ""}}


def test_parse_kubectl_list_text() -> None:
    text = yaml.safe_dump(as_list(node_dict("a"), node_dict("b", gpus=1)))
    assert [n["metadata"]["name"] for n in parse_nodes_document(text)] == ["a", "b"]


def test_parse_nodelist_items_without_kind() -> None:
    items = [node_dict("a"), node_dict("b")]
    for item in items:
        del item["kind"]
    nodes = parse_nodes_document(as_list(*items, kind="NodeList"))
    assert [(n["kind"], n["metadata"]["name"]) for n in nodes] == [("Node", "a"), ("Node", "b")]


def test_parse_several_documents() -> None:
    text = "---\n" + "---\n".join(yaml.safe_dump(node_dict(n)) for n in ("a", "b", "c")) + "---\n"
    assert [n["metadata"]["name"] for n in parse_nodes_document(text)] == ["a", "b", "c"]


def test_parse_sequence_of_objects() -> None:
    assert len(parse_nodes_document([node_dict("a"), as_list(node_dict("b"))])) == 2


def test_empty_list_is_no_nodes() -> None:
    assert parse_nodes_document(as_list()) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            as_list(node_dict("a"), {"kind": "Pod", "metadata": {"name": "p"}}),
            "document 0 item 1 is not a Node: found kind 'Pod'",
        ),
        (
            [node_dict("a"), {"kind": "Service", "metadata": {"name": "s"}}],
            "document 1 is not a Node: found kind 'Service'",
        ),
        ("kind: ModelDeployment\nmetadata: {name: m}\n", "document 0 is not a Node: found kind 'ModelDeployment'"),
        ("- a\n- b\n", "document 0 is not a Node: expected a mapping, found list"),
        ("", "the nodes file is empty"),
        ("kind: Node\nmetadata: {}\n", "document 0 is a Node without metadata.name"),
        ("kind: [unclosed\n", "the nodes file is not valid YAML"),
        ({"kind": "List", "items": {"a": 1}}, "document 0 (List) has items that are not a list"),
    ],
)
def test_parse_errors_name_index_and_kind(source: object, message: str) -> None:
    with pytest.raises(NodesFileError) as info:
        parse_nodes_document(source)  # type: ignore[arg-type]
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["gpu-cluster.yaml", "cpu-cluster.yaml", "mixed-cluster.yaml"])
def test_example_node_sets_parse(repo_root: Path, name: str) -> None:
    text = (repo_root / "examples" / "nodes" / name).read_text()
    nodes = facts_from_document(text, MAPPINGS)
    assert nodes and all(n.name and n.os for n in nodes)


def test_hand_set_labels_give_memory_and_compute_capability_where_no_discovery_runs() -> None:

    node = node_dict(
        "gpu-hand",
        gpus=1,
        gfd=False,
        labels={
            "modeldeploy.io/gpu.memory": "40960",
            "modeldeploy.io/gpu.product": "A100-PCIE-40GB",
            "modeldeploy.io/gpu.compute.major": "8",
            "modeldeploy.io/gpu.compute.minor": "0",
        },
    )
    got = node_facts(node, LabelMappings())
    assert got.gpu_memory_mib == 40960 and got.gpu_memory_label == "modeldeploy.io/gpu.memory"
    assert got.compute_capability == (8, 0)
    assert got.compute_labels == ("modeldeploy.io/gpu.compute.major", "modeldeploy.io/gpu.compute.minor")
    assert got.gpu_product == "A100-PCIE-40GB"


def test_amd_and_intel_memory_labels_are_read_but_not_pinned_by() -> None:

    amd = node_facts(
        node_dict("amd", gpus=1, gfd=False, labels={"amd.com/gpu.vram": "192G", "amd.com/gpu.product-name": "MI300X"}),
        LabelMappings(),
    )
    assert (amd.gpu_memory_mib, amd.gpu_memory_label, amd.gpu_product) == (192 * 1024, None, "MI300X")
    assert amd.compute_capability is None
    intel = node_facts(
        node_dict("intel", gpus=1, gfd=False, labels={"gpu.intel.com/memory.max": str(48 * 1024**3)}), LabelMappings()
    )
    assert intel.gpu_memory_mib == 48 * 1024 and intel.gpu_memory_label is None


def test_gfd_labels_record_which_labels_gave_the_facts() -> None:

    got = node_facts(node_dict("gpu", gpus=1), LabelMappings())
    assert got.gpu_memory_label == "nvidia.com/gpu.memory"
    assert got.compute_labels == ("nvidia.com/gpu.compute.major", "nvidia.com/gpu.compute.minor")

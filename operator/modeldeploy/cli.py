"""The `modeldeploy` command line.

Each subcommand is a thin shell over the same pure functions the operator runs, so what `select`
prints offline is exactly what the operator decides in the cluster. Errors are one sentence on stderr
and a non-zero exit; a traceback means a bug in ModelDeploy, never bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from modeldeploy import __version__
from modeldeploy.loader import UserInputError, load_model_deployments, load_yaml_documents

EXIT_USAGE = 2
EXIT_NO_ENGINE = 3


def _read_nodes(path: str | None) -> list[dict[str, Any]]:
    """Node objects from a `kubectl get nodes -o yaml` file, or from the live cluster without one."""
    from modeldeploy.selection.nodes import NodesFileError, parse_nodes_document

    if path is None:
        return _live_nodes()
    docs = load_yaml_documents(path)
    try:
        return parse_nodes_document(docs)
    except NodesFileError as exc:
        raise UserInputError(f"{path}: {exc}") from None


def _live_nodes() -> list[dict[str, Any]]:
    """LIST the cluster's nodes with the current kubeconfig (or in-cluster config)."""
    import kubernetes

    try:
        try:
            kubernetes.config.load_kube_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_incluster_config()
        api = kubernetes.client.CoreV1Api()
        nodes = api.list_node().items
    except Exception as exc:  # noqa: BLE001 - any failure to reach a cluster is one user-facing sentence
        raise UserInputError(
            f"cannot read nodes from the cluster ({exc.__class__.__name__}: {exc}); pass --nodes FILE"
        ) from None
    return [api.api_client.sanitize_for_serialization(n) for n in nodes]


def _load_config(path: str | None) -> Any:
    """The operator config file, or one sentence naming it and what is wrong with it."""
    from pydantic import ValidationError

    from modeldeploy.config import load_config
    from modeldeploy.engines import registry
    from modeldeploy.loader import describe_validation_error

    try:
        return load_config(path, registry.image_keys())
    except ValidationError as exc:
        raise UserInputError(f"--config {path}: {describe_validation_error(exc)}") from None
    except OSError as exc:
        raise UserInputError(f"--config {path}: cannot read the file ({exc.strerror or exc})") from None
    except ValueError as exc:  # malformed YAML (yaml.YAMLError is not a ValueError) and friends
        raise UserInputError(f"--config {path}: {one_line(exc)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise UserInputError(f"--config {path}: malformed YAML{where}: {problem}") from None


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (YAML and pydantic messages span several)."""
    return " ".join(str(exc).split()) or exc.__class__.__name__


def _decide(args: argparse.Namespace) -> list[tuple[Any, Any]]:
    """(ModelDeployment, Decision) for each document of `-f`."""
    from modeldeploy.api.policy import refusal
    from modeldeploy.selection.engine import select_engine
    from modeldeploy.selection.nodes import node_facts

    config = _load_config(args.config)
    mds = load_model_deployments(args.filename)
    for md in mds:  # docs/security.md, "Pod policy": the operator refuses the same spec in status
        refused = refusal(md.spec, config)
        if refused is not None:
            raise UserInputError(f"{args.filename}: {md.metadata.name}: {refused}")
    facts = [node_facts(n, config.label_mappings) for n in _read_nodes(args.nodes)]
    return [(md, select_engine(md.spec, facts, config)) for md in mds]


def _print_table(md: Any, decision: Any) -> None:
    chosen = decision.engine or "none"
    print(f"{md.metadata.namespace}/{md.metadata.name}: engine {chosen}")
    print(f"  {decision.summary}")
    for cand in decision.candidates:
        mark = "eligible" if cand.eligible else "not eligible"
        print(f"  {cand.engine:<13} {mark:<13} nodes={len(cand.nodes)}")
        for reason in cand.reasons:
            print(f"      - {reason}")
    for warning in decision.warnings:
        print(f"  warning: {warning}")


def cmd_select(args: argparse.Namespace) -> int:
    results = _decide(args)
    if args.output == "json":
        docs = [decision.as_json() for _, decision in results]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        for md, decision in results:
            _print_table(md, decision)
    return 0 if all(d.engine for _, d in results) else EXIT_NO_ENGINE


def cmd_render(args: argparse.Namespace) -> int:
    from modeldeploy.render import RenderError, dump_yaml, render
    from modeldeploy.scaling.attach import ADDONS, with_scaling

    config = _load_config(args.config)
    crds: frozenset[str] = frozenset()
    for addon in filter(None, (args.addons or "").split(",")):
        if addon not in ADDONS:
            raise UserInputError(f"--addons: unknown add-on {addon!r} (known: {', '.join(ADDONS)})")
        crds |= ADDONS[addon]
    objects: list[dict[str, Any]] = []
    for md, decision in _decide(args):
        if decision.engine is None:
            raise UserInputError(f"{md.metadata.name}: nothing to render: {decision.summary}")
        try:
            rendered, _plan = with_scaling(md, decision.engine, render(md, decision, config), config, crds)
            objects.extend(rendered)
        except RenderError as exc:  # what only the renderer can refuse (engine.args): the operator says the same
            raise UserInputError(f"{args.filename}: {md.metadata.name}: {exc}") from None
    sys.stdout.write(dump_yaml(objects))
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    """The memory estimate per engine and kind of GPU node (docs/memory-placement.md)."""
    from modeldeploy.engines import registry
    from modeldeploy.memory.estimate import gib
    from modeldeploy.selection.memory_fit import memory_table
    from modeldeploy.selection.nodes import node_facts

    config = _load_config(args.config)
    facts = [node_facts(n, config.label_mappings) for n in _read_nodes(args.nodes)]
    for md in load_model_deployments(args.filename):
        model, rows = memory_table(md.spec, facts, config.label_mappings, registry.engines())
        print(f"{md.metadata.namespace}/{md.metadata.name}:")
        if model is None:
            print("  nothing is known of the model's size (no known model, no sizeInBillions): not judged")
            continue
        shape = f"{model.shape.key} ({model.shape.source})" if model.shape else "unknown architecture"
        print(f"  {shape}, {model.kind}, {gib(model.weights)} of weights from the {model.weights_from}")
        print(f"  {'engine':<8} {'nodes':<28} {'GPUs':>4} {'GiB':>6} {'CC':>4} {'tp':>3} {'fits':<5} arithmetic")
        for row in rows:
            size = f"{row.gpu_mib / 1024:.1f}" if row.gpu_mib else "?"
            tp = str(row.tp) if row.tp else "-"
            print(
                f"  {row.engine:<8} {row.nodes:<28} {row.gpus:>4} {size:>6} {row.capability:>4} {tp:>3} "
                f"{row.verdict:<5} {row.text}"
            )
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from modeldeploy.api.crd import crd_yaml
    from modeldeploy.engines import registry

    sys.stdout.write(crd_yaml(registry))
    return 0


def cmd_ngl(args: argparse.Namespace) -> int:
    from modeldeploy.ngl.cli import main as ngl_main

    return ngl_main(args)


def cmd_run(args: argparse.Namespace) -> int:
    from modeldeploy.controller.run import main as run_main

    return run_main(args.operator_args)


# `modeldeploy dev` lives in the modeldeploy-dev distribution (devcluster/ in the repository, installed by
# `make setup`, never by an image): the shipped package finds it through this entry point group and never
# imports it (docs/development.md).
DEV_ENTRY_POINTS = "modeldeploy.commands"


def cmd_dev(args: argparse.Namespace) -> int:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=DEV_ENTRY_POINTS) if ep.name == "dev"]
    if not found:
        print(
            "modeldeploy dev: the development cluster is not installed; it is the modeldeploy-dev distribution "
            "in the repository's devcluster/ (`make setup`, or `pip install -e devcluster`)",
            file=sys.stderr,
        )
        return 2
    dev_main = found[0].load()
    return int(dev_main(args.dev_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modeldeploy",
        description="Deploy LLMs on Kubernetes, choosing the engine the way Xinference does.",
    )
    parser.add_argument("--version", action="version", version=f"modeldeploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def decision_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("-f", "--filename", required=True, help="ModelDeployment YAML file ('-' for stdin)")
        p.add_argument("--nodes", help="nodes as `kubectl get nodes -o yaml` prints them; default: the live cluster")
        p.add_argument("--config", help="operator config YAML (images, label mappings); default: built-in")

    p = sub.add_parser("select", help="explain which engine would run and why")
    decision_args(p)
    p.add_argument("-o", "--output", choices=["json", "table"], default="table")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("render", help="print the Deployment, Service and NetworkPolicy the operator would apply")
    decision_args(p)
    p.add_argument(
        "--addons",
        default="",
        help="comma list of what the target cluster has installed, for spec.autoscaling and the gateway: "
        "keda, keda-http-addon, gateway-api, inference-extension (default: none; docs/autoscaling.md)",
    )
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("memory", help="print the GPU memory estimate per engine and kind of GPU node")
    decision_args(p)
    p.set_defaults(func=cmd_memory)

    p = sub.add_parser("crd", help="print the CustomResourceDefinition generated from the API models")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("ngl", help="estimate llama.cpp GPU layers for a GGUF file (auto-NGL)")
    from modeldeploy.ngl.cli import add_arguments as ngl_arguments

    ngl_arguments(p)
    p.set_defaults(func=cmd_ngl)

    p = sub.add_parser("run", help="run the operator (Kopf) against the current kubeconfig", add_help=False)
    p.add_argument("operator_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dev", help="a local control plane with fake nodes (up, demo, down, status)", add_help=False)
    p.add_argument("dev_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_dev)
    return parser


# Subcommands that own their whole argument list: argparse's REMAINDER drops leading options
# (`modeldeploy run --standalone` would fail), so their arguments are handed over untouched.
PASSTHROUGH = {"run": cmd_run, "dev": cmd_dev}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        rest = argparse.Namespace(command=argv[0], operator_args=argv[1:], dev_args=argv[1:])
        try:
            return int(PASSTHROUGH[argv[0]](rest) or 0)
        except KeyboardInterrupt:
            return 130
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserInputError as exc:
        print(f"modeldeploy {args.command}: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError) as exc:
        # Bad input that reached a layer without its own wording (every error class of ours that a user
        # can cause is a ValueError: RenderError, ModelUriError, ParamError, ...): still one sentence.
        print(f"modeldeploy {args.command}: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

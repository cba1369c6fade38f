"""The vLLM, SGLang, transformers and MLX command lines the renderer emits, against the engines' flags.

The flag sets in engine_flags.py come from the engines themselves (see docs/engine-cli-check.md):
transformers' and mlx-lm's real parsers (both install on CPU), and the released vLLM/SGLang wheels'
parser source (their parsers cannot be built without torch/CUDA). Each rendered argv is walked the way
the engine's parser would: every option must be a known flag, bools must be spelled the way the
parser accepts them (`--no-x` only where the flag is negatable), and value flags must get a value.
"""

from __future__ import annotations

from typing import Any

import pytest
from engine_flags import ENGINE_FLAGS

render_mod = pytest.importorskip("modeldeploy.render")
from modeldeploy.api.v1alpha1 import ModelDeployment  # noqa: E402
from modeldeploy.config import OperatorConfig  # noqa: E402
from modeldeploy.selection.types import Decision, Placement  # noqa: E402

GPU = Placement(node_selector_terms=({"matchExpressions": []},), tolerations=(), gpus=2)
CPU = Placement(node_selector_terms=({"matchExpressions": []},), tolerations=(), gpus=0)
APPLE = Placement(node_selector_terms=({"matchExpressions": []},), tolerations=(), gpus=0, apple_silicon=True)

# Engines whose parser is plain argparse with allow_abbrev (a unique prefix of a flag is accepted).
ALLOW_ABBREV = {"sglang", "mlx"}
# What comes before the options, and how many positionals the parser takes there.
PROGRAM = {
    "vllm": (["vllm", "serve"], 1),
    "sglang": (["python", "-m", "sglang.launch_server"], 0),
    "transformers": (["transformers", "serve"], 1),
    "mlx": (["mlx_lm.server"], 0),
}


def parse_problems(engine: str, argv: list[str]) -> list[str]:
    """Walk argv as the engine's parser would; return what it would reject."""
    data: dict[str, Any] = ENGINE_FLAGS[engine]
    flags: frozenset[str] = data["flags"]  # type: ignore[assignment]
    switches = data["negatable"] | data["store_true"]  # type: ignore[operator]
    negated = {"--no-" + f[2:] for f in data["negatable"]}  # type: ignore[union-attr]
    program, positionals = PROGRAM[engine]
    problems: list[str] = []
    if argv[: len(program)] != program:
        return [f"{engine} must start with {' '.join(program)}, got {' '.join(argv[:3])}"]
    rest = argv[len(program) :]
    for _ in range(positionals):
        if not rest or rest[0].startswith("-"):
            problems.append(f"{engine}: missing the positional model path")
            break
        rest = rest[1:]
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--"):
            problems.append(f"{engine}: unexpected positional {token!r}")
            i += 1
            continue
        name, eq, _ = token.partition("=")
        flag = name
        if flag not in flags and flag not in negated and engine in ALLOW_ABBREV:
            matches = [f for f in flags if f.startswith(flag)]
            if len(matches) == 1:
                flag = matches[0]
        if flag in negated:
            i += 1
            continue
        if flag not in flags:
            problems.append(f"{engine}: unknown flag {name}")
            i += 1
            continue
        if flag in switches:
            if eq:
                problems.append(f"{engine}: {flag} is a switch and takes no value")
            i += 1
            continue
        if not eq:
            if i + 1 >= len(rest) or rest[i + 1].startswith("--"):
                problems.append(f"{engine}: {flag} needs a value")
            i += 2
        else:
            i += 1
    return problems


def _command(engine: str, fmt: str, args: dict[str, Any], placement: Placement) -> list[str]:
    spec = {
        "model": {"name": "qwen2.5-instruct", "format": fmt, "sizeInBillions": "7", "uri": "hf://Qwen/Qwen2.5-7B"},
        "engine": {"name": engine, "args": args},
    }
    md = ModelDeployment.model_validate(
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": spec,
        }
    )
    decision = Decision(engine=engine, candidates=(), placement=placement, summary="test")
    # trust-remote-code is among the flags checked against the real parsers, so the config allows it.
    deployment = render_mod.render(md, decision, OperatorConfig(allowTrustRemoteCode=True))[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return list(container.get("command", [])) + list(container.get("args", []))


CASES = [
    (
        "vllm",
        "pytorch",
        {"max_model_len": 8192, "enable-prefix-caching": False, "enforce_eager": True, "gpu-memory-utilization": 0.9},
        GPU,
    ),
    (
        "sglang",
        "pytorch",
        {"mem_fraction_static": 0.8, "enable-torch-compile": True, "trust_remote_code": False},
        GPU,
    ),
    ("transformers", "pytorch", {"dtype": "bfloat16", "trust_remote_code": True, "compile": False}, CPU),
    ("mlx", "mlx", {"max_tokens": 512, "trust_remote_code": True, "temp": 0.2}, APPLE),
]


@pytest.mark.parametrize(("engine", "fmt", "args", "placement"), CASES, ids=[c[0] for c in CASES])
def test_rendered_command_parses(engine: str, fmt: str, args: dict[str, Any], placement: Placement) -> None:
    argv = _command(engine, fmt, args, placement)
    assert parse_problems(engine, argv) == [], argv


@pytest.mark.parametrize("engine", ["vllm", "sglang", "transformers", "mlx"])
def test_the_checker_rejects_what_the_parser_would(engine: str) -> None:
    program, positionals = PROGRAM[engine]
    base = program + ["/models/x"] * positionals
    assert parse_problems(engine, [*base, "--definitely-not-a-flag", "1"])
    assert parse_problems(engine, [*base, "--port"])  # value missing


def test_bool_spelling_matches_each_parser() -> None:
    # vLLM and transformers accept --no-x for their bools; SGLang and mlx only know --x.
    assert "--enable-prefix-caching" in ENGINE_FLAGS["vllm"]["negatable"]
    assert "--trust-remote-code" in ENGINE_FLAGS["transformers"]["negatable"]
    assert parse_problems("sglang", ["python", "-m", "sglang.launch_server", "--no-enable-torch-compile"])
    assert parse_problems("mlx", ["mlx_lm.server", "--no-trust-remote-code"])


def test_flag_data_names_its_source() -> None:
    for engine, data in ENGINE_FLAGS.items():
        assert data["source"] and data["flags"], engine
        assert "--host" in data["flags"] and "--port" in data["flags"], engine

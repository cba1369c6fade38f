"""What an engine is: the protocol every engine module implements, and the values it speaks in.

An engine module (engines/vllm.py, engines/llamacpp/spec.py, ...) subclasses `Engine` and states, in
one place, everything that differs between engines: the facts the CRD's CEL rules are generated from
(formats), its model rules (each with the reason `status.selection` shows), the kinds of node it runs
on, its container (command, env switches, probe path, metrics endpoint, security) and its image key.
Selection, rendering, the CRD generator and the CLI only ever iterate `engines.registry`; none of them
branches on an engine's name. Parts every engine shares (security context, volumes, the scheduling
merge, labels) stay in render/ and are applied after the engine's part.

An engine judges a `ModelView`, the few facts of a ModelDeployment and the operator config its rules
read, never the API's models: the engines import neither the API nor the config, not even for type
checking, so an engine module stays importable anywhere (the slim llama.cpp image) and the API can be
handed the registry as its catalogue of engines (formats.EngineCatalogue) without an import circle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal

from modeldeploy.formats import ArgValue, ModelFormat, truthy
from modeldeploy.memory.estimate import EngineMemory

PORT = 8000  # every engine serves its OpenAI-compatible API here (the Service's target)
HOST = "0.0.0.0"

BoolStyle = Literal["negatable", "store_true"]
ArgSpelling = Literal["flag", "param"]


class RenderError(ValueError):
    """The ModelDeployment and Decision cannot be turned into objects; the message says why, for status."""


class Tier(StrEnum):
    """A kind of node an engine can run on."""

    CUDA = "cuda"
    CPU = "cpu"
    APPLE = "apple"


@dataclass(frozen=True)
class NodeNeed:
    """One tier an engine can use, with the GPUs per replica it asks for there."""

    tier: Tier
    gpus: int = 0

    def phrase(self) -> str:
        """What a node must be, in words: 'Linux with a CUDA GPU', 'Apple silicon'."""
        if self.tier == Tier.CUDA:
            return "Linux with a CUDA GPU" if self.gpus <= 1 else f"Linux with at least {self.gpus} CUDA GPUs"
        return "Linux" if self.tier == Tier.CPU else "Apple silicon"


@dataclass(frozen=True)
class RuleResult:
    """One rule's outcome and the sentence that explains it."""

    ok: bool
    reason: str


@dataclass(frozen=True)
class ModelView:
    """What an engine's model rules and warnings read of one ModelDeployment (and the operator config).

    Narrow on purpose: selection builds it from the parsed spec (selection/engine.py), so an engine never
    sees the API's types and a new spec field reaches an engine only by being added here.
    """

    name: str  # model.name
    family: str | None  # model.family (a custom model's architecture family)
    format: ModelFormat
    quantization: str | None
    size_in_billions: str | None = None  # Xinference's spelling: 7, 0_5, 1_8
    abilities: tuple[str, ...] = ()
    multimodal_projector: str | None = None
    gpus: int | None = None  # resources.gpus (None: unset)
    args: Mapping[str, ArgValue] = field(default_factory=dict)  # engine.args
    extra_families: tuple[str, ...] = ()  # the operator config's vllmExtraFamilies
    allow_trust_remote_code: bool = False  # the operator config's allowTrustRemoteCode
    api_key: bool = False  # spec.auth asks for an API key (its value never reaches the engines)


@dataclass(frozen=True)
class Metrics:
    """Where the engine serves Prometheus metrics and what they say about load.

    `enable_arg`: the `engine.args` key that turns them on (None: always on). `load`: the gauges of
    requests running and waiting, summed over the pods as the autoscaler's signal (empty: none).
    """

    port: int
    path: str = "/metrics"
    enable_arg: str | None = None
    load: tuple[str, ...] = ()


@dataclass(frozen=True)
class Launch:
    """What the renderer knows when it asks an engine for its command line.

    Paths are inside the pod (model_paths.py decides them from `model.uri`); `gpus` is the placement's
    GPUs per replica (0 on CPU and Apple silicon).
    """

    model_path: str
    mmproj_path: str | None
    served_name: str
    gpus: int
    n_gpu_layers: int
    args: Mapping[str, ArgValue]
    allow_trust_remote_code: bool = False  # the operator config's allowTrustRemoteCode
    api_key: bool = False  # spec.auth is set: the server asks for a key (read from `api_key_env`)


class Engine:
    """The protocol of one engine. Subclasses set the class facts and implement the methods.

    Facts (class attributes):
    - `name`: as users write it in `engine.name`; `label`: as reasons spell it ("vLLM").
    - `image_key`: key of `images` (spec and operator config) and the folder under images/.
    - `formats`: the model formats it loads at all (the CRD's CEL rule for a named engine).
    - `auto_rank`: its place in the default order under `engine.name: auto`; None: only when named or listed.
    - `gpu_required`: cannot run without CUDA GPUs (rendering refuses a GPU-less placement).
    - `health_path`, `metrics`: probe path on PORT, and where /metrics is served.
    - `runs_as_non_root` (None: leave unset), `read_only_root`, `needs_shm` (NCCL/worker processes),
      `uses_hf_home` (reads Hugging Face caches), `cuda_image` (its image exposes every GPU unless hidden).

    Engines are values, not classes: the registry holds one instance of each.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    image_key: ClassVar[str]
    formats: ClassVar[frozenset[ModelFormat]]
    auto_rank: ClassVar[int | None] = None
    gpu_required: ClassVar[bool] = False
    health_path: ClassVar[str] = "/health"
    metrics: ClassVar[Metrics | None] = None
    runs_as_non_root: ClassVar[bool | None] = True
    read_only_root: ClassVar[bool] = True
    needs_shm: ClassVar[bool] = False
    uses_hf_home: ClassVar[bool] = False
    cuda_image: ClassVar[bool] = True
    # Gets `model.multimodalProjector` as a separate file (Launch.mmproj_path); others ignore the field.
    loads_projector: ClassVar[bool] = False
    # Engine args the renderer sets itself (normalised flag names, or llama.cpp common_params names): a
    # user arg naming one is refused, since the later copy would win and silently break probes or GPUs.
    reserved_args: ClassVar[frozenset[str]] = frozenset()
    # How a bool in `engine.args` is spelled on its command line (see engines/args.py).
    bool_style: ClassVar[BoolStyle] = "store_true"
    # How `engine.args` keys are spelled: "flag" (CLI flags, `-`/`_` alike, leading dashes dropped) or
    # "param" (llama.cpp common_params names, dotted; the part before the first dot is compared).
    arg_spelling: ClassVar[ArgSpelling] = "flag"
    # Arguments that make the server open files or directories the user chooses, run tools, proxy other
    # hosts or carry a secret in argv: name (as compared, see `arg_spelling`) -> what it would do. Refused in
    # the API and the CRD's CEL, by `select` and by `render` (docs/security.md, "Engine arguments").
    refused_args: ClassVar[Mapping[str, str]] = {}
    # The flag that lets a model repository run its own Python code in the server; refused unless the
    # operator config sets allowTrustRemoteCode (None: the engine has no such flag).
    trust_remote_code_arg: ClassVar[str | None] = None
    # The environment variable the server reads its API key from (spec.auth; the renderer fills it from
    # the Secret with a secretKeyRef), or None where the server cannot take a key that way; then
    # `api_key_unsupported` says why, and the engine is not chosen for a spec with auth
    # (docs/security.md, "API keys").
    api_key_env: ClassVar[str | None] = None
    api_key_unsupported: ClassVar[str] = "its server has no API key"
    # Where /metrics is served without the key when spec.auth is set, for an engine whose server asks for
    # the key on /metrics too (llama.cpp): a relay in the pod, on its own port named `metrics`. None: the
    # server leaves /metrics open on PORT (vLLM) or has no API key.
    metrics_relay_port: ClassVar[int | None] = None

    def metrics_port(self, api_key: bool) -> int | None:
        """The port the picker and Prometheus scrape /metrics on (None: the engine exports none)."""
        if self.metrics is None:
            return None
        if api_key and self.metrics_relay_port is not None:
            return self.metrics_relay_port
        return self.metrics.port

    # How the engine divides a GPU's memory and which compute capability its kernels need; None: the
    # engine is not sized by memory (docs/memory-placement.md).
    memory: ClassVar[EngineMemory | None] = None
    # Sized on the node by auto-NGL: placement prefers the nodes whose GPUs hold the most of the model.
    prefers_gpu_share: ClassVar[bool] = False

    def arg_name(self, key: str) -> str:
        """An `engine.args` key as `reserved_args` and `refused_args` spell it."""
        if self.arg_spelling == "param":
            return key.split(".", 1)[0]
        head, _, _ = key.lstrip("-").partition(".")
        return head.replace("_", "-")

    def refused_arg(self, key: str, value: ArgValue = True, *, allow_trust_remote_code: bool = False) -> str | None:
        """Why an `engine.args` key is refused for this engine (None: it is not), one sentence for status.

        trust-remote-code is refused only when it turns the switch on: `false` asks for the default.
        """
        name = self.arg_name(key)
        if name in self.refused_args:
            return f"engine.args must not set {key} for {self.label}: it {self.refused_args[name]}"
        if name == self.trust_remote_code_arg and truthy(value) and not allow_trust_remote_code:
            return (
                f"engine.args must not set {key} for {self.label}: it runs the model repository's own Python "
                "code in the server; the operator config's allowTrustRemoteCode permits it"
            )
        return None

    def check_args(self, args: Mapping[str, ArgValue], *, allow_trust_remote_code: bool = False) -> None:
        """Raise RenderError for `engine.args` this engine cannot render: the same checks its command makes."""
        for key in sorted(args):
            problem = self.refused_arg(key, args[key], allow_trust_remote_code=allow_trust_remote_code)
            if problem:
                raise RenderError(problem)

    def args_problem(self, args: Mapping[str, ArgValue], *, allow_trust_remote_code: bool = False) -> str | None:
        """Why `engine.args` cannot be rendered (None: they can); `select` asks this so it refuses what
        `render` refuses."""
        try:
            self.check_args(args, allow_trust_remote_code=allow_trust_remote_code)
        except RenderError as exc:
            return str(exc)
        return None

    def api_key_refusal(self) -> str | None:
        """Why this engine cannot take spec.auth's API key, one sentence for status (None: it can)."""
        if self.api_key_env is not None:
            return None
        return f"spec.auth needs an API key, and {self.label} cannot take one: {self.api_key_unsupported}"

    def api_key_rule(self, model: ModelView) -> RuleResult | None:
        """Whether the server can take spec.auth's API key without it reaching argv or logs (None: no auth)."""
        if not model.api_key:
            return None
        refusal = self.api_key_refusal()
        if refusal is not None:
            return RuleResult(False, refusal)
        return RuleResult(True, f"{self.label} reads spec.auth's API key from {self.api_key_env}, set from the Secret")

    def model_rules(self, model: ModelView) -> Sequence[RuleResult | None]:
        """Every model rule for this model, in order, each with its reason (None: a rule that does not apply)."""
        raise NotImplementedError

    def node_needs(self, gpus: int | None) -> tuple[NodeNeed, ...]:
        """The tiers it may use, in the order tried, given `resources.gpus` (None when unset)."""
        raise NotImplementedError

    def gpu_rule_reason(self, need: NodeNeed, gpus: int | None, earlier_failed: bool) -> str | None:
        """A sentence on how the GPU count was decided for the chosen tier (None: nothing to explain)."""
        return None

    def warnings(self, model: ModelView) -> tuple[str, ...]:
        """Problems the model alone shows that do not stop it from running (reported as Degraded)."""
        return ()

    def command(self, launch: Launch) -> list[str]:
        """The engine container's argv (never a shell string)."""
        raise NotImplementedError

    def init_command(self, launch: Launch) -> list[str] | None:
        """The argv of an init container that sizes the launch on the node (auto-NGL), or None."""
        return None

    def __repr__(self) -> str:
        return f"<engine {self.name}>"

"""ModelDeployment (modeldeploy.io/v1alpha1) as pydantic models.

These models are the single source of truth for the API: the CRD in `crds/` is generated from them
(`modeldeploy crd`), the CLI validates files with them, and the operator parses objects with them. A
field's description here is what `kubectl explain` shows, so it is written for the user.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from modeldeploy.api import quantization as quant
from modeldeploy.api.autoscaling import AutoscalingSpec
from modeldeploy.formats import AUTO_ENGINE, ArgValue, EngineCatalogue, ModelFormat

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]
CATEGORIES = ["modeldeploy"]

Ability = Literal["chat", "generate", "vision", "tools", "embed"]

URI_PATTERN = r"^(hf://|modelscope://|s3://|https://|http://|pvc://|/)"
SIZE_PATTERN = r"^[0-9]+(_[0-9]+)?$"
# Kubernetes names for referenced objects (Secrets, PVCs, ServiceAccounts): DNS-1123 subdomain.
DNS1123 = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

# Schema markers the CRD generator turns into Kubernetes extensions (see api/crd.py).
PRESERVE = {"x-kubernetes-preserve-unknown-fields": True}
INT_OR_STRING = {"x-kubernetes-int-or-string": True}

# Variables that decide which GPUs a container sees (docs/security.md, "GPU isolation"). The renderer sets
# NVIDIA_VISIBLE_DEVICES=void on GPU-less placements and the llama.cpp launcher sets CUDA_VISIBLE_DEVICES;
# the NVIDIA container toolkit honours NVIDIA_* from unprivileged containers, so a user value would expose
# every GPU of the node to a pod that was given none. `spec.env` may not name them (the CRD's CEL says
# the same, api/crd.py).
RELATIVE_PATH_MAX = 1024  # bounds the CEL rules on model.file and model.multimodalProjector


def escapes_directory(path: str) -> bool:
    """Whether a path inside the repository is absolute or has a `..` segment (the CRD's CEL says the same)."""
    return path.startswith("/") or ".." in path.split("/")


GPU_ENV_PREFIXES = ("NVIDIA_",)
GPU_ENV_NAMES = ("CUDA_VISIBLE_DEVICES",)
ENV_MAX_ITEMS = 256  # bounds the CEL rule's cost (the apiserver refuses a CRD whose rules cost too much)


def gpu_env_refused(name: str) -> bool:
    """Whether an env variable name is one the operator keeps for GPU isolation."""
    return name in GPU_ENV_NAMES or name.startswith(GPU_ENV_PREFIXES)


GPU_ENV_ALLOWED_TEXT = (
    "spec.env must not set NVIDIA_* or CUDA_VISIBLE_DEVICES: the operator sets them to isolate GPUs; "
    "ask for GPUs with resources.gpus"
)


def policed(key: str) -> str:
    """The end of a pod-shaping field's description (docs/security.md, "Pod policy" and "Admission")."""
    return (
        f" The operator's policy may refuse it (config.policy.{key}); setting it needs the right to create pods "
        "in the namespace (docs/security.md)."
    )


def _one_of(allowed: tuple[str, ...]) -> str:
    """'a', 'b' or 'c': how pydantic words a Literal, so engine names read like every other enum error."""
    quoted = [repr(a) for a in allowed]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _allowed_checker(allowed: Callable[[], tuple[str, ...]]) -> Callable[[str], str]:
    """A validator refusing values outside `allowed()`, read when validating (engines may be registered late)."""

    def check(value: str) -> str:
        options = allowed()
        if value not in options:
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": _one_of(options)})
        return value

    return check


def _enum_schema(allowed: Callable[[], tuple[str, ...]]) -> Callable[[dict[str, Any]], None]:
    """json_schema_extra adding `enum: allowed()` before title and type (the order a Literal gives)."""

    def extra(schema: dict[str, Any]) -> None:
        tail: dict[str, Any] = {k: schema.pop(k) for k in ("title", "type") if k in schema}
        schema["enum"] = list(allowed())
        schema.update(tail)

    return extra


_catalogue: EngineCatalogue | None = None


def use_engines(catalogue: EngineCatalogue) -> None:
    """Hand the API the engines it validates `engine.name`, image keys and formats against.

    The caller that reads ModelDeployments does it (modeldeploy/loader.py, with engines/registry.py), so
    the API never imports the engines (docs/architecture.md, "Layers"). The catalogue is read on every
    validation, so an engine registered later is known at once.
    """
    global _catalogue
    _catalogue = catalogue


def engines() -> EngineCatalogue:
    """The catalogue handed over by `use_engines`."""
    if _catalogue is None:
        raise RuntimeError("no engines: call modeldeploy.api.v1alpha1.use_engines (modeldeploy.loader does)")
    return _catalogue


def _engine_names() -> tuple[str, ...]:
    return engines().names()


def _engine_choices() -> tuple[str, ...]:
    return (AUTO_ENGINE, *engines().names())


def _image_keys() -> tuple[str, ...]:
    names = engines().names()
    return (*names, *(k for k in engines().image_keys() if k not in names))


# The `engine.name` values: every registered engine plus `auto`; EngineName: a registered engine.
EngineChoice = Annotated[str, AfterValidator(_allowed_checker(_engine_choices))]
EngineName = Annotated[
    str, AfterValidator(_allowed_checker(_engine_names)), Field(json_schema_extra=_enum_schema(_engine_names))
]
ImageKey = Annotated[str, AfterValidator(_allowed_checker(_image_keys))]


class _Model(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields are errors."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True)


class ModelSource(_Model):
    """What model to serve and where its weights are."""

    name: str = Field(
        min_length=1,
        description="Model name as Xinference names builtin models (qwen2.5-instruct, llama-3.1-instruct, "
        "gemma-3-1b-it). The vLLM check uses `family` when set, else this name.",
    )
    family: str | None = Field(
        default=None,
        min_length=1,
        description="For a custom model: the family it belongs to (Xinference's model_family); "
        "vLLM's supported-model check uses it instead of `name`.",
    )
    format: ModelFormat = Field(
        description="Weight format, as Xinference's model_format: pytorch, gptq, awq, fp4, fp8, bnb, ggufv2 or mlx.",
    )
    size_in_billions: Annotated[str | None, Field(json_schema_extra=INT_OR_STRING)] = Field(
        default=None,
        description="Parameter count in billions in Xinference's spelling (7, 0_5, 1_8, 32); 0.5 is accepted "
        "and normalised to 0_5.",
    )
    quantization: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,  # bounds the cost of the CRD's CEL rules that read it
        description="none for plain pytorch (4bit/8bit to quantize on load); Int3/Int4/Int8 for gptq/awq; the "
        "GGUF file quantisation for ggufv2 (Q4_K_M, Q8_0, ...); 4bit/8bit for bnb or mlx. Xinference's model-spec "
        "spellings (4-bit, 8bits, int4, q4_k_m) are accepted case-insensitively and normalised (4bit, Int4, Q4_K_M).",
    )
    uri: str = Field(
        pattern=URI_PATTERN,
        description="Where the weights are: hf://org/repo[@rev], modelscope://org/repo, s3://bucket/prefix, "
        "https://host/file.gguf, pvc://claim/path, or an absolute path on a mounted volume.",
    )
    file: str | None = Field(
        default=None,
        min_length=1,
        max_length=RELATIVE_PATH_MAX,
        description="For GGUF: the file inside the repository (qwen2.5-7b-instruct-q4_k_m.gguf); a relative "
        "path without '..'.",
    )
    multimodal_projector: str | None = Field(
        default=None,
        min_length=1,
        max_length=RELATIVE_PATH_MAX,
        description="GGUF vision models: the separate mmproj file in the same repository (a relative path "
        "without '..'). A projector embedded in the model GGUF is not supported.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected SHA-256 of the single weights file (https:// or model.file); the fetcher "
        "verifies it and refuses a mismatch.",
    )
    credentials_secret: str | None = Field(
        default=None,
        pattern=DNS1123,
        description="Name of a Secret in the same namespace; only the keys the model fetcher reads for the "
        "URI's scheme (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, MODELSCOPE_API_TOKEN, HTTP_BEARER_TOKEN, "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION, "
        "AWS_DEFAULT_REGION) are given to it as environment variables, never rendered into args; a token is "
        "never sent over plain http:// but to loopback. Part of the shared cache's name (docs/security.md)."
        + policed("credentialsSecrets"),
    )
    abilities: list[Ability] = Field(
        default_factory=lambda: list[Ability](["chat"]),
        description="What the model does: chat, generate, vision, tools, embed. Defaults to [chat].",
    )

    @field_validator("file", "multimodal_projector")
    @classmethod
    def _refuse_escaping_paths(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The file is joined to the weights' directory in the pod: an absolute path or a `..` segment would
        load (or have the fetcher write) a file outside it (docs/security.md, "Paths and names")."""
        if value is not None and escapes_directory(value):
            field = "model.file" if info.field_name == "file" else "model.multimodalProjector"
            raise ValueError(f"{field} must be a relative path inside the repository, without '..' (got {value!r})")
        return value

    @field_validator("size_in_billions", mode="before")
    @classmethod
    def _normalise_size(cls, value: object) -> object:
        """Xinference spells 0.5B as `0_5`; accept the decimal spelling users type and numbers."""
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            value = repr(value) if isinstance(value, float) else str(value)
        if isinstance(value, str):
            value = value.replace(".", "_")
            if not re.match(SIZE_PATTERN, value):
                raise ValueError(f"must be a number of billions such as 7, 0_5 or 1.8 (got {value!r})")
        return value

    @model_validator(mode="after")
    def _check_quantization_fits_format(self) -> ModelSource:
        """Refuse pairs that can never load; keep the one canonical spelling (api/quantization.py)."""
        problem = quant.problem(self.format, self.quantization)
        if problem:
            raise ValueError(problem)
        self.quantization = quant.normalise(self.format, self.quantization)
        return self


class EngineSpec(_Model):
    """Which engine serves the model and how it is tuned."""

    name: EngineChoice = Field(
        default="auto",
        json_schema_extra=_enum_schema(_engine_choices),
        description="auto (default) lets the operator choose by Xinference's rules; a named engine is still "
        "checked, and when it cannot run the status says why and nothing is deployed.",
    )
    preference: list[EngineName] | None = Field(
        default=None,
        description="Order to try under auto. Default: vllm, llama.cpp, mlx, transformers. sglang is tried "
        "only when listed here.",
    )
    args: dict[str, Annotated[ArgValue, Field(json_schema_extra=PRESERVE)]] = Field(
        default_factory=dict,
        description="Engine parameters (string, number or bool). For llama.cpp: common_params names nested "
        "with dots (n_ctx, n_parallel, sampling.top_k) as Xinference accepts them; for vllm/sglang/"
        "transformers/mlx: their command-line flags without the leading dashes. Rendered as argv "
        "elements, never through a shell.",
    )
    n_gpu_layers: int = Field(
        default=-1,
        ge=-1,
        description="llama.cpp only: -1 estimates the layers that fit on the GPUs in an init container "
        "(auto-NGL); 0 runs on CPU only; N offloads exactly N layers.",
    )

    @model_validator(mode="after")
    def _check_preference_unique(self) -> EngineSpec:
        if self.preference and len(set(self.preference)) != len(self.preference):
            raise ValueError("engine.preference lists an engine twice")
        return self


class ResourceSpec(_Model):
    """Compute for one replica of the engine container."""

    gpus: int | None = Field(
        default=None,
        ge=0,
        description="GPUs per replica (nvidia.com/gpu). Defaults to 1 on vllm and sglang, and on llama.cpp/"
        "transformers when the chosen nodes have GPUs. vLLM and SGLang use it as tensor-parallel size.",
    )
    requests: dict[str, Annotated[str | int, Field(json_schema_extra=INT_OR_STRING)]] = Field(
        default_factory=dict, description="Resource requests (cpu, memory, ...) as Kubernetes quantities."
    )
    limits: dict[str, Annotated[str | int, Field(json_schema_extra=INT_OR_STRING)]] = Field(
        default_factory=dict, description="Resource limits (cpu, memory, ...) as Kubernetes quantities."
    )


class EmptyDirCache(_Model):
    """A pod-lifetime cache; weights are fetched again when the pod moves."""

    size_limit: Annotated[str | None, Field(json_schema_extra=INT_OR_STRING)] = Field(
        default=None, description="sizeLimit of the emptyDir, a Kubernetes quantity (e.g. 50Gi)."
    )


QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"


class SharedCache(_Model):
    """One PersistentVolumeClaim per model, filled once by a download Job, mounted read-only by every pod.

    Replicas, restarts, rollouts and other ModelDeployments of the same model (same uri, file and
    projector, in the same namespace) share it. Unset fields take the operator's defaults (Helm values
    `modelCache`). See docs/model-cache.md.
    """

    storage_class_name: str | None = Field(
        default=None,
        pattern=DNS1123,
        description="StorageClass of the claim (default: the operator's, else the cluster's).",
    )
    size: str | None = Field(
        default=None,
        pattern=QUANTITY,
        description="Size of the claim, a Kubernetes quantity (default: the model's listed size plus 10 %, rounded up "
        "to a GiB; the operator's modelCache.size when the source lists no sizes).",
    )
    access_mode: Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce", "ReadWriteOncePod"] | None = Field(
        default=None,
        description="Access mode of the claim (default ReadWriteMany, so replicas on several nodes can mount it).",
    )
    retention: Literal["Retain", "Delete"] | None = Field(
        default=None,
        description="Retain (default): the cache outlives the ModelDeployments that use it. Delete: it is "
        "deleted with the last of them.",
    )


class CacheSpec(_Model):
    """Where weights are kept between restarts. Exactly one of pvc, emptyDir or shared."""

    pvc: str | None = Field(
        default=None,
        pattern=DNS1123,
        description="Name of an existing PersistentVolumeClaim to cache weights in (mounted read-write)."
        + policed("claims"),
    )
    empty_dir: EmptyDirCache | None = Field(default=None, description="Cache in an emptyDir volume.")
    shared: SharedCache | None = Field(
        default=None,
        description="A claim per model, downloaded once by a Job and shared read-only by every pod that serves "
        "the same model (docs/model-cache.md).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CacheSpec:
        if sum(x is not None for x in (self.pvc, self.empty_dir, self.shared)) != 1:
            raise ValueError("cache needs exactly one of pvc, emptyDir or shared")
        return self


# A Secret's data key (Kubernetes: `[-._a-zA-Z0-9]+`, at most 253 characters).
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


class SecretKeyRef(_Model):
    """One key of a Secret in the ModelDeployment's namespace."""

    name: str = Field(max_length=253, pattern=DNS1123, description="Name of the Secret.")
    key: str = Field(max_length=253, pattern=SECRET_KEY_PATTERN, description="The key in the Secret's data.")


class AuthSpec(_Model):
    """How clients authenticate to the model server (docs/security.md, "API keys")."""

    api_key_secret: SecretKeyRef = Field(
        description="The Secret key holding the API key clients must send (`Authorization: Bearer KEY`). It "
        "reaches the engine as an environment variable from the Secret (secretKeyRef), never on its command "
        "line, in status or in logs. vLLM and llama.cpp take a key; SGLang, transformers and MLX cannot "
        "(their servers take it only on the command line, or not at all) and are not chosen.",
    )


class ModelDeploymentSpec(_Model):
    """The desired model deployment. Creating one runs pods in its namespace under the operator's identity;
    the fields that shape those pods need the operator's policy and the right to create pods
    (docs/security.md)."""

    model: ModelSource = Field(description="The model and where its weights are.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="Engine choice and parameters.")
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="GPUs, CPU and memory.")
    replicas: int = Field(default=1, ge=0, description="Number of engine replicas (ignored under autoscaling).")
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Scale replicas with the engine's load, down to zero where possible (docs/autoscaling.md).",
    )
    images: dict[ImageKey, str] = Field(
        default_factory=dict,
        description="Per-engine image overrides for this deployment (keys vllm, sglang, llamacpp, "
        "transformers, mlx, ngl, fetch)." + policed("images"),
    )
    cache: CacheSpec | None = Field(
        default=None, description="Where weights are kept between restarts (default: an emptyDir)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Added to the engine's own node requirements (never replaces them)." + policed("nodeLabelKeys"),
    )
    tolerations: list[Annotated[dict[str, Any], Field(json_schema_extra=PRESERVE)]] = Field(
        default_factory=list,
        description="Tolerations (as in a PodSpec), added to those the engine needs." + policed("tolerationKeys"),
    )
    affinity: Annotated[dict[str, Any] | None, Field(json_schema_extra=PRESERVE)] = Field(
        default=None,
        description="Affinity (as in a PodSpec); its required node terms are combined with the engine's."
        + policed("nodeLabelKeys"),
    )
    env: list[Annotated[dict[str, Any], Field(json_schema_extra=PRESERVE)]] = Field(
        default_factory=list,
        max_length=ENV_MAX_ITEMS,
        description="Environment variables (as in a container spec) for the engine. NVIDIA_* and "
        "CUDA_VISIBLE_DEVICES are refused: the operator sets them to isolate GPUs (use resources.gpus). A "
        "valueFrom.secretKeyRef needs the operator's policy (config.policy.envSecrets) and the right to create "
        "pods in the namespace (docs/security.md).",
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations added to the pods. Setting them needs the right to create pods in the namespace "
        "(docs/security.md).",
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels added to the pods (the operator's own win)." + policed("podLabelKeys"),
    )
    service_account_name: str | None = Field(
        default=None,
        pattern=DNS1123,
        description="ServiceAccount the model pods run as (its token is mounted in them)."
        + policed("serviceAccountNames"),
    )
    auth: AuthSpec | None = Field(
        default=None,
        description='Require an API key from clients, read from a Secret (docs/security.md, "API keys"). '
        "Unset: the model server answers anyone who can reach it." + policed("apiKeySecrets"),
    )

    @field_validator("env")
    @classmethod
    def _refuse_gpu_isolation_env(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A user NVIDIA_VISIBLE_DEVICES=all would replace the renderer's `void` and show every GPU of the
        node to a pod with no GPU limit (docs/security.md, "GPU isolation")."""
        for item in value:
            name = item.get("name")
            if isinstance(name, str) and gpu_env_refused(name):
                raise ValueError(f"{GPU_ENV_ALLOWED_TEXT} (got {name})")
        return value

    @model_validator(mode="after")
    def _check_engine_can_load_format(self) -> ModelDeploymentSpec:
        problem = (
            engine_format_problem(self.engine.name, self.model.format)
            or refused_args_problem(self.engine)
            or self._api_key_problem()
        )
        if problem:
            raise ValueError(problem)
        return self

    def _api_key_problem(self) -> str | None:
        """A named engine that cannot take spec.auth's key is refused at once; under auto, selection passes
        over such engines and says why (docs/security.md, "API keys")."""
        if self.auth is None or self.engine.name == AUTO_ENGINE:
            return None
        return engines().api_key_problem(self.engine.name)


def refused_args_problem(engine: EngineSpec) -> str | None:
    """Why `engine.args` names a key the engine refuses (files, tools, proxies, secrets in argv), or None.

    A named engine is asked; under auto every engine is, since any of them may render the args (the CRD's
    CEL rule, which carries the same tables, cannot tell which; docs/security.md, "Engine arguments").
    """
    names = (engine.name,) if engine.name != AUTO_ENGINE else engines().names()
    for key in sorted(engine.args):
        for name in names:
            problem = engines().refused_arg(name, key)
            if problem:
                return problem
    return None


def engine_format_problem(engine_name: str, fmt: ModelFormat) -> str | None:
    """Why a named engine can never load a format (the CRD carries the same rule as CEL)."""
    if engine_name == AUTO_ENGINE:
        return None
    formats = engines().formats_of(engine_name)
    if fmt not in formats:
        allowed = ", ".join(sorted(f.value for f in formats))
        return f"engine.name {engine_name} cannot load model.format {fmt.value} (it loads: {allowed})"
    return None


class Candidate(_Model):
    """One engine the selection considered."""

    engine: EngineName = Field(description="The engine.")
    eligible: bool = Field(description="Whether the model rules and at least one usable node allow it.")
    reasons: list[str] = Field(
        default_factory=list, description="Each rule that passed or failed, in words a user understands."
    )
    nodes: int | None = Field(
        default=None,
        ge=0,
        description=(
            "How many usable nodes could host it: written by operators before node churn stopped rewriting "
            "the status (docs/operator-at-scale.md); `modeldeploy select` prints it."
        ),
    )


class Condition(_Model):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(description="EngineSelected, Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str | None = Field(default=None, description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The generation this condition describes.")


class ModelStatus(_Model):
    """The model's weights: the shared cache's download, and the quantization in its one spelling."""

    phase: Literal["Pending", "Downloading", "Ready", "Failed"] | None = Field(
        default=None, description="Pending, Downloading, Ready or Failed (shared cache only)."
    )
    summary: str | None = Field(default=None, description="For the printer column: Downloading 42%, Ready, ...")
    bytes_done: int | None = Field(default=None, description="Bytes of the model on the cache so far.")
    bytes_total: int | None = Field(default=None, description="Bytes of the whole model, from the listing.")
    revision: str | None = Field(default=None, description="The commit the revision in model.uri resolved to.")
    claim: str | None = Field(default=None, description="The shared cache's PersistentVolumeClaim.")
    quantization: str | None = Field(default=None, description="model.quantization, normalised (4-bit -> 4bit).")
    message: str | None = Field(default=None, description="What is happening or what failed, in one sentence.")


class ModelDeploymentStatus(_Model):
    """What the operator observed and decided."""

    observed_generation: int | None = Field(default=None, description="The metadata.generation this status describes.")
    engine: str | None = Field(default=None, description="The engine chosen, or empty when none can run.")
    image: str | None = Field(default=None, description="The engine image actually rendered.")
    selection: list[Candidate] = Field(default_factory=list, description="Every engine considered, with reasons.")
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL (http://name.ns.svc:8000/v1).")
    replicas: int | None = Field(default=None, description="Replicas of the Deployment.")
    ready_replicas: int | None = Field(default=None, description="Ready replicas of the Deployment.")
    ready: str | None = Field(default=None, description="readyReplicas/replicas, for the printer column.")
    reason: str | None = Field(default=None, description="Reason of the last condition that is not as it should be.")
    n_gpu_layers: int | None = Field(default=None, description="llama.cpp: the layers the init container offloaded.")
    model: ModelStatus | None = Field(default=None, description="The weights: quantization, shared-cache download.")
    conditions: list[Condition] = Field(
        default_factory=list, description="EngineSelected, Ready, Progressing, Degraded."
    )


class ObjectMeta(BaseModel):
    """The part of metadata the CLI needs; the rest is kept as is."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelDeployment(BaseModel):
    """A whole ModelDeployment object as read from a file or the apiserver."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    api_version: Literal["modeldeploy.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelDeployment"]
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

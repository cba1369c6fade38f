"""The operator's own configuration (Helm values end up here).

One pydantic model, loaded from a YAML file (`MODELDEPLOY_CONFIG`, mounted from a ConfigMap by the
chart) so the CLI, the operator and the chart agree on the same keys. Every key has a default that
works on a stock cluster running NVIDIA's GPU operator.

The config sits at the bottom of the import graph with `formats.py` (docs/architecture.md, "Layers"):
it imports no other part of the package, so the image keys of the engines come from the caller
(`load_config(path, registry.image_keys())`), and the autoscaling and gateway settings live here
(config/scaling.py) rather than in scaling/.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modeldeploy import __version__
from modeldeploy.config.network import NetworkPolicySettings
from modeldeploy.config.policy import PodPolicy
from modeldeploy.config.scaling import AutoscalingSettings, GatewaySettings

DEFAULT_REGISTRY = "ghcr.io/modeldeploy"
CONFIG_ENV = "MODELDEPLOY_CONFIG"


def default_image(key: str) -> str:
    """The image built from `images/<key>/`, tagged with the package version."""
    return f"{DEFAULT_REGISTRY}/{key}:{__version__}"


def default_images(keys: Iterable[str]) -> dict[str, str]:
    """The default image of each key (the caller's: engines/registry.py's `image_keys()`)."""
    return {key: default_image(key) for key in keys}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class LabelMappings(_Model):
    """Which node labels and resources mean what, for clusters that label GPUs differently."""

    gpu_resource: str = Field(default="nvidia.com/gpu", description="Extended resource of a CUDA GPU.")
    gpu_present: str = Field(default="nvidia.com/gpu.present", description="Label set to 'true' on GPU nodes.")
    gpu_count: str = Field(default="nvidia.com/gpu.count", description="Label with the GPU count.")
    gpu_memory: str = Field(default="nvidia.com/gpu.memory", description="Label with MiB per GPU.")
    gpu_product: str = Field(default="nvidia.com/gpu.product", description="Label with the GPU model.")
    gpu_compute_major: str = Field(default="nvidia.com/gpu.compute.major", description="CUDA CC major.")
    gpu_compute_minor: str = Field(default="nvidia.com/gpu.compute.minor", description="CUDA CC minor.")
    accelerator: str = Field(default="modeldeploy.io/accelerator", description="Label naming an accelerator.")
    apple_silicon_value: str = Field(default="apple-silicon", description="Value of `accelerator` on Macs.")
    gpu_taint_key: str = Field(default="nvidia.com/gpu", description="Taint key GPU nodes usually carry.")


class EnvVar(_Model):
    """One environment variable, as in a container's `env` (a plain value)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", description="Variable name.")
    value: str = Field(default="", description="Its value.")


class ModelCacheSettings(_Model):
    """Defaults of `spec.cache.shared` (docs/model-cache.md); a ModelDeployment's own fields win."""

    storage_class_name: str | None = Field(
        default=None, description="StorageClass of model caches; empty: the cluster's default class."
    )
    size: str = Field(
        default="50Gi",
        description="Size of a model cache claim when spec.cache.shared.size is unset and the model's listing "
        "gives no size.",
    )
    access_mode: str = Field(default="ReadWriteMany", description="Access mode of model cache claims.")
    retention: str = Field(default="Retain", description="Retain or Delete (with the last ModelDeployment using it).")
    job_backoff_limit: int = Field(default=2, ge=0, description="Retries of a failed download Job's pod.")
    progress_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often a download Job reports its progress on its claim."
    )


class OperatorConfig(_Model):
    """Everything the operator reads besides the cluster itself."""

    images: dict[str, str] = Field(
        default_factory=dict, description="Image per engine/helper; a key not given gets its default image."
    )
    label_mappings: LabelMappings = Field(default_factory=LabelMappings)
    vllm_extra_families: list[str] = Field(
        default_factory=list, description="Model names/families to treat as vLLM-supported beyond the seed's list."
    )
    allow_trust_remote_code: bool = Field(
        default=False,
        description="Whether engine.args may set trust-remote-code (vLLM, SGLang, transformers, MLX): it runs "
        "the model repository's own Python code in the model server (docs/security.md).",
    )
    image_pull_policy: str = Field(default="IfNotPresent")
    autoscaling: AutoscalingSettings = Field(default_factory=AutoscalingSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    network_policies: NetworkPolicySettings = Field(default_factory=NetworkPolicySettings)
    fetch_env: list[EnvVar] = Field(
        default_factory=list,
        description="Environment of the weights fetcher init container, for every ModelDeployment: a Hub "
        "mirror (HF_ENDPOINT), a ModelScope endpoint (MODELSCOPE_ENDPOINT), an S3 endpoint (AWS_ENDPOINT_URL), "
        "a proxy (HTTPS_PROXY). Secrets belong in model.credentialsSecret, not here.",
    )
    model_cache: ModelCacheSettings = Field(default_factory=ModelCacheSettings)
    policy: PodPolicy = Field(
        default_factory=PodPolicy,
        description="What a ModelDeployment may put in its pods: images, ServiceAccount, claims, Secrets, "
        'tolerations, node keys, pod labels (docs/security.md, "Pod policy").',
    )

    def image_for(self, key: str, overrides: dict[str, str] | None = None) -> str:
        """The image for `key`, a per-deployment override first, then this config, then the default."""
        if overrides and key in overrides:
            return overrides[key]
        return self.images.get(key) or default_image(key)


def load_config(path: str | Path | None = None, image_keys: Iterable[str] = ()) -> OperatorConfig:
    """Read the config file (argument, else $MODELDEPLOY_CONFIG); no file means all defaults.

    `images` is completed with the default image of each of `image_keys` (the registry's, from the
    caller), so the map the operator logs and the CLI shows names every image, not only those given.
    """
    path = path or os.environ.get(CONFIG_ENV)
    data = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    config = OperatorConfig.model_validate(data)
    # Merge image defaults so a partial map in Helm values does not unset the others.
    config.images = {**default_images(image_keys), **config.images}
    return config

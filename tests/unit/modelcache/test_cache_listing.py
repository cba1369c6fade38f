"""Sizing a shared cache from the model's listing: the listing Job, the size rule, the status meanwhile."""

from __future__ import annotations

import json

import pytest

from modeldeploy.config import OperatorConfig
from modeldeploy.modelcache import listing as lst
from modeldeploy.modelcache import plan as p
from tests.unit.modelcache.test_cache_plan import md

CONFIG = OperatorConfig.model_validate(
    {"fetchEnv": [{"name": "HF_ENDPOINT", "value": "http://hub"}], "modelCache": {"size": "7Gi"}}
)
GIB = 1024**3


def _pod(code: int, message: str) -> dict:
    term = {"exitCode": code, "message": message, "finishedAt": "2026-01-01T00:00:00Z"}
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "list", "uid": "list-uid"}
    return {
        "metadata": {"ownerReferences": [owner]},
        "status": {"containerStatuses": [{"state": {"terminated": term}}]},
    }


def _job(condition: str | None) -> dict:
    conditions = [{"type": condition, "status": "True"}] if condition else []
    return {"metadata": {"uid": "list-uid"}, "status": {"conditions": conditions}}


def test_no_size_in_the_spec_means_the_listing_sizes_the_claim() -> None:
    listed = p.plan_cache(md("a"), CONFIG)
    given = p.plan_cache(md("b", shared={"size": "3Gi"}), CONFIG)
    assert listed is not None and given is not None
    assert listed.size_given is False and given.size_given is True and given.settings["size"] == "3Gi"
    sized = p.with_size(listed, "2Gi")
    assert sized.size_given and p.claim(sized)["spec"]["resources"]["requests"]["storage"] == "2Gi"


@pytest.mark.parametrize(
    ("total", "size"),
    [(1, "1Gi"), (98_362_432, "1Gi"), (GIB, "2Gi"), (int(GIB / 1.1), "1Gi"), (40 * GIB, "44Gi"), (100 * GIB, "110Gi")],
)
def test_the_claim_is_the_listed_total_plus_ten_percent_rounded_up_to_a_gib(total: int, size: str) -> None:
    assert lst.size_from_listing(total) == size
    assert p.quantity_bytes(size) * 10 >= total * 11  # never less than the listing plus 10 %


def test_the_listing_job_lists_exactly_what_the_download_fetches_with_the_same_pod_settings() -> None:
    model = md(
        "a",
        {"credentialsSecret": "hf"},
        nodeSelector={"pool": "gpu"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    plan = p.plan_cache(model, CONFIG)
    assert plan is not None
    job = lst.listing_job(plan, model, CONFIG)
    download = p.job(p.with_size(plan, "1Gi"), model, CONFIG, "uid")
    assert (
        job["metadata"]["name"] == f"{plan.name}-list" == lst.listing_name(plan) and len(job["metadata"]["name"]) <= 63
    )
    pod, dl_pod = job["spec"]["template"]["spec"], download["spec"]["template"]["spec"]
    (c,), (dl,) = pod["containers"], dl_pod["containers"]
    assert c["command"][c["command"].index("--uri") + 1] == plan.uri and "--list-only" in c["command"]
    assert c["command"][c["command"].index("--file") + 1] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    for key in ("image", "env", "securityContext"):
        assert c[key] == dl[key], key
    assert "HF_TOKEN" in {e["name"] for e in c["env"]}
    for key in ("nodeSelector", "tolerations", "securityContext"):
        assert pod[key] == dl_pod[key], key
    assert pod["automountServiceAccountToken"] is False  # it patches nothing
    assert "serviceAccountName" not in pod  # the namespace's default account, no token: not the cache's own
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]  # no claim yet
    assert job["metadata"]["labels"][lst.LISTING_LABEL] == plan.name and p.CACHE_LABEL not in job["metadata"]["labels"]
    assert job == lst.listing_job(plan, model, CONFIG)  # deterministic


def test_a_completed_listing_gives_the_claim_size() -> None:
    plan = p.plan_cache(md("a"), CONFIG)
    assert plan is not None
    done = [_pod(0, json.dumps({"phase": "Listed", "total": 40 * GIB}))]
    total = lst.listed_total(_job("Complete"), done)
    assert total == 40 * GIB and lst.claim_size(plan, total, CONFIG) == "44Gi"
    assert lst.listed_total(_job(None), done) is None  # still running
    nothing = lst.listed_total(_job("Complete"), [_pod(0, json.dumps({"phase": "Listed", "total": 0}))])
    # A pod the Job did not make (anyone may put the listing label on a pod) says nothing about the size.
    forged = {**done[0], "metadata": {"ownerReferences": [{"uid": "someone-else"}]}}
    assert lst.listed_total(_job("Complete"), [forged]) == 0
    assert nothing == 0 and lst.claim_size(plan, nothing, CONFIG) == "7Gi"  # an https:// file lists no size


def test_status_while_sizing_and_a_failed_listing_like_a_failed_download() -> None:
    plan = p.plan_cache(md("a"), CONFIG)
    assert plan is not None
    running = lst.listing_state(plan, _job(None), [])
    assert running.model["phase"] == "Pending" and running.model["summary"] == "Pending"
    assert running.model["message"].startswith(f"sizing the model cache claim {plan.name}")
    assert running.condition[:3] == ("ModelReady", "False", "Sizing") and not running.ready
    sentence = (
        "hf://x@main: HTTP 401, the repository is gated; set model.credentialsSecret to a Secret with an HF_TOKEN."
    )
    failed = lst.listing_state(plan, _job("Failed"), [_pod(1, sentence)])
    assert (
        failed.model["phase"] == "Failed" and failed.model["message"] == f"The listing of {plan.uri} failed: {sentence}"
    )
    assert failed.condition[:3] == ("ModelReady", "False", "DownloadFailed")

"""Liveness: fail when the watches went silent while the cluster kept changing.

A watch that stops delivering events without closing (Kopf issues #585 and #957: a half-open
connection, a proxy that swallows the stream) leaves an operator that looks healthy and does nothing.
Kopf reconnects streams that show no event or bookmark for `settings.watching.inactivity_timeout`; this
probe is the last line behind it, for whatever keeps a stream open and empty.

Silence alone is no symptom: a quiet cluster sends nothing for hours. So after `silence_s` without any
event, the probe asks the apiserver once, cheaply (metadata only), for the ModelDeployments'
resourceVersions and compares them with what the watch delivered. An object the apiserver shows newer
than the watch is a suspect; a suspect still not delivered at the next probe (`grace_s` later) means
the watch is dead, and the probe fails, so the kubelet restarts the operator (which lists everything
afresh). An apiserver that cannot be reached fails nothing: restarting the operator would not help.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.controller.kube import AsyncKube, KubeError
from modeldeploy.controller.views import rv_int

SILENCE_S = 300.0
GRACE_S = 10.0
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"

Key = tuple[str, str]


class WatchSilent(Exception):
    """The watch missed changes the apiserver has: the probe fails with this."""


def behind(listed: Mapping[Key, str | None], seen: Mapping[Key, str | None]) -> dict[Key, int]:
    """Objects the watch delivered whose listed resourceVersion is newer than the watch's. Pure.

    Objects the watch never showed are left out: an operator serving some namespaces lists them too.
    """
    out: dict[Key, int] = {}
    for key, version in listed.items():
        theirs, ours = rv_int(version), rv_int(seen.get(key))
        if theirs is not None and ours is not None and theirs > ours:
            out[key] = theirs
    return out


@dataclass
class WatchClock:
    """When a watch event last arrived, and the suspects of the last check."""

    silence_s: float = SILENCE_S
    grace_s: float = GRACE_S
    clock: Callable[[], float] = time.monotonic
    last_event: float = field(default_factory=time.monotonic)
    last_check: float = 0.0
    suspects: dict[Key, int] = field(default_factory=dict)
    # The version of each object's last event the event gate stopped (the echo of our own status write):
    # delivered, though no index holds it (event_gate.py).
    echoed: dict[Key, str] = field(default_factory=dict)

    def saw(self, resource: str, key: Key | None = None, version: str | None = None) -> None:
        self.last_event = self.clock()
        if key is not None and key in self.suspects and (rv_int(version) or 0) >= self.suspects[key]:
            del self.suspects[key]

    def saw_echo(self, resource: str, key: Key, version: str) -> None:
        """An event the gate stopped before any index saw it: delivered all the same."""
        self.saw(resource, key, version)
        self.echoed[key] = version

    def delivered(self, key: Key, indexed: str | None) -> str | None:
        """The newest version of `key` the watch delivered: the indexed one, or a newer echo."""
        echoed = self.echoed.get(key)
        return echoed if (rv_int(echoed) or 0) > (rv_int(indexed) or 0) else indexed

    def forget(self, key: Key) -> None:
        self.suspects.pop(key, None)
        self.echoed.pop(key, None)

    def judge(self, listed: Mapping[Key, str | None], seen: Mapping[Key, str | None]) -> None:
        """Compare a listing with the watch; raise WatchSilent when earlier suspects are still behind."""
        now_behind = behind(listed, seen)
        still = {k: v for k, v in self.suspects.items() if k in now_behind and now_behind[k] >= v}
        if still:
            sample = ", ".join(f"{ns}/{name}" for ns, name in sorted(still)[:3])
            raise WatchSilent(
                f"the ModelDeployment watch has delivered nothing for {self.clock() - self.last_event:.0f} s "
                f"while {len(still)} objects changed ({sample})"
            )
        self.suspects = now_behind

    async def check(self, kube: AsyncKube, seen: Mapping[Key, str | None], **extra: Any) -> dict[str, Any]:
        """The probe: cheap while events flow; one metadata LIST after a silence; raises WatchSilent."""
        now = self.clock()
        quiet = now - self.last_event
        due = (self.suspects and now - self.last_check >= self.grace_s) or (
            quiet >= self.silence_s and now - self.last_check >= self.silence_s
        )
        if due:
            self.last_check = now
            try:
                listing = await kube.request(
                    "GET", f"/apis/{GROUP}/{VERSION}/{PLURAL}", headers={"Accept": PARTIAL_LIST}
                )
            except KubeError:
                return {"watch_quiet_s": round(quiet), "checked": False, **extra}
            listed = {
                (str(meta.get("namespace")), str(meta.get("name"))): meta.get("resourceVersion")
                for meta in ((item.get("metadata") or {}) for item in listing.get("items") or ())
            }
            self.judge(listed, seen)
        return {"watch_quiet_s": round(quiet), "suspects": len(self.suspects), **extra}

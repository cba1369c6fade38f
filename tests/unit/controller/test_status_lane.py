"""Status writes have connections of their own: in a burst, the status a reconcile writes right after its
apply does not wait behind the applies other reconciles queued (docs/operator-at-scale.md, "Node churn")."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from modeldeploy.controller.credentials import Credentials
from modeldeploy.controller.kube import LIMIT, AsyncKube


async def held_server(release: asyncio.Event, arrived: list[str]) -> tuple[web.AppRunner, str]:
    """An apiserver stand-in that holds every apply until `release`, and answers status writes at once."""

    async def patch(request: web.Request) -> web.Response:
        kind = "status" if request.path.endswith("/status") else "apply"
        arrived.append(kind)
        if kind == "apply":
            await release.wait()
        return web.json_response({"metadata": {"resourceVersion": "1"}})

    app = web.Application()
    app.router.add_route("PATCH", "/{tail:.*}", patch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def test_a_status_write_goes_ahead_of_applies_that_hold_every_connection() -> None:
    async def scenario() -> tuple[dict[str, Any], list[str], int]:
        release, arrived = asyncio.Event(), []
        runner, url = await held_server(release, arrived)
        kube = AsyncKube(Credentials(server=url, origin="test"))
        try:
            path = "/apis/apps/v1/namespaces/ns/deployments/d{}"
            applies = [
                asyncio.create_task(kube.apply({"kind": "Deployment"}, path.format(i))) for i in range(2 * LIMIT)
            ]
            while arrived.count("apply") < LIMIT:  # every connection of the client holds an apply
                await asyncio.sleep(0.01)
            stored = await kube.merge_patch_status("/apis/x/v1/namespaces/ns/mds/m", {"phase": "Pending"})
            waiting = arrived.count("apply")
            release.set()
            await asyncio.gather(*applies)
            return stored, arrived, waiting
        finally:
            await kube.close()
            await runner.cleanup()

    stored, arrived, waiting = asyncio.run(scenario())
    assert stored == {"metadata": {"resourceVersion": "1"}}
    assert waiting == LIMIT  # written while the other LIMIT applies still queued in the client
    assert arrived.count("apply") == 2 * LIMIT

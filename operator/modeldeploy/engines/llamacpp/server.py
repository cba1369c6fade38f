"""Run xllamacpp's native llama.cpp server until the pod is told to stop.

`xllamacpp.Server(params)` loads the model and starts llama.cpp's own C++ HTTP server (the one behind
`llama-server`: `/health`, `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/metrics`, ...) on
`params.hostnames`/`params.port`, in its own threads. So this process only has to keep the object alive
and drop it on SIGTERM, which lets llama.cpp finish its main loop and exit cleanly within the pod's grace
period. No Python HTTP layer sits in front of it: every request is served by llama.cpp itself.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


def serve(params: Any, log: Callable[[dict[str, Any]], None], ready: Callable[[str], None] | None = None) -> int:
    """Start the server with `params`, block until SIGTERM/SIGINT, return the exit code."""
    import xllamacpp  # imported here so `--help` and parameter errors stay fast and import-safe

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log({"event": "llamacpp.stopping", "signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # noqa: BLE001 - llama.cpp reports load failures as plain exceptions
        log({"event": "llamacpp.failed", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    address = server.listening_address
    log({"event": "llamacpp.listening", "address": address})
    if ready:
        ready(address)
    stop.wait()
    del server  # the destructor stops llama.cpp's loop and HTTP threads
    log({"event": "llamacpp.stopped"})
    return 0

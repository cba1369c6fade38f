"""Command lines the renderer owns itself: the weights fetcher. Engine commands are the engines' own.

Each engine builds its server's argv (and, for llama.cpp, its auto-NGL init container's) in its module
under engines/; engines/args.py turns `engine.args` into argv elements. Every command is an argv list,
never a shell string, so no value a user writes can be interpreted by a shell.
"""

from __future__ import annotations

from modeldeploy.engines.base import PORT, RenderError

PORT_NAME = "http"
# The port /metrics is relayed on when the server asks for the API key there (engines/base.py).
METRICS_PORT_NAME = "metrics"

__all__ = ["METRICS_PORT_NAME", "PORT", "PORT_NAME", "RenderError", "fetch_command"]


def fetch_command(uri: str, dest: str, files: list[str], sha256: str | None) -> list[str]:
    """The weights fetcher init container. Credentials come from env (a Secret), never from argv."""
    cmd = ["python", "-m", "modeldeploy.fetch", "--uri", uri, "--dest", dest]
    for f in files:
        cmd += ["--file", f]
    if sha256:
        cmd += ["--sha256", sha256]
    return cmd

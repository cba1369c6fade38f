"""Reading ModelDeployment and Node files, with errors a user can act on.

Every failure becomes a `UserInputError` carrying one sentence that names the file and the field, so
the CLI can print it without a traceback; the operator uses the same wording in status messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment, use_engines
from modeldeploy.engines import registry

# Whoever reads ModelDeployments reads them through this module (the CLI, the operator's parse), so this
# is where the API is handed the engines it validates names and formats against (formats.EngineCatalogue).
use_engines(registry)


class UserInputError(Exception):
    """Bad input from a user: the message is the whole story (no traceback needed)."""


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
}


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def describe_validation_error(err: ValidationError, prefix: str = "") -> str:
    """The first error of a pydantic ValidationError as `field: what is wrong (got X)`."""
    first = err.errors(include_url=False)[0]
    loc = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    path = _path([*([prefix] if prefix else []), *loc])
    kind = first["type"]
    msg = _MESSAGES.get(kind) or first["msg"]
    if msg.startswith("Value error, "):
        # Our own validators already name the field in their message.
        return msg.removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:]
    got = ""
    if kind not in ("missing", "extra_forbidden") and "input" in first and not isinstance(first["input"], dict | list):
        got = f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    tail = f"; and {more} more problem{'s' if more > 1 else ''}" if more else ""
    return f"{path}: {msg}{got}{tail}"


def load_yaml_documents(path: str | Path) -> list[Any]:
    """All YAML documents of a file ('-' is stdin), empty ones dropped."""
    try:
        text = Path(path).read_text() if str(path) != "-" else __import__("sys").stdin.read()
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read the file ({exc.strerror})") from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserInputError(f"{path}: malformed YAML{where}: {problem}") from None


def parse_model_deployment(doc: Any, source: str) -> ModelDeployment:
    """Validate one document as a ModelDeployment."""
    if not isinstance(doc, dict):
        raise UserInputError(f"{source}: not a ModelDeployment (the document is a {type(doc).__name__})")
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind != KIND or api_version != API_VERSION:
        raise UserInputError(
            f"{source}: not a ModelDeployment (kind {kind!r}, apiVersion {api_version!r}; "
            f"expected kind {KIND!r}, apiVersion {API_VERSION!r})"
        )
    if not isinstance(doc.get("spec"), dict):
        raise UserInputError(f"{source}: spec is required and must be a mapping")
    try:
        return ModelDeployment.model_validate(doc)
    except ValidationError as exc:
        name = (doc.get("metadata") or {}).get("name")
        who = f" (ModelDeployment {name})" if name else ""
        raise UserInputError(f"{source}{who}: {describe_validation_error(exc)}") from None


def load_model_deployments(path: str | Path) -> list[ModelDeployment]:
    """Every ModelDeployment in a file; at least one is required."""
    docs = load_yaml_documents(path)
    if not docs:
        raise UserInputError(f"{path}: the file holds no YAML document")
    many = len(docs) > 1
    return [parse_model_deployment(doc, f"{path}[{i}]" if many else str(path)) for i, doc in enumerate(docs)]

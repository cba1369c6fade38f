"""The one table of engines: every part of ModelDeploy that needs "all engines" iterates this.

Selection (which engines to judge, the default order), rendering (the engine by the decision's name), the
CRD generator (the `engine.name` enum and one CEL rule per engine), the API validators and the CLI read it;
none of them names an engine. The API and the CRD generator are handed this module as their
`formats.EngineCatalogue` by their callers (loader.py, cli.py): they do not import it. Built-in engines are
registered here, in the order the CRD's enums list them; `register` adds one more (see the README, "Adding
an engine"). The built-ins are the only place outside their own modules where an engine module is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from modeldeploy.engines.base import Engine
from modeldeploy.engines.llamacpp.spec import LlamaCpp
from modeldeploy.engines.mlx import MLX
from modeldeploy.engines.sglang import SGLang
from modeldeploy.engines.transformers import Transformers
from modeldeploy.engines.vllm import VLLM
from modeldeploy.formats import AUTO_ENGINE, ModelFormat

AUTO = AUTO_ENGINE  # `engine.name` for "let the operator choose"
HELPER_IMAGES = ("ngl", "fetch")  # image keys that are not engines: auto-NGL and the weights fetcher

_ENGINES: dict[str, Engine] = {}


class UnknownEngine(KeyError):
    """A name no registered engine answers to."""


def register(engine: Engine) -> Engine:
    """Add an engine; its name and image key must be new (a clash would make two engines one)."""
    if engine.name == AUTO or engine.name in _ENGINES:
        raise ValueError(f"an engine named {engine.name!r} is already registered")
    if engine.image_key in HELPER_IMAGES or engine.image_key in {e.image_key for e in _ENGINES.values()}:
        raise ValueError(f"image key {engine.image_key!r} of engine {engine.name!r} is already taken")
    _ENGINES[engine.name] = engine
    return engine


def unregister(name: str) -> None:
    """Remove an engine (tests that register one remove it again, so it never leaks into other tests)."""
    _ENGINES.pop(name, None)


@contextmanager
def registered(engine: Engine) -> Iterator[Engine]:
    """`engine` is registered inside the block only."""
    register(engine)
    try:
        yield engine
    finally:
        unregister(engine.name)


def get(name: str) -> Engine:
    """The engine named `name` (as in `engine.name`)."""
    try:
        return _ENGINES[name]
    except KeyError:
        raise UnknownEngine(name) from None


def formats_of(name: str) -> frozenset[ModelFormat]:
    """The formats the engine called `name` loads (what the API checks a named engine against)."""
    return get(name).formats


def refused_arg(name: str, key: str) -> str | None:
    """Why the engine called `name` refuses an `engine.args` key whatever the operator config (None: it does not)."""
    return get(name).refused_arg(key, allow_trust_remote_code=True)


def api_key_problem(name: str) -> str | None:
    """Why the engine called `name` cannot take spec.auth's API key (None: it can; docs/security.md)."""
    return get(name).api_key_refusal()


def engines() -> tuple[Engine, ...]:
    """Every engine, in registration order (the order of the CRD's enums)."""
    return tuple(_ENGINES.values())


def names() -> tuple[str, ...]:
    """Every engine name, in registration order."""
    return tuple(_ENGINES)


def default_preference() -> tuple[str, ...]:
    """The order tried under `engine.name: auto` without `engine.preference`: engines with an auto_rank."""
    ranked = [e for e in _ENGINES.values() if e.auto_rank is not None]
    return tuple(e.name for e in sorted(ranked, key=lambda e: e.auto_rank or 0))


def listing_order() -> tuple[str, ...]:
    """Every engine: the default order first, then the engines chosen only when named or listed."""
    auto = default_preference()
    return (*auto, *(n for n in _ENGINES if n not in auto))


def image_keys() -> tuple[str, ...]:
    """Keys of `images`: each engine's, in registration order, then the helper images."""
    return (*(e.image_key for e in _ENGINES.values()), *HELPER_IMAGES)


for _builtin in (VLLM(), SGLang(), LlamaCpp(), Transformers(), MLX()):
    register(_builtin)

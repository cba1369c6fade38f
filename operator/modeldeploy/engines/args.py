"""`engine.args` as argv elements, shared by the engine modules.

Every command is an argv list, never a shell string, so no value a user writes in `engine.args` can be
interpreted by a shell. Flags the renderer itself sets are each engine's `reserved_args`: a user arg
naming one is refused with a RenderError instead of being appended, because argparse would let the
later copy win and silently break the probes or the GPU count.

How a bool is spelled depends on the engine's CLI parser (`Engine.bool_style`):
- "negatable" (vLLM's `argparse.BooleanOptionalAction`, typer's `--flag/--no-flag`): true → `--flag`,
  false → `--no-flag` (false must be spelled out, since several flags default to true).
- "store_true" (SGLang, mlx_lm.server): true → `--flag`, false → nothing (false is already the default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from modeldeploy.engines.base import Engine, RenderError
from modeldeploy.formats import ArgValue

_FLAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def format_value(value: ArgValue) -> str:
    """One argv element for a value: bools as true/false, floats by repr (round-trips), the rest by str."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def normalise_flag(key: str) -> str:
    """`--max_model_len` → `max-model-len`: leading dashes dropped, `_` → `-` before the first dot.

    The flag CLIs spell their flags with dashes (vLLM also accepts underscores, SGLang/typer/mlx do not),
    so normalising lets users write either. The part after a dot is left alone: vLLM's `--json-arg.key`
    form names a config field there, spelled as the field is.
    """
    stripped = key.lstrip("-")
    head, dot, tail = stripped.partition(".")
    flag = head.replace("_", "-") + dot + tail
    if not _FLAG_KEY.match(flag):
        raise RenderError(f"engine.args key {key!r} is not a command-line flag name")
    return flag


def flag_args(engine: Engine, args: Mapping[str, ArgValue], *, allow_trust_remote_code: bool = False) -> list[str]:
    """`engine.args` as `--flag value` argv elements, sorted by flag, bools per the engine's bool_style.

    Refuses flags the renderer sets itself and flags the engine refuses (`Engine.refused_args`, and its
    trust-remote-code flag unless the operator config allows it).
    """
    flags: dict[str, ArgValue] = {}
    for key, value in args.items():
        flag = normalise_flag(key)
        if flag in flags:
            raise RenderError(f"engine.args names the flag --{flag} twice (as {key!r} and another spelling)")
        if flag in engine.reserved_args:
            raise RenderError(f"engine.args must not set --{flag}: ModelDeploy sets it for {engine.name}")
        refused = engine.refused_arg(key, value, allow_trust_remote_code=allow_trust_remote_code)
        if refused:
            raise RenderError(refused)
        flags[flag] = value
    out: list[str] = []
    for flag in sorted(flags):
        value = flags[flag]
        if isinstance(value, bool):
            if value:
                out.append(f"--{flag}")
            elif engine.bool_style == "negatable":
                out.append(f"--no-{flag}")
        else:
            out.extend([f"--{flag}", format_value(value)])
    return out


class FlagEngine(Engine):
    """An engine whose `engine.args` are command-line flags: its argument checks are `flag_args`'s own."""

    def check_args(self, args: Mapping[str, ArgValue], *, allow_trust_remote_code: bool = False) -> None:
        flag_args(self, args, allow_trust_remote_code=allow_trust_remote_code)

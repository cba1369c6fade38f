"""`engine.args` → llama.cpp `common_params`, by the real types of xllamacpp's CommonParams.

Xinference lets users set any `common_params` field by name, nesting with dots (`sampling.top_k`). The
operator renders each as `--param key=value`, so every value arrives here as a string. Rather than keep a
hand-written table that drifts from llama.cpp, each name is looked up on a live `CommonParams` object and
the string is converted to the type the field holds now (bool, int, float, str, enum, list). Every
problem is collected first and reported in one sentence, so a user fixes all of them in one edit.
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Fields the entrypoint owns: the model comes from `model.uri`, the listener from the Service contract and
# the GPU layers from `engine.nGpuLayers` (or the auto-NGL file). Letting `engine.args` set them would
# silently fight the operator.
RESERVED: dict[str, str] = {
    "model": "it is set from model.uri",
    "mmproj": "it is set from model.multimodalProjector",
    "port": "the engine always listens on port 8000",
    "hostnames": "the engine always listens on all addresses",
    "n_gpu_layers": "use engine.nGpuLayers instead",
}

# Fields that make llama-server open files or directories the user names, run tools, proxy other hosts or
# carry a secret in argv (docs/security.md, "Engine arguments"): what each would do. The operator refuses
# them in the API, the CRD and render (engines/llamacpp/spec.py reads this table); the entrypoint refuses
# them too, so a hand-written Deployment gets no further.
REFUSED: dict[str, str] = {
    "public_path": "serves a directory of the pod over HTTP",
    "slot_save_path": "writes and reads slot files in a directory the request names",
    "path_prompt_cache": "writes and reads a prompt cache file of the pod's filesystem",
    "path_prompts_log_dir": "writes logs of every prompt to a directory of the pod's filesystem",
    "logits_output_dir": "writes files to a directory of the pod's filesystem",
    "media_path": "lets requests read files of a directory of the pod as media",
    "server_tools": "lets requests run the server's built-in tools (files, shell) in the pod",
    "server_tools_runtime": "lets requests run the server's built-in tools (files, shell) in the pod",
    "ui_mcp_proxy": "turns the server into a CORS proxy to any host",
    "webui_mcp_proxy": "turns the server into a CORS proxy to any host",
    "models_dir": "serves every model file of a directory of the pod",
    "models_preset": "loads model presets from a file of the pod's filesystem",
    "models_preset_hf": "downloads model presets from a Hugging Face repository",
    "video_ffmpeg_bin_dir": "runs an ffmpeg binary from a directory of the pod's filesystem",
    "ssl_file_key": "opens a key file of the pod's filesystem",
    "ssl_file_cert": "opens a certificate file of the pod's filesystem",
    "api_keys": "puts the keys in the Deployment's command line and the start-up log; set spec.auth instead",
}

# The variable the entrypoint reads the API key from (llama-server's own name for it); the renderer sets it
# from spec.auth's Secret with a secretKeyRef (docs/security.md, "API keys").
API_KEY_ENV = "LLAMA_API_KEY"
# With a key, llama.cpp asks for it on /metrics too; the entrypoint then relays /metrics alone on this port
# (named `metrics` in the pod) for the endpoint picker and Prometheus.
METRICS_RELAY_PORT = 8001

# Server features the entrypoint turns off unless `engine.args` turns them on: the web UI and /slots
# (which shows every slot's prompt and can save or erase slots) are not needed to serve the API.
OFF_UNLESS_ASKED: tuple[str, ...] = ("ui", "endpoint_slots")

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class ParamError(ValueError):
    """Engine parameters that cannot be applied; the message is one sentence naming each of them."""


class _Inexpressible(ValueError):
    """A field whose type (LoRA adapter objects, ...) no `name=value` string can spell."""


@dataclass
class _Problems:
    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.items.append(text)


def parse_assignments(items: Iterable[str]) -> list[tuple[str, str]]:
    """Split `key=value` strings; a missing `=` or empty key is a problem like any other."""
    pairs: list[tuple[str, str]] = []
    bad: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            bad.append(repr(item))
            continue
        pairs.append((key.strip(), value))
    if bad:
        raise ParamError(f"Refusing engine parameters: {', '.join(bad)} must be written as name=value.")
    return pairs


def _is_group(value: object) -> bool:
    """A nested struct of common_params (sampling, cpuparams, speculative...), not a leaf value."""
    cls = type(value)
    return cls.__module__.startswith("xllamacpp") and not isinstance(value, enum.Enum)


def field_names(obj: object) -> list[str]:
    """The settable field names of one CommonParams level."""
    names = []
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # noqa: BLE001 - a getter that fails is not a usable field
            continue
        if callable(value) and not isinstance(value, enum.Enum):
            continue
        names.append(name)
    return names


def all_names(obj: object, prefix: str = "", depth: int = 0) -> list[str]:
    """Every dotted leaf name under `obj` (used for suggestions and the docs)."""
    out: list[str] = []
    for name in field_names(obj):
        value = getattr(obj, name)
        if _is_group(value) and depth < 4:
            out.extend(all_names(value, f"{prefix}{name}.", depth + 1))
        else:
            out.append(prefix + name)
    return out


def _resolve(root: object, key: str) -> tuple[object, str] | str:
    """The object holding the field and its attribute name, or why the name is not a field."""
    parts = key.split(".")
    target = root
    for i, part in enumerate(parts):
        known = field_names(target)
        so_far = ".".join(parts[: i + 1])
        if part not in known:
            prefix = ".".join(parts[:i])
            close = difflib.get_close_matches(part, known, n=1, cutoff=0.75)
            hint = f" (did you mean {(prefix + '.' if prefix else '') + close[0]}?)" if close else ""
            return f"unknown parameter {key}{hint}"
        value = getattr(target, part)
        last = i == len(parts) - 1
        if last:
            if _is_group(value):
                examples = ", ".join(f"{key}.{n}" for n in field_names(value)[:3])
                return f"{key} is a group of parameters; set its fields instead ({examples}, ...)"
            return target, part
        if not _is_group(value):
            return f"unknown parameter {key} ({so_far} is not a group)"
        target = value
    raise AssertionError("unreachable")  # pragma: no cover


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("a boolean (true/false)")


def _int(raw: str) -> int:
    try:
        return int(raw.strip(), 10)
    except ValueError:
        raise ValueError("an integer") from None


def _float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError("a number") from None


def _enum(cls: type[enum.Enum], raw: str) -> enum.Enum:
    """Accept the value, the full member name, or the name without its common prefix (q8_0, enabled)."""
    text = raw.strip()
    members = [m for m in cls if not m.name.endswith("_COUNT")]  # GGML_TYPE_COUNT is a sentinel
    names = [m.name for m in members]
    prefix = _common_prefix(names)
    by_name: dict[str, enum.Enum] = {}
    for member in members:
        by_name[member.name.lower()] = member
        by_name[member.name[len(prefix) :].lower()] = member
    low = text.lower()
    if low in by_name:
        return by_name[low]
    # llama.cpp's own flags spell tri-state switches on/off (flash attention): map them the same way.
    if low in _TRUE and "enabled" in by_name:
        return by_name["enabled"]
    if low in _FALSE and "disabled" in by_name:
        return by_name["disabled"]
    try:
        return cls(int(text))
    except ValueError:
        pass
    short = ", ".join(n[len(prefix) :].lower() for n in names)
    raise ValueError(f"one of {short}")


def _common_prefix(names: list[str]) -> str:
    """The shared `PREFIX_` of enum member names (GGML_TYPE_), cut at an underscore."""
    if len(names) < 2:
        return ""
    first, last = min(names), max(names)
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    return first[: first.rfind("_", 0, i) + 1] if "_" in first[:i] else ""


def _split_list(raw: str) -> list[Any]:
    """A JSON list, or comma-separated items (`0.5,0.5`); an empty string is an empty list."""
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("a JSON list or comma-separated values") from None
        if not isinstance(value, list):
            raise ValueError("a JSON list or comma-separated values")
        return [v if isinstance(v, str) else json.dumps(v) for v in value]
    return [p.strip() for p in text.split(",")] if text else []


def _scalar(sample: object, raw: str) -> Any:
    if isinstance(sample, bool):
        return _bool(raw)
    if isinstance(sample, enum.Enum):
        return _enum(type(sample), raw)
    if isinstance(sample, int):
        return _int(raw)
    if isinstance(sample, float):
        return _float(raw)
    if isinstance(sample, str):
        return raw
    raise ValueError("")


def _probe_vector(target: object, attr: str) -> tuple[Any, str]:
    """Element conversion for an empty vector field: strings, floats (keeps 0.5) or integers (truncates it)."""
    for probe in ("", 0.5, 0):
        try:
            setattr(target, attr, [probe])
        except TypeError:
            continue
        kept = getattr(target, attr)
        setattr(target, attr, [])
        if isinstance(probe, str):
            return str, "a list"
        if kept and kept[0] == 0.5:
            return _float, "a list of numbers"
        return _int, "a list of integers"
    raise _Inexpressible()


def _assign(target: object, attr: str, raw: str) -> None:
    """Convert `raw` to the field's type and set it; raises ValueError('expected ...') when it cannot."""
    current = getattr(target, attr)
    if isinstance(current, bool | int | float | str | enum.Enum):
        setattr(target, attr, _scalar(current, raw))
        return
    if isinstance(current, dict):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ValueError("a JSON object")
        setattr(target, attr, value)
        return
    if isinstance(current, set):
        setattr(target, attr, set(_split_list(raw)))
        return
    if isinstance(current, list):
        items = _split_list(raw)
        if current:
            sample = current[0]
            if not isinstance(sample, bool | int | float | str | enum.Enum):
                raise _Inexpressible()
            values = [_scalar(sample, item) for item in items]
            if isinstance(sample, bool | int | float) and not isinstance(sample, enum.Enum):
                # Fixed-size C arrays (tensor_split[128]): pad with zeros, refuse more than fit.
                if len(values) > len(current):
                    raise ValueError(f"at most {len(current)} values")
                values += [type(sample)(0)] * (len(current) - len(values))
            setattr(target, attr, values)
            return
        # An empty list shows no element type: probe what the C++ vector keeps, then convert.
        convert, expected = _probe_vector(target, attr)
        try:
            values = [convert(item) for item in items]
        except ValueError:
            raise ValueError(expected) from None
        setattr(target, attr, values)
        return
    raise _Inexpressible()


def _short(raw: str) -> str:
    """The offending value, quoted and cut so one bad value cannot flood the message."""
    return repr(raw if len(raw) <= 40 else raw[:37] + "...")


def describe(value: object) -> Any:
    """A JSON-friendly spelling of an applied value for the start-up log."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, set):
        return sorted(describe(v) for v in value)
    if isinstance(value, list):
        items = [describe(v) for v in value]
        if items and all(isinstance(v, int | float) for v in items):
            while items and items[-1] == 0:  # fixed-size arrays: drop the zero padding
                items.pop()
        return items
    return value


def apply_params(params: object, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Apply dotted `common_params` assignments to `params`; return what was set, as read back.

    Raises ParamError naming every unknown, reserved or ill-typed parameter at once.
    """
    problems = _Problems()
    applied: dict[str, Any] = {}
    for key, raw in pairs:
        head = key.split(".", 1)[0]
        if head in RESERVED:
            problems.add(f"{key} cannot be set in engine.args ({RESERVED[head]})")
            continue
        if head in REFUSED:
            problems.add(f"{key} cannot be set in engine.args (it {REFUSED[head]})")
            continue
        where = _resolve(params, key)
        if isinstance(where, str):
            problems.add(where)
            continue
        target, attr = where
        try:
            _assign(target, attr, raw)
        except _Inexpressible:
            kind = type(getattr(target, attr)).__name__
            problems.add(f"{key} cannot be set from engine.args (a {kind} of objects)")
            continue
        except ValueError as exc:
            expected = str(exc)
            kind = type(getattr(target, attr)).__name__
            problems.add(f"{key} must be {expected or kind}, got {_short(raw)}")
            continue
        except (TypeError, AssertionError, AttributeError, OverflowError) as exc:
            problems.add(f"{key}={_short(raw)} was refused by llama.cpp ({exc})")
            continue
        applied[key] = describe(getattr(target, attr))
    if problems.items:
        raise ParamError("Refusing engine parameters: " + "; ".join(problems.items) + ".")
    return applied

"""Regenerate `engine_flags.py` from the engines' released wheels, without installing them.

vLLM and SGLang cannot be imported here (both import torch and CUDA libraries at parser-build time), so
their parsers cannot be built; but both derive their flags from source this script can read: explicit
`add_argument("--x", ...)` calls plus one `--field-name` per dataclass field (vLLM's EngineArgs and
FrontendArgs, SGLang's ServerArgs), bools becoming `--x/--no-x` (vLLM, BooleanOptionalAction) or
`store_true` (SGLang). transformers and mlx-lm install on CPU, so their real parsers are asked.

Usage (a throwaway directory; nothing is installed into the project's venv):
    pip download --no-deps -d WHL vllm==0.21.0 sglang==0.5.19
    python -m venv V && V/bin/pip install transformers==5.23.0 mlx-lm==0.32.2
    python tests/unit/engines/extract_engine_flags.py WHL V/bin/python > tests/unit/engines/engine_flags.py
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path


def _source(wheel: Path, member: str) -> ast.Module:
    with zipfile.ZipFile(wheel) as zf:
        return ast.parse(zf.read(member).decode())


def _literal_flags(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Flags named in add_argument calls, and those of them that are store_true."""
    flags, store_true = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
            flags.update(names)
            for kw in node.keywords:
                if kw.arg == "action" and isinstance(kw.value, ast.Constant) and kw.value.value == "store_true":
                    store_true.update(names)
    return flags, store_true


def _dataclass_fields(tree: ast.AST, classes: set[str]) -> tuple[set[str], set[str]]:
    """`--field-name` for each annotated field of the named classes, and which are plain bools."""
    flags, bools = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in classes:
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    name = item.target.id
                    if name.startswith("_"):
                        continue
                    annotation = ast.unparse(item.annotation)
                    if "no_cli=True" in annotation:
                        continue
                    flag = "--" + name.replace("_", "-")
                    flags.add(flag)
                    # SGLang declares aliases inside the annotation: Arg(aliases=["--tensor-parallel-size"]).
                    for sub in ast.walk(item.annotation):
                        if isinstance(sub, ast.keyword) and sub.arg == "aliases" and isinstance(sub.value, ast.List):
                            flags.update(e.value for e in sub.value.elts if isinstance(e, ast.Constant))
                    base = annotation.removeprefix("Annotated[").removeprefix("A[").split(",")[0].strip()
                    if base in ("bool", "bool | None", "Optional[bool]"):
                        bools.add(flag)
    return flags, bools


def vllm(wheel: Path) -> dict[str, list[str]]:
    engine = _source(wheel, "vllm/engine/arg_utils.py")
    frontend = _source(wheel, "vllm/entrypoints/openai/cli_args.py")
    lit_e, st_e = _literal_flags(engine)
    lit_f, st_f = _literal_flags(frontend)
    fields_e, bools_e = _dataclass_fields(engine, {"EngineArgs", "AsyncEngineArgs"})
    fields_f, bools_f = _dataclass_fields(frontend, {"BaseFrontendArgs", "FrontendArgs"})
    flags = lit_e | lit_f | fields_e | fields_f
    return {"flags": sorted(flags), "negatable": sorted(bools_e | bools_f), "store_true": sorted(st_e | st_f)}


def sglang(wheel: Path) -> dict[str, list[str]]:
    tree = _source(wheel, "sglang/srt/server_args.py")
    literal, store_true = _literal_flags(tree)
    fields, bools = _dataclass_fields(tree, {"ServerArgs"})
    return {"flags": sorted(literal | fields), "negatable": [], "store_true": sorted(store_true | bools)}


def real_parser(python: str, script: str) -> dict[str, list[str]]:
    out = subprocess.run([python, "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # the last line: libraries may print warnings first


TRANSFORMERS = """
import json, click, typer
from transformers.cli.transformers import app
group = app if isinstance(app, click.Group) else typer.main.get_command(app)
cmd = group.commands["serve"]
flags, neg = set(), set()
for p in cmd.params:
    if isinstance(p, click.Option):
        flags.update(o for o in p.opts if o.startswith("--"))
        if p.secondary_opts:
            neg.update(o for o in p.opts if o.startswith("--"))
            flags.update(p.secondary_opts)
print(json.dumps({"flags": sorted(flags), "negatable": sorted(neg), "store_true": []}))
"""

MLX = """
import argparse, json, sys
captured = {}
real = argparse.ArgumentParser.parse_args
def grab(self, *a, **k):
    captured["parser"] = self
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = grab
sys.argv = ["mlx_lm.server"]
import mlx_lm.server as server
try:
    server.main()
except SystemExit:
    pass
p = captured["parser"]
flags = sorted(o for a in p._actions for o in a.option_strings if o.startswith("--"))
st = sorted(o for a in p._actions if isinstance(a, argparse._StoreTrueAction) for o in a.option_strings)
print(json.dumps({"flags": flags, "negatable": [], "store_true": st}))
"""


def main() -> None:
    wheels, python = Path(sys.argv[1]), sys.argv[2]
    data = {
        "vllm": (
            "vllm 0.21.0 wheel: vllm/engine/arg_utils.py + entrypoints/openai/cli_args.py (AST)",
            vllm(next(wheels.glob("vllm-0.21.0-*.whl"))),
        ),
        "sglang": (
            "sglang 0.5.19 wheel: sglang/srt/server_args.py (AST)",
            sglang(next(wheels.glob("sglang-0.5.19-*.whl"))),
        ),
        "transformers": (
            "transformers 5.23.0: the real typer/click parser of `transformers serve`",
            real_parser(python, TRANSFORMERS),
        ),
        "mlx": ("mlx-lm 0.32.2: the real argparse parser of mlx_lm.server", real_parser(python, MLX)),
    }
    print('"""Engine command-line flags, extracted by extract_engine_flags.py (do not edit by hand)."""')
    print()
    print("from __future__ import annotations")
    print()
    print("ENGINE_FLAGS: dict[str, dict[str, object]] = {")
    for engine, (source, sets) in data.items():
        print(f"    {engine!r}: {{")
        print(f'        "source": {source!r},')
        for key in ("flags", "negatable", "store_true"):
            print(f"        {key!r}: frozenset({sets[key]!r}),")
        print("    },")
    print("}")


if __name__ == "__main__":
    main()

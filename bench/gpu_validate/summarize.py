"""The validation table from the device's results: one markdown row per case, baselines added here.

Usage: python bench/gpu_validate/summarize.py MODELS_DIR RESULTS.jsonl... > table.md

MODELS_DIR holds the validation models at full (sparse) size, as run_device.sh makes them from
headers.tar.xz and sizes.json.  Added on this machine, with the NVML free memory the device measured:
"our N now" (the committed estimator, which may differ from the one that ran) and
`xllamacpp.estimate_gpu_layers` (Xinference's estimator; it needs no GPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "operator"))

from modeldeploy.ngl.estimate import GpuInfo, decide  # noqa: E402
from modeldeploy.ngl.facts import projector_facts  # noqa: E402
from modeldeploy.ngl.gguf_header import read_header  # noqa: E402
from modeldeploy.ngl.memory import Options  # noqa: E402

MiB = 1 << 20


def settings(c: dict) -> str:
    parts = [f"ctx {c['ctx'] // 1024}k", "fa" if c["fa"] else "no fa"]
    if c["np"] > 1:
        parts.append(f"np {c['np']}")
    if c["ctk"] != "f16":
        parts.append(f"KV {c['ctk']}")
    if c.get("mmproj"):
        parts.append("+ mmproj")
    if "-kvu" in c.get("extra", []):
        parts.append("--kv-unified")
    return ", ".join(parts)


def now_and_xllamacpp(models: Path, r: dict) -> tuple[str, str]:
    c = r["case"]
    model = models / f"{c['model']}.gguf"
    free = [int(f * MiB) for f in r["nvml_free_mib"]]
    proj_path = str(models / Path(c["mmproj"]).name) if c.get("mmproj") else None
    o = Options(
        n_ctx=c["ctx"], n_parallel=c["np"], flash_attn=c["fa"], cache_type_k=c["ctk"], cache_type_v=c["ctv"],
        kv_unified="-kvu" in c.get("extra", []),
    )  # fmt: skip
    proj = projector_facts(read_header(proj_path), c["fa"]) if proj_path else None
    ours = decide(read_header(model), [GpuInfo(index=i, free_bytes=f) for i, f in enumerate(free)], o, proj)
    now = str(ours.n_gpu_layers) + (f" {ours.tensor_split}" if ours.tensor_split else "")
    try:
        import xllamacpp

        theirs = xllamacpp.estimate_gpu_layers(
            [{"name": f"CUDA{i}", "memory_free": f} for i, f in enumerate(free)],
            str(model),
            [proj_path] if proj_path else [],
            c["ctx"],
            512,
            c["np"],
            c["ctk"],
        )
        xl = str(theirs.layers)
    except Exception as exc:  # noqa: BLE001 - a baseline that fails is reported, not fatal
        xl = f"error ({type(exc).__name__})"
    return now, xl


def fit_text(fit: dict | None) -> str:
    if not fit:
        return "–"
    extra = " ".join(fit["args"])
    how = "+ -ot (experts on CPU)" if "-ot" in extra else extra
    ok = {True: "loads", False: "fails", None: "?"}[fit["ok"]]
    return f"{fit['ngl']} {how} {ok}".replace("  ", " ").strip()


def main() -> int:
    models = Path(sys.argv[1])
    print(
        "| model | settings | NVML free MiB | our N (ran) | est. MiB | peak MiB at our N | loads at our N? "
        "| largest N that loads | fit-params default | fit-params -fitt 0 | xllamacpp N | our N now |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in sys.argv[2:]:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            if "ours" not in r:
                continue
            c, o = r["case"], r["ours"]
            first = r["runs"][0]
            n = str(o["n"]) + (f" {o['ts']}" if o["ts"] else "")
            best = max((x["ngl"] for x in r["runs"] if x["ok"]), default=None)
            best_ts = next((x["ts"] for x in r["runs"] if x["ok"] and x["ngl"] == best), [])
            now, xl = now_and_xllamacpp(models, r)
            fits = r.get("fit_params") or {}
            est = " / ".join(f"{e:.0f}" for e in o["est_total_mib"])
            peak = " / ".join(f"{p:.0f}" for p in first["peak_used_mib"])
            cells = [
                c["model"], settings(c), " / ".join(f"{f:.0f}" for f in r["nvml_free_mib"]), n, est, peak,
                "yes" if first["ok"] else f"no (rc {first['rc']})",
                f"{best}" + (f" {best_ts}" if best_ts else ""), fit_text(fits.get("default")),
                fit_text(fits.get("t0")), xl, now,
            ]  # fmt: skip
            print("| " + " | ".join(str(x) for x in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

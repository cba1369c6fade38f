"""Validate auto-NGL against real llama.cpp on a GPU (run by run_device.sh on the lent machine).

For each (model, free-memory budget, flash-attn) case:
  1. pin the budget: hold.py allocates until NVML reports exactly that much free;
  2. our decision: modeldeploy.ngl with the GPUs NVML reports (what the init container would see);
  3. llama-completion with our N: a 700-token prompt (one full 512-token micro-batch and more) and
     4 generated tokens; record rc, the CUDA model/KV/compute buffers it logs, and the peak device memory
     it took (NVML free before minus the lowest free seen while it ran, polled every 20 ms);
  4. walk up from N (and down if N failed) to find the largest N that loads and runs;
  5. llama-fit-params' answer for the same settings (its default 1024 MiB target and a 0 MiB target).
Also (phase "calib"): llama-fit-params --fit-print for a sweep of N, which prints llama.cpp's own
buffer sizes without allocating, to compare our weights/KV/graph terms with llama.cpp's.

Writes JSON lines to OUT/results.jsonl and OUT/calib.jsonl; prints a short table last.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pynvml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "operator"))

from modeldeploy.ngl.estimate import Options, decide  # noqa: E402
from modeldeploy.ngl.gguf_header import read_header  # noqa: E402
from modeldeploy.ngl.gpus import discover  # noqa: E402

MiB = 1 << 20
BUF_RE = re.compile(
    r"(CUDA\d+|CUDA_Host|CPU(?:_Mapped|_REPACK)?) (model|KV|compute|RS|output) buffer size =\s*([\d.]+) MiB"
)
SENTENCE = "The quick brown fox jumps over the lazy dog."  # 10 tokens in the llama-bpe and qwen2 vocabularies
PROMPT = " ".join([SENTENCE] * int(os.environ.get("NGL_PROMPT_REPEAT", "70")))


def nvml_free() -> int:
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    return int(pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2).free)


class Holder:
    """hold.py as a context manager: the budget stays pinned while the block runs."""

    def __init__(self, free_mib: float, work: Path) -> None:
        self.free_mib = free_mib
        self.ready = work / f"ready-{os.getpid()}-{time.monotonic_ns()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> int:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "hold.py"), str(self.free_mib), str(self.ready)])
        for _ in range(600):
            if self.ready.exists() and self.ready.read_text():
                time.sleep(0.2)
                return nvml_free()
            if self.proc.poll() is not None:
                raise RuntimeError("hold.py exited")
            time.sleep(0.1)
        raise RuntimeError("hold.py did not get ready")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.ready.unlink(missing_ok=True)
        time.sleep(0.5)


def run_llama(
    bin_dir: Path, model: Path, ngl: int, ctx: int, fa: bool, log_dir: Path, tag: str, extra: list[str] | None = None
) -> dict:
    """One llama-completion run; ok = exit 0 and no allocation failure in its log."""
    cmd = [
        str(bin_dir / "llama-completion"), "-m", str(model), "-ngl", str(ngl), "-c", str(ctx),
        "-fa", "on" if fa else "off", "-n", "4", "-p", PROMPT, "-no-cnv", "--temp", "0", "-t", "16",
        "--fit", "off", "--no-display-prompt", "-lv", "4", *(extra or []),
    ]  # fmt: skip
    before = nvml_free()
    lowest = [before]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], nvml_free())
            time.sleep(0.02)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.monotonic()
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "LLAMA_LOG_COLORS": "0"}
        )
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = 124, (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    stop.set()
    th.join()
    keep = [
        ln
        for ln in out.splitlines()
        if re.search(r"buffer size|offload|error|fail|memory|CUDA0|n_ctx|flash|KV", ln, re.I)
    ]
    (log_dir / f"{tag}-ngl{ngl}.log").write_text("\n".join(keep[:400]) + "\n--- tail ---\n" + out[-3000:])
    bufs: dict[str, float] = {}
    for dev, kind, mib in BUF_RE.findall(out):
        bufs[f"{dev}.{kind}"] = bufs.get(f"{dev}.{kind}", 0.0) + float(mib)
    oom = bool(re.search(r"out of memory|failed to allocate|cudaMalloc failed|unable to allocate", out, re.I))
    return {
        "ngl": ngl,
        "ok": rc == 0 and not oom,
        "rc": rc,
        "oom": oom,
        "seconds": round(time.monotonic() - t0, 1),
        "buffers_mib": bufs,
        "peak_used_mib": round((before - lowest[0]) / MiB, 1),
    }


def fit_params(bin_dir: Path, model: Path, ctx: int, fa: bool, target_mib: int | None) -> tuple[int, list[str]] | None:
    """llama-fit-params' answer: (-ngl, the rest of the arguments it printed, e.g. -ot tensor overrides)."""
    cmd = [str(bin_dir / "llama-fit-params"), "-m", str(model), "-c", str(ctx), "-fa", "on" if fa else "off"]
    if target_mib is not None:
        cmd += ["-fitt", str(target_mib)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    line = next((ln for ln in p.stdout.splitlines() if "-ngl" in ln), "")
    m = re.search(r"-ngl (\d+)", line)
    if not m:
        return None
    extra = shlex.split(line)
    # Keep what is not -c/-ngl (tensor overrides, tensor split): the run must use llama.cpp's whole answer.
    rest: list[str] = []
    i = 0
    while i < len(extra):
        if extra[i] in ("-c", "-ngl"):
            i += 2
            continue
        rest.append(extra[i])
        i += 1
    return int(m.group(1)), rest


def fit_print(bin_dir: Path, model: Path, ngl: int, ctx: int, fa: bool) -> dict | None:
    cmd = [
        str(bin_dir / "llama-fit-params"), "-m", str(model), "-c", str(ctx), "-fa", "on" if fa else "off",
        "-ngl", str(ngl), "-fitp", "on",
    ]  # fmt: skip
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    for line in p.stdout.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("CUDA0") and len(parts) >= 4:
            return {"model": int(parts[1]), "context": int(parts[2]), "compute": int(parts[3])}
    return None


def ours(model: Path, ctx: int, fa: bool) -> dict:
    header = read_header(model)
    res = decide(header, discover(), Options(n_ctx=ctx, flash_attn=fa))
    d = res.to_json_dict()
    g = d["estimate"]["gpus"][0] if d["estimate"] and d["estimate"]["gpus"] else {}
    return {
        "n": res.n_gpu_layers,
        "layers_total": d["estimate"]["layers_total"] if d["estimate"] else None,
        "est_total_mib": round(g.get("total_bytes", 0) / MiB, 1),
        "est_weights_mib": round(g.get("weights_bytes", 0) / MiB, 1),
        "est_kv_mib": round(g.get("kv_bytes", 0) / MiB, 1),
        "est_graph_mib": round(g.get("graph_bytes", 0) / MiB, 1),
        "est_overhead_mib": round(g.get("overhead_bytes", 0) / MiB, 1),
        "reason": res.reason,
    }


def estimate_for_n(model: Path, ctx: int, fa: bool, n: int) -> dict:
    """Our per-term estimate at a forced N (for the calibration sweep)."""
    from modeldeploy.ngl.estimate import GpuInfo, _layout, kv_bytes_per_layer, model_facts

    header = read_header(model)
    m = model_facts(header)
    o = Options(n_ctx=ctx, flash_attn=fa)
    lay = _layout(m, n, [GpuInfo(index=0, free_bytes=1 << 62)], o, kv_bytes_per_layer(m, o), None)
    g = lay[0] if lay else None
    return {
        "weights": round(g.weights_bytes / MiB, 1) if g else None,
        "kv": round(g.kv_bytes / MiB, 1) if g else None,
        "graph": round(g.graph_bytes / MiB, 1) if g else None,
    }


def case(bin_dir: Path, models: Path, work: Path, key: str, budget_mib: float, fa: bool, ctx: int, walk: int) -> dict:
    model = models / f"{key}.gguf"
    tag = f"{key}-{int(budget_mib)}-{'fa' if fa else 'nofa'}"
    with Holder(budget_mib, work) as free:
        mine = ours(model, ctx, fa)
        runs = {}
        n = mine["n"]
        total = mine["layers_total"]
        r = run_llama(bin_dir, model, n, ctx, fa, work, tag)
        runs[n] = r
        best = n if r["ok"] else None
        if r["ok"]:
            k = n + 1
            while k <= total and k <= n + walk:
                rk = run_llama(bin_dir, model, k, ctx, fa, work, tag)
                runs[k] = rk
                if not rk["ok"]:
                    break
                best = k
                k += 1
        else:
            k = n - 1
            while k >= 0 and k >= n - walk:
                rk = run_llama(bin_dir, model, k, ctx, fa, work, tag)
                runs[k] = rk
                if rk["ok"]:
                    best = k
                    break
                k -= 1
        fit_default = fit_params(bin_dir, model, ctx, fa, None)
        fit_zero = fit_params(bin_dir, model, ctx, fa, 0)
        fp_default = fit_default[0] if fit_default else None
        fp_zero = fit_zero[0] if fit_zero else None
        fit_runs = {}
        for name, fit in (("default", fit_default), ("t0", fit_zero)):
            if fit is not None and fit[1]:
                fit_runs[name] = run_llama(bin_dir, model, fit[0], ctx, fa, work, f"{tag}-fit{name}", fit[1])
                fit_runs[name]["args"] = fit[1]
        fp_runs = {}
        for fp in {fp_default, fp_zero} - {None}:
            if fp is not None and fp not in runs and fp <= total:
                fp_runs[fp] = run_llama(bin_dir, model, fp, ctx, fa, work, tag + "-fit")
        for fp, rr in fp_runs.items():
            runs.setdefault(fp, rr)
    return {
        "model": key,
        "budget_mib": budget_mib,
        "nvml_free_mib": round(free / MiB, 1),
        "fa": fa,
        "ctx": ctx,
        "ours": mine,
        "best": best,
        "best_is_lower_bound": best is not None
        and best == max(k for k, v in runs.items() if v["ok"])
        and best < (mine["layers_total"] or 0)
        and runs.get(best + 1) is None,
        "fit_params_default": fp_default,
        "fit_params_t0": fp_zero,
        "fit_runs_with_overrides": fit_runs,
        "runs": {str(k): v for k, v in sorted(runs.items())},
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--plan", required=True, help="JSON: {calib: [[model, fa]...], cases: [[model, budget_mib, fa]...]}"
    )
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--walk", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=540, help="stop starting cases after this many seconds")
    args = ap.parse_args()
    t_start = time.monotonic()
    pynvml.nvmlInit()
    bin_dir, models, out = Path(args.bin), Path(args.models), Path(args.out)
    work = out / "logs"
    work.mkdir(parents=True, exist_ok=True)
    plan = json.loads(Path(args.plan).read_text())

    calib = plan.get("calib", [])
    if calib:
        jobs = []
        for key, fa in calib:
            total = read_header(models / f"{key}.gguf").arch_value("block_count") + 1
            for n in sorted({0, 1, total // 4, total // 2, total - 2, total - 1, total}):
                jobs.append((key, fa, n))

        def do(job: tuple[str, bool, int]) -> dict:
            key, fa, n = job
            got = fit_print(bin_dir, models / f"{key}.gguf", n, args.ctx, fa)
            return {
                "model": key,
                "fa": fa,
                "ngl": n,
                "llama": got,
                "ours": estimate_for_n(models / f"{key}.gguf", args.ctx, fa, n),
            }

        with ThreadPoolExecutor(4) as ex, (out / "calib.jsonl").open("w") as fh:
            for rec in ex.map(do, jobs):
                fh.write(json.dumps(rec) + "\n")
                print("calib", json.dumps(rec), flush=True)

    rows = []
    with (out / "results.jsonl").open("a") as fh:
        for key, budget, fa in plan.get("cases", []):
            if time.monotonic() - t_start > args.deadline:
                print(f"deadline: skipped {key} {budget} fa={fa}", flush=True)
                continue
            try:
                rec = case(bin_dir, models, work, key, budget, fa, args.ctx, args.walk)
            except Exception as exc:  # noqa: BLE001 - one failed case must not lose the others
                rec = {"model": key, "budget_mib": budget, "fa": fa, "error": repr(exc)}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            if os.environ.get("OUT_RESULTS"):  # survives a kill at the call's time limit
                with open(os.environ["OUT_RESULTS"], "a") as copy:
                    copy.write(json.dumps(rec) + "\n")
            rows.append(rec)
            r = rec.get("runs", {}).get(str(rec.get("ours", {}).get("n")), {})
            print(
                f"{key:18} {budget:7.0f} fa={int(fa)} ours={rec.get('ours', {}).get('n')} best={rec.get('best')} "
                f"fit={rec.get('fit_params_default')}/{rec.get('fit_params_t0')} ok={r.get('ok')} "
                f"est={rec.get('ours', {}).get('est_total_mib')} peak={r.get('peak_used_mib')} "
                f"bufs={r.get('buffers_mib')}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

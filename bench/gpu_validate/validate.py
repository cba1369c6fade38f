"""Validate auto-NGL against real llama.cpp on GPUs (run by run_device.sh on the lent machine).

A case is a JSON object: model, free (MiB to leave free on each GPU it uses), gpus (NVML indices), fa, ctx
(llama.cpp's n_ctx), np (sequences), ctk/ctv (cache types), mmproj (a projector file), fit (run
llama-fit-params' answers too).  For each case:
  1. pin the budget: one hold.py per GPU allocates until NVML reports exactly that much free;
  2. our decision: modeldeploy.ngl with the GPUs NVML reports (what the init container would see);
  3. llama.cpp with our N (and tensor split) and a prompt that fills the context: llama-batched-bench
     with `np` sequences of n_ctx/np - 8 tokens each (every KV stream full), or llama-mtmd-cli with an
     image and a long prompt when there is a projector; record rc, the CUDA buffers it logs and the peak
     device memory per GPU (NVML free before minus the lowest free seen, polled every 20 ms);
  4. walk up from N (down when N failed) to the largest N that loads; with two GPUs each step tries every
     way of giving the extra layers to the GPUs;
  5. llama-fit-params' answer for the same settings (default 1024 MiB target and 0), and run it.
Writes JSON lines to OUT/results.jsonl (and $OUT_RESULTS, which survives a kill).
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
from pathlib import Path

import pynvml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "operator"))

from modeldeploy.ngl.estimate import decide  # noqa: E402
from modeldeploy.ngl.facts import projector_facts  # noqa: E402
from modeldeploy.ngl.gguf_header import read_header  # noqa: E402
from modeldeploy.ngl.gpus import discover  # noqa: E402
from modeldeploy.ngl.memory import Options  # noqa: E402

MiB = 1 << 20
BUF_RE = re.compile(
    r"(CUDA\d+|CUDA_Host|CPU(?:_Mapped|_REPACK)?) (model|KV|compute|RS|output) buffer size =\s*([\d.]+) MiB"
)
OOM_RE = re.compile(r"out of memory|failed to allocate|cudaMalloc failed|unable to allocate", re.I)
SENTENCE = "The quick brown fox jumps over the lazy dog."


def nvml_free(index: int) -> int:
    h = pynvml.nvmlDeviceGetHandleByIndex(index)
    return int(pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2).free)


class Holders:
    """One hold.py per GPU: the budgets stay pinned while the block runs."""

    def __init__(self, gpus: list[int], free_mib: list[float], work: Path) -> None:
        self.gpus, self.free_mib, self.work = gpus, free_mib, work
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> list[int]:
        readies = []
        for g, mib in zip(self.gpus, self.free_mib, strict=True):
            ready = self.work / f"ready-{g}-{time.monotonic_ns()}"
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(g)}
            cmd = [sys.executable, str(HERE / "hold.py"), str(mib), str(ready), str(g)]
            self.procs.append(subprocess.Popen(cmd, env=env))
            readies.append(ready)
        for _ in range(900):
            if all(r.exists() and r.read_text() for r in readies):
                time.sleep(0.2)
                return [nvml_free(g) for g in self.gpus]
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("hold.py exited")
            time.sleep(0.1)
        raise RuntimeError("hold.py did not get ready")

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        time.sleep(0.5)


def llama_cmd(bin_dir: Path, c: dict, model: Path, ngl: int, ts: list[int], extra: list[str]) -> list[str]:
    """The llama.cpp command of a case at -ngl ngl (split ts), filling the context."""
    common = [
        "-m", str(model), "-ngl", str(ngl), "-c", str(c["ctx"]), "-fa", "on" if c["fa"] else "off",
        "-ctk", c["ctk"], "-ctv", c["ctv"], "-b", "2048", "-ub", "512", "--fit", "off", "-t", "16", "-lv", "4",
    ]  # fmt: skip
    if ts:
        common += ["-ts", ",".join(map(str, ts))]
    common += c.get("extra", [])
    if c.get("mmproj"):
        repeat = max((c["ctx"] - 1000) // 11, 10)
        prompt = "<__media__>\n" + " ".join([SENTENCE] * repeat)
        return [
            str(bin_dir / "llama-mtmd-cli"), *common, "--mmproj", c["mmproj"], "--image", c["image"],
            "-p", prompt, "-n", "4", "--temp", "0", "--chat-template", "vicuna", *extra,
        ]  # fmt: skip
    pp = c["ctx"] // c["np"] - 8
    return [
        str(bin_dir / "llama-batched-bench"), *common, "-npp", str(pp), "-ntg", "4", "-npl", str(c["np"]),
        *extra,
    ]  # fmt: skip


def run_llama(
    bin_dir: Path, c: dict, model: Path, ngl: int, ts: list[int], log: Path, extra: list[str] | None = None
) -> dict:
    """One run; ok = exit 0 and no allocation failure in its log."""
    cmd = llama_cmd(bin_dir, c, model, ngl, ts, extra or [])
    gpus = c["gpus"]
    before = [nvml_free(g) for g in gpus]
    lowest = list(before)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for i, g in enumerate(gpus):
                lowest[i] = min(lowest[i], nvml_free(g))
            time.sleep(0.02)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.monotonic()
    env = {**os.environ, "LLAMA_LOG_COLORS": "0", "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
    if c.get("hide_gpu"):
        env["CUDA_VISIBLE_DEVICES"] = ""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=c.get("timeout", 200), env=env)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    stop.set()
    th.join()
    keep = [ln for ln in out.splitlines() if re.search(r"buffer size|offload|error|fail|memory|n_ctx|KV", ln, re.I)]
    tag = f"{c['tag']}-ngl{ngl}" + (f"-ts{'_'.join(map(str, ts))}" if ts else "") + ("-x" if extra else "")
    (log / f"{tag}.log").write_text(
        " ".join(cmd[:40])[:2000] + "\n" + "\n".join(keep[:300]) + "\n--- tail ---\n" + out[-3000:]
    )
    bufs: dict[str, float] = {}
    for dev, kind, mib in BUF_RE.findall(out):
        bufs[f"{dev}.{kind}"] = round(bufs.get(f"{dev}.{kind}", 0.0) + float(mib), 1)
    oom = bool(OOM_RE.search(out))
    return {
        "ngl": ngl,
        "ts": ts,
        "ok": rc == 0 and not oom,
        "rc": rc,
        "oom": oom,
        "seconds": round(time.monotonic() - t0, 1),
        "buffers_mib": bufs,
        "peak_used_mib": [round((b - lo) / MiB, 1) for b, lo in zip(before, lowest, strict=True)],
    }


def fit_params(bin_dir: Path, c: dict, model: Path, target_mib: int | None) -> tuple[int, list[str]] | None:
    """llama-fit-params' answer: (-ngl, the rest of what it printed: -ts, -ot tensor overrides)."""
    cmd = [
        str(bin_dir / "llama-fit-params"), "-m", str(model), "-c", str(c["ctx"]), "-fa", "on" if c["fa"] else "off",
        "-ctk", c["ctk"], "-ctv", c["ctv"], "-np", str(c["np"]),
    ]  # fmt: skip
    if target_mib is not None:
        cmd += ["-fitt", str(target_mib)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(map(str, c["gpus"]))}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        return None
    log = Path(os.environ.get("NGL_FIT_LOG", "/tmp/fit.log"))
    with log.open("a") as fh:
        fh.write(" ".join(cmd) + f"\nrc={p.returncode}\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}\n")
    line = next((ln for ln in p.stdout.splitlines() if "-ngl" in ln), "")
    m = re.search(r"-ngl (\d+)", line)
    if not m:
        return None
    words = shlex.split(line)
    rest: list[str] = []
    i = 0
    while i < len(words):
        if words[i] in ("-c", "-ngl"):
            i += 2
            continue
        rest.append(words[i])
        i += 1
    return int(m.group(1)), rest


def ours(c: dict, model: Path) -> dict:
    """The init container's decision on this machine's NVML view of the case's GPUs."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(map(str, c["gpus"]))}
    opts = Options(
        n_ctx=c["ctx"], n_parallel=c["np"], flash_attn=c["fa"], cache_type_k=c["ctk"], cache_type_v=c["ctv"],
        kv_unified="-kvu" in c.get("extra", []),
    )  # fmt: skip
    proj = projector_facts(read_header(c["mmproj"]), c["fa"]) if c.get("mmproj") else None
    res = decide(read_header(model), discover(env), opts, proj)
    d = res.to_json_dict()
    gpus = d["estimate"]["gpus"] if d["estimate"] else []
    return {
        "n": res.n_gpu_layers,
        "ts": res.tensor_split,
        "layers_total": d["estimate"]["layers_total"] if d["estimate"] else None,
        "est_total_mib": [round(g["total_bytes"] / MiB, 1) for g in gpus],
        "est_terms_mib": [
            {
                k: round(g[k] / MiB, 1)
                for k in ("weights_bytes", "kv_bytes", "graph_bytes", "overhead_bytes", "projector_bytes")
            }
            for g in gpus
        ],
        "reason": res.reason,
    }


def neighbours(ts: list[int], k: int) -> list[list[int]]:
    """Every split of |k| more (k > 0) or fewer layers over the GPUs of `ts`."""
    if len(ts) != 2:
        return [[]]
    step = 1 if k > 0 else -1
    out = []
    for a in range(abs(k) + 1):
        cand = [ts[0] + step * a, ts[1] + step * (abs(k) - a)]
        if min(cand) >= 0:
            out.append(cand)
    return out


def case(bin_dir: Path, models: Path, work: Path, c: dict, walk: int) -> dict:
    model = models / f"{c['model']}.gguf"
    if "force_ngl" in c:  # a fixed -ngl (the 0-layer measurements): one run, no walk
        with Holders(c["gpus"], c["free"], work) as free:
            r = run_llama(bin_dir, c, model, c["force_ngl"], [], work)
        return {"case": c, "nvml_free_mib": [round(f / MiB, 1) for f in free], "runs": [r]}
    with Holders(c["gpus"], c["free"], work) as free:
        mine = ours(c, model)
        n, total, ts = mine["n"], mine["layers_total"] or 0, mine["ts"]
        runs: list[dict] = [run_llama(bin_dir, c, model, n, ts, work)]
        best = n if runs[0]["ok"] else None
        direction = 1 if runs[0]["ok"] else -1
        for k in range(1, walk + 1):
            nk = n + direction * k
            if nk < 0 or nk > total:
                break
            step = [run_llama(bin_dir, c, model, nk, t, work) for t in neighbours(ts, direction * k)]
            runs += step
            loaded = any(r["ok"] for r in step)
            if direction > 0 and not loaded:
                break
            if loaded:
                best = nk
                if direction < 0:
                    break
        fits = {}
        if c.get("fit", True):
            for name, target in (("default", None), ("t0", 0)):
                ans = fit_params(bin_dir, c, model, target)
                if ans is None:
                    fits[name] = None
                    continue
                fn, extra = ans
                same = next((x for x in runs if x["ngl"] == fn and not x["ts"] and not extra), None)
                if same is not None:
                    fits[name] = {"ngl": fn, "args": extra, "ok": same["ok"], "run": "same as ours/walk"}
                elif not extra and best is not None and fn <= best and len(c["gpus"]) == 1:
                    # One GPU, no overrides: fewer layers than one that loaded load too (each adds bytes).
                    fits[name] = {"ngl": fn, "args": extra, "ok": True, "run": f"implied by {best} loading"}
                else:
                    r = run_llama(bin_dir, c, model, fn, [], work, extra)
                    fits[name] = {"ngl": fn, "args": extra, "ok": r["ok"], "run": r}
    return {
        "case": c,
        "nvml_free_mib": [round(f / MiB, 1) for f in free],
        "ours": mine,
        "best": best,
        "fit_params": fits,
        "runs": runs,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plan", required=True, help="JSON list of cases")
    ap.add_argument("--walk", type=int, default=3)
    ap.add_argument("--gpus", default="0", help="NVML indices a case uses unless it names its own")
    ap.add_argument("--deadline", type=float, default=540, help="stop starting cases after this many seconds")
    args = ap.parse_args()
    t_start = time.monotonic()
    pynvml.nvmlInit()
    bin_dir, models, out = Path(args.bin), Path(args.models), Path(args.out)
    work = out / "logs"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["NGL_FIT_LOG"] = str(work / "fit.log")
    defaults = {
        "gpus": [int(g) for g in args.gpus.split(",")],
        "fa": False,
        "ctx": 8192,
        "np": 1,
        "ctk": "f16",
        "ctv": "f16",
        "fit": True,
    }
    for raw in json.loads(Path(args.plan).read_text()):
        c = {**defaults, **raw}
        if c.get("mmproj"):
            c["mmproj"] = str(models / f"{c['mmproj']}.gguf")
            c["image"] = str(models / "image.png")
        c.setdefault("tag", f"{c['model']}-{'_'.join(str(int(f)) for f in c['free'])}-{'fa' if c['fa'] else 'nofa'}")
        if time.monotonic() - t_start > args.deadline:
            print(f"deadline: skipped {c['tag']}", flush=True)
            continue
        try:
            rec = case(bin_dir, models, work, c, args.walk)
        except Exception as exc:  # noqa: BLE001 - one failed case must not lose the others
            rec = {"case": c, "error": repr(exc)}
        line = json.dumps(rec) + "\n"
        with (out / "results.jsonl").open("a") as fh:
            fh.write(line)
        if os.environ.get("OUT_RESULTS"):
            with open(os.environ["OUT_RESULTS"], "a") as copy:
                copy.write(line)
        r0 = (rec.get("runs") or [{}])[0]
        fp = {k: (v or {}).get("ngl") for k, v in (rec.get("fit_params") or {}).items()}
        print(
            f"{c['tag']:34} ours={rec.get('ours', {}).get('n')} ts={rec.get('ours', {}).get('ts')} "
            f"best={rec.get('best')} fit={fp} ok={r0.get('ok')} est={rec.get('ours', {}).get('est_total_mib')} "
            f"peak={r0.get('peak_used_mib')} bufs={r0.get('buffers_mib')} err={rec.get('error')}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

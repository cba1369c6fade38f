"""Time and bytes read to estimate a 70B-shaped model: our header reader vs the `gguf` package's GGUFReader.

Writes a llama-70B-shaped GGUF (80 layers, Q4_K, 128,256-token vocabulary, ~40 GB) whose data section
is a hole (truncate: no disk used), then for each reader reports wall time, the bytes it read through
read()/pread() (/proc/self/io rchar; our reader also counts its own), the file's pages in the page
cache afterwards (fincore: what a memory mapping touched) and the address space mapped (VmPeak).
Prints figures only; no asserts.  Usage: python bench/ngl_header_read.py [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

from modeldeploy.ngl.estimate import GpuInfo, decide  # noqa: E402
from modeldeploy.ngl.gguf_header import read_header  # noqa: E402
from modeldeploy.ngl.memory import Options  # noqa: E402
from tests.support import ngl_gguf  # noqa: E402

SPEC = ngl_gguf.Spec(n_layer=80, n_embd=8192, n_head=64, n_head_kv=8, n_ff=28672, n_vocab=128256, n_ctx_train=131072)


def io() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        k, v = line.split(":")
        out[k] = int(v)
    return out


def status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_kib() -> int:
    return status_kib("VmRSS")


def cached_mb(path: Path) -> float:
    """The file's pages in the page cache (what any reader touched since the cache was dropped), via fincore."""
    exe = shutil.which("fincore")
    if not exe:
        return float("nan")
    import subprocess

    out = subprocess.run([exe, "-b", "-n", "-o", "RES", str(path)], capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1e6 if out else float("nan")


def measure(label: str, fn, path: Path) -> None:  # noqa: ANN001
    before, rss0, vm0, t0 = io(), rss_kib(), status_kib("VmPeak"), time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t0
    after, rss1, vm1 = io(), rss_kib(), status_kib("VmPeak")
    rchar = after["rchar"] - before["rchar"]
    print(
        f"{label:34} {dt * 1000:8.1f} ms  read() {rchar / 1e6:6.2f} MB  page cache {cached_mb(path):6.2f} MB  "
        f"RSS +{(rss1 - rss0) / 1024:5.1f} MiB  VmPeak +{(vm1 - vm0) / 1e6:5.1f} GB  {result}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    free = shutil.disk_usage(args.dir).free
    d = Path(tempfile.mkdtemp(dir=args.dir, prefix="ngl-bench-"))
    try:
        path = d / "llama-70b.gguf"
        t0 = time.perf_counter()
        ngl_gguf.write(path, SPEC)
        st = path.stat()
        print(
            f"wrote {path.name}: {st.st_size / 1e9:.2f} GB apparent, {st.st_blocks * 512 / 1e6:.2f} MB on disk "
            f"({free / 1e9:.0f} GB free on {args.dir}) in {time.perf_counter() - t0:.2f} s"
        )

        # Cold-ish: drop our own page cache for the file (fadvise) before each reader.
        def cold() -> None:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)

        for run in (1, 2):
            cold()

            def ours() -> str:
                h = read_header(path)
                r = decide(h, [GpuInfo(index=0, free_bytes=24 << 30)], Options(n_ctx=8192))
                counted = h.bytes_read / 1e6
                return f"header {h.data_offset / 1e6:.2f} MB, reader counted {counted:.2f} MB, -ngl {r.n_gpu_layers}"

            measure(f"ours: read_header + decide (#{run})", ours, path)
        for run in (1, 2):
            cold()

            def theirs() -> str:
                from gguf import GGUFReader

                r = GGUFReader(path)
                return f"{len(r.tensors)} tensors, {len(r.fields)} fields (np.memmap of the whole file)"

            measure(f"gguf.GGUFReader (#{run})", theirs, path)
        try:
            import xllamacpp

            cold()

            def xin() -> str:
                e = xllamacpp.estimate_gpu_layers(
                    [{"name": "CUDA0", "memory_free": 24 << 30}], str(path), [], 8192, 512, 1, "f16"
                )
                return f"-ngl {e.layers}"

            measure("xllamacpp.estimate_gpu_layers", xin, path)
        except ImportError:
            print("xllamacpp not installed: skipped")
        print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

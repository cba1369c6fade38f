"""`modeldeploy ngl`, the init container, NVML discovery (with a fake NVML: there is no GPU here)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from modeldeploy.engines.llamacpp.spec import ngl_command
from modeldeploy.ngl import cli, gpus, initcontainer
from modeldeploy.ngl.memory import Options

KEYS = ["n_gpu_layers", "tensor_split", "estimate", "fallback", "reason"]


def test_cli_prints_the_json_of_ngl_md(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.run_cli(["--model", str(models["llama"]), "--gpu-free-mib", "24000,24000", "--ctx-size", "4096"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == KEYS
    assert out["n_gpu_layers"] == 5 and out["fallback"] is False
    assert out["estimate"]["n_ctx"] == 4096 and out["estimate"]["layers_total"] == 5
    assert len(out["estimate"]["gpus"]) == 2


def test_cli_cache_type_and_parallel_reach_the_estimate(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model", str(models["llama"]), "--gpu-free-mib", "24000", "--ctx-size", "2048"]
    cli.run_cli([*argv, "--cache-type", "q8_0", "--parallel", "3", "--flash-attn"])
    est = json.loads(capsys.readouterr().out)["estimate"]
    assert est["cache_type_k"] == est["cache_type_v"] == "q8_0"
    # --ctx-size is llama.cpp's n_ctx (all sequences): 2048 split into 3 streams of 683 -> 768 cells each.
    assert est["n_parallel"] == 3 and est["flash_attn"] is True and est["kv_cells"] == 3 * 768


def test_cli_text_output(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run_cli(["--model", str(models["qwen3"]), "--gpu-free-mib", "8000", "-o", "text"]) == 0
    assert capsys.readouterr().out.startswith("n_gpu_layers: ")


@pytest.mark.parametrize(
    ("good_file", "argv", "needle"),
    [
        (False, ["--gpu-free-mib", "10"], "not a GGUF file"),
        (True, ["--gpu-free-mib", "lots"], "--gpu-free-mib"),
        (True, ["--gpu-free-mib", "10", "--parallel", "0"], "--parallel"),
    ],
)
def test_cli_exit_2_with_one_sentence(
    tmp_path: Path,
    models: dict[str, Path],
    good_file: bool,
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" * 100)
    assert cli.run_cli(["--model", str(models["llama"] if good_file else bad), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_modeldeploy_ngl_subcommand(models: dict[str, Path], tmp_path: Path) -> None:
    """The installed CLI mounts the same flags and prints the same JSON; a bad file exits 2."""
    exe = Path(sys.executable).with_name("modeldeploy")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "modeldeploy.cli"]
    ok = subprocess.run(
        [*argv, "ngl", "--model", str(models["gemma3"]), "--gpu-free-mib", "0"], capture_output=True, text=True
    )  # noqa: E501
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert list(out) == KEYS and out["n_gpu_layers"] == 0 and "no GPU" in out["reason"]
    (tmp_path / "x.gguf").write_bytes(b"GGUF" + b"\x07\0\0\0" + b"\0" * 40)
    bad = subprocess.run(
        [*argv, "ngl", "--model", str(tmp_path / "x.gguf"), "--gpu-free-mib", "1"], capture_output=True, text=True
    )  # noqa: E501
    assert bad.returncode == 2 and "unsupported GGUF version 7" in bad.stderr and "Traceback" not in bad.stderr


def test_init_container_writes_the_json_atomically(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run" / "ngl.json"
    rc = initcontainer.main(["--model", str(models["qwen3moe"]), "--gpu-free-mib", "16000", "--output", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert list(data) == KEYS and data["n_gpu_layers"] == 7
    assert os.listdir(out.parent) == ["ngl.json"]
    assert capsys.readouterr().out.startswith("auto-ngl: n_gpu_layers=7 ")


def test_init_container_never_leaves_a_half_written_file(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ngl.json"
    out.write_text('{"old": true}')

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(initcontainer.os, "replace", broken_replace)
    rc = initcontainer.main(["--model", str(models["llama"]), "--gpu-free-mib", "1000", "--output", str(out)])
    assert rc == 2
    assert out.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["ngl.json"]


def test_init_container_bad_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = initcontainer.main(["--model", str(tmp_path / "missing.gguf"), "--output", str(tmp_path / "o.json")])
    assert rc == 2 and "cannot open" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def _options(cmd: list[str]) -> Options:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    parser.add_argument("--output")
    return cli.options_from_args(parser.parse_args(cmd[3:]))


def test_rendered_init_container_flags_parse(tmp_path: Path) -> None:
    """What the llama.cpp engine (engines/llamacpp/spec.py) passes is what ngl/cli.py accepts, and reaches Options."""
    args = {"n_ctx": 16384, "n_parallel": 4, "cache_type_k": "q8_0", "flash_attn": True}
    o = _options(ngl_command("/models/m.gguf", None, args))
    assert (o.cache_type_k, o.cache_type_v) == ("q8_0", "f16")  # llama.cpp's default V type when only K is set
    args |= {"cache_type_v": "q4_0", "n_batch": 1024, "n_ubatch": 256}
    o = _options(ngl_command("/models/m.gguf", None, args))
    assert (o.cache_type_v, o.n_batch, o.n_ubatch) == ("q4_0", 1024, 256)
    cmd = ngl_command("/models/m.gguf", "/models/mmproj.gguf", args)
    assert cmd[:3] == ["python", "-m", "modeldeploy.ngl.initcontainer"]
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    parser.add_argument("--output")
    ns = parser.parse_args(cmd[3:])
    o = cli.options_from_args(ns)
    assert (o.n_ctx, o.n_parallel, o.cache_type_k, o.flash_attn) == (16384, 4, "q8_0", True)
    assert ns.mmproj == "/models/mmproj.gguf"
    assert o.kv_unified is False
    assert _options(ngl_command("/models/m.gguf", None, args | {"kv_unified": True})).kv_unified is True


# --- NVML discovery with a fake NVML (the one mock: no GPU on the test machine) ----------------------


class FakeNVML:
    nvmlMemory_v2 = 2

    def __init__(self, free_mib: list[int], *, fail_init: bool = False, v2: bool = True) -> None:
        self.free = free_mib
        self.fail_init = fail_init
        self.v2 = v2
        self.shutdown = False

    def nvmlInit(self) -> None:  # noqa: N802
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.free)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetUUID(self, h: int) -> bytes:  # noqa: N802
        return f"GPU-{h:08d}-aaaa".encode()

    def nvmlDeviceGetName(self, h: int) -> str:  # noqa: N802
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None) -> SimpleNamespace:  # noqa: N802
        if version is not None and not self.v2:
            raise RuntimeError("Function Not Found")
        return SimpleNamespace(free=self.free[h] << 20, total=81559 << 20)


def test_nvml_all_gpus() -> None:
    nvml = FakeNVML([1000, 2000, 3000])
    found = gpus.discover({}, nvml)
    assert [g.free_bytes >> 20 for g in found] == [1000, 2000, 3000]
    assert [g.index for g in found] == [0, 1, 2] and nvml.shutdown


@pytest.mark.parametrize(
    ("visible", "expected"),
    [("2,0", [3000, 1000]), ("1", [2000]), ("GPU-00000002", [3000]), ("-1", []), ("", []), ("7", [])],
)
def test_nvml_honours_cuda_visible_devices(visible: str, expected: list[int]) -> None:
    found = gpus.discover({"CUDA_VISIBLE_DEVICES": visible}, FakeNVML([1000, 2000, 3000]))
    assert [g.free_bytes >> 20 for g in found] == expected  # CUDA numbers them in the listed order
    assert [g.index for g in found] == list(range(len(expected)))


def test_nvml_missing_or_old() -> None:
    assert gpus.discover({}, FakeNVML([1000], fail_init=True)) == []
    assert [g.free_bytes >> 20 for g in gpus.discover({}, FakeNVML([1234], v2=False))] == [1234]


def test_gpu_free_mib_zero_means_no_gpu() -> None:
    assert gpus.from_mib_list("0") == [] and gpus.from_mib_list("0,0") == []
    assert [g.free_bytes for g in gpus.from_mib_list("1.5, 2")] == [3 << 19, 2 << 20]

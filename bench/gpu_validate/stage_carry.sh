#!/usr/bin/env bash
# Stage .device-carry/ for run_device.sh (run from the repository root, after pack_models.py wrote
# headers.tar.xz and sizes.json into .device-carry/ and llama.cpp.tar.xz is there):
# the code under test (operator/, bench/gpu_validate/) travels as repo.tar.xz with the driver script and
# the plans, because the device may be sent another checkout's working tree than this one.
# Usage: bash bench/gpu_validate/stage_carry.sh [MIRROR_REPO_ROOT]
set -euo pipefail
C=.device-carry
mkdir -p $C
tar --exclude=__pycache__ -cJf $C/repo.tar.xz operator/modeldeploy bench/gpu_validate
cp bench/gpu_validate/run_device.sh bench/gpu_validate/plan*.json $C/
if [ -n "${1:-}" ]; then  # the checkout the device tool sends, when it is not this one
  mkdir -p "$1/$C" && cp -r $C/. "$1/$C/"
fi
du -sh $C

#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool), from the repository root, with .device-carry/ carried:
#   .device-carry/llama.cpp.tar.xz   llama.cpp's source from the xllamacpp sdist (thirdparty/llama.cpp, trimmed)
#   .device-carry/headers.tar.xz     the validation models' headers (pack_models.py) + sizes.json
#   .device-carry/whl/               pydantic wheels (the device image has no pydantic)
#   .device-carry/bin.tar.xz.part*   optional: binaries built by an earlier call (skips the 4.5 min build)
# Usage: bash bench/gpu_validate/run_device.sh PLAN.json [DEADLINE_S]
set -euo pipefail
PLAN=${1:?plan}
DEADLINE=${2:-300}
C=.device-carry
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $C/whl/*.whl
mkdir -p /tmp/src /tmp/models
tar -C /tmp/src -xJf $C/llama.cpp.tar.xz
export PYTHONPATH=/tmp/site:/tmp/src/llama.cpp/gguf-py
BIN=/tmp/src/llama.cpp/build/bin
if ls $C/bin.tar.xz.part* >/dev/null 2>&1; then
  mkdir -p $BIN && cat $C/bin.tar.xz.part* | tar -C $BIN -xJf -
  echo "binaries from the carry"
else
  cd /tmp/src/llama.cpp
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DGGML_NATIVE=ON > /tmp/cmake.log 2>&1 || { tail -40 /tmp/cmake.log; exit 1; }
  cmake --build build -j16 --target llama-fit-params llama-completion > /tmp/build.log 2>&1 || { tail -60 /tmp/build.log; exit 1; }
  cd - >/dev/null
  echo "built in $(( $(date +%s) - T0 )) s"
  (cd $BIN && tar -cf - llama-completion llama-fit-params $(ls *.so* 2>/dev/null) | xz -T16 -6 | split -b 15M - "$OUT/bin.tar.xz.part")
  ls -la $OUT
fi
export LD_LIBRARY_PATH=$BIN:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv
tar -C /tmp/models -xJf $C/headers.tar.xz
python3 - <<'PY'
import json, os
for name, size in json.load(open(".device-carry/sizes.json")).items():
    p = f"/tmp/models/{name}.gguf"
    if os.path.exists(p):
        os.truncate(p, size)
PY
REMAIN=$(( DEADLINE - ( $(date +%s) - T0 ) ))
OUT_RESULTS=$OUT/results.jsonl PYTHONUNBUFFERED=1 python3 bench/gpu_validate/validate.py --bin $BIN --models /tmp/models --out /tmp/val \
  --plan "$PLAN" --deadline "$REMAIN" 2>&1 | tee /tmp/val.log || true
cp /tmp/val/calib.jsonl $OUT/ 2>/dev/null || true
tar -C /tmp/val -cJf $OUT/logs.tar.xz logs 2>/dev/null || true

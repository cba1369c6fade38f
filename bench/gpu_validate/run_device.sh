#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool) with .device-carry/ carried:
#   .device-carry/llama.cpp.tar.xz   llama.cpp's source from the xllamacpp sdist (thirdparty/llama.cpp, trimmed)
#   .device-carry/headers.tar.xz     the validation models' headers (pack_models.py) + sizes.json
#   .device-carry/repo.tar.xz        operator/ and bench/ of the checkout under test (the device may get another)
#   .device-carry/whl/               pydantic wheels (the device image has no pydantic)
#   .device-carry/bin.tar.xz.part*   optional: binaries built by an earlier call (skips the build)
# Usage: bash .device-carry/run_device.sh PLAN.json [DEADLINE_S]
#   PLAN: {"lane0": [cases on GPU 0], "lane1": [cases on GPU 1], "dual": [cases on both, after the lanes]}
set -euo pipefail
PLAN=${1:?plan}
DEADLINE=${2:-540}
C=$PWD/.device-carry
T0=$(date +%s)
export CUDA_DEVICE_ORDER=PCI_BUS_ID NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $C/whl/*.whl
mkdir -p /tmp/src /tmp/models /tmp/repo
tar -C /tmp/src -xJf $C/llama.cpp.tar.xz
tar -C /tmp/repo -xJf $C/repo.tar.xz
export PYTHONPATH=/tmp/site:/tmp/src/llama.cpp/gguf-py
BIN=/tmp/src/llama.cpp/build/bin
TARGETS="llama-fit-params llama-batched-bench llama-mtmd-cli"
if ls $C/bin.tar.xz.part* >/dev/null 2>&1; then
  mkdir -p $BIN && cat $C/bin.tar.xz.part* | tar -C $BIN -xJf -
  echo "binaries from the carry"
else
  cd /tmp/src/llama.cpp
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DGGML_NATIVE=ON > /tmp/cmake.log 2>&1 || { tail -40 /tmp/cmake.log; exit 1; }
  cmake --build build -j32 --target $TARGETS > /tmp/build.log 2>&1 || { tail -60 /tmp/build.log; exit 1; }
  cd - >/dev/null
  echo "built in $(( $(date +%s) - T0 )) s"
  (cd $BIN && tar -cf - $TARGETS $(ls *.so* 2>/dev/null) | xz -T32 -6 | split -b 15M - "$OUT/bin.tar.xz.part")
  ls -la $OUT
fi
export LD_LIBRARY_PATH=$BIN:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version --format=csv
tar -C /tmp/models -xJf $C/headers.tar.xz
python3 - <<'PY'
import json, os
for name, size in json.load(open(".device-carry/sizes.json")).items():
    p = f"/tmp/models/{name}.gguf"
    if os.path.exists(p):
        os.truncate(p, size)
from PIL import Image
Image.new("RGB", (640, 480), (120, 80, 40)).save("/tmp/models/image.png")
PY
cd /tmp/repo
split_plan() { python3 -c "import json,sys; json.dump(json.load(open('$1')).get('$2', []), open('$3', 'w'))"; }
for s in lane0 lane1 dual; do split_plan "$C/$PLAN" $s /tmp/plan-$s.json; done
REMAIN=$(( DEADLINE - ( $(date +%s) - T0 ) ))
NDUAL=$(python3 -c "import json; print(len(json.load(open('/tmp/plan-dual.json'))))")
LANE_DEADLINE=$(( NDUAL > 0 ? REMAIN - 70 * NDUAL : REMAIN ))
for lane in 0 1; do
  OUT_RESULTS=$OUT/results-lane$lane.jsonl PYTHONUNBUFFERED=1 python3 bench/gpu_validate/validate.py --bin $BIN \
    --models /tmp/models --out /tmp/val$lane --plan /tmp/plan-lane$lane.json --gpus $lane \
    --deadline "$LANE_DEADLINE" > /tmp/lane$lane.log 2>&1 &
done
wait || true
cat /tmp/lane0.log /tmp/lane1.log | grep -v "^ *$" | tail -80
REMAIN=$(( DEADLINE - ( $(date +%s) - T0 ) ))
OUT_RESULTS=$OUT/results-dual.jsonl PYTHONUNBUFFERED=1 python3 bench/gpu_validate/validate.py --bin $BIN \
  --models /tmp/models --out /tmp/vald --plan /tmp/plan-dual.json --gpus 0,1 --deadline "$REMAIN" 2>&1 | tail -40 || true
tar -C /tmp -cJf $OUT/logs.tar.xz val0/logs val1/logs vald/logs lane0.log lane1.log 2>/dev/null || true
echo "total $(( $(date +%s) - T0 )) s"

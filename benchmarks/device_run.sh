#!/usr/bin/env bash
# One prepared run on the device machine (an H100/H200 lent to the session): the GPU-side
# benchmarks and the gpu-marked tests, all results packed into $OUT/device_results.tgz.
# Usage there: bash benchmarks/device_run.sh   (from the repository root; OUT set by the tool)
set -u
OUT=${OUT:-/tmp/equikit_device}
W=$OUT/work
mkdir -p "$W"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
# optional wheels carried in .whl (cayleypy and what it needs beyond the image)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    > "$W/wheels.log" 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
  python3 -c "import e3nn; print('e3nn', e3nn.__version__)" || true
  nproc; uptime
} > "$W/device_info.txt" 2>&1
timeout 150 python3 benchmarks/device_sh.py --out "$W" > "$W/device_sh.log" 2>&1
timeout 120 python3 benchmarks/check_overhead.py --device cuda --threads 8 --out "$W" > "$W/check_overhead_cuda.log" 2>&1
if [ -f benchmarks/cayley_gpu.py ]; then
  timeout 260 python3 benchmarks/cayley_gpu.py --device cuda --time-budget 200 --out "$W" > "$W/cayley_gpu.log" 2>&1
fi
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests > "$W/pytest_gpu.log" 2>&1
tar czf "$OUT/device_results.tgz" -C "$W" . && rm -rf "$W"
ls -la "$OUT"  # results: benchmarks/results/device_<kind>/

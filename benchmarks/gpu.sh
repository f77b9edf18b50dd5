#!/usr/bin/env bash
# One-shot GPU session: the CUDA tests, then the benchmark on the device, results under $OUT (or ./gpu-results).
# Prepared so that a short window on a GPU machine is enough; nothing here has run on a GPU yet.
#
#   bash benchmarks/gpu.sh            # ~10 min on one GPU: tests (~1 min), quick benchmark, then the real-size rows
set -u
cd "$(dirname "$0")/.."
out="${OUT:-gpu-results}"
mkdir -p "$out"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} > "$out/machine.txt" 2>&1
# 1. Every CUDA test (they skip on a CPU-only machine), and the device-parametrised ones.
timeout 300 python3 -m pytest -q tests/test_cuda.py tests/test_sets.py tests/test_robust.py -k "cuda or sets" > "$out/tests.txt" 2>&1
echo "tests exit $?" >> "$out/tests.txt"
# 2. The benchmark on the device (float64 and float32), markdown + raw JSON; each step bounded.
timeout 240 python3 benchmarks/bench.py --device cuda --quick --no-cli --markdown --json "$out/quick.json" > "$out/quick.md" 2> "$out/quick.log"
echo "quick exit $?" >> "$out/quick.log"
timeout 300 python3 benchmarks/bench.py --device cuda --no-cli --markdown --only-real --today-limit 20 --json "$out/real.json" > "$out/real.md" 2> "$out/real.log"
echo "real exit $?" >> "$out/real.log"
ls -l "$out"

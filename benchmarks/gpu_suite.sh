#!/usr/bin/env bash
# Every GPU check of this project in one run, sized for one device session (< 8 minutes on an
# H100): the CUDA tests, then the training-throughput and sharpness benchmarks. Results go to
# $OUT (the device tool returns that folder).
#
# Here, once:  mkdir -p .whl && cp ../shared/gpu-wheels/*.whl .whl/     (.whl/ is git-ignored)
# Device:      run(command="bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=540)
#
# The GPU image has torch, Lightning and scipy but not hydra-core / omegaconf / antlr4 /
# mlxtend: they travel as wheels. MLflow does not: every run here uses logger=none.
set -u
OUT=${OUT:-/tmp/gpu_suite}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep going on failure
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

step cuda_tests 90 python3 -m pytest -q -p no:cacheprovider tests/analysis/test_cuda.py \
    "tests/test_fast_paths.py::test_cuda_graph_replay_equals_eager_steps"
step train_throughput 240 python3 benchmarks/train_throughput.py --device cuda \
    --depths 2 6 12 18 --n-train 60000 --epochs 2 --json "$OUT/train_throughput.json"
step hessian 180 python3 benchmarks/hessian_benchmark.py --device cuda --depths 6 12 18 \
    --n-samples 60000 --chunk-size auto --no-power
cat "$OUT/summary.txt"

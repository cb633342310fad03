#!/usr/bin/env bash
# Every GPU check of this project in one run, sized for one device session: at most 6 minutes
# of step limits (CUDA tests first, then the training-throughput and sharpness benchmarks),
# leaving time to rerun within a 15-minute device budget. Every table goes to $OUT as JSON and
# Markdown (the device tool returns that folder); paste them into BENCHMARKS.md with
#   python benchmarks/paste_gpu_results.py <the returned folder>
#
# Here, once:  mkdir -p .whl && cp ../shared/gpu-wheels/*.whl .whl/     (.whl/ is git-ignored)
# Device:      run(command="bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=420)
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
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
: > "$OUT/summary.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep going on failure
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "$name: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

# Step limits: 90 + 110 + 70 + 40 + 50 = 360 s.
step cuda_tests 90 python3 -m pytest -q -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml" \
    tests/analysis/test_cuda.py tests/test_cuda_training.py \
    "tests/test_fast_paths.py::test_cuda_graph_replay_equals_eager_steps" \
    "tests/test_sam.py::test_cuda_graph_replay_of_sam_equals_eager_steps"
step train_throughput 110 python3 benchmarks/train_throughput.py --device cuda \
    --depths 2 6 18 --n-train 60000 --epochs 2 \
    --json "$OUT/train_throughput.json" --markdown "$OUT/train_throughput.md"
# The trace and density (up to 220 more HVPs per depth) at depth 6 only, in a step of their own.
step hessian 70 python3 benchmarks/hessian_benchmark.py --device cuda --depths 6 18 \
    --n-samples 60000 --chunk-size auto --no-power --repeats 2 --no-spectrum \
    --json "$OUT/hessian.json" --markdown "$OUT/hessian.md"
step hessian_spectrum 40 python3 benchmarks/hessian_benchmark.py --device cuda --depths 6 \
    --n-samples 60000 --chunk-size auto --no-power --repeats 1 \
    --json "$OUT/hessian_spectrum.json" --markdown "$OUT/hessian_spectrum.md"
# The 16-job command-line sweep, basic vs batched launcher, end to end (issue 24).
step sweep_throughput 50 python3 benchmarks/sweep_throughput.py --device gpu --logger none \
    --epochs 3 --out "$OUT/sweep_throughput.json"
cat "$OUT/summary.txt"

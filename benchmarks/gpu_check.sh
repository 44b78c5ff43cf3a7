#!/usr/bin/env bash
# The device check of the CuPy backend, on a machine with an NVIDIA GPU and no network.
#
#   bash benchmarks/gpu_check.sh            # from the repository root; finishes within 5 minutes
#
# Needs (already installed there): Python 3.12, numpy, cupy-cuda13x (or cupy-cuda12x), torch, onnx, onnxruntime,
# pytest. It installs kiln itself without dependencies or network, runs the CuPy backend's GPU tests with the GPU
# required (a skip for want of a GPU fails instead), then as much of the backend's CPU-side tests (stand-ins, emulated
# kernels; CI runs them) as the benchmark's time allows, then benchmarks kiln-cupy against PyTorch eager and
# torch.compile on W1 (batch 128 and 4096) and a GPT-2-small-shaped step, and W1 in float16 (batch 4096) against
# torch eager in float16 and torch.autocast, printing one table (rows past the time budget say so); with time left, the
# GPU time of each op of kiln's GPT step (benchmarks/gpu_profile.py, informational: it does not change the exit status).
# Environment: PYTHON (default python3), TOTAL_S (default 285, the whole run's limit in seconds).

set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TOTAL_S=${TOTAL_S:-285}
START=$SECONDS
left() { echo $(( TOTAL_S - (SECONDS - START) )); }

echo "== installing kiln (no dependencies, no build isolation: no network needed)"
install() { timeout 90 "$PYTHON" -m pip install -q --no-deps --no-build-isolation . ; }
# a distribution's own Python may be "externally managed" (PEP 668): on a throwaway device machine, install anyway
if ! install && ! PIP_BREAK_SYSTEM_PACKAGES=1 install; then
    echo "gpu_check: 'pip install --no-deps --no-build-isolation .' failed; is setuptools installed?" >&2
    exit 1
fi
"$PYTHON" -c 'import kiln.backends as b, cupy; print("backends:", b.available()); print("cupy", cupy.__version__, "on", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())'

# pytest-xdist, where installed, spreads the first-use kernel compiles (NVRTC, CPU-bound) over 4 processes
WORKERS=$("$PYTHON" -c 'import xdist' 2>/dev/null && echo "-n 4")
PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider -o addopts="" $WORKERS -rfE --durations=10)
GPU_TESTS=(tests/backends_cupy/test_cupy_gpu.py tests/backends_cupy/test_cupy_names.py tests/backends_cupy/test_cupy_wrapped_kernels.py)

echo "== CuPy backend tests on the GPU (required), $(left) s left"
KILN_REQUIRE_GPU=1 timeout $(( $(left) * 50 / 100 )) "${PYTEST[@]}" "${GPU_TESTS[@]}"
tests_rc=$?
[ $tests_rc -eq 124 ] && echo "gpu_check: the GPU tests ran past their share of the time limit" >&2

# the rest runs on stand-ins and the CPU (CI runs it too): what time the benchmark can spare, not counted in the verdict
rest_s=$(( $(left) - 130 ))
if [ $rest_s -ge 20 ]; then
    echo "== the rest of the CuPy backend's tests (stand-ins for CuPy, kernels emulated on the CPU), $(left) s left"
    ignores=(); for t in "${GPU_TESTS[@]}"; do ignores+=(--ignore="$t"); done
    timeout $rest_s "${PYTEST[@]}" "${ignores[@]}" tests/backends_cupy
    rest_rc=$?
    [ $rest_rc -eq 124 ] && echo "gpu_check: the CPU-side tests ran out of their time (CI runs them)" >&2
else
    echo "gpu_check: no time left for the CPU-side CuPy tests (CI runs them)"
fi

echo "== benchmark, $(left) s left"
budget=$(( $(left) - 40 ))
timeout $(( $(left) - 5 )) "$PYTHON" benchmarks/gpu_benchmark.py --budget-s $(( budget > 10 ? budget : 10 ))
bench_rc=$?
[ $bench_rc -eq 124 ] && echo "gpu_check: the benchmark ran past the time limit" >&2

echo "== per-op GPU time of the kiln-cupy GPT step (informational), $(left) s left"
if [ "$(left)" -gt 45 ]; then
    timeout $(( $(left) - 5 )) "$PYTHON" benchmarks/gpu_profile.py --top 30 || echo "gpu_check: gpu_profile.py did not finish (exit $?)" >&2
else
    echo "gpu_check: too little time left for benchmarks/gpu_profile.py; run it on its own"
fi

echo "== done in $(( SECONDS - START )) s: tests exit $tests_rc, benchmark exit $bench_rc"
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ]

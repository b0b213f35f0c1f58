#!/usr/bin/env bash
# The GPU check of issue #23 in one go: on a Linux machine with one NVIDIA GPU, install
# TensorRT 10, cuda-python and onnxruntime-gpu into a venv with this repository (no
# torch: the vehicle path needs none), then run benchmarks/gpu_check.py, which builds the
# engines, compares their labels with ONNX Runtime on the CPU, times the pipeline and
# writes benchmarks/GPU.md as it goes.
#
#   bash benchmarks/gpu_check.sh                                  # wheels from PyPI
#   GPU_CHECK_WHEELS=/path/to/wheels bash benchmarks/gpu_check.sh # offline: a wheel folder
#
# Everything, the install included, keeps inside GPU_CHECK_BUDGET seconds (470: under 8
# minutes); each step has its own limit, and a run cut off leaves a partial GPU.md.
set -euo pipefail
started=$(date +%s)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${GPU_CHECK_VENV:-/tmp/seg_gpu_check_venv}
budget=${GPU_CHECK_BUDGET:-470}
# TensorRT 10 (the engine code is written against its API), built for CUDA 12, which
# runs on any driver from 525 on; onnxruntime-gpu for CUDA 12 / cuDNN 9.
TENSORRT_PIN=${TENSORRT_PIN:-tensorrt-cu12==10.16.1.11}
CUDA_PYTHON_PIN=${CUDA_PYTHON_PIN:-cuda-python==12.9.4}
ORT_PIN=${ORT_PIN:-onnxruntime-gpu==1.23.2}

report="$repo/benchmarks/GPU.md"
# An install that fails leaves its reason in the report (gpu_check.py rewrites it when it runs).
install_failed() {
    printf '\n**%s: the install failed (%s); nothing was measured.**\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >> "$report"
    echo "gpu_check: the install failed: $1" >&2
    exit 2
}
pip_options=(--quiet --disable-pip-version-check --no-input)
if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
    pip_options+=(--no-index --find-links "$GPU_CHECK_WHEELS")
fi

if ! nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; then
    echo "gpu_check: nvidia-smi finds no NVIDIA GPU; nothing to check" >&2
    exit 2
fi
if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv"; then
    echo "gpu_check: python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 2
fi
pip=("$venv/bin/python" -m pip)
echo "gpu_check: installing into $venv"
# The package's own requirements bring the CPU onnxruntime (and what it needs);
# onnxruntime-gpu replaces it. Both install the same 'onnxruntime' module, so the CPU one
# goes first and the GPU one is reinstalled over whatever is left (a venv used before).
timeout 150 "${pip[@]}" install "${pip_options[@]}" -e "$repo" \
    || install_failed "pip install -e the package"
timeout 30 "${pip[@]}" uninstall --quiet -y onnxruntime || install_failed "removing onnxruntime"
timeout 180 "${pip[@]}" install "${pip_options[@]}" "$TENSORRT_PIN" "$CUDA_PYTHON_PIN" \
    || install_failed "$TENSORRT_PIN, $CUDA_PYTHON_PIN"
timeout 60 "${pip[@]}" install "${pip_options[@]}" --force-reinstall --no-deps "$ORT_PIN" \
    || install_failed "$ORT_PIN"
echo "gpu_check: installed in $(( $(date +%s) - started )) s"

cd "$repo"
GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh" \
    exec "$venv/bin/python" benchmarks/gpu_check.py check --started "$started" \
    --budget "$budget" "$@"

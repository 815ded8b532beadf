#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs on a GPU machine that has CUDA 13, PyTorch and
# JAX but no Rust toolchain and no network: stripped release binaries of dgym (CUDA and
# CPU), the device test binary built with the CUDA feature, the config it trains, and the
# PyTorch reference. Run it here (Rust, network for the nvcc wheels); copy the folder over.
#
#   scripts/gpu_bundle.sh [OUT_DIR]      (default target/gpu-bundle; must stay under 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/gpu-bundle}"
rm -rf "$out"
mkdir -p "$out/bin" "$out/configs" "$out/bench"

# The CUDA build (nvcc compiles dfdx's kernels to PTX for sm_90, embedded in the binary).
scripts/cuda_build.sh --release
cuda_root="$(target/cuda-venv/bin/python -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
test_log="$(mktemp)"
PATH="$cuda_root/bin:$PWD/target/cuda-shims:$PATH" CUDA_ROOT="$cuda_root" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" \
    cargo test --release --features cuda --target-dir target/cuda --test device --no-run \
    --message-format=json-render-diagnostics > "$test_log"
device_test="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "device" and m.get("executable"):
        print(m["executable"])' "$test_log")"
rm -f "$test_log"
cargo build --release -p denoise-gym-experiments --bin dgym

cp target/cuda/release/dgym "$out/bin/dgym-cuda"
cp target/release/dgym "$out/bin/dgym-cpu"
cp "$device_test" "$out/bin/device-test-cuda"
strip "$out"/bin/*
cp experiments/configs/gcd-8gaussians.toml "$out/configs/"
cp bench/torch_reference.py bench/bench_common.py bench/compare.py "$out/bench/"
cp scripts/gpu_check.sh "$out/"
size=$(du -sm "$out" | cut -f1)
echo "wrote $out ($size MiB)"
[ "$size" -lt 64 ] || { echo "gpu_bundle.sh: $out is $size MiB, over 64" >&2; exit 1; }

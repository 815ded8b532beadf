#!/usr/bin/env bash
# Builds the workspace with the `cuda` feature for real on a machine without a GPU or a
# CUDA install: nvcc (CUDA 13, from NVIDIA's PyPI wheels) compiles dfdx's kernels to PTX,
# and the binaries link against stubs of the CUDA libraries (scripts/cuda_stubs.py) whose
# SONAMEs are the real ones, so they load the real libraries on a GPU machine. Fails if
# any kernel's PTX is missing or empty.
#
#   scripts/cuda_build.sh [--release] [extra cargo build arguments]
#
# It builds into target/cuda (CARGO_TARGET_DIR), apart from the CPU build's target/debug,
# whose binaries it would otherwise replace with ones that need the CUDA libraries.
#
# CUDA_COMPUTE_CAP (default 90, an H100) is the architecture the PTX is compiled for:
# dfdx's build script asks `nvidia-smi` for it, so without a GPU a shim answers.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/cuda-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r scripts/requirements-cuda.txt
cuda_root="$("$venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
[ -x "$cuda_root/bin/nvcc" ] || { echo "cuda_build.sh: no nvcc under $cuda_root" >&2; exit 1; }

cudarc_src="$(cargo metadata --format-version 1 --features cuda | "$venv/bin/python" -c '
import json, os, sys
meta = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == "cudarc"))')/src"
python3 scripts/cuda_stubs.py "$cudarc_src" "$cuda_root/lib64/stubs"

shims="$PWD/target/cuda-shims"
mkdir -p "$shims"
compute_cap="${CUDA_COMPUTE_CAP:-90}"
if ! command -v nvidia-smi >/dev/null; then
    printf '#!/bin/sh\n# A stand-in for dfdx'"'"'s build script: the compute capability to compile for.\necho compute_cap\necho %s\n' \
        "${compute_cap:0:-1}.${compute_cap: -1}" > "$shims/nvidia-smi"
    chmod +x "$shims/nvidia-smi"
fi

log="$(mktemp)"
PATH="$cuda_root/bin:$shims:$PATH" CUDA_ROOT="$cuda_root" CUDA_COMPUTE_CAP="$compute_cap" \
    cargo build --workspace --features cuda --target-dir target/cuda --message-format=json-render-diagnostics "$@" > "$log"

# dfdx's build output: one .ptx per .cu kernel, none of them empty.
"$venv/bin/python" - "$log" "$compute_cap" <<'PY'
import glob, json, os, sys
log, compute_cap = sys.argv[1], sys.argv[2]
out_dirs, kernels = set(), set()
for line in open(log):
    message = json.loads(line)
    if "/dfdx" not in message.get("package_id", "").replace("#", "/"):
        continue
    if message.get("reason") == "build-script-executed":
        out_dirs.add(message["out_dir"])
    if message.get("reason") == "compiler-artifact":
        src = os.path.join(os.path.dirname(message["manifest_path"]), "src")
        kernels |= {os.path.basename(p)[:-3] for p in glob.glob(f"{src}/**/*.cu", recursive=True)}
if len(out_dirs) != 1:
    sys.exit(f"cuda_build.sh: expected one dfdx build output, found {sorted(out_dirs)}")
out_dir = out_dirs.pop()
ptx = sorted(glob.glob(os.path.join(out_dir, "*.ptx")))
missing = sorted(kernels - {os.path.basename(p)[:-4] for p in ptx})
empty = [p for p in ptx if os.path.getsize(p) == 0]
wrong_target = [p for p in ptx if f".target sm_{compute_cap}" not in open(p).read()]
print(f"dfdx PTX in {out_dir}: {len(ptx)} of {len(kernels)} kernels, {sum(map(os.path.getsize, ptx))} bytes")
if not kernels or missing or empty or wrong_target:
    sys.exit(f"cuda_build.sh: PTX missing {missing}, empty {empty} or not for sm_{compute_cap} {wrong_target}")
PY
rm -f "$log"
echo "cuda build: ok (nvcc $("$cuda_root/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_$compute_cap)"

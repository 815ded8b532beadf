#!/usr/bin/env bash
# Times `dgym bench`, its PyTorch reference (eager and under torch.compile) and its JAX
# reference (jax.jit; the DSM and sampling rows), one after the other on this machine, and
# prints the side-by-side table (also written to bench/out/compare.md). Run by hand:
#
#   bench/compare.sh [--quick] [--rows dsm_step,gcd_reinforce] [--batches 64,256] [--block-seconds S]
#
# The arguments go to every bench. THREADS=N limits dgym and torch to N threads
# (RAYON_NUM_THREADS for dgym, --threads for torch); by default each uses every core, as
# JAX always does. Run on an idle machine:
# other load disturbs both, and PyTorch's OpenMP pool far more than rayon.
set -euo pipefail

cd "$(dirname "$0")/.."

cargo build --release -p denoise-gym-experiments --bin dgym

venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# Install only when a pinned requirement is missing or at another version.
if ! "$venv/bin/python" - bench/requirements.txt <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    try:
        installed = version(name.strip())
    except PackageNotFoundError:
        sys.exit(1)
    if pinned and installed.split("+", 1)[0] != pinned.strip():
        sys.exit(1)
PY
then
    "$venv/bin/pip" install -r bench/requirements.txt
fi

torch_threads=()
if [ -n "${THREADS:-}" ]; then
    export RAYON_NUM_THREADS="$THREADS"
    torch_threads=(--threads "$THREADS")
fi

mkdir -p bench/out
echo "== dgym bench" >&2
target/release/dgym bench --json bench/out/dgym.json "$@"
echo "== PyTorch eager" >&2
"$venv/bin/python" bench/torch_reference.py --json bench/out/torch.json "${torch_threads[@]}" "$@"
echo "== PyTorch, torch.compile on every network (warm-up = compilation, reported apart)" >&2
"$venv/bin/python" bench/torch_reference.py --compile --json bench/out/torch_compile.json "${torch_threads[@]}" "$@"
echo "== JAX, the whole step under jax.jit (dsm_step and the sampling rows only)" >&2
"$venv/bin/python" bench/jax_reference.py --json bench/out/jax.json "$@"
echo >&2
"$venv/bin/python" bench/compare.py bench/out/dgym.json bench/out/torch.json bench/out/torch_compile.json \
    bench/out/jax.json --markdown bench/out/compare.md
echo "wrote bench/out/compare.md" >&2

#!/usr/bin/env bash
# The scaling figures (issue 25, item 5): seconds per iteration of `dsm_step` and
# `gcd_reinforce` against one axis at a time, dgym beside PyTorch eager, each axis a sweep:
#
#   batch    64 … 16,384 (T = 4, d = 2)
#   steps    T = 1 … 100 (batch 256)
#   dim      data dimension d = 2 … 256 (8 Gaussians on a sphere of radius 4: dgym's
#            data.dataset=gmm, torch_reference.py --dim; batch 256)
#   threads  1, 2, 4, … up to the cores (batch 1,024 and 4,096)
#
#   bench/scaling.sh [batch] [steps] [dim] [threads]     (default: all four)
#
# Writes bench/out/scaling/<axis>/<impl>-<value>.json, then docs/figures/scaling-<axis>.png
# (bench/plot_scaling.py). Uses bench/.venv as compare.sh makes it (VENV=... for another).
# Run on an idle machine; each sweep takes under 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p denoise-gym-experiments --bin dgym
venv="${VENV:-bench/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -r bench/requirements.txt
fi
py="$venv/bin/python"
axes=("$@")
[ ${#axes[@]} -gt 0 ] || axes=(batch steps dim threads)
common=(--rows dsm_step,gcd_reinforce --quick --block-seconds 0.2)
cores=$(nproc)

for axis in "${axes[@]}"; do
    out=bench/out/scaling/$axis
    rm -rf "$out"
    mkdir -p "$out"
    start=$(date +%s)
    case $axis in
    batch)
        for b in 64 256 1024 4096 16384; do
            target/release/dgym bench "${common[@]}" --batches "$b" --json "$out/dgym-$b.json" > /dev/null
            "$py" bench/torch_reference.py "${common[@]}" --batches "$b" --json "$out/torch-$b.json" > /dev/null
        done
        ;;
    steps)
        for t in 1 4 10 25 100; do
            target/release/dgym bench "${common[@]}" --batches 256 --set "policy.n_steps=$t" \
                --json "$out/dgym-$t.json" > /dev/null
            "$py" bench/torch_reference.py "${common[@]}" --batches 256 --n-steps "$t" \
                --json "$out/torch-$t.json" > /dev/null
        done
        ;;
    dim)
        for d in 2 8 32 64 256; do
            target/release/dgym bench "${common[@]}" --batches 256 --set data.dataset=gmm \
                --set "data.gmm_dim=$d" --json "$out/dgym-$d.json" > /dev/null
            "$py" bench/torch_reference.py "${common[@]}" --batches 256 --dim "$d" \
                --json "$out/torch-$d.json" > /dev/null
        done
        ;;
    threads)
        t=1
        while [ "$t" -le "$cores" ]; do
            RAYON_NUM_THREADS=$t target/release/dgym bench "${common[@]}" --batches 1024,4096 \
                --json "$out/dgym-$t.json" > /dev/null
            "$py" bench/torch_reference.py "${common[@]}" --batches 1024,4096 --threads "$t" \
                --json "$out/torch-$t.json" > /dev/null
            t=$((t * 2))
        done
        ;;
    *)
        echo "scaling.sh: unknown axis $axis (batch, steps, dim, threads)" >&2
        exit 2
        ;;
    esac
    echo "$axis: $(( $(date +%s) - start )) s" | tee "$out/wall_seconds.txt"
    "$py" bench/plot_scaling.py "$axis" "$out" "docs/figures/scaling-$axis.png"
done

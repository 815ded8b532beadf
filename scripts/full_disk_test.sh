#!/usr/bin/env bash
# A real full disk (a small tmpfs, root only): a tiny GCD run on it must stop with a clean
# error naming the file (no panic), and after the disk is grown the resume must end at
# the numbers of the same run on a roomy disk. Used by .ci/run; needs target/debug/dgym.
set -euo pipefail
cd "$(dirname "$0")/.."
dgym=target/debug/dgym
work="$(mktemp -d)"
disk="$work/disk"
mkdir -p "$disk"
cleanup() { umount "$disk" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
sets=(--set pretrain.iterations=60 --set policy.hidden=16 --set policy.depth=1
      --set eval.n_samples=200 --set eval.swd_directions=50 --set pretrain.log_every=5
      --set pretrain.checkpoint_every=20 --set run.quiet=true --set finetune.iterations=30
      --set finetune.batch_size=32 --set finetune.log_every=5 --set finetune.checkpoint_every=10
      --set reward.hidden=16 --set reward.depth=1 --set reward.grid_size=32
      --set reward.held_out=200 --set value_baseline.hidden=16 --set value_baseline.depth=1)
config=experiments/configs/ddpm-8gaussians.toml
"$dgym" train "$config" --out "$work/straight" "${sets[@]}" > /dev/null
size_kb=$(du -sk "$work/straight" | cut -f1)
for fraction in 3 5 7; do
    limit=$(( size_kb * fraction / 10 ))
    mount -t tmpfs -o size=${limit}k tmpfs "$disk"
    if "$dgym" train "$config" --out "$disk/run" "${sets[@]}" > "$work/out" 2> "$work/err"; then
        echo "full disk at ${limit} kB of ${size_kb}: the run did not fail"; exit 1
    fi
    if grep -q panicked "$work/err" || ! grep -q "No space left on device" "$work/err"; then
        echo "full disk at ${limit} kB: not a clean error:"; cat "$work/err"; exit 1
    fi
    mount -o remount,size=$(( size_kb * 4 ))k "$disk"
    "$dgym" train --resume "$disk/run" > /dev/null
    python3 - "$work/straight" "$disk/run" <<'PY'
import csv, sys
def rows(d):
    with open(f"{d}/metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
sys.exit(0 if a == b else f"resumed after a full disk: {len(a)} vs {len(b)} rows, not the same")
PY
    echo "full disk at ${limit} kB of ${size_kb} kB: clean error ($(grep -o 'error: .*' "$work/err" | head -c 160)); resumed to the same metrics"
    umount "$disk"
done

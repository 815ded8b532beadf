#!/usr/bin/env bash
# The GCD-versus-IPM study of issue 6 (docs/results.md, "GCD against IPM"): 8 Gaussians, T = 4,
# 2,000 fine-tuning iterations from the DSM sampler of the same seed, REINFORCE with the
# value baseline. GCD = the defaults (tau_H = 0.1, tau_v = 0.01, adaptive s_t^2);
# IPM = tau_H = tau_v = 0, and tau_H = tau_v = 0.1 (the value the entropy bound needs), 3 seeds
# each, on 8 Gaussians and on 8 Gaussians with unequal mode weights (where the entropy term
# should decide). Seed 0 only: the fixed velocity scale, 3x longer training, thin modes
# (std 0.1, sigma_1 = 0.05).
#
#   scripts/gcd_vs_ipm.sh [OUT_DIR] [JOBS]      (default runs/gcd-vs-ipm, 2 jobs)
#
# A finished run (summary.json present) is skipped, so the script can be stopped and
# started again. Tables: OUT_DIR/compare.md (every run, dgym compare) and OUT_DIR/groups.md
# (mean ± std over seeds, scripts/group_means.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gcd-vs-ipm}
JOBS=${2:-2}
cargo build --release -q -p denoise-gym-experiments
B=$PWD/target/release/dgym
mkdir -p "$OUT"

# GCD = DxMI's coefficients (tau_v = 0.01); gcd-8gaussians.toml itself now uses tau_v = tau_H.
GCD="experiments/configs/gcd-8gaussians.toml --set agent.tau_velocity=0.01"
IPM="--set agent.tau_entropy=0 --set agent.tau_velocity=0"
UNEQUAL="--set data.mixture_weights=[8,4,2,1,1,1,1,2]"
THIN="--set data.mixture_std=0.1 --set policy.last_sigma=0.05"
TAU_EQUAL="--set agent.tau_velocity=0.1"

# One line per run: NAME CONFIG ARGS... (pretraining runs first; fine-tuning starts from them).
pretrain_jobs() {
  for s in 0 1 2; do
    echo "pretrain-s$s experiments/configs/ddpm-8gaussians.toml --set run.seed=$s"
    echo "pretrain-unequal-s$s experiments/configs/ddpm-8gaussians.toml --set run.seed=$s $UNEQUAL"
  done
  echo "pretrain-thin-s0 experiments/configs/ddpm-8gaussians.toml --set run.seed=0 $THIN"
}
finetune_jobs() {
  for s in 0 1 2; do
    from="--set run.seed=$s --set finetune.init_from=$OUT/pretrain-s$s"
    echo "gcd-s$s $GCD $from"
    echo "ipm-s$s $GCD $from $IPM"
    ufrom="--set run.seed=$s --set finetune.init_from=$OUT/pretrain-unequal-s$s $UNEQUAL"
    echo "gcd-unequal-s$s $GCD $ufrom"
    echo "ipm-unequal-s$s $GCD $ufrom $IPM"
    echo "gcd-tau-equal-s$s $GCD $from $TAU_EQUAL"
    echo "gcd-tau-equal-unequal-s$s $GCD $ufrom $TAU_EQUAL"
  done
  from="--set run.seed=0 --set finetune.init_from=$OUT/pretrain-s0"
  echo "gcd-fixed-scale-s0 $GCD $from --set agent.velocity_scale=fixed"
  from="$from --set finetune.iterations=6000"
  echo "gcd-long-s0 $GCD $from"
  echo "ipm-long-s0 $GCD $from $IPM"
  tfrom="--set run.seed=0 --set finetune.init_from=$OUT/pretrain-thin-s0 $THIN"
  echo "gcd-thin-s0 $GCD $tfrom"
  echo "ipm-thin-s0 $GCD $tfrom $IPM"
}

run_one() {
  name=$1; shift; config=$1; shift
  dir=$OUT/$name
  if [ -f "$dir/eval.json" ]; then return 0; fi
  if [ -f "$dir/summary.json" ]; then :;
  elif [ -f "$dir/checkpoints/last.safetensors" ]; then "$B" train --resume "$dir" > "$dir.log" 2>&1;
  else rm -rf "$dir"; "$B" train "$config" --out "$dir" "$@" > "$dir.log" 2>&1; fi
  "$B" eval "$dir" >> "$dir.log" 2>&1
  echo "finished $name"
}
export -f run_one
export B OUT
pretrain_jobs | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
finetune_jobs | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
"$B" compare "$OUT"/gcd-*/ "$OUT"/ipm-*/ --out "$OUT" > /dev/null
scripts/group_means.py "$OUT/compare.csv" swd mmd2 mode_weight_tv off_mode_fraction energy_kl \
  sigma_2 sigma_3 sigma_4 > "$OUT/groups.md"
echo "per run: $OUT/compare.md; mean ± std over seeds: $OUT/groups.md"

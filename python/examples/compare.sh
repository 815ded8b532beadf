#!/usr/bin/env bash
# The Python examples against the Rust REINFORCE agent at an equal number of episodes
# (ITERATIONS × 256, T = 4), all from the same pretrained sampler (runs/ddpm-8gaussians), each
# scored by dgym eval's metrics on 10,000 samples (seed 1), over the training seeds SEEDS
# (mean ± std). Needs the package and the examples' extras in the active Python:
# pip install ./python torch tensorboard stable-baselines3
#
#     bash python/examples/compare.sh [ITERATIONS] [OUT] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-300}
out=${2:-runs/python-examples}
shift $(( $# > 2 ? 2 : $# ))
seeds=("${@:-0}")
[ ${#seeds[@]} -gt 0 ] || seeds=(0)
mkdir -p "$out"
dgym() { cargo run -q --release -p denoise-gym-experiments --bin dgym -- "$@"; }
[ -d runs/ddpm-8gaussians ] || dgym train experiments/configs/ddpm-8gaussians.toml --out runs/ddpm-8gaussians --set run.quiet=true
config_of() { [ "$1" = oracle ] && echo experiments/configs/oracle-8gaussians.toml || echo experiments/configs/gcd-8gaussians.toml; }
for seed in "${seeds[@]}"; do
    for reward in oracle ebm; do
        [ -f "$out/seed=$seed/ppo-$reward/eval.json" ] || python python/examples/ppo.py --init runs/ddpm-8gaussians \
            --reward "$reward" --iterations "$iterations" --seed "$seed" --out "$out/seed=$seed/ppo-$reward"
        [ -d "$out/seed=$seed/rust-$reward" ] || dgym train "$(config_of $reward)" --out "$out/seed=$seed/rust-$reward" \
            --set finetune.init_from=runs/ddpm-8gaussians --set finetune.iterations="$iterations" \
            --set run.seed="$seed" --set run.quiet=true
    done
    [ -f "$out/seed=$seed/sb3-native/eval.json" ] || python python/examples/sb3_ppo.py --vec native \
        --episodes $((iterations * 256)) --seed "$seed" --out "$out/seed=$seed/sb3-native"
done
python - "$out" "$iterations" "${seeds[@]}" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
import denoise_gym as dg
out, iterations, seeds = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def rust(name, seed):
    run = dg.load_run(out / f"seed={seed}" / name)
    return dg.evaluate(run.sample(10_000, seed=1), "8gaussians", seed=1), run.summary["finetune"]["wall_time_s"]
def python_run(name, seed):
    result = json.loads((out / f"seed={seed}" / name / "eval.json").read_text())
    return result["eval"], result["wall_time_s"]
rows = [("DSM start (runs/ddpm-8gaussians)", "-", [(dg.evaluate(dg.load_run("runs/ddpm-8gaussians").sample(10_000, seed=1), "8gaussians", seed=1), None)])]
for reward, label in (("oracle", "oracle"), ("ebm", "EBM (GCD)")):
    rows.append((f"Rust REINFORCE, {label} reward", iterations * 256, [rust(f"rust-{reward}", s) for s in seeds]))
    rows.append((f"Python PyTorch PPO (ppo.py), {label} reward", iterations * 256, [python_run(f"ppo-{reward}", s) for s in seeds]))
rows.append(("Stable-Baselines3 PPO from scratch, oracle reward", iterations * 256, [python_run("sb3-native", s) for s in seeds]))
def cell(values, digits):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f}" + (f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else "")
print(f"seeds: {' '.join(seeds)}")
print("| sampler | episodes | SWD | MMD² | off-mode fraction | modes covered | wall time (s) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, episodes, results in rows:
    metrics = [m for m, _ in results]
    walls = [w for _, w in results if w is not None]
    print(f"| {name} | {episodes} | {cell([m['swd'] for m in metrics], 4)} | {cell([m['mmd2'] for m in metrics], 4)} | "
          f"{cell([m['off_mode_fraction'] for m in metrics], 3)} | {cell([m['modes_covered'] for m in metrics], 1)} | "
          f"{cell(walls, 1) if walls else ''} |")
PY

#!/usr/bin/env bash
# The Python examples against the Rust REINFORCE agent at an equal number of episodes
# (ITERATIONS × 256, T = 4), all from the same pretrained sampler (runs/ddpm-8gaussians), each
# scored by dgym eval's metrics on 10,000 samples (seed 1). Needs the package and the
# examples' extras in the active Python: pip install ./python torch tensorboard stable-baselines3
#
#     bash python/examples/compare.sh [ITERATIONS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-300}
out=${2:-runs/python-examples}
mkdir -p "$out"
dgym() { cargo run -q --release -p denoise-gym-experiments --bin dgym -- "$@"; }
[ -d runs/ddpm-8gaussians ] || dgym train experiments/configs/ddpm-8gaussians.toml --out runs/ddpm-8gaussians --set run.quiet=true
for reward in oracle ebm; do
    python python/examples/ppo.py --init runs/ddpm-8gaussians --reward "$reward" --iterations "$iterations" --out "$out/ppo-$reward"
done
config_of() { [ "$1" = oracle ] && echo experiments/configs/oracle-8gaussians.toml || echo experiments/configs/gcd-8gaussians.toml; }
for reward in oracle ebm; do
    [ -d "$out/rust-$reward" ] || dgym train "$(config_of $reward)" --out "$out/rust-$reward" \
        --set finetune.init_from=runs/ddpm-8gaussians --set finetune.iterations="$iterations" --set run.quiet=true
done
python python/examples/sb3_ppo.py --vec native --episodes $((iterations * 256)) --out "$out/sb3-native"
python - "$out" "$iterations" <<'PY'
import json, sys
from pathlib import Path
import denoise_gym as dg
out, iterations = Path(sys.argv[1]), int(sys.argv[2])
rows = []
start = dg.evaluate(dg.load_run("runs/ddpm-8gaussians").sample(10_000, seed=1), "8gaussians", seed=1)
rows.append(("DSM start (runs/ddpm-8gaussians)", "-", start))
for reward in ("oracle", "ebm"):
    rust = dg.evaluate(dg.load_run(out / f"rust-{reward}").sample(10_000, seed=1), "8gaussians", seed=1)
    rows.append((f"Rust REINFORCE, {reward} reward", iterations * 256, rust))
    ppo = json.loads((out / f"ppo-{reward}" / "eval.json").read_text())
    rows.append((f"Python PyTorch PPO (ppo.py), {reward} reward", ppo["episodes"], ppo["eval"]))
sb3 = json.loads((out / "sb3-native" / "eval.json").read_text())
rows.append(("Stable-Baselines3 PPO from scratch, oracle reward", sb3["episodes"], sb3["eval"]))
print("| sampler | episodes | SWD | MMD² | off-mode fraction | modes covered |")
print("|---|---:|---:|---:|---:|---:|")
for name, episodes, m in rows:
    print(f"| {name} | {episodes} | {m['swd']:.4f} | {m['mmd2']:.4f} | {m['off_mode_fraction']:.3f} | {m['modes_covered']:.0f} |")
PY

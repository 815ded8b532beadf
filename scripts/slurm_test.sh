#!/usr/bin/env bash
# Tests `dgym sweep --emit-slurm` on a real Slurm: installs Slurm and munge from Debian's
# packages on this one machine (root, no systemd needed), starts munged, slurmctld and
# slurmd with a private one-node slurm.conf, submits the job array of a tiny sweep,
# waits for it, and checks that every run finished exactly once. Exit 0 on success,
# 1 with a report of what is wrong otherwise.
#
#   sudo scripts/slurm_test.sh            # uses target/debug/dgym (built if missing)
#   DGYM=target/release/dgym scripts/slurm_test.sh
#
# Everything but the munge key lives in a temporary directory (SLURM_CONF points there);
# the daemons this script starts are stopped by their pid at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DGYM=${DGYM:-$ROOT/target/debug/dgym}
SHARDS=3
TIMEOUT_S=${TIMEOUT_S:-300}
started=$(date +%s)

say() { echo "[slurm_test $(($(date +%s) - started))s] $*"; }
fail() {
    say "FAIL: $*"
    exit 1
}

[ "$(id -u)" = 0 ] || fail "needs root (it installs packages and starts daemons)"
if [ ! -x "$DGYM" ]; then
    say "building dgym"
    cargo build -p denoise-gym-experiments
fi
DGYM=$(realpath "$DGYM")

# --- Packages ----------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
WORK=$(mktemp -d /tmp/dgym-slurm.XXXXXX)
chmod 755 "$WORK"
export SLURM_CONF=$WORK/slurm.conf
started_pids=()
cleanup() {
    for pid in "${started_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# --- munge ---------------------------------------------------------------------------------
mkdir -p /run/munge /etc/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 700 /etc/munge
chmod 400 /etc/munge/munge.key
if munge -n </dev/null >/dev/null 2>&1; then
    say "munged already running"
else
    su -s /bin/sh munge -c "/usr/sbin/munged --force"
    for _ in $(seq 50); do
        [ -s /run/munge/munged.pid ] && break
        sleep 0.1
    done
    started_pids+=("$(cat /run/munge/munged.pid)")
    munge -n </dev/null | unmunge >/dev/null || fail "munge does not work"
    say "munged started"
fi

# --- One-node slurm.conf -------------------------------------------------------------------
HOST=$(hostname -s)
CPUS=$(nproc)
mkdir -p "$WORK/state" "$WORK/spool"
cat >"$SLURM_CONF" <<EOF
ClusterName=dgymtest
SlurmctldHost=$HOST
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
NodeName=$HOST CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

say "$(sbatch --version)"
# Starts a daemon that writes $WORK/<name>.pid and remembers its pid.
start_daemon() {
    local name=$1
    shift
    "$@"
    for _ in $(seq 100); do
        [ -s "$WORK/$name.pid" ] && break
        sleep 0.1
    done
    [ -s "$WORK/$name.pid" ] || fail "$name did not start: $(tail -5 "$WORK/$name.log" 2>/dev/null)"
    started_pids+=("$(cat "$WORK/$name.pid")")
}
start_daemon slurmctld slurmctld -c
start_daemon slurmd slurmd
for _ in $(seq 300); do
    state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    sleep 0.1
done
[ "$state" = idle ] || fail "node $HOST is '$state', not idle: $(tail -5 "$WORK/slurmd.log")"
say "slurmctld and slurmd up; node $HOST ($CPUS CPUs) idle"

# --- A tiny sweep as a job array -----------------------------------------------------------
cat >"$WORK/tiny.toml" <<EOF
base = "$ROOT/experiments/configs/gcd-8gaussians.toml"
seeds = [0, 1]
metrics = ["swd", "mmd2"]

[set]
"policy.hidden" = 16
"policy.depth" = 1
"pretrain.iterations" = 40
"pretrain.checkpoint_every" = 20
"finetune.batch_size" = 32
"finetune.checkpoint_every" = 5
"reward.hidden" = 16
"reward.depth" = 1
"reward.grid_size" = 32
"reward.held_out" = 100
"value_baseline.hidden" = 16
"value_baseline.depth" = 1
"eval.n_samples" = 100
"eval.swd_directions" = 20
"eval.eval_every" = 0

[grid]
"policy.n_steps" = { name = "T", values = [2, 4] }

[[zip]]
name = "method"
labels = ["dsm", "gcd"]
"finetune.iterations" = [0, 10]
"finetune.init_from" = ["", "@method=dsm"]
EOF
SWEEP_DIR=$WORK/sweep
cd "$WORK"
"$DGYM" sweep tiny.toml --out "$SWEEP_DIR" --emit-slurm tiny.sbatch --shards $SHARDS
mapfile -t RUNS < <("$DGYM" sweep tiny.toml --out "$SWEEP_DIR" --dry-run | awk '/^  /{print $1}')
say "${#RUNS[@]} runs in $SHARDS shards"
JOB=$(sbatch --parsable tiny.sbatch)
say "submitted job array $JOB"
deadline=$(($(date +%s) + TIMEOUT_S))
while [ -n "$(squeue -h -j "$JOB" 2>/dev/null)" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || {
        squeue -j "$JOB"
        fail "job array $JOB still queued or running after ${TIMEOUT_S}s"
    }
    sleep 0.5
done
say "job array $JOB left the queue"

# --- Checks --------------------------------------------------------------------------------
problems=()
states=$(scontrol show job "$JOB" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | sort | uniq -c | tr -s ' ')
say "array task states:$states"
if scontrol show job "$JOB" | grep -o 'JobState=[A-Z_]*' | grep -vq COMPLETED; then
    problems+=("not every array task COMPLETED:$states")
fi
for i in $(seq $SHARDS); do
    out=$(ls "$SWEEP_DIR"/slurm-"${JOB}"_"$i".out 2>/dev/null || true)
    [ -n "$out" ] || problems+=("no output of array task $i")
done
for run in "${RUNS[@]}"; do
    dir=$SWEEP_DIR/$run
    [ -f "$dir/summary.json" ] || problems+=("$run: no summary.json")
    [ -f "$dir/eval.json" ] || problems+=("$run: no eval.json")
    n=$(grep -c '"start_time_unix"' "$dir/run.json" 2>/dev/null || echo 0)
    [ "$n" = 1 ] || problems+=("$run: trained $n times")
    done_lines=$(cat "$SWEEP_DIR"/slurm-"${JOB}"_*.out | grep -c "done $run " || true)
    [ "$done_lines" = 1 ] || problems+=("$run: finished by $done_lines array tasks")
done
extra=$(cd "$SWEEP_DIR" && find . -mindepth 2 -maxdepth 2 -type d -name 'seed=*' -not -path './logs/*' | wc -l)
[ "$extra" = "${#RUNS[@]}" ] || problems+=("$extra run directories for ${#RUNS[@]} runs")
grep -q '| 4 | gcd | 2/2 |' "$SWEEP_DIR/aggregate.md" 2>/dev/null \
    || problems+=("aggregate.md was not written by the last task, or is incomplete")

for i in $(seq $SHARDS); do
    echo "--- array task $i:"
    sed 's/^/    /' "$SWEEP_DIR"/slurm-"${JOB}"_"$i".out 2>/dev/null | grep -v '^    aggregate' || true
done
if [ ${#problems[@]} -gt 0 ]; then
    for p in "${problems[@]}"; do
        say "problem: $p"
    done
    fail "${#problems[@]} problems (files in $WORK)"
fi
say "PASS: ${#RUNS[@]} runs, each finished exactly once by one of $SHARDS array tasks; aggregate.md complete"
rm -rf "$WORK"

#!/usr/bin/env bash
# Sharded calibration on a real cluster engine (docs/cluster.md): starts a one-node Slurm cluster
# from Debian 12's packages (munge, slurmctld, slurmd; installed when missing), submits
# calm-calibrate as a job array of 4 shards on the bundled model, merges the shard files, and
# checks that the merged certificate is byte for byte the one a single process writes. The
# daemons run from a scratch folder with their own ports and munge socket, and are stopped at
# the end whatever happens. Needs root (the daemons run as root: SlurmUser=root).
# Usage: tools/slurm_check.sh [BUILD_DIR]   (default build/, with calm-calibrate built)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
calibrate=$build/examples/calm-calibrate
shards=4
wait_s=${CALM_SLURM_TIMEOUT:-120}  # the job array's limit; a stuck daemon fails the check, never hangs it
say() { echo "slurm_check: $*"; }
die() { echo "slurm_check: error: $*" >&2; exit 1; }

[[ -x $calibrate ]] || die "$calibrate is not built (cmake --build $build --target calm-calibrate)"
[[ $EUID -eq 0 ]] || die "needs root: the Slurm daemons of this check run as root"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurmctld slurmd munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd munge >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd munge >/dev/null; } ||
    die "could not install slurmctld slurmd munge"
fi

work=$(mktemp -d /tmp/calm-slurm.XXXXXX)
mkdir -p "$work"/{munge,ctld,spool,log,shards}
chmod 755 "$work"  # the job runs as root but sbatch checks the folders it names
pids=()
show_logs() {
  for log in "$work"/log/*; do
    [[ -s $log ]] || continue
    echo "----- $log (last 30 lines)" >&2
    tail -n 30 "$log" >&2
  done
}
stop() {  # stop PID: TERM, up to 10 s, then KILL
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 40); do kill -0 "$1" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local status=$?
  # A job still running (a timeout) is cancelled while every daemon is up, so that its steps
  # can report back and end; then the daemons stop in the reverse order of their start.
  if [[ ${#pids[@]} -eq 3 ]] && [[ -n $(squeue -h 2>/dev/null) ]]; then
    timeout 10 scancel --quiet --full --name=calm-shards 2>/dev/null || true
    for _ in $(seq 60); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.25; done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
  if [[ $status -ne 0 ]]; then show_logs; say "FAILED; logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- configuration: one node, this host, every CPU; no cgroups, no accounting -----------------
host=$(hostname -s)
port=${CALM_SLURM_PORT:-16817}  # not Slurm's 6817: a real cluster daemon here is left alone
conf=$work/slurm.conf
cat >"$conf" <<EOF
ClusterName=calmcheck
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.socket
StateSaveLocation=$work/ctld
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=10 State=UP
EOF
export SLURM_CONF=$conf

# --- daemons -------------------------------------------------------------------------------------
t0=$SECONDS
mungekey --create --keyfile="$work/munge/munge.key" >/dev/null 2>&1 ||
  dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$work/munge/munge.key"
# munged refuses a key or socket folder that others can write, and to run as root without --force.
munged --foreground --force --socket="$work/munge/munge.socket" --key-file="$work/munge/munge.key" \
  --pid-file="$work/munge/munged.pid" --seed-file="$work/munge/seed" \
  --log-file="$work/log/munged.log" >>"$work/log/munged.out" 2>&1 &
pids+=($!)
started() {  # started NAME PID COMMAND...: waits up to 30 s for COMMAND to succeed
  local name=$1 pid=$2
  shift 2
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || die "$name exited at start (its log follows)"
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$name did not come up within 30 s (its log follows)"
}
started munged "${pids[-1]}" munge --socket="$work/munge/munge.socket" -n
slurmctld -D -c -f "$conf" >>"$work/log/slurmctld.out" 2>&1 &
pids+=($!)
started slurmctld "${pids[-1]}" scontrol ping
slurmd -D -f "$conf" -N "$host" >>"$work/log/slurmd.out" 2>&1 &
pids+=($!)
started slurmd "${pids[-1]}" bash -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
say "cluster up in $((SECONDS - t0)) s: $(sinfo -h -o '%P %D node(s) %c CPUs %T')"

# --- the calibration: 4 shards as a job array, then the merge, against one process --------------
head -n 24 "$root/models/shakespeare-8l/data/calibration.jsonl" >"$work/prompts.jsonl"
args=(--model "$root/models/shakespeare-8l" --prompts "$work/prompts.jsonl" --measure softmax
      --delta 0.2 --epsilon 0.1 --max-new-tokens 8)
t0=$SECONDS
# No --shard: each task takes its shard from SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT.
timeout "$wait_s" sbatch --wait --quiet --array=0-$((shards - 1)) --cpus-per-task=1 \
  --job-name=calm-shards --chdir="$work" --output="$work/log/shard-%a.log" \
  --wrap="$(printf '%q ' "$calibrate" "${args[@]}" --output "$work/shards")" ||
  die "the job array failed or did not finish within $wait_s s (squeue: $(squeue -h 2>&1 | head -5))"
say "job array of $shards shards finished in $((SECONDS - t0)) s"
for k in $(seq 0 $((shards - 1))); do
  grep -h "^calm-calibrate: shard" "$work/log/shard-$k.log" | sed 's/^/  /'
done
"$calibrate" "${args[@]}" --merge "$work/shards" --output "$work/merged.json" >"$work/log/merge.log" 2>&1 ||
  die "the merge failed"
t0=$SECONDS
"$calibrate" "${args[@]}" --shard none --output "$work/one.json" >"$work/log/one.log" 2>&1 ||
  die "the one-process calibration failed"
say "one process: $((SECONDS - t0)) s"
cmp "$work/one.json" "$work/merged.json" ||
  die "the merged certificate differs from the one-process certificate: $(diff "$work/one.json" "$work/merged.json" | head -20)"
say "merged certificate identical to the one-process certificate (lambda* $(grep -o '"lambda_star": [^,]*' "$work/one.json" | cut -d' ' -f2))"

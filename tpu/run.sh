#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Usage: tpu/run.sh [--dry-run] [--run-name RUN] [--worker K] [--] COSJAX_ARGS...
#
# Run `cosjax COSJAX_ARGS...` on every worker (host) of $NAME at once, as multi-controller JAX wants:
# one `gcloud compute tpus tpu-vm ssh $NAME --worker=k` per worker, in the background, then wait for
# all of them. On each worker it first kills stale processes holding the TPU (/dev/accel*, /dev/vfio/*)
# and removes /tmp/libtpu_lockfile, then runs the program in REPO_DIR with COSJAX_DISTRIBUTED=1 (so
# cosjax calls jax.distributed.initialize()), PYTHONUNBUFFERED=1, JAX_COMPILATION_CACHE_DIR (from
# JAX_CACHE_DIR) and the REMOTE_ENV words exported.
#
# Each worker's output goes to LOG_DIR/RUN/worker-k.log on this machine (LOG_DIR defaults to logs/
# in the repository); with FOLLOW=1 worker 0's output is also shown live. The exit status is 0 only
# when every worker succeeded; failed workers are listed with the end of their logs.
#
# Example: tpu/run.sh run noise-perturbation --model ckpt/vbvr-wan2.2 --out runs/np
#
# Settings (environment or tpu/env.sh): PROJECT, ZONE, NAME, ACCELERATOR or NUM_WORKERS, REPO_DIR,
# VENV_DIR, JAX_CACHE_DIR, REMOTE_ENV, LOG_DIR, FOLLOW, SSH_INTERNAL_IP, SSH_EXTRA_ARGS, RUN_NAME.
#   --dry-run        print the gcloud commands (with the remote script) instead of running them
#   --run-name RUN   name of the log folder (default: date-time plus the cosjax subcommand)
#   --worker K       run on worker K only, as a single process (no COSJAX_DISTRIBUTED): for
#                    commands that are not one multi-host program, e.g. `cosjax score`
#   --               end of run.sh's options (everything after it goes to cosjax)

set -euo pipefail
SCRIPT_NAME=run.sh
TPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$TPU_DIR")
# shellcheck source=env.sh
. "$TPU_DIR/env.sh"
# shellcheck source=lib.sh
. "$TPU_DIR/lib.sh"

RUN_NAME=${RUN_NAME:-}
ONLY_WORKER=""
while [ $# -gt 0 ]; do
  case $1 in
    --run-name)
      [ $# -ge 2 ] || die "--run-name needs a value"
      RUN_NAME=$2
      shift
      ;;
    --run-name=*) RUN_NAME=${1#*=} ;;
    --worker)
      [ $# -ge 2 ] || die "--worker needs a value"
      ONLY_WORKER=$2
      shift
      ;;
    --worker=*) ONLY_WORKER=${1#*=} ;;
    --)
      shift
      break
      ;;
    -*)
      common_opt "$1" || die "unknown option '$1'; cosjax's own options go after the subcommand or after --"
      ;;
    *) break ;;
  esac
  shift
done
[ $# -gt 0 ] || die "no cosjax command given (e.g. tpu/run.sh run NAME ...; see --help)"

require PROJECT ZONE NAME REPO_DIR VENV_DIR
require_gcloud
workers=$(num_workers)
gcloud_ssh_flags
# shellcheck disable=SC2034 # DISTRIBUTED is read by remote_script (through ${!var})
if [ -n "$ONLY_WORKER" ]; then
  [[ $ONLY_WORKER =~ ^[0-9]+$ ]] && [ "$ONLY_WORKER" -lt "$workers" ] ||
    die "--worker must be a worker index from 0 to $((workers - 1)), got '$ONLY_WORKER'"
  targets=("$ONLY_WORKER")
  DISTRIBUTED=0
else
  targets=()
  for ((k = 0; k < workers; k++)); do targets+=("$k"); done
  DISTRIBUTED=1
fi

read -r -a remote_env <<<"$REMOTE_ENV"
for kv in ${remote_env[@]+"${remote_env[@]}"}; do
  [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "REMOTE_ENV words must be KEY=VALUE, got '$kv'"
done

if [ -z "$RUN_NAME" ]; then
  RUN_NAME=$(date +%Y%m%d-%H%M%S)
  for word in "$1" "${2:-}"; do
    case $word in
      "" | -*) break ;;
      *) RUN_NAME+="-$word" ;;
    esac
  done
  RUN_NAME=$(printf '%s' "$RUN_NAME" | tr -c 'A-Za-z0-9._-' '-' | cut -c 1-80)
fi
[[ $RUN_NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "--run-name may hold only letters, digits, '.', '_' and '-'"
case $LOG_DIR in
  /*) run_dir=$LOG_DIR/$RUN_NAME ;;
  *) run_dir=$REPO_ROOT/$LOG_DIR/$RUN_NAME ;;
esac

# The script each worker runs; WORKER and the settings are assigned in front of it.
worker_script() {
  remote_script WORKER DISTRIBUTED REPO_DIR VENV_DIR JAX_CACHE_DIR REMOTE_ENV -- "$@" <<'REMOTE'
set -euo pipefail
cd "$HOME"
host=$(hostname)
say() { printf "[worker %s %s] %s\n" "$WORKER" "$host" "$*"; }
fail() { say "error: $*" >&2; exit 1; }
abs() { case $1 in /* | *://*) echo "$1" ;; *) echo "$HOME/$1" ;; esac; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif sudo -n true 2>/dev/null; then sudo -n "$@"; else "$@"; fi
}
REPO_DIR=$(abs "$REPO_DIR")
VENV_DIR=$(abs "$VENV_DIR")

# Stale processes still holding the TPU (an earlier run that died or was interrupted) block libtpu.
devices=()
for dev in /dev/accel* /dev/vfio/*; do
  if [ -e "$dev" ]; then devices+=("$dev"); fi
done
if [ "${#devices[@]}" -gt 0 ]; then
  holders=$({ as_root lsof -t "${devices[@]}" || as_root fuser "${devices[@]}" || true; } 2>/dev/null)
  read -r -a pids <<<"$(echo "$holders" | tr -cs 0-9 "\n" | sort -un | tr "\n" " ")"
  if [ "${#pids[@]}" -gt 0 ]; then
    say "killing stale processes holding the TPU: ${pids[*]}"
    as_root kill -9 "${pids[@]}" || true
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
      alive=0
      for pid in "${pids[@]}"; do
        if [ -d "/proc/$pid" ]; then alive=1; fi
      done
      if [ "$alive" = 0 ]; then break; fi
      sleep 1
    done
  fi
fi
if [ -e /tmp/libtpu_lockfile ]; then
  as_root rm -f /tmp/libtpu_lockfile
  say "removed /tmp/libtpu_lockfile"
fi

[ -x "$VENV_DIR/bin/cosjax" ] || fail "$VENV_DIR/bin/cosjax not found: run tpu/setup.sh first"
cd "$REPO_DIR" || fail "no $REPO_DIR: run tpu/setup.sh first"
if [ "$DISTRIBUTED" = 1 ]; then
  export COSJAX_DISTRIBUTED=1
fi
export PYTHONUNBUFFERED=1
if [ -n "$JAX_CACHE_DIR" ]; then
  JAX_COMPILATION_CACHE_DIR=$(abs "$JAX_CACHE_DIR")
  export JAX_COMPILATION_CACHE_DIR
fi
read -r -a remote_env <<<"$REMOTE_ENV"
for kv in ${remote_env[@]+"${remote_env[@]}"}; do export "${kv?}"; done
say "cosjax$(printf " %q" "$@")"
exec "$VENV_DIR/bin/cosjax" "$@"
REMOTE
}

pids=()
stop() {
  trap - INT TERM
  info "interrupted: stopping the ssh sessions (the next run.sh kills what is left on the workers)"
  local pid
  for pid in ${pids[@]+"${pids[@]}"}; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  exit 130
}

if is_dry_run; then
  echo "# ${#targets[@]} of $workers worker(s); logs in $run_dir"
else
  [ ! -e "$run_dir" ] || die "$run_dir already exists; choose another --run-name"
  mkdir -p "$run_dir"
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "tpu: $NAME ($ACCELERATOR, $workers worker(s)) in $PROJECT/$ZONE"
    echo "workers: ${targets[*]}"
    echo "command: cosjax $(shell_join "$@")"
  } >"$run_dir/run.txt"
  info "running on worker(s) ${targets[*]} of the $workers of $NAME; logs in $run_dir"
  trap stop INT TERM
  set -m # each ssh in its own process group, so an interrupt can stop it with its children
fi

for k in "${targets[@]}"; do
  # shellcheck disable=SC2034 # read by remote_script (through ${!var})
  WORKER=$k
  tee=()
  if [ "$k" = "${targets[0]}" ] && [ "$FOLLOW" = 1 ]; then tee=(--tee); fi
  remote=$(worker_script "$@")
  run_cmd_bg ${tee[@]+"${tee[@]}"} "$run_dir/worker-$k.log" \
    gcloud compute tpus tpu-vm ssh "$NAME" "--worker=$k" "${SSH_FLAGS[@]}" --command "$remote"
  is_dry_run || pids+=("$!")
done
is_dry_run && exit 0

failed=()
for i in "${!targets[@]}"; do
  k=${targets[$i]}
  status=0
  wait "${pids[$i]}" || status=$?
  echo "worker $k: exit $status" >>"$run_dir/run.txt"
  if [ "$status" != 0 ]; then failed+=("$k"); fi
done
trap - INT TERM

if [ "${#failed[@]}" -gt 0 ]; then
  for k in "${failed[@]}"; do
    printf '\n--- end of %s ---\n' "$run_dir/worker-$k.log" >&2
    tail -n 15 "$run_dir/worker-$k.log" >&2 || true
  done
  die "worker(s) ${failed[*]} of $workers failed; logs in $run_dir"
fi
if [ "${#targets[@]}" = "$workers" ]; then
  info "all $workers worker(s) finished; logs in $run_dir"
else
  info "worker ${targets[*]} finished; logs in $run_dir"
fi

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Usage: tpu/create.sh [--dry-run] [--no-wait] [--help]
#
# Request a TPU VM (v6e-8) or pod slice (v5p-32) as a queued resource and wait until it is ACTIVE.
#   gcloud compute tpus queued-resources create $QR_ID --node-id=$NAME --accelerator-type=$ACCELERATOR
#     --runtime-version=$RUNTIME [--spot | --reserved]      (PROVISIONING=spot | reserved | on-demand)
# then polls `queued-resources describe` every POLL_INTERVAL s: exits 0 on ACTIVE, fails on FAILED or
# SUSPENDED, and gives up after CREATE_TIMEOUT s (the request then stays queued: tpu/delete.sh).
# If the queued resource already exists, it is not created again; the script only waits.
#
# Settings (environment or tpu/env.sh): PROJECT, ZONE, NAME, QR_ID, ACCELERATOR, RUNTIME,
# PROVISIONING, CREATE_EXTRA_ARGS, CREATE_TIMEOUT, POLL_INTERVAL.
#   --dry-run   print the gcloud commands instead of running them (gcloud is never called)
#   --no-wait   submit the request and return without waiting for ACTIVE

set -euo pipefail
SCRIPT_NAME=create.sh
TPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh
. "$TPU_DIR/env.sh"
# shellcheck source=lib.sh
. "$TPU_DIR/lib.sh"

WAIT=1
for arg in "$@"; do
  case $arg in
    --no-wait) WAIT=0 ;;
    *) common_opt "$arg" || die "unknown argument '$arg' (see --help)" ;;
  esac
done

require PROJECT ZONE NAME QR_ID ACCELERATOR RUNTIME PROVISIONING
check_accelerator
require_gcloud
case $PROVISIONING in
  spot) provisioning=(--spot) ;;
  reserved) provisioning=(--reserved) ;;
  on-demand) provisioning=() ;;
  *) die "PROVISIONING must be spot, reserved or on-demand, got '$PROVISIONING'" ;;
esac
for var in CREATE_TIMEOUT POLL_INTERVAL; do
  [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a whole number of seconds, got '${!var}'"
done
read -r -a extra <<<"$CREATE_EXTRA_ARGS"
gcloud_scope

create=(gcloud compute tpus queued-resources create "$QR_ID" "--node-id=$NAME" "${GCLOUD_SCOPE[@]}"
  "--accelerator-type=$ACCELERATOR" "--runtime-version=$RUNTIME"
  ${provisioning[@]+"${provisioning[@]}"} ${extra[@]+"${extra[@]}"})
describe=(gcloud compute tpus queued-resources describe "$QR_ID" "${GCLOUD_SCOPE[@]}")
state_format='--format=value(state.state)'

if is_dry_run; then
  run_cmd "${create[@]}"
  if [ "$WAIT" = 1 ]; then
    echo "# then, every ${POLL_INTERVAL}s for at most ${CREATE_TIMEOUT}s until the state is ACTIVE:"
    run_cmd "${describe[@]}" "$state_format"
  fi
  exit 0
fi

if state=$("${describe[@]}" "$state_format" 2>/dev/null) && [ -n "$state" ]; then
  info "queued resource $QR_ID already exists (state $state); not creating it again"
else
  info "requesting $ACCELERATOR ($PROVISIONING, runtime $RUNTIME) as $QR_ID / node $NAME in $ZONE"
  run_cmd "${create[@]}"
fi
[ "$WAIT" = 1 ] || exit 0

start=$SECONDS
last=""
while :; do
  state=$("${describe[@]}" "$state_format") ||
    die "could not read the state of $QR_ID (see gcloud's error above)"
  elapsed=$((SECONDS - start))
  if [ "$state" != "$last" ]; then
    info "$QR_ID: ${state:-<no state>} after ${elapsed}s"
    last=$state
  fi
  case $state in
    ACTIVE) break ;;
    FAILED | SUSPENDED | SUSPENDING)
      "${describe[@]}" >&2 || true
      die "queued resource $QR_ID is $state (details above). Free it with tpu/delete.sh, then retry," \
        "perhaps in another ZONE or with another PROVISIONING."
      ;;
  esac
  if [ "$elapsed" -ge "$CREATE_TIMEOUT" ]; then
    die "timed out after ${CREATE_TIMEOUT}s waiting for $QR_ID to become ACTIVE (state: $state)." \
      "The request stays queued and may still be provisioned, and billed, later: tpu/delete.sh cancels it," \
      "tpu/create.sh again keeps waiting."
  fi
  sleep "$POLL_INTERVAL"
done

workers=$(num_workers)
info "$NAME is ACTIVE ($ACCELERATOR, $workers worker(s)). Next: tpu/setup.sh, then tpu/run.sh COMMAND..."

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Usage: tpu/delete.sh [--dry-run] [--yes] [--vm] [--help]
#
# Delete what tpu/create.sh made, so that it stops costing money:
#   gcloud compute tpus queued-resources delete $QR_ID --force --async
# (--force also deletes the TPU VM/slice the queued resource holds; --async returns at once).
# Everything on the workers' disks (REPO_DIR, outputs not written to GCS) is lost.
# With --vm it deletes a TPU VM made without a queued resource instead:
#   gcloud compute tpus tpu-vm delete $NAME --async
#
# Settings (environment or tpu/env.sh): PROJECT, ZONE, QR_ID (or NAME with --vm).
#   --dry-run   print the gcloud command instead of running it
#   --yes       do not ask for confirmation (gcloud --quiet)
#   --vm        delete the TPU VM $NAME directly, not the queued resource

set -euo pipefail
SCRIPT_NAME=delete.sh
TPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh
. "$TPU_DIR/env.sh"
# shellcheck source=lib.sh
. "$TPU_DIR/lib.sh"

quiet=()
vm=0
for arg in "$@"; do
  case $arg in
    -y | --yes) quiet=(--quiet) ;;
    --vm) vm=1 ;;
    *) common_opt "$arg" || die "unknown argument '$arg' (see --help)" ;;
  esac
done

require PROJECT ZONE
require_gcloud
gcloud_scope
if [ "$vm" = 1 ]; then
  require NAME
  run_cmd gcloud compute tpus tpu-vm delete "$NAME" "${GCLOUD_SCOPE[@]}" --async ${quiet[@]+"${quiet[@]}"}
else
  require QR_ID
  run_cmd gcloud compute tpus queued-resources delete "$QR_ID" "${GCLOUD_SCOPE[@]}" --force --async \
    ${quiet[@]+"${quiet[@]}"}
fi
if ! is_dry_run; then
  info "deletion requested. Check with:" \
    "gcloud compute tpus queued-resources list --project=$PROJECT --zone=$ZONE"
fi

# shellcheck shell=bash
# Shared helpers for the tpu/ scripts. Sourced (after env.sh) by create.sh, setup.sh, run.sh and
# delete.sh; not meant to be run on its own.
#
# Every side effect (gcloud, ssh, scp, a local tar) goes through run_cmd or run_cmd_bg, so --dry-run
# prints the exact command lines (copy-pasteable into bash or sh) and runs nothing at all.

SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0")}
DRY_RUN=${DRY_RUN:-0}

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}

info() {
  printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

is_dry_run() {
  [ "$DRY_RUN" = 1 ]
}

# The comment block at the top of the calling script (after the shebang, up to the first blank
# line) is its --help text.
usage() {
  sed -n '2,/^$/{/^# shellcheck /d;/^#/s/^# \{0,1\}//p;}' "$0"
}

# common_opt ARG: handle an option every script takes (--dry-run, -h/--help); status 1 for any other.
common_opt() {
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) return 1 ;;
  esac
}

# require VAR...: fail, naming the first setting that is unset or empty.
require() {
  local var
  for var in "$@"; do
    if [ -z "${!var:-}" ]; then
      die "required setting $var is not set: export $var=... or set its default in tpu/env.sh"
    fi
  done
}

# Unless --dry-run, make sure the gcloud CLI is there before anything is done.
require_gcloud() {
  is_dry_run || command -v gcloud >/dev/null 2>&1 ||
    die "gcloud not found on PATH: install the Google Cloud CLI and run 'gcloud auth login'"
}

# sq STRING: STRING quoted for a POSIX shell ('...' with embedded ' written as '\'').
sq() {
  local s=${1//\'/\'\\\'\'}
  printf "'%s'" "$s"
}

# shell_join ARG...: the arguments as one command line; only arguments that need it are quoted.
shell_join() {
  local out="" arg
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+="$arg "
    else
      out+="$(sq "$arg") "
    fi
  done
  printf '%s' "${out% }"
}

# The command as shown while really running it: long or multi-line arguments (the remote scripts
# passed with --command) are elided; --dry-run shows them in full.
_shown() {
  local args=() arg lines
  for arg in "$@"; do
    if [ "${#arg}" -gt 160 ] || [[ $arg == *$'\n'* ]]; then
      lines=$(printf '%s\n' "$arg" | wc -l)
      args+=("<${lines// /}-line script, see --dry-run>")
    else
      args+=("$arg")
    fi
  done
  shell_join "${args[@]}"
}

# run_cmd CMD ARG...: print the command; unless --dry-run, run it.
run_cmd() {
  if is_dry_run; then
    printf '%s\n' "$(shell_join "$@")"
    return 0
  fi
  printf '+ %s\n' "$(_shown "$@")" >&2
  "$@"
}

# run_cmd_bg [--tee] LOG CMD ARG...: like run_cmd, but in the background, with stdin from /dev/null
# and stdout+stderr to LOG (with --tee, also to our stdout). The caller reads the job's pid from $!
# (unset under --dry-run); waiting for it gives CMD's exit status.
run_cmd_bg() {
  local tee=0 log
  if [ "$1" = --tee ]; then
    tee=1
    shift
  fi
  log=$1
  shift
  local shown
  if is_dry_run; then shown=$(shell_join "$@"); else shown=$(_shown "$@"); fi
  if [ "$tee" = 1 ]; then
    shown+=" </dev/null 2>&1 | tee $(shell_join "$log") &"
  else
    shown+=" </dev/null >$(shell_join "$log") 2>&1 &"
  fi
  if is_dry_run; then
    printf '%s\n' "$shown"
    return 0
  fi
  printf '+ %s\n' "$shown" >&2
  if [ "$tee" = 1 ]; then
    (
      set -o pipefail
      "$@" </dev/null 2>&1 | tee "$log"
    ) &
  else
    "$@" </dev/null >"$log" 2>&1 &
  fi
}

# Flags that every gcloud compute tpus command takes.
gcloud_scope() {
  GCLOUD_SCOPE=("--project=$PROJECT" "--zone=$ZONE")
}

# Flags for `gcloud compute tpus tpu-vm ssh/scp`: scope, --internal-ip, SSH_EXTRA_ARGS.
gcloud_ssh_flags() {
  gcloud_scope
  SSH_FLAGS=("${GCLOUD_SCOPE[@]}")
  if [ "${SSH_INTERNAL_IP:-0}" = 1 ]; then SSH_FLAGS+=(--internal-ip); fi
  local extra=()
  read -r -a extra <<<"${SSH_EXTRA_ARGS:-}"
  SSH_FLAGS+=(${extra[@]+"${extra[@]}"})
}

# Fail on accelerator types gcloud does not know by that name (v5e is spelled v5litepod-N).
check_accelerator() {
  case $ACCELERATOR in
    v5e-*) die "gcloud spells the v5e accelerator type v5litepod-N: set ACCELERATOR=v5litepod-${ACCELERATOR#v5e-}" ;;
    *[!a-z0-9-]* | *-*-*) die "ACCELERATOR must look like v6e-8, v5p-32 or v5litepod-8, got '$ACCELERATOR'" ;;
  esac
}

# The number of TPU VM hosts (workers) of a slice: NUM_WORKERS if set, else derived from ACCELERATOR.
num_workers() {
  if [ -n "${NUM_WORKERS:-}" ]; then
    [[ $NUM_WORKERS =~ ^[1-9][0-9]*$ ]] || die "NUM_WORKERS must be a positive integer, got '$NUM_WORKERS'"
    printf '%s\n' "$NUM_WORKERS"
    return 0
  fi
  local family=${ACCELERATOR%-*} size=${ACCELERATOR##*-}
  [[ $size =~ ^[0-9]+$ ]] || die "cannot read a size from ACCELERATOR='$ACCELERATOR'; set NUM_WORKERS"
  case $family in
    # v6e / v5e: the size counts chips; up to 8 chips sit on one host, larger slices have 4 per host.
    v6e | v5litepod | v5e)
      if [ "$size" -le 8 ]; then echo 1; else echo $((size / 4)); fi
      ;;
    # v5p / v4 / v3 / v2 / TPU7x: the size counts TensorCores, 8 per host (4 chips x 2 cores).
    v5p | v4 | v3 | v2 | v7x | tpu7x)
      if [ "$size" -le 8 ]; then echo 1; else echo $((size / 8)); fi
      ;;
    *) die "unknown accelerator family '$family' in ACCELERATOR='$ACCELERATOR'; set NUM_WORKERS" ;;
  esac
}

# remote_script VAR... [-- ARG...]: a `bash -c '...'` command line for gcloud's --command. It assigns
# the named local variables, sets the positional parameters to ARG..., and then runs the script read
# from stdin; so whatever login shell the TPU VM user has, the script runs under bash. The script
# itself must not contain single quotes: then --dry-run shows it as written, with quoting only around
# values that need it.
remote_script() {
  local var body header=""
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    var=$1
    shift
    if [ -z "${!var}" ]; then header+="$var="$'\n'; else header+="$var=$(shell_join "${!var}")"$'\n'; fi
  done
  if [ $# -gt 0 ]; then
    shift
    header+="set -- $(shell_join "$@")"$'\n'
  fi
  body=$(cat)
  case $body in
    *"'"*) die "internal error: a remote script contains a single quote" ;;
  esac
  printf 'bash -c %s' "$(sq "$header$body")"
}

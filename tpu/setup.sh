#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Usage: tpu/setup.sh [--dry-run] [--help]
#
# Put the code and a Python environment on every worker of $NAME (all hosts at once, through
# `gcloud compute tpus tpu-vm ssh $NAME --worker=all`). Safe to run again: each step is skipped when
# it is already done.
#   1. code: SOURCE=local (default when REPO_URL is empty) packs this checkout (minus COPY_EXCLUDES),
#      copies it with `tpu-vm scp --worker=all` and unpacks it into REPO_DIR unless it is unchanged;
#      SOURCE=git clones REPO_URL at REPO_BRANCH, or fetches and checks it out if already cloned.
#   2. $PYTHON (>= 3.11), installed with apt-get if missing and INSTALL_PYTHON=1.
#   3. a virtualenv in VENV_DIR, created only if missing.
#   4. pip install "$JAX_SPEC" -e "REPO_DIR[$EXTRAS]" $PIP_EXTRA, skipped while pyproject.toml and
#      these settings are unchanged (a stamp file in the venv records them). EXTRAS=evalkit (the
#      default) brings what VBVR-EvalKit imports, so the ensemble's scoring runs on any worker.
#
# Settings (environment or tpu/env.sh): PROJECT, ZONE, NAME, SOURCE, REPO_URL, REPO_BRANCH, REPO_DIR,
# VENV_DIR, PYTHON, INSTALL_PYTHON, JAX_SPEC, EXTRAS, PIP_EXTRA, PIP_ARGS, COPY_EXCLUDES, SSH_INTERNAL_IP,
# SSH_EXTRA_ARGS.
#   --dry-run   print the tar/gcloud commands (with the remote script) instead of running them

set -euo pipefail
SCRIPT_NAME=setup.sh
TPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$TPU_DIR")
# shellcheck source=env.sh
. "$TPU_DIR/env.sh"
# shellcheck source=lib.sh
. "$TPU_DIR/lib.sh"

for arg in "$@"; do
  common_opt "$arg" || die "unknown argument '$arg' (see --help)"
done

require PROJECT ZONE NAME REPO_DIR VENV_DIR PYTHON JAX_SPEC
require_gcloud
case $SOURCE in
  git) require REPO_URL REPO_BRANCH ;;
  local) ;;
  *) die "SOURCE must be git or local, got '$SOURCE'" ;;
esac
gcloud_ssh_flags

UPLOAD=cosjax-src.tar.gz # file name in the remote $HOME while SOURCE=local
if [ "$SOURCE" = local ]; then
  [ -f "$REPO_ROOT/pyproject.toml" ] || die "$REPO_ROOT does not look like the cosjax checkout"
  if is_dry_run; then
    tarball="${TMPDIR:-/tmp}/cosjax-tpu-src.XXXXXX"
  else
    tarball=$(mktemp "${TMPDIR:-/tmp}/cosjax-tpu-src.XXXXXX")
    trap 'rm -f "$tarball"' EXIT
  fi
  excludes=()
  read -r -a patterns <<<"$COPY_EXCLUDES"
  for pattern in ${patterns[@]+"${patterns[@]}"}; do excludes+=("--exclude=$pattern"); done
  run_cmd tar -czf "$tarball" ${excludes[@]+"${excludes[@]}"} -C "$REPO_ROOT" .
  run_cmd gcloud compute tpus tpu-vm scp "$tarball" "$NAME:$UPLOAD" --worker=all "${SSH_FLAGS[@]}"
fi

[[ $EXTRAS =~ ^[a-z0-9,_-]*$ ]] || die "EXTRAS must be comma-separated extra names (e.g. evalkit), got '$EXTRAS'"
remote=$(remote_script SOURCE REPO_URL REPO_BRANCH REPO_DIR VENV_DIR PYTHON INSTALL_PYTHON JAX_SPEC \
  EXTRAS PIP_EXTRA PIP_ARGS UPLOAD <<'REMOTE'
set -euo pipefail
cd "$HOME"
host=$(hostname)
say() { printf "[%s] %s\n" "$host" "$*"; }
fail() { say "error: $*" >&2; exit 1; }
abs() { case $1 in /*) echo "$1" ;; *) echo "$HOME/$1" ;; esac; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
REPO_DIR=$(abs "$REPO_DIR")
VENV_DIR=$(abs "$VENV_DIR")

# 1. code
if [ "$SOURCE" = git ]; then
  if [ -d "$REPO_DIR/.git" ]; then
    git -C "$REPO_DIR" fetch --quiet origin "$REPO_BRANCH"
    if [ "$(git -C "$REPO_DIR" rev-parse HEAD)" = "$(git -C "$REPO_DIR" rev-parse FETCH_HEAD)" ]; then
      say "code: $REPO_DIR already at $REPO_BRANCH"
    else
      git -C "$REPO_DIR" checkout --quiet --detach FETCH_HEAD
      say "code: $REPO_DIR updated to $REPO_BRANCH"
    fi
  elif [ -e "$REPO_DIR" ]; then
    fail "$REPO_DIR exists but is not a git checkout; move it away or set REPO_DIR"
  else
    git clone --quiet --branch "$REPO_BRANCH" "$REPO_URL" "$REPO_DIR"
    say "code: cloned $REPO_URL ($REPO_BRANCH) into $REPO_DIR"
  fi
else
  [ -f "$HOME/$UPLOAD" ] || fail "$HOME/$UPLOAD is missing (the copy step failed?)"
  sum=$(sha256sum "$HOME/$UPLOAD" | cut -c 1-64)
  stamp="$REPO_DIR/.cosjax-source.sha256"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    say "code: $REPO_DIR unchanged"
  else
    mkdir -p "$REPO_DIR"
    tar -xzf "$HOME/$UPLOAD" -C "$REPO_DIR"
    echo "$sum" >"$stamp"
    say "code: unpacked into $REPO_DIR"
  fi
  rm -f "$HOME/$UPLOAD"
fi
[ -f "$REPO_DIR/pyproject.toml" ] || fail "$REPO_DIR has no pyproject.toml"

# 2. Python
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
  case $INSTALL_PYTHON:$PYTHON in
    1:python3.[0-9]*)
      say "python: installing $PYTHON and $PYTHON-venv with apt-get"
      as_root apt-get -o DPkg::Lock::Timeout=600 -qq update
      as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq install -y \
        "$PYTHON" "$PYTHON-venv" >/dev/null
      ;;
    *) fail "$PYTHON (with its venv module) is missing; install it or set PYTHON" ;;
  esac
fi

# 3. virtualenv
if [ -x "$VENV_DIR/bin/python" ]; then
  say "venv: $VENV_DIR exists"
else
  "$PYTHON" -m venv "$VENV_DIR"
  "$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip
  say "venv: created $VENV_DIR"
fi

# 4. packages
key=$({ printf "%s\n" "$JAX_SPEC" "$EXTRAS" "$PIP_EXTRA" "$PIP_ARGS"; cat "$REPO_DIR/pyproject.toml"; } |
  sha256sum | cut -c 1-16)
installed="$VENV_DIR/.cosjax-installed-$key"
target="$REPO_DIR"
if [ -n "$EXTRAS" ]; then target="${REPO_DIR}[$EXTRAS]"; fi
if [ -f "$installed" ] && "$VENV_DIR/bin/python" -c "import jax, cosjax" >/dev/null 2>&1; then
  say "packages: up to date"
else
  read -r -a pip_args <<<"$PIP_ARGS"
  read -r -a pip_extra <<<"$PIP_EXTRA"
  say "packages: pip install $JAX_SPEC -e $target $PIP_EXTRA"
  "$VENV_DIR/bin/python" -m pip install --quiet ${pip_args[@]+"${pip_args[@]}"} "$JAX_SPEC" \
    -e "$target" ${pip_extra[@]+"${pip_extra[@]}"}
  rm -f "$VENV_DIR"/.cosjax-installed-*
  touch "$installed"
fi
versions=$("$VENV_DIR/bin/python" -m pip list --format=freeze 2>/dev/null |
  grep -E "^(jax|jaxlib|libtpu[a-z-]*|cosjax)==" | tr "\n" " " || true)
say "ready: $versions"
REMOTE
)

run_cmd gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${SSH_FLAGS[@]}" --command "$remote"
is_dry_run || info "set-up done on all workers of $NAME. Next: tpu/run.sh COMMAND..."

# shellcheck shell=bash
# The one settings file for the tpu/ scripts. Every value can be overridden from the environment
# (`PROJECT=my-proj ZONE=some-zone-a tpu/create.sh`); edit the defaults below for a lasting change.
# No secrets belong here: gcloud uses your own login (`gcloud auth login`) for everything.

# --- where and what -------------------------------------------------------------------------------
: "${PROJECT:=}"                  # Google Cloud project id (required)
: "${ZONE:=}"                     # zone where the project has quota for ACCELERATOR (required)
if [ -z "${NAME:-}" ]; then      # TPU VM (node) name: lowercase letters, digits and hyphens
  _user=$(printf '%s' "${USER:-tpu}" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9-' '-')
  NAME=cosjax-$_user
  unset _user
fi
: "${QR_ID:=${NAME}-qr}"          # queued-resource id that owns the node
: "${ACCELERATOR:=v6e-8}"         # as gcloud spells it: v6e-8 (1 host, 8 chips), v5p-32 (4 hosts), v5litepod-8
: "${PROVISIONING:=spot}"         # spot | reserved | on-demand (spot is cheapest and can be preempted)

# Runtime (VM image); derived from ACCELERATOR unless set.
if [ -z "${RUNTIME:-}" ]; then
  case ${ACCELERATOR%-*} in
    v6e) RUNTIME=v2-alpha-tpuv6e ;;
    v5p) RUNTIME=v2-alpha-tpuv5 ;;
    v5litepod | v5e) RUNTIME=v2-alpha-tpuv5-lite ;;
    *) RUNTIME=tpu-ubuntu2204-base ;;
  esac
fi

# Number of TPU VM hosts; empty means derived from ACCELERATOR (see num_workers in tpu/lib.sh).
: "${NUM_WORKERS:=}"

# --- code and Python on the workers ---------------------------------------------------------------
: "${REPO_URL:=}"           # git URL to clone on each worker; empty copies this local checkout instead
: "${REPO_BRANCH:=main}"    # branch (or tag) checked out when cloning from REPO_URL
if [ -z "${SOURCE:-}" ]; then
  if [ -n "$REPO_URL" ]; then SOURCE=git; else SOURCE=local; fi
fi
: "${REPO_DIR:=cosjax}"     # checkout on each worker; relative paths are under the remote $HOME
: "${VENV_DIR:=cosjax-venv}"  # virtualenv on each worker (relative to the remote $HOME)
: "${PYTHON:=python3.11}"   # interpreter the venv is made from (cosjax needs >= 3.11)
: "${INSTALL_PYTHON:=1}"    # 1: apt-get install $PYTHON and $PYTHON-venv on a worker that lacks them
: "${JAX_SPEC:=jax[tpu]}"   # what pip installs for JAX on TPU (pin it for reproducible runs: jax[tpu]==X)
: "${EXTRAS=evalkit}"       # cosjax extras installed (comma separated; evalkit: what VBVR-EvalKit imports)
: "${PIP_EXTRA:=etils[epath-gcs]}"  # more packages, space separated (etils[epath-gcs]: gs:// JAX cache)
: "${PIP_ARGS:=}"           # extra pip install arguments, space separated (e.g. -f URL)
# Local files left out when SOURCE=local copies the checkout (tar --exclude patterns, space separated).
: "${COPY_EXCLUDES:=.git .venv runs logs ckpt ckpt_src __pycache__ *.egg-info .pytest_cache .ruff_cache build}"

# --- storage and the program's environment ---------------------------------------------------------
: "${BUCKET:=}"             # GCS bucket (no gs:// prefix) for the compile cache and results; optional
if [ -z "${JAX_CACHE_DIR+set}" ]; then
  # Persistent JAX compilation cache shared by all workers and runs (empty: JAX's default, none).
  if [ -n "$BUCKET" ]; then
    JAX_CACHE_DIR=gs://$BUCKET/cosjax/jax-cache
  else
    JAX_CACHE_DIR=.cache/cosjax-jax # under the remote $HOME
  fi
fi
: "${REMOTE_ENV:=}"         # extra KEY=VALUE words exported for cosjax on every worker, space separated

# --- how the scripts talk to the TPU ---------------------------------------------------------------
: "${SSH_INTERNAL_IP:=0}"   # 1: ssh over internal IPs (when launching from a VM inside the VPC)
: "${SSH_EXTRA_ARGS:=}"     # more `gcloud compute tpus tpu-vm ssh/scp` flags, e.g. --tunnel-through-iap
: "${CREATE_EXTRA_ARGS:=}"  # more `queued-resources create` flags, e.g. --network=NET --subnetwork=SUB
: "${CREATE_TIMEOUT:=3600}" # seconds create.sh waits for ACTIVE before giving up
: "${POLL_INTERVAL:=30}"    # seconds between state checks
: "${LOG_DIR:=logs}"        # local folder of run logs (relative to the repository root)
: "${FOLLOW:=1}"            # 1: run.sh shows worker 0's log live while it waits

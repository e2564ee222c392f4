#!/usr/bin/env bash
# Quick start: set up .venv if needed, then run the demo. Extra arguments go to `cosjax demo`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh base
exec .venv/bin/cosjax demo "$@"

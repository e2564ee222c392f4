#!/usr/bin/env bash
# Set up .venv with the test extras if needed, lint, then run the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 --durations=30 "$@"

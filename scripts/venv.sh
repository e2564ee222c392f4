# Sourced by demo.sh and test.sh: creates .venv on first use and (re)installs only when
# pyproject.toml changed. Usage: source scripts/venv.sh [base|test]
set -euo pipefail
profile="${1:-base}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv with $python"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
stamp="$venv/.installed-$profile-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  if [ "$profile" = test ]; then
    # torch first, pinned: the CPU wheel; anything asking for plain torch later is then satisfied.
    "$venv/bin/pip" install -q "torch==2.13.0"
    "$venv/bin/pip" install -q -e "$root[test]"
  else
    "$venv/bin/pip" install -q -e "$root"
  fi
  touch "$stamp"
fi

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
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
fi
stamp="$venv/.installed-$profile-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing cosjax ($profile) into $venv (log: $venv/install.log)"
  pip_install() { "$venv/bin/pip" install "$@" >>"$venv/install.log" 2>&1 || { tail -30 "$venv/install.log"; exit 1; }; }
  if [ "$profile" = test ]; then
    # torch first, pinned: the CPU wheel; anything asking for plain torch later is then satisfied.
    pip_install "torch==2.13.0"
    pip_install -e "$root[test]"
  else
    pip_install -e "$root"
  fi
  touch "$stamp"
fi

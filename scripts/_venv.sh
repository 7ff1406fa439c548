# Sourced by scripts/demo and scripts/test: use the active virtualenv, or create .venv, and
# install the project with the extras named in $EXTRAS when pyproject.toml changed since last time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x "$root/.venv/bin/python" ]; then
    echo ">> creating $root/.venv" >&2
    "${PYTHON:-python3}" -m venv "$root/.venv"
  fi
  # shellcheck disable=SC1091
  . "$root/.venv/bin/activate"
fi
stamp="$VIRTUAL_ENV/.stream-app-installed-${EXTRAS//,/-}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo ">> installing stream-app[$EXTRAS] into $VIRTUAL_ENV" >&2
  python -m pip install -q --upgrade pip >&2
  python -m pip install -q -e "$root[$EXTRAS]" >&2
  touch "$stamp"
fi

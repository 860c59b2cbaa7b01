# Sourced by the scripts: make sure uv exists and the workspace environment is in sync.
# Needs only Python >= 3.10 with pip on a fresh machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if command -v uv >/dev/null 2>&1; then
    UV=(uv)
else
    if ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
        echo "installing uv with pip ..." >&2
        "$PYTHON" -m pip install --quiet --disable-pip-version-check uv >&2
    fi
    UV=("$PYTHON" -m uv)
fi
export UV_PYTHON="${UV_PYTHON:-$("$PYTHON" -c 'import sys; print(sys.executable)')}"
"${UV[@]}" sync --all-packages --locked --quiet
export PATH="$ROOT/.venv/bin:$PATH"

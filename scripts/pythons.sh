#!/usr/bin/env bash
# Run eventforge-core's whole test suite on the oldest and the newest supported Python (3.10 and
# 3.13), with eventforge-amqp's check that it refuses Python 3.10 saying why, each in a workspace
# venv of its own made from uv.lock (the plugins are installed too: many core tests run against
# them). Both Pythons run at the same time; each one's output goes to a log that is printed
# when it fails. Interpreters are never downloaded: a missing one is
# skipped, or fails the run when EVENTFORGE_REQUIRE_PYTHONS=1 (CI).
# Extra arguments go to pytest, e.g. ./scripts/pythons.sh -k config
source "$(dirname "$0")/_env.sh"

export UV_PYTHON_DOWNLOADS=never
VERSIONS=(3.10 3.13)
work="$(mktemp -d "${TMPDIR:-/tmp}/eventforge-pythons-XXXXXX")"
trap 'rm -rf "$work"' EXIT

find_python() {  # an installed interpreter for $1, or nothing
    local candidate
    for candidate in "$("${UV[@]}" python find --no-project "$1" 2>/dev/null)" \
        "$(command -v "python$1" 2>/dev/null)" "$HOME"/.pyenv/versions/"$1".*/bin/python3; do
        [ -x "$candidate" ] || continue
        if [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$1" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

run_suite() {  # $1: version, $2: interpreter; the rest go to pytest
    local version="$1" python="$2" venv="$work/venv-$1"
    shift 2
    UV_PROJECT_ENVIRONMENT="$venv" "${UV[@]}" sync --all-packages --locked --quiet --python "$python" \
        && "$venv/bin/python" -m pytest -q -p no:cacheprovider eventforge-core/tests \
            eventforge-amqp/tests/test_python_support.py "$@"
}

status=0
started=$SECONDS
pids=()
ran=()
for version in "${VERSIONS[@]}"; do
    if ! python="$(find_python "$version")"; then
        echo "pythons: no Python $version installed" >&2
        if [ "${EVENTFORGE_REQUIRE_PYTHONS:-}" = "1" ]; then
            status=1
        fi
        continue
    fi
    (run_suite "$version" "$python" "$@" >"$work/$version.log" 2>&1; echo $? >"$work/$version.rc") &
    pids+=($!)
    ran+=("$version")
done
for pid in "${pids[@]}"; do
    wait "$pid" || true
done
for version in "${ran[@]}"; do
    rc="$(cat "$work/$version.rc" 2>/dev/null || echo 1)"
    summary="$(grep -E '(passed|failed|error)' "$work/$version.log" | tail -1 || true)"
    if [ "$rc" -eq 0 ]; then
        echo "pythons: eventforge-core's suite on Python $version: ok ($summary) in $((SECONDS - started)) s"
    else
        echo "pythons: eventforge-core's suite on Python $version FAILED (exit $rc; exit 5 means no tests ran)" >&2
        cat "$work/$version.log" >&2
        status=1
    fi
done
exit "$status"

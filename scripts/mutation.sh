#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the retry core: topics, wire, serializers, urls, workqueue,
# each module against its own tests only. Slow (tens of minutes), so not part of CI; see
# docs/contributing.md for how to read the result.
#
#   ./scripts/mutation.sh                      all five modules, one after the other
#   ./scripts/mutation.sh urls wire            only these modules
#   ./scripts/mutation.sh --resume M           run the mutants of M's session not run yet
#   ./scripts/mutation.sh --retry-survivors M  run again only M's survivors (after adding tests)
#                                              (both refused if M's source changed since)
#   ./scripts/mutation.sh --report M           print M's score and survivors again
#
# Each module is mutated in a copy of eventforge-core/src under .mutation/<module>/ (never in
# the work tree), and its tests import that copy. They run through a fork server
# (scripts/mutation_runner.py) that has imported pytest once, so a mutant costs its tests and
# not pytest's start-up. Environment:
#   MUTATION_TIMEOUT  seconds one mutant's test run may take before it counts as killed (60)
#   MUTATION_TEST_TIMEOUT  seconds one test may take (pytest-timeout) before it fails (10): a
#                     mutant that makes a wait hang costs this, not the whole MUTATION_TIMEOUT
#   MUTATION_NICE     niceness of the test runs (19)
#   MUTATION_ALL_OPERATORS=1  run every replacement cosmic-ray makes of a binary or comparison
#                     operator, not only the nearest ones (about twice as many mutants)
source "$(dirname "$0")/_env.sh"
# cosmic-ray lives in its own dependency group, outside the environment the tests use.
"${UV[@]}" sync --all-packages --locked --quiet --group mutation

T=eventforge-core/tests
TESTS_topics="$T/test_topics.py"
TESTS_wire="$T/wire/test_wire_schema.py $T/wire/test_wire.py"
TESTS_serializers="$T/wire/test_serializers.py"
TESTS_urls="$T/transport/test_urls.py"
TESTS_workqueue="$T/transport/test_retry_policy.py $T/transport/test_delivery.py $T/workqueue/test_workqueue.py $T/workqueue/test_workqueue_stale.py"
# Each module's file, under eventforge-core/src/eventforge/.
SOURCE_topics="topics.py"
SOURCE_wire="wire/_codec.py"
SOURCE_serializers="wire/serializers.py"
SOURCE_urls="transport/urls.py"
SOURCE_workqueue="workqueue/_api.py"
ALL=(topics wire serializers urls workqueue)

mode=run
case "${1:-}" in
    --retry-survivors) mode=retry; shift ;;
    --resume) mode=resume; shift ;;
    --report) mode=report; shift ;;
esac
modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=("${ALL[@]}")

TIMEOUT="${MUTATION_TIMEOUT:-60}"
TEST_TIMEOUT="${MUTATION_TEST_TIMEOUT:-10}"
NICE="${MUTATION_NICE:-19}"
PY="$ROOT/.venv/bin/python"
HELPER=("$PY" "$ROOT/scripts/mutation_session.py")
EQUIVALENT="$ROOT/scripts/mutation-equivalent.txt"
RUNNER="$ROOT/scripts/mutation_runner.py"
mkdir -p "$ROOT/.mutation"
SOCKET="$ROOT/.mutation/runner-$$.sock"
if [ "$mode" != report ]; then
    nice -n "$NICE" "$PY" "$RUNNER" serve "$SOCKET" &
    server=$!
    trap 'kill "$server" 2>/dev/null; rm -f "$SOCKET"' EXIT
    for _ in $(seq 100); do [ -S "$SOCKET" ] && break; sleep 0.1; done
fi

for module in "${modules[@]}"; do
    tests_var="TESTS_$module"
    tests="${!tests_var:-}"
    if [ -z "$tests" ]; then
        echo "unknown module '$module'; choose from: ${ALL[*]}" >&2
        exit 2
    fi
    source_var="SOURCE_$module"
    source_rel="${!source_var}"
    source_file="eventforge-core/src/eventforge/$source_rel"
    work="$ROOT/.mutation/$module"
    session="$work/session.sqlite"

    if [ "$mode" = report ]; then
        "${HELPER[@]}" report "$session" "$work/original/$module.py" "$EQUIVALENT"
        continue
    fi
    if [ "$mode" = retry ] || [ "$mode" = resume ]; then
        if ! cmp -s "$source_file" "$work/original/$module.py"; then
            echo "$source_file changed since its session: run it anew (without --$mode)" >&2
            exit 2
        fi
        # An interrupted run may have left a mutant in the copy.
        cp "$work/original/$module.py" "$work/src/eventforge/$source_rel"
        if [ "$mode" = retry ]; then
            "${HELPER[@]}" retry-survivors "$session" "$work/original/$module.py" "$EQUIVALENT"
        fi
    else
        rm -rf "$work"
        mkdir -p "$work"
        cp -r eventforge-core/src "$work/src"
        mkdir -p "$work/original"
        cp "$source_file" "$work/original/$module.py"
        cat >"$work/run-tests.sh" <<EOF
#!/usr/bin/env bash
exec "$PY" -S "$RUNNER" run "\$SOCKET" "$work/src" "$ROOT" -x -q -p no:cacheprovider --timeout=$TEST_TIMEOUT $tests
EOF
        cat >"$work/config.toml" <<EOF
[cosmic-ray]
module-path = "src/eventforge/$source_rel"
timeout = $TIMEOUT
excluded-modules = []
test-command = "bash $work/run-tests.sh"

[cosmic-ray.distributor]
name = "local"
EOF
        (cd "$work" && cosmic-ray init config.toml session.sqlite)
        "${HELPER[@]}" skip-annotations "$session" "$work/src/eventforge/$source_rel"
        [ -n "${MUTATION_ALL_OPERATORS:-}" ] || "${HELPER[@]}" skip-redundant "$session"
        echo "$module: checking that its tests pass unmutated ..."
        if ! (cd "$ROOT" && PYTHONPATH="$work/src" PYTHONDONTWRITEBYTECODE=1 \
            "$PY" -m pytest -x -q -p no:cacheprovider $tests) >"$work/baseline.log" 2>&1; then
            echo "the tests of $module fail without any mutation; see $work/baseline.log" >&2
            exit 1
        fi
    fi
    echo "$module: running the mutants (log: $work/exec.log) ..."
    (cd "$work" && SOCKET="$SOCKET" cosmic-ray exec config.toml session.sqlite >"$work/exec.log" 2>&1)
    "${HELPER[@]}" report "$session" "$work/original/$module.py" "$EQUIVALENT" |
        tee "$work/report.txt"
done

#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the core's most depended-on modules: topics, wire,
# serializers, urls, and the retry core (retry, gate, workqueue), each against its own tests only. Slow (tens of minutes), so not part of CI; see
# docs/contributing.md for how to read the result.
#
#   ./scripts/mutation.sh                      all seven sessions, one after the other
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
# The tests of each session, quickest first: the run stops at the first failing test (-x).
TESTS_topics="$T/test_topics.py"
TESTS_wire="$T/wire/test_wire_schema.py $T/wire/test_wire.py"
TESTS_serializers="$T/wire/test_serializers.py $T/wire/test_bytes_payloads.py"
TESTS_urls="$T/transport/test_urls.py"
TESTS_retry="$T/transport/test_retry_policy.py $T/transport/test_for_replay.py $T/transport/test_workqueue_contract.py $T/transport/test_delivery.py"
TESTS_gate="$T/workqueue/test_gate.py $T/workqueue/test_workqueue_stale.py $T/workqueue/test_workqueue_poison.py $T/transport/test_retry_policy.py"
TESTS_workqueue="$T/transport/test_retry_policy.py $T/workqueue/test_workqueue_stale.py $T/workqueue/test_workqueue.py $T/workqueue/test_workqueue_delay.py $T/transport/test_delivery.py"
# Each session's file, under eventforge-core/src/eventforge/.
SOURCE_topics="topics.py"
SOURCE_wire="wire/_codec.py"
SOURCE_serializers="wire/serializers.py"
SOURCE_urls="transport/urls.py"
SOURCE_retry="transport/_workqueue.py"
SOURCE_gate="workqueue/_gate.py"
SOURCE_workqueue="workqueue/_api.py"
ALL=(topics wire serializers urls retry gate workqueue)

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
    original="$work/original/$(basename "$source_rel")"

    if [ "$mode" = report ]; then
        "${HELPER[@]}" report "$session" "$original" "$source_rel" "$EQUIVALENT"
        continue
    fi
    if [ "$mode" = retry ] || [ "$mode" = resume ]; then
        if ! cmp -s "$source_file" "$original"; then
            echo "$source_file changed since its session: run it anew (without --$mode)" >&2
            exit 2
        fi
        # The rest of the source as it is now (an interrupted run may also have left a mutant
        # in the copy: the module itself is the original again).
        cp -r eventforge-core/src/. "$work/src"
    else
        rm -rf "$work"
        mkdir -p "$work/original"
        cp -r eventforge-core/src "$work/src"
        cp "$source_file" "$original"
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
    fi
    # Written on every run, so that a change to the module's tests applies to a retry too.
    cat >"$work/run-tests.sh" <<EOF
#!/usr/bin/env bash
exec "$PY" -S "$RUNNER" run "\$SOCKET" "$work/src" "$ROOT" -x -q -p no:cacheprovider --timeout=$TEST_TIMEOUT $tests
EOF
    echo "$module: checking that its tests pass unmutated ..."
    if ! (cd "$ROOT" && PYTHONPATH="$work/src" PYTHONDONTWRITEBYTECODE=1 \
        "$PY" -m pytest -x -q -p no:cacheprovider $tests) >"$work/baseline.log" 2>&1; then
        echo "the tests of $module fail without any mutation; see $work/baseline.log" >&2
        exit 1
    fi
    if [ "$mode" = retry ]; then
        "${HELPER[@]}" retry-survivors "$session" "$original" "$source_rel" "$EQUIVALENT"
    fi
    echo "$module: running the mutants (log: $work/exec.log) ..."
    (cd "$work" && SOCKET="$SOCKET" cosmic-ray exec config.toml session.sqlite >"$work/exec.log" 2>&1)
    "${HELPER[@]}" report "$session" "$original" "$source_rel" "$EQUIVALENT" |
        tee "$work/report.txt"
done

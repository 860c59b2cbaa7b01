#!/usr/bin/env bash
# Run every test: unit, conformance, broker (private redis-server / nats-server), install checks.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k redis -x
source "$(dirname "$0")/_env.sh"
exec python -m pytest "$@"

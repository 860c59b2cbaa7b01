#!/usr/bin/env bash
# Build the wheels, install each alone at its declared dependency floors (uv --resolution
# lowest-direct) on the oldest supported Python, and run its selected tests against the
# installed wheels; run core's and tcp's selection on the newest Python too. See scripts/floors.py.
source "$(dirname "$0")/_env.sh"
exec python scripts/floors.py "$@"

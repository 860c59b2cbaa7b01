#!/usr/bin/env bash
# Run the benchmarks beside their anchors; prints a table of ratios. Arguments go to run.py.
source "$(dirname "$0")/_env.sh"
exec python benchmarks/run.py "$@"

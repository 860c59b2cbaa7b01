#!/usr/bin/env bash
# Set up the environment and run the walk-through on the embedded default transport.
source "$(dirname "$0")/_env.sh"
eventforge plugins
exec eventforge demo "$@"

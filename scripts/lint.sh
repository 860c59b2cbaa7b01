#!/usr/bin/env bash
# ruff (lint + format check), mypy --strict over our packages, and the import contracts.
source "$(dirname "$0")/_env.sh"
ruff check .
ruff format --check .
mypy
# The layering of eventforge-core and the plugins' use of it (contracts in pyproject.toml).
lint-imports --no-cache

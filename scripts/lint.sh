#!/usr/bin/env bash
# ruff (lint + format check) and mypy --strict over our packages.
source "$(dirname "$0")/_env.sh"
ruff check .
ruff format --check .
mypy

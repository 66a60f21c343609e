#!/usr/bin/env bash
# Installs everything (tests/install.sh), then runs every test, the linters and the type checker.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k ldap -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# The demo in one command on a fresh machine: installs what it needs (tests/install.sh), then
# starts slapd, the sidecar, a sample app and nginx on loopback. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/install.sh
exec .venv/bin/python examples/demo/run.py "$@"

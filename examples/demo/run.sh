#!/usr/bin/env bash
# The demo in one command on a fresh machine: installs what it needs and nothing more
# (tests/install.sh --demo: slapd, nginx, Node's OIDC provider, the project in .venv), then starts
# slapd, the sidecar, a sample app, nginx and the OIDC provider on loopback. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/install.sh --demo
exec .venv/bin/python examples/demo/run.py "$@"

#!/usr/bin/env bash
# Installs everything (tests/install.sh), then runs every test, the linters and the type checker,
# and the core suites again with the lowest dependency versions pyproject.toml admits.
# The main run measures coverage of the sidecar package, in the tests' process and in every Python
# child (pyproject.toml [tool.coverage]); the whole suite must reach the floor there (fail_under).
# Extra arguments go to the main pytest run, e.g. `bash tests/run.sh -k ldap -x` (no floor then).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install.sh
.venv/bin/ruff check .
.venv/bin/mypy
rm -rf build/coverage
.venv/bin/python -m coverage run -m pytest "$@"
.venv/bin/python -m coverage combine -q
if [ "$#" -eq 0 ]; then
  .venv/bin/python -m coverage report
else
  .venv/bin/python -m coverage report --fail-under=0
fi

echo "run.sh: the core suites with the lowest admitted dependency versions"
if [ ! -x .venv-lowest/bin/python ]; then "${PYTHON:-python3}" -m venv .venv-lowest; fi
.venv-lowest/bin/python -m pip install -q -r tests/lowest-bounds.txt
.venv-lowest/bin/python -m pip install -q --no-deps -e .
.venv-lowest/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_config.py tests/test_ldap.py tests/test_hostile_input.py tests/test_hang.py tests/test_chain_nginx.py \
  tests/test_sessions.py tests/test_signin.py tests/test_tokens.py tests/test_jwks.py tests/test_assertion.py \
  tests/test_local.py tests/test_redirects.py tests/test_server.py tests/test_logs.py tests/test_metrics.py \
  tests/test_store_contract.py tests/test_factor_store.py tests/test_factor_redis.py tests/test_suite_loops.py

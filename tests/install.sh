#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on a fresh Debian 12 machine: Debian
# packages and a virtual environment in .venv with the project. Safe to run again: it installs only
# what is missing.
#
#   bash tests/install.sh                everything: every test server, the test tools, the benchmark
#   bash tests/install.sh --demo         only what examples/demo/run.sh needs: slapd, nginx, the
#                                        OIDC provider's Node packages, the project without test tools
#   bash tests/install.sh --list [--demo]   print the Debian packages it would make sure of; install nothing
set -euo pipefail
cd "$(dirname "$0")/.."

demo=false
list=false
for argument in "$@"; do
  case "$argument" in
    --demo) demo=true ;;
    --list) list=true ;;
    *) echo "install.sh: unknown argument $argument (--demo, --list)" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# The demo (examples/demo/run.py): a directory, a proxy, Python. Single sign-on in the demo uses
# the OIDC provider below, which needs Node.
demo_packages=(
  slapd ldap-utils                                             # OpenLDAP server and ldapadd
  nginx-light                                                  # the proxy in front (auth_request)
  python3-venv
)
# Everything else the tests and the benchmark run.
test_packages=(
  samba samba-ad-dc samba-ad-provision winbind ldb-tools       # a real Active Directory DC
  apache2 lua-socket caddy haproxy                             # the other reverse proxies we ship files for
  systemd                                                      # systemd-analyze checks the unit file
  chromium fonts-dejavu-core                                   # a real browser for sign-in tests
  wrk libldap2-dev libsasl2-dev                                # bench/: load; python-ldap (the peer, django-auth-ldap) builds
  iproute2                                                     # ip: the Samba DC brings up its own loopback
  postgresql redis-server libpq-dev                            # a real NetBox (tests/test_netbox.py); psycopg's C build
  redis-sentinel                                               # shared state: tests/test_redis_faults.py (Sentinel failover)
)
packages=("${demo_packages[@]}")
if [ "$demo" = false ]; then packages+=("${test_packages[@]}"); fi
if [ "$list" = true ]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # The tests run private slapd instances; the package's own would need a configuration.
  echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# A real OpenID Connect provider for the single sign-on tests and the demo's "Sign in with ...":
# panva oidc-provider, pinned in tests/testbed/oidc/package-lock.json. The machine image has Node;
# Debian's (nodejs, npm; not in --list) is the fallback.
if ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -d tests/testbed/oidc/node_modules ]; then
  npm ci --prefix tests/testbed/oidc --no-audit --no-fund --loglevel=error
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$demo" = true ]; then
  .venv/bin/python -m pip install -q -e .
else
  .venv/bin/python -m pip install -q -e '.[test,dev]'
fi
echo "install.sh: ready ($(.venv/bin/python --version), $(.venv/bin/auth-sidecar --version))"

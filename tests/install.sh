#!/usr/bin/env bash
# Installs everything the tests, the demo and the benchmark need on a fresh Debian 12 machine:
# Debian packages (slapd, Samba AD, nginx, wrk) and a virtual environment in .venv with the
# project and its test tools. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

packages=(
  slapd ldap-utils                                             # OpenLDAP server and ldapadd
  samba samba-ad-dc samba-ad-provision winbind ldb-tools       # a real Active Directory DC
  nginx-light apache2 lua-socket caddy haproxy                 # the reverse proxies we ship files for
  systemd                                                      # systemd-analyze checks the unit file
  chromium fonts-dejavu-core                                   # a real browser for sign-in tests
  wrk libldap2-dev libsasl2-dev                                # bench/: load, and the peer's LDAP build
  iproute2                                                     # ip: the Samba DC brings up its own loopback
  python3-venv
)
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

# A real OpenID Connect provider for the single sign-on tests: panva oidc-provider, pinned in
# tests/testbed/oidc/package-lock.json. The machine image has Node; Debian's is the fallback.
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
.venv/bin/python -m pip install -q -e '.[test,dev]'
echo "install.sh: ready ($(.venv/bin/python --version), $(.venv/bin/auth-sidecar --version))"

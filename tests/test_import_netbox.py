"""auth-sidecar import-netbox: the examples of NetBox's LDAP guide and of django-auth-ldap's
documentation, with the test directory's DNs, convert, pass check-config, and let in exactly the
users django-auth-ldap would let in (worked out from its rules, written beside each case)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import load_config
from sidecar.importer import convert
from sidecar.yamlfile import load_yaml
from tests.conftest import StartApp, basic
from tests.testbed.slapd import Slapd

NETBOX_GUIDE = '''\
import ldap
from django_auth_ldap.config import LDAPSearch, GroupOfNamesType

# Server URI
AUTH_LDAP_SERVER_URI = "{uri}"

# The following may be needed if you are binding to Active Directory.
AUTH_LDAP_CONNECTION_OPTIONS = {{
    ldap.OPT_REFERRALS: 0
}}

# Set the DN and password for the NetBox service account.
AUTH_LDAP_BIND_DN = "{service_dn}"
AUTH_LDAP_BIND_PASSWORD = "{service_password}"

# Include this setting if you want to ignore certificate errors. This might be needed to accept a self-signed cert.
LDAP_IGNORE_CERT_ERRORS = True

AUTH_LDAP_USER_SEARCH = LDAPSearch("ou=people,dc=example,dc=com",
                                    ldap.SCOPE_SUBTREE,
                                    "(uid=%(user)s)")

# You can map user attributes to Django attributes as so.
AUTH_LDAP_USER_ATTR_MAP = {{
    "first_name": "givenName",
    "last_name": "sn",
    "email": "mail"
}}

# This search ought to return all groups to which the user belongs.
AUTH_LDAP_GROUP_SEARCH = LDAPSearch("dc=example,dc=com", ldap.SCOPE_SUBTREE,
                                    "(objectClass=groupOfNames)")
AUTH_LDAP_GROUP_TYPE = GroupOfNamesType()

# Define a group required to login.
AUTH_LDAP_REQUIRE_GROUP = "cn=netbox-users,ou=groups,dc=example,dc=com"

# Mirror LDAP group assignments.
AUTH_LDAP_MIRROR_GROUPS = True

# Define special user types using groups. Exercise great caution when assigning superuser status.
AUTH_LDAP_USER_FLAGS_BY_GROUP = {{
    "is_active": "cn=active,ou=groups,dc=example,dc=com",
    "is_staff": "cn=staff,ou=groups,dc=example,dc=com",
    "is_superuser": "cn=superuser,ou=groups,dc=example,dc=com"
}}

# For more granular permissions, we can map LDAP groups to Django groups.
AUTH_LDAP_FIND_GROUP_PERMS = True

# Cache groups for one hour to reduce LDAP traffic
AUTH_LDAP_CACHE_TIMEOUT = 3600

import logging, logging.handlers
logfile = "/opt/netbox/logs/django-ldap-debug.log"
my_logger = logging.getLogger('django_auth_ldap')
my_logger.setLevel(logging.DEBUG)
'''

# django-auth-ldap's docs/example.rst, its groups under ou=groups here.
DJANGO_AUTH_LDAP_EXAMPLE = '''\
import ldap
from django_auth_ldap.config import LDAPSearch, GroupOfNamesType

# Baseline configuration.
AUTH_LDAP_SERVER_URI = "{uri}"

AUTH_LDAP_BIND_DN = "{service_dn}"
AUTH_LDAP_BIND_PASSWORD = "{service_password}"
AUTH_LDAP_USER_SEARCH = LDAPSearch(
    "ou=people,dc=example,dc=com", ldap.SCOPE_SUBTREE, "(uid=%(user)s)"
)
# Or:
# AUTH_LDAP_USER_DN_TEMPLATE = 'uid=%(user)s,ou=users,dc=example,dc=com'

# Set up the basic group parameters.
AUTH_LDAP_GROUP_SEARCH = LDAPSearch(
    "ou=groups,dc=example,dc=com",
    ldap.SCOPE_SUBTREE,
    "(objectClass=groupOfNames)",
)
AUTH_LDAP_GROUP_TYPE = GroupOfNamesType(name_attr="cn")

# Simple group restrictions
AUTH_LDAP_REQUIRE_GROUP = "cn=active,ou=groups,dc=example,dc=com"
AUTH_LDAP_DENY_GROUP = "cn=banned,ou=groups,dc=example,dc=com"

# Populate the Django user from the LDAP directory.
AUTH_LDAP_USER_ATTR_MAP = {{
    "first_name": "givenName",
    "last_name": "sn",
    "email": "mail",
}}

AUTH_LDAP_USER_FLAGS_BY_GROUP = {{
    "is_active": "cn=active,ou=groups,dc=example,dc=com",
    "is_staff": "cn=staff,ou=groups,dc=example,dc=com",
    "is_superuser": "cn=superuser,ou=groups,dc=example,dc=com",
}}

# This is the default, but I like to be explicit.
AUTH_LDAP_ALWAYS_UPDATE_USER = True

# Use LDAP group membership to calculate group permissions.
AUTH_LDAP_FIND_GROUP_PERMS = True

# Cache distinguished names and group memberships for an hour to minimize
# LDAP traffic.
AUTH_LDAP_CACHE_TIMEOUT = 3600

# Keep ModelBackend around for per-user permissions and maybe a local
# superuser.
AUTHENTICATION_BACKENDS = (
    "django_auth_ldap.backend.LDAPBackend",
    "django.contrib.auth.backends.ModelBackend",
)
'''

# (user, password) -> what django-auth-ldap answers: None refused, else (superuser, staff, groups mirrored).
NETBOX_GUIDE_USERS: dict[tuple[str, str], Any] = {
    ("alice", "alice-pass"): ("true", "true", "active|netbox-users|staff|superuser"),
    ("bob", "bob-pass"): ("false", "false", "active|banned|netbox-users"),  # no deny group in the guide
    ("carol", "carol-pass"): ("false", "false", "active|cycle-a|level1|netbox-users"),  # direct groups only
    ("jose", "jose-pass"): ("false", "false", "active|netbox-users"),
    ("dave", "dave-pass"): None,  # not in the required group
    ("o'brien", "obrien-pass"): None,  # active, but not in netbox-users
    ("alice", "wrong"): None,
    ("nobody", "x"): None,
}
DJANGO_EXAMPLE_USERS: dict[tuple[str, str], Any] = {
    ("alice", "alice-pass"): ("true", "true", ""),  # MIRROR_GROUPS unset: Django's groups untouched
    ("bob", "bob-pass"): None,  # in the deny group
    ("carol", "carol-pass"): ("false", "false", ""),
    ("o'brien", "obrien-pass"): ("false", "false", ""),  # active is the required group here
    ("a+b", "ab-pass"): ("false", "false", ""),
    ("dave", "dave-pass"): None,  # not active
    ("carol", "wrong"): None,
}


def written(example: str, slapd: Slapd) -> str:
    return example.format(uri=slapd.uri, service_dn=slapd.service_dn, service_password=slapd.service_password)


@pytest.mark.parametrize(("example", "users", "expected_warnings"), [
    (NETBOX_GUIDE, NETBOX_GUIDE_USERS, ["line 57: not read: my_logger.setLevel(logging.DEBUG)"]),
    (DJANGO_AUTH_LDAP_EXAMPLE, DJANGO_EXAMPLE_USERS, []),
], ids=["netbox-guide", "django-auth-ldap-docs"])
async def test_the_documented_examples_convert_and_let_in_the_same_users(
        example: str, users: dict[tuple[str, str], Any], expected_warnings: list[str],
        slapd: Slapd, app_client: StartApp, tmp_path: Path) -> None:
    text, warnings = convert(written(example, slapd))
    assert [w for w in warnings if "password is written in the file" not in w and w.split(" (")[0]
            not in expected_warnings and not any(w.startswith(e) for e in expected_warnings)] == []
    assert len(warnings) == len(expected_warnings) + 1  # the inline password: better {file:} or {env:}
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = load_config(path)  # what check-config reads
    client = await app_client(config)
    for (user, password), expected in users.items():
        response = await client.get("/auth", headers=basic(user, password))
        if expected is None:
            assert response.status in (401, 403), (user, response.status)
            continue
        assert response.status == 200, (user, response.status)
        flags = (response.headers["Remote-User-Superuser"], response.headers["Remote-User-Staff"],
                 response.headers["Remote-User-Group"])
        assert flags == expected, user


def test_check_config_accepts_the_converted_file(slapd: Slapd, tmp_path: Path) -> None:
    source = tmp_path / "ldap_config.py"
    source.write_text(written(NETBOX_GUIDE, slapd))
    converted = subprocess.run([sys.executable, "-m", "sidecar", "import-netbox", str(source)],
                               capture_output=True, text=True, check=True)
    assert "# WARNING line 57: not read: my_logger.setLevel" in converted.stdout
    assert "auth-sidecar: warning: line 57" in converted.stderr
    path = tmp_path / "config.yaml"
    path.write_text(converted.stdout)
    checked = subprocess.run([sys.executable, "-m", "sidecar", "check-config", str(path)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == f"{path}: ok\n"


def ldap_of(source: str) -> Any:
    text, _ = convert(source)
    return load_yaml(text)["ldap"]


def test_queries_unions_group_types_and_options_convert() -> None:
    ldap = ldap_of('''
import ldap, os
from django_auth_ldap.config import *
BASE = "dc=example,dc=com"
AUTH_LDAP_SERVER_URI = "ldap://a.example.com ldap://b.example.com"
AUTH_LDAP_START_TLS = True
AUTH_LDAP_BIND_DN = os.environ.get("BIND_DN", "cn=sa," + BASE)
AUTH_LDAP_BIND_PASSWORD = os.environ["LDAP_PASSWORD"]
AUTH_LDAP_GLOBAL_OPTIONS = {ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND, ldap.OPT_X_TLS_NEWCTX: 0,
                            ldap.OPT_X_TLS_CACERTDIR: "/etc/ssl/ldap", ldap.OPT_X_TLS_CERTFILE: "/c.pem",
                            ldap.OPT_X_TLS_KEYFILE: "/k.pem", ldap.OPT_NETWORK_TIMEOUT: 2}
AUTH_LDAP_USER_SEARCH = LDAPSearchUnion(LDAPSearch("ou=a," + BASE, ldap.SCOPE_ONELEVEL, "(uid=%(user)s)"),
                                        LDAPSearch("ou=b," + BASE, ldap.SCOPE_SUBTREE, "(uid=%(user)s)"))
AUTH_LDAP_GROUP_SEARCH = LDAPSearch("ou=groups," + BASE, ldap.SCOPE_SUBTREE)
AUTH_LDAP_GROUP_TYPE = MemberDNGroupType("uniqueMember", name_attr="ou")
AUTH_LDAP_REQUIRE_GROUP = (LDAPGroupQuery("cn=a," + BASE) | LDAPGroupQuery("cn=b," + BASE)) & ~LDAPGroupQuery("cn=c")
AUTH_LDAP_USER_FLAGS_BY_GROUP = {"is_staff": ["cn=s1", "cn=s2"], "is_superuser": LDAPGroupQuery("cn=su")}
AUTH_LDAP_MIRROR_GROUPS = ["ops", "dev"]
''')
    assert ldap["server_uri"] == ["ldap://a.example.com", "ldap://b.example.com"]
    assert ldap["bind_dn"] == "cn=sa,dc=example,dc=com" and ldap["bind_password"] == {"env": "LDAP_PASSWORD"}
    assert (ldap["ignore_cert_errors"], ldap["ca_dir"], ldap["client_cert"], ldap["client_key"],
            ldap["connect_timeout"]) == (False, "/etc/ssl/ldap", "/c.pem", "/k.pem", 2)
    assert ldap["user_search"] == [
        {"base_dn": "ou=a,dc=example,dc=com", "scope": "one", "filter": "(uid=%(user)s)"},
        {"base_dn": "ou=b,dc=example,dc=com", "scope": "subtree", "filter": "(uid=%(user)s)"}]
    assert (ldap["group_type"], ldap["member_attr"], ldap["group_name_attr"]) == ("member_dn", "uniqueMember", "ou")
    assert ldap["require_group"] == {"and": [{"or": ["cn=a,dc=example,dc=com", "cn=b,dc=example,dc=com"]},
                                             {"not": "cn=c"}]}
    assert ldap["user_flags_by_group"] == {"is_staff": ["cn=s1", "cn=s2"], "is_superuser": "cn=su"}
    assert ldap["mirror_groups"] == ["ops", "dev"] and ldap["username_case"] == "lower"


def test_settings_prefixes_become_several_directories_and_absent_settings_warn() -> None:
    text, warnings = convert('''
from django_auth_ldap.config import LDAPSearch, NestedActiveDirectoryGroupType
import ldap
AUTH_LDAP_SERVER_URI = "ldaps://dc.corp.example.com"
AUTH_LDAP_USER_DN_TEMPLATE = "uid=%(user)s,ou=people,dc=corp"
AUTH_LDAP_PERMIT_EMPTY_PASSWORD = True
AUTH_LDAP_NO_NEW_USERS = True
AUTH_LDAP_PARTNER_SERVER_URI = "ldaps://dc.partner.example.com"
AUTH_LDAP_PARTNER_USER_DN_TEMPLATE = "uid=%(user)s,ou=people,dc=partner"
AUTH_LDAP_PARTNER_GROUP_TYPE = NestedActiveDirectoryGroupType()
ldap.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_NEVER)
AUTH_LDAP_USER_SEARCH = LDAPSearch(base_dn_from_elsewhere(), ldap.SCOPE_SUBTREE, "(uid=%(user)s)")
''')
    directories = load_yaml(text)["ldap"]
    assert [d["name"] for d in directories] == ["ldap", "partner"]
    assert directories[1]["group_type"] == "active_directory" and all(d["ignore_cert_errors"] for d in directories)
    assert any(w.startswith("AUTH_LDAP_PERMIT_EMPTY_PASSWORD (line 6): is not available: a bind with a DN and an "
                            "empty password is an unauthenticated bind") for w in warnings)
    assert any(w.startswith("AUTH_LDAP_NO_NEW_USERS (line 7): is the application's choice") for w in warnings)
    assert any(w.startswith("AUTH_LDAP_USER_SEARCH (line 12): not converted: the call base_dn_from_elsewhere(...)")
               for w in warnings)
    assert text.count("# WARNING ") == len(warnings)


def test_the_file_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text, warnings = convert(f'import os\nos.system("touch {marker}")\nAUTH_LDAP_SERVER_URI = open("{marker}").read()\n'
                             'AUTH_LDAP_USER_DN_TEMPLATE = "uid=%(user)s,dc=x"\n')
    assert not marker.exists()
    assert any("not read: os.system" in w for w in warnings)
    assert any(w.startswith("AUTH_LDAP_SERVER_URI (line 3): not converted: the call open(") for w in warnings)
    assert "user_dn_template" in text


def test_a_file_that_is_not_python_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "ldap_config.py"
    source.write_text("AUTH_LDAP_SERVER_URI = \n")
    result = subprocess.run([sys.executable, "-m", "sidecar", "import-netbox", str(source)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "not Python (line 1)" in result.stderr and result.stdout == ""

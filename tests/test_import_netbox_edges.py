"""auth-sidecar import-netbox on the unusual: settings the reader refuses, values with no
equivalent, options and constructors seldom written. Each case says what the user is shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sidecar.importer import convert
from sidecar.yamlfile import load_yaml
from tests.testbed import ROOT

HEAD = 'import ldap\nimport os\nAUTH_LDAP_SERVER_URI = "ldap://ldap.example.com"\n'


def yaml_and_warnings(body: str) -> tuple[str, list[str]]:
    return convert(HEAD + body)


def test_an_f_string_of_names_is_read_and_one_of_the_environment_is_refused() -> None:
    output, warnings = yaml_and_warnings(
        'BASE = "dc=example,dc=com"\nAUTH_LDAP_BIND_DN = f"cn=netbox,{BASE}"\n'
        'AUTH_LDAP_USER_DN_TEMPLATE = f"uid=%(user)s,{os.environ[\'BASE\']}"\n')
    assert 'bind_dn: "cn=netbox,dc=example,dc=com"' in output
    assert "AUTH_LDAP_USER_DN_TEMPLATE (line 6): not converted: $BASE inside a string" in warnings
    assert "user_dn_template" not in output


def test_expressions_the_reader_does_not_evaluate_are_each_a_warning() -> None:
    _, warnings = yaml_and_warnings(
        "AUTH_LDAP_BIND_DN = UNDEFINED\n"
        "AUTH_LDAP_BIND_PASSWORD = os.environ.PASSWORD\n"
        "AUTH_LDAP_USER_ATTR_MAP = {**OTHER}\n"
        'AUTH_LDAP_REQUIRE_GROUP = ~"cn=x"\n'
        "AUTH_LDAP_CACHE_TIMEOUT = [n for n in (1, 2)]\n"
        'AUTH_LDAP_START_TLS = "a" + 1\n'
        "AUTH_LDAP_USER_SEARCH = LDAPSearch(*ARGS)\n"
        'AUTH_LDAP_DENY_GROUP = LDAPGroupQuery("cn=a", "cn=b")\n'
        "AUTH_LDAP_FIND_GROUP_PERMS = secret()\n")
    assert warnings == [
        "AUTH_LDAP_BIND_DN (line 4): not converted: the name UNDEFINED is not assigned earlier in the file",
        "AUTH_LDAP_BIND_PASSWORD (line 5): not converted: os.environ is read with [NAME], .get(NAME) or "
        "os.getenv(NAME)",
        "AUTH_LDAP_USER_ATTR_MAP (line 6): not converted: ** in a dict",
        "AUTH_LDAP_REQUIRE_GROUP (line 7): not converted: ~ of something that is no LDAPGroupQuery",
        "AUTH_LDAP_CACHE_TIMEOUT (line 8): not converted: ListComp is not read (only literals, names and the "
        "django-auth-ldap constructors are)",
        "AUTH_LDAP_START_TLS (line 9): not converted: Add of str and int",
        "AUTH_LDAP_USER_SEARCH (line 10): not converted: *arguments",
        "AUTH_LDAP_DENY_GROUP (line 11): not converted: LDAPGroupQuery takes one group DN here",
        "AUTH_LDAP_FIND_GROUP_PERMS (line 12): not converted: the call secret(...) is not read",
    ]


def test_a_bare_constructor_name_is_no_search() -> None:
    output, warnings = yaml_and_warnings("AUTH_LDAP_USER_SEARCH = LDAPSearch\n")
    assert warnings == ["AUTH_LDAP_USER_SEARCH (line 4): not converted: expected LDAPSearch(...) or "
                        "LDAPSearchUnion(...)"]
    assert "# WARNING AUTH_LDAP_USER_SEARCH (line 4)" in output and "user_search" not in output


def test_conversions_negative_numbers_and_an_unknown_scope() -> None:
    output, warnings = yaml_and_warnings(
        'AUTH_LDAP_CACHE_TIMEOUT = int("600")\n'
        'AUTH_LDAP_BIND_PASSWORD = str(os.environ["LDAP_PASSWORD"])\n'
        "AUTH_LDAP_CONNECTION_OPTIONS = {ldap.OPT_TIMEOUT: -5}\n"
        'AUTH_LDAP_GROUP_SEARCH = LDAPSearch("dc=x", ldap.SCOPE_CHILDREN)\n')
    assert "cache_timeout: 600" in output
    assert 'bind_password: {"env": "LDAP_PASSWORD"}' in output
    assert "timeout: 1" in output  # at least a second
    assert warnings == ["AUTH_LDAP_GROUP_SEARCH (line 7): not converted: the scope 'SCOPE_CHILDREN'"]


def test_statements_that_are_not_plain_assignments() -> None:
    output, warnings = yaml_and_warnings(
        "ldap.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, UNDEFINED)\n"
        "AUTH_LDAP_BIND_DN: str\n"
        "settings.AUTH_LDAP_BIND_DN = 'cn=x'\n"
        "AUTH_LDAP_SOMETHING_ELSE = 1\n")
    assert warnings == [
        "ldap.set_option (line 4): not converted: the name UNDEFINED is not assigned earlier in the file",
        "line 5: not read: only assignments to plain names are",
        "line 6: not read: only assignments to plain names are",
        "AUTH_LDAP_SOMETHING_ELSE (line 7): not a django-auth-ldap setting; left out",
    ]
    assert "bind_dn" not in output and "ignore_cert_errors" not in output


def test_a_file_without_settings_says_what_to_fill_in() -> None:
    output, warnings = convert("import ldap\nDEBUG = True\n")
    assert warnings == ["no AUTH_LDAP_ setting in the file: fill in server_uri and the user search"]
    assert output.splitlines()[2] == f"# WARNING {warnings[0]}"
    assert "  username_case: \"lower\"" in output and "  cache_timeout: 0" in output


def test_settings_of_the_wrong_kind_are_not_converted() -> None:
    output, warnings = yaml_and_warnings(
        'AUTH_LDAP_USER_ATTR_MAP = "mail"\n'
        'AUTH_LDAP_CONNECTION_OPTIONS = "referrals"\n'
        'AUTH_LDAP_GROUP_TYPE = "groupOfNames"\n'
        "AUTH_LDAP_GROUP_TYPE = MemberDNGroupType()\n"
        "AUTH_LDAP_REQUIRE_GROUP = 5\n"
        'AUTH_LDAP_USER_FLAGS_BY_GROUP = "cn=staff"\n')
    assert warnings == [
        "AUTH_LDAP_USER_ATTR_MAP (line 4): not converted: expected a dict",
        "AUTH_LDAP_CONNECTION_OPTIONS (line 5): not converted: expected a dict of ldap.OPT_* options",
        "AUTH_LDAP_GROUP_TYPE (line 7): not converted: MemberDNGroupType without member_attr",
        "AUTH_LDAP_REQUIRE_GROUP (line 8): not converted: expected a group DN, a list of them or an LDAPGroupQuery",
        "AUTH_LDAP_USER_FLAGS_BY_GROUP (line 9): not converted: expected a dict",
    ]
    assert "user_attr_map: {}" in output  # the default, as nothing was converted
    # The group type refused: no member_attr is written (group_type itself is; see the report).
    assert "member_attr:" not in output and "require_group:" not in output


def test_a_group_type_that_is_a_string_is_refused() -> None:
    _, warnings = yaml_and_warnings('AUTH_LDAP_GROUP_TYPE = "x"\n')
    assert warnings == ["AUTH_LDAP_GROUP_TYPE (line 4): not converted: expected one of django-auth-ldap's group types"]


def test_off_values_say_nothing_and_always_update_false_is_a_warning() -> None:
    output, warnings = yaml_and_warnings(
        "AUTH_LDAP_MIRROR_GROUPS_EXCEPT = None\n"
        "AUTH_LDAP_REQUIRE_GROUP = None\n"
        "AUTH_LDAP_PERMIT_EMPTY_PASSWORD = False\n"
        "AUTH_LDAP_NO_NEW_USERS = False\n"
        "AUTH_LDAP_ALWAYS_UPDATE_USER = False\n")
    assert len(warnings) == 1
    assert warnings[0].startswith("AUTH_LDAP_ALWAYS_UPDATE_USER (line 8): False has no equivalent: every sign-in")
    for key in ("mirror_groups_except", "require_group", "permit_empty_password", "no_new_users"):
        assert key not in output


def test_values_from_the_environment_and_symbols_in_mirror_groups_and_bind_dn() -> None:
    output, warnings = yaml_and_warnings('AUTH_LDAP_MIRROR_GROUPS = os.environ.get("MIRROR", True)\n')
    assert "mirror_groups: true" in output and warnings == []
    output, warnings = yaml_and_warnings('AUTH_LDAP_MIRROR_GROUPS = [os.getenv("GROUP")]\n')
    assert warnings == ["AUTH_LDAP_MIRROR_GROUPS (line 4): not converted: read from $GROUP at NetBox's start, "
                        "with no default: write its value"]
    assert "mirror_groups: false" in output  # the default stays
    _, warnings = yaml_and_warnings("AUTH_LDAP_MIRROR_GROUPS = ldap.SCOPE_BASE\n")
    assert warnings == ["AUTH_LDAP_MIRROR_GROUPS (line 4): not converted: ldap.SCOPE_BASE is not a value here"]
    output, warnings = yaml_and_warnings('AUTH_LDAP_BIND_DN = os.environ["BIND_DN"]\n')
    assert warnings == ["AUTH_LDAP_BIND_DN (line 4): not converted: read from $BIND_DN at NetBox's start, "
                        "with no default: write its value"]
    assert "bind_dn" not in output


def test_an_unknown_flag_has_no_header() -> None:
    output, warnings = yaml_and_warnings(
        'AUTH_LDAP_USER_FLAGS_BY_GROUP = {"is_staff": "cn=staff", "is_admin": "cn=admins"}\n')
    assert warnings == ["AUTH_LDAP_USER_FLAGS_BY_GROUP (line 4): the flag 'is_admin' has no header: only is_active, "
                        "is_staff and is_superuser reach the application"]
    assert 'user_flags_by_group: {"is_staff": "cn=staff"}' in output


def test_options_not_needed_debug_and_unknown() -> None:
    output, warnings = yaml_and_warnings(
        "AUTH_LDAP_GLOBAL_OPTIONS = {ldap.OPT_X_TLS_NEWCTX: 0, ldap.OPT_DEBUG_LEVEL: 255, ldap.OPT_SIZELIMIT: 10}\n")
    assert warnings == [
        "AUTH_LDAP_GLOBAL_OPTIONS (line 4): OPT_DEBUG_LEVEL: the sidecar's log.level debug, and auth-sidecar "
        "test-login",
        "AUTH_LDAP_GLOBAL_OPTIONS (line 4): OPT_SIZELIMIT has no equivalent; left out",
    ]
    assert "NEWCTX" not in output


def test_a_file_that_cannot_be_read_exits_2(tmp_path: Path) -> None:
    missing = subprocess.run([sys.executable, "-m", "sidecar", "import-netbox", str(tmp_path / "nope.py")],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert missing.returncode == 2 and "nope.py: No such file or directory" in missing.stderr
    assert missing.stdout == ""
    latin = tmp_path / "latin.py"
    latin.write_bytes(b'AUTH_LDAP_BIND_DN = "cn=J\xf6rg"\n')
    binary = subprocess.run([sys.executable, "-m", "sidecar", "import-netbox", str(latin)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert binary.returncode == 2 and "latin.py: " in binary.stderr and "utf-8" in binary.stderr
    assert binary.stdout == ""


def test_a_value_that_is_no_number_is_a_warning_never_a_crash() -> None:
    text, warnings = convert('AUTH_LDAP_SERVER_URI = "ldap://x"\nAUTH_LDAP_USER_DN_TEMPLATE = "uid=%(user)s,dc=x"\n'
                             'AUTH_LDAP_CACHE_TIMEOUT = int("soon")\n'
                             'import ldap\nAUTH_LDAP_CONNECTION_OPTIONS = {ldap.OPT_TIMEOUT: "x"}\n')
    assert any(w.startswith("AUTH_LDAP_CACHE_TIMEOUT (line 3): not converted: int('soon') is no value")
               for w in warnings), warnings
    assert any("OPT_TIMEOUT 'x' is no number of seconds; left out" in w for w in warnings), warnings
    ldap = load_yaml(text)["ldap"]
    assert ldap["cache_timeout"] == 0 and "timeout" not in ldap  # django-auth-ldap's default, as if unset


def test_a_group_type_without_its_member_attribute_is_not_half_converted() -> None:
    text, warnings = convert('from django_auth_ldap.config import *\nAUTH_LDAP_SERVER_URI = "ldap://x"\n'
                             'AUTH_LDAP_USER_DN_TEMPLATE = "uid=%(user)s,dc=x"\n'
                             'AUTH_LDAP_GROUP_TYPE = MemberDNGroupType()\n')
    assert any("MemberDNGroupType without member_attr" in w for w in warnings), warnings
    ldap = load_yaml(text)["ldap"]
    assert "group_type" not in ldap and "member_attr" not in ldap

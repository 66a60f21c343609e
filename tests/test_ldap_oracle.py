"""django-auth-ldap itself as the oracle: the examples of NetBox's LDAP guide and of django-auth-ldap's
documentation, run by the real django-auth-ldap (python-ldap, a Django with an in-memory database)
against the same slapd, let in exactly the users, with exactly the flags and mirrored groups, that
test_import_netbox expects of the sidecar running the converted file.

So the expectations written beside each case there are not our reading of django-auth-ldap's rules:
they are what it does. The oracle runs in a child process (Django's settings are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_import_netbox import (
    DJANGO_AUTH_LDAP_EXAMPLE,
    DJANGO_EXAMPLE_USERS,
    NETBOX_GUIDE,
    NETBOX_GUIDE_USERS,
    written,
)
from tests.testbed.slapd import Slapd

pytestmark = pytest.mark.server

# The child: the settings file executed as NetBox executes it (this is our own test file), then
# django.contrib.auth.authenticate through django_auth_ldap.backend.LDAPBackend only.
ORACLE = r'''
import json, sys
import django
from django.conf import settings

namespace = {}
exec(compile(open(sys.argv[1]).read(), "ldap_config.py", "exec"), namespace)
ldap_settings = {k: v for k, v in namespace.items() if k.startswith("AUTH_LDAP_")}
settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    AUTHENTICATION_BACKENDS=["django_auth_ldap.backend.LDAPBackend"],
    **ldap_settings,
)
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import authenticate

answers = []
for username, password in json.loads(sys.argv[2]):
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        answers.append(None)
        continue
    groups = "|".join(sorted(g.name for g in user.groups.all()))
    answers.append([user.username, str(user.is_superuser).lower(), str(user.is_staff).lower(), groups])
print(json.dumps(answers))
'''


def django_auth_ldap_answers(settings_text: str, users: list[tuple[str, str]], tmp_path: Path) -> list[Any]:
    settings = tmp_path / "ldap_config.py"
    settings.write_text(settings_text)
    done = subprocess.run([sys.executable, "-c", ORACLE, str(settings), json.dumps(users)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(("example", "users"), [
    (NETBOX_GUIDE, NETBOX_GUIDE_USERS),
    (DJANGO_AUTH_LDAP_EXAMPLE, DJANGO_EXAMPLE_USERS),
], ids=["netbox-guide", "django-auth-ldap-docs"])
def test_django_auth_ldap_answers_what_the_sidecar_is_held_to(
        example: str, users: dict[tuple[str, str], Any], slapd: Slapd, tmp_path: Path) -> None:
    asked = list(users)
    answers = django_auth_ldap_answers(written(example, slapd), asked, tmp_path)
    for (username, password), answer in zip(asked, answers, strict=True):
        expected = users[(username, password)]
        if expected is None:
            assert answer is None, (username, answer)
            continue
        assert answer is not None, username
        assert answer[0] == username.lower()  # django-auth-ldap creates users in lower case
        assert tuple(answer[1:]) == expected, username


def test_django_auth_ldap_lower_cases_what_the_directory_spells(slapd: Slapd, tmp_path: Path) -> None:
    """A name typed in capitals reaches django-auth-ldap's user as lower case: the account the
    sidecar's username_case: lower (its default) meets."""
    answers = django_auth_ldap_answers(written(DJANGO_AUTH_LDAP_EXAMPLE, slapd), [("ALICE", "alice-pass")], tmp_path)
    assert answers == [["alice", "true", "true", ""]]

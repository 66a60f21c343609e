"""sidecar.contrib.django against django-auth-ldap's ways with users and groups: accounts found by
name whatever its case (``__iexact``, as django-auth-ldap finds them), and a list of mirrored groups
(MIRROR_GROUPS / MIRROR_GROUPS_EXCEPT) that leaves the application's other groups alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.django_project import need_module

need_module("django")

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    from tests.django_project import settings as project

    settings.configure(**{name: getattr(project, name) for name in dir(project) if name.isupper()})
    django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import override_settings  # noqa: E402

from sidecar.contrib.django import load_options, sync_user  # noqa: E402
from sidecar.identity import Identity  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def database() -> None:
    call_command("migrate", verbosity=0)


@pytest.fixture(autouse=True)
def rollback(database: None) -> Iterator[None]:
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def identity(username: str, *groups: str) -> Identity:
    return Identity(username=username, groups=groups, source="ldap")


def test_a_user_arriving_with_other_case_keeps_the_account_django_auth_ldap_made() -> None:
    made = User.objects.create(username="erin")
    user = sync_user(identity("Erin"))
    assert user.pk == made.pk and User.objects.count() == 1 and user.username == "erin"


def test_of_accounts_differing_only_in_case_the_exact_one_is_chosen() -> None:
    User.objects.create(username="erin")
    upper = User.objects.create(username="Erin")
    assert sync_user(identity("Erin")).pk == upper.pk and User.objects.count() == 2


def test_a_mirror_groups_list_leaves_the_applications_other_groups_alone() -> None:
    local = Group.objects.create(name="local-only")
    user = User.objects.create(username="alice")
    user.groups.add(local, Group.objects.create(name="staff"))
    with override_settings(SIDECAR={"MIRROR_GROUPS": ["staff", "ops"]}):
        sync_user(identity("alice", "ops", "unlisted"))
    assert sorted(g.name for g in user.groups.all()) == ["local-only", "ops"]  # staff removed, unlisted not added


def test_mirror_groups_except_never_touches_those() -> None:
    keep = Group.objects.create(name="manual")
    user = User.objects.create(username="alice")
    user.groups.add(keep)
    with override_settings(SIDECAR={"MIRROR_GROUPS_EXCEPT": ["manual", "vpn"]}):
        sync_user(identity("alice", "vpn", "ops"))
    assert sorted(g.name for g in user.groups.all()) == ["manual", "ops"]


def test_mirror_groups_and_its_exception_are_one_or_the_other() -> None:
    with pytest.raises(ImproperlyConfigured, match="MIRROR_GROUPS and MIRROR_GROUPS_EXCEPT"):
        load_options({"MIRROR_GROUPS": ["a"], "MIRROR_GROUPS_EXCEPT": ["b"]})

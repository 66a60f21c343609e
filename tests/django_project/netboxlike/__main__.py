"""Sends the header sets given as a JSON list on stdin through the Django stack, in that order
and with one session, and prints (as JSON) what the database holds after each."""

from __future__ import annotations

import json
import os
import sys

import django

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django_project.netboxlike.settings"
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402


def stored(username: str) -> dict[str, object]:
    user = get_user_model()._default_manager.get(username=username)
    return {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_superuser": user.is_superuser,
        "has_is_staff": hasattr(user, "is_staff"),
        "groups": sorted(group.name for group in user.groups.all()),
        "group_model": user.groups.model._meta.label,
    }


def main() -> None:
    call_command("migrate", run_syncdb=True, verbosity=0)
    client = Client()
    results = []
    for environ in json.load(sys.stdin):
        seen = client.get("/anon", **environ).json()
        results.append({"anonymous": seen["anonymous"], "stored": stored(environ["HTTP_REMOTE_USER"])})
    json.dump(results, sys.stdout)


main()

"""The test project's settings with the NetBox-shaped user model."""

from __future__ import annotations

from tests.django_project.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.django_project.netboxlike"]  # noqa: F405
AUTH_USER_MODEL = "netboxlike.User"

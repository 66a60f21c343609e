"""Settings: sessions, auth, and the sidecar's middleware and backend; nothing else."""

from __future__ import annotations

import os

SECRET_KEY = "tests-only-not-secret-" + "x" * 40
DEBUG = False
# app.test and admin.app.test: the hosts of tests/test_chain_attacks.py.
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver", "app.test", "admin.app.test"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "sidecar.contrib.django.SidecarMiddleware",
]
AUTHENTICATION_BACKENDS = ["sidecar.contrib.django.SidecarBackend"]
ROOT_URLCONF = "tests.django_project.urls"
WSGI_APPLICATION = "tests.django_project.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SIDECAR_TEST_DB", ":memory:"),
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
# The defaults; tests change them with override_settings.
SIDECAR: dict[str, object] = {}

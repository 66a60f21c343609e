"""Routes of the test project."""

from __future__ import annotations

from django.urls import path, re_path

from tests.django_project import views

urlpatterns = [
    path("whoami", views.whoami),
    path("anon", views.anon),
    path("meta", views.meta),
    # Everything else: who Django thinks the user is, for any path (tests/test_chain_attacks.py).
    re_path(r"", views.anything),
]

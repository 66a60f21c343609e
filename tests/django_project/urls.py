"""Routes of the test project."""

from __future__ import annotations

from django.urls import path

from tests.django_project import views

urlpatterns = [
    path("whoami", views.whoami),
    path("anon", views.anon),
    path("meta", views.meta),
]

"""What the application sees: the user Django resolved, and the identity headers left in META."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse


def whoami(request: HttpRequest) -> JsonResponse:
    """The request's user as JSON; ``{"authenticated": false}`` for an anonymous one."""
    return JsonResponse(_user(request))


def anything(request: HttpRequest) -> JsonResponse:
    """Any other path: the user as whoami has it, and the path and host Django dispatched on."""
    return JsonResponse({**_user(request), "path": request.path, "host": request.get_host()})


def _user(request: HttpRequest) -> dict[str, object]:
    user = request.user
    if not user.is_authenticated:
        return {"authenticated": False}
    return {
        "authenticated": True,
        "username": user.get_username(),
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": sorted(group.name for group in user.groups.all()),
    }


def anon(request: HttpRequest) -> JsonResponse:
    """Reachable by anyone: whether the request is anonymous."""
    return JsonResponse({"anonymous": not request.user.is_authenticated})


def meta(request: HttpRequest) -> JsonResponse:
    """Every environ key an application might read as identity, with its value."""
    seen = {key: value for key, value in request.META.items()
            if key == "REMOTE_USER" or key.startswith("HTTP_REMOTE") or key.startswith("sidecar.")}
    return JsonResponse(seen)

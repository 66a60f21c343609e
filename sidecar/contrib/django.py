"""Django integration: log users in from the sidecar's identity headers and keep them in step.

    AUTHENTICATION_BACKENDS = ["sidecar.contrib.django.SidecarBackend"]
    MIDDLEWARE = [..., "django.contrib.sessions.middleware.SessionMiddleware", ...,
                  "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "sidecar.contrib.django.SidecarMiddleware", ...]
    SIDECAR = {                                    # every key optional; these are the defaults
        "HEADERS": {"user": "Remote-User", "first_name": "Remote-User-First-Name",
                    "last_name": "Remote-User-Last-Name", "email": "Remote-User-Email",
                    "groups": "Remote-User-Group", "is_staff": "Remote-User-Staff",
                    "is_superuser": "Remote-User-Superuser", "assertion": "Remote-User-Assertion"},
        "GROUP_SEPARATOR": "|",
        "CREATE_GROUPS": True,      # create groups named in the header that do not exist yet
        "SYNC_GROUPS": True,        # remove the user from groups the header does not name
        "MIRROR_GROUPS": None,      # a list: only these groups are added and removed, others left alone
        "MIRROR_GROUPS_EXCEPT": None,  # a list: these groups are never added or removed
        "STAFF_GROUPS": None,       # a list: is_staff = member of one of them (instead of the flag header)
        "SUPERUSER_GROUPS": None,   # a list: is_superuser likewise
        "ASSERTION": None,          # {"issuer", "audience", "jwks_url" or "jwks"}: require a signed identity
    }

Unlike Django's and NetBox's remote-user classes, the user is brought in line with the headers on
every request, not only at login: names, email, flags and groups change as soon as the directory
does, with no database write when nothing changed. Values are decoded from UTF-8 (see
:mod:`sidecar.contrib.headers`).

A header missing from a request that names a user is read as its empty value, never as "as
before": no Remote-User-Superuser or -Staff means False, no Remote-User-Group means no groups
(the mirrored ones are removed, as for an empty header), no name or email means empty. A proxy
that drops a header the sidecar set (a client naming it in ``Connection``) demotes, never keeps.

API clients (scripts, pynetbox, curl: a request with neither ``Origin`` nor ``Sec-Fetch-Site``, which
every current browser sends with any request another site could forge) signed in with Basic at
the proxy carry no CSRF cookie and no session. For them the identity is the request's own: no
Django session is opened (nothing for a script to keep), and Django's CSRF check is skipped, as
Django REST framework skips it for its own Basic and token logins. Browsers keep the session and
the CSRF check as they are.

Without ``ASSERTION`` the headers are trusted as they come: only the proxy may be able to reach the
application, and it must overwrite every identity header. With it, a request whose
``Remote-User-Assertion`` is missing, invalid or different from the plain headers is anonymous.

Django's types are loose here: the user model is whatever AUTH_USER_MODEL says (NetBox's has no
is_staff), so users and models are ``Any`` at this boundary.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.backends import RemoteUserBackend
from django.contrib.auth.middleware import RemoteUserMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponseBase

from sidecar.contrib.headers import HeaderNames, IdentityReader, decode, make_verifier
from sidecar.identity import Identity

log = logging.getLogger("sidecar.contrib")

KEYS = ("HEADERS", "GROUP_SEPARATOR", "CREATE_GROUPS", "SYNC_GROUPS", "MIRROR_GROUPS", "MIRROR_GROUPS_EXCEPT",
        "STAFF_GROUPS", "SUPERUSER_GROUPS",
        "ASSERTION")
# Where a request keeps its identity once read, so the middleware and the backend check it once.
_CACHE = "_sidecar_identity"
_UNSET = object()


@dataclass(frozen=True)
class Options:
    """``settings.SIDECAR``, checked and built once (the verifier keeps its key cache across requests)."""

    reader: IdentityReader
    create_groups: bool = True
    sync_groups: bool = True
    staff_groups: frozenset[str] | None = None
    superuser_groups: frozenset[str] | None = None
    # django-auth-ldap's AUTH_LDAP_MIRROR_GROUPS as a list, and MIRROR_GROUPS_EXCEPT: the groups the
    # header speaks for; the application's other groups are left alone.
    mirror_groups: frozenset[str] | None = None
    mirror_groups_except: frozenset[str] = frozenset()


@functools.cache
def options() -> Options:
    """The current options; ImproperlyConfigured lists every problem in ``settings.SIDECAR``."""
    return load_options(getattr(settings, "SIDECAR", {}))


def _reload(*, setting: str, **kwargs: object) -> None:
    # override_settings(SIDECAR=...) in tests, or any runtime change, takes effect at once.
    if setting == "SIDECAR":
        options.cache_clear()


setting_changed.connect(_reload, dispatch_uid="sidecar.contrib.django")


def load_options(raw: object) -> Options:
    """Options from a ``SIDECAR`` dict; ImproperlyConfigured naming every problem at once."""
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"SIDECAR must be a dict, got {type(raw).__name__}")
    problems = [f"unknown key {key!r} (known: {', '.join(KEYS)})" for key in raw if key not in KEYS]
    flags = {key: raw.get(key, True) for key in ("CREATE_GROUPS", "SYNC_GROUPS")}
    problems += [f"{key}: must be True or False, got {value!r}" for key, value in flags.items()
                 if not isinstance(value, bool)]
    group_lists = {key: raw.get(key) for key in ("STAFF_GROUPS", "SUPERUSER_GROUPS", "MIRROR_GROUPS",
                                                 "MIRROR_GROUPS_EXCEPT")}
    problems += [f"{key}: must be None or a list of group names, got {value!r}"
                 for key, value in group_lists.items() if value is not None and not _names(value)]
    separator = raw.get("GROUP_SEPARATOR", "|")
    if not isinstance(separator, str) or not separator:
        problems.append(f"GROUP_SEPARATOR: must be a non-empty string, got {separator!r}")
    names = verifier = None
    try:
        names = HeaderNames.from_mapping(raw.get("HEADERS"))
    except ValueError as exc:
        problems.append(f"HEADERS: {exc}")
    try:
        verifier = make_verifier(raw.get("ASSERTION"), separator)
    except (ValueError, TypeError) as exc:  # TypeError: a keyword AssertionVerifier does not take
        problems.append(f"ASSERTION: {exc}")
    if problems or names is None:
        raise ImproperlyConfigured("SIDECAR: " + "; ".join(problems))
    if group_lists["MIRROR_GROUPS"] is not None and group_lists["MIRROR_GROUPS_EXCEPT"] is not None:
        raise ImproperlyConfigured("SIDECAR: MIRROR_GROUPS and MIRROR_GROUPS_EXCEPT: set one of them")
    staff, superuser, mirror, mirror_except = (None if value is None else frozenset(value)
                                               for value in group_lists.values())
    return Options(IdentityReader(names, separator, verifier), create_groups=flags["CREATE_GROUPS"],
                   sync_groups=flags["SYNC_GROUPS"], staff_groups=staff, superuser_groups=superuser,
                   mirror_groups=mirror, mirror_groups_except=mirror_except or frozenset())


def _names(value: object) -> bool:
    return isinstance(value, Collection) and not isinstance(value, str) and all(isinstance(v, str) for v in value)


def identity_for(request: HttpRequest) -> Identity | None:
    """The request's identity, read and verified once per request.

    A refused identity leaves no identity header in ``request.META``; an accepted one leaves them
    decoded, so code that reads them directly (NetBox's middleware does) gets the right text.
    """
    cached = getattr(request, _CACHE, _UNSET)
    if cached is not _UNSET:
        return cached if isinstance(cached, Identity) else None
    reader = options().reader
    identity = reader.read(request.META)
    if identity is None:
        reader.scrub(request.META)
    else:
        reader.decode_in_place(request.META)
    setattr(request, _CACHE, identity)
    return identity


def is_api_client(request: HttpRequest) -> bool:
    """No browser sends this request: it has neither ``Origin`` nor ``Sec-Fetch-Site``.

    Every current browser sends ``Sec-Fetch-Site`` with every request, and ``Origin`` with every
    cross-site POST, PUT, PATCH and DELETE, so a request forged by another site always has one.
    """
    return "HTTP_ORIGIN" not in request.META and "HTTP_SEC_FETCH_SITE" not in request.META


def _skip_csrf_check(request: HttpRequest) -> None:
    # The attribute Django's CsrfViewMiddleware (and DRF's SessionAuthentication) look at first.
    setattr(request, "_dont_enforce_csrf_checks", True)  # noqa: B010  # a private name of Django's


def sync_user(identity: Identity, user: Any = None) -> Any:
    """The user matching ``identity``, created or updated (fields, flags, groups) where it differs.

    Returns None when the username does not fit the user model.
    """
    opts = options()
    model: Any = auth.get_user_model()
    field = model._meta.get_field(model.USERNAME_FIELD)
    if field.max_length is not None and len(identity.username) > field.max_length:
        log.warning("refused identity %r: longer than the %d characters of %s.%s",
                    identity.username, field.max_length, model.__name__, model.USERNAME_FIELD)
        return None
    wanted = _wanted_fields(model, identity, opts)
    if user is None:
        user = _existing(model, identity.username)
        if user is None:
            lookup = {model.USERNAME_FIELD: identity.username}
            user, created = model._default_manager.get_or_create(**lookup, defaults=wanted)
            if not created:
                _update(user, wanted)
        else:
            _update(user, wanted)
    else:
        _update(user, wanted)
    _sync_groups(user, identity.groups, opts)
    return user


def _existing(model: Any, username: str) -> Any:
    """The account of this name, its case aside, as django-auth-ldap finds users (``__iexact``): ``Erin``
    signs in to the ``erin`` it created. Of several accounts that differ only in case, the one spelt
    exactly so, else none is chosen (a new one is not created either: get_or_create finds the exact one)."""
    field = model.USERNAME_FIELD
    found = list(model._default_manager.filter(**{f"{field}__iexact": username})[:8])
    if len(found) == 1:
        return found[0]
    exact = [user for user in found if getattr(user, field) == username]
    return exact[0] if exact else None


def _wanted_fields(model: Any, identity: Identity, opts: Options) -> dict[str, Any]:
    groups = set(identity.groups)
    values: dict[str, Any] = {
        "first_name": identity.first_name,
        "last_name": identity.last_name,
        "email": identity.email,
        "is_active": True,
        "is_staff": identity.is_staff if opts.staff_groups is None else bool(groups & opts.staff_groups),
        "is_superuser": (identity.is_superuser if opts.superuser_groups is None
                         else bool(groups & opts.superuser_groups)),
    }
    # Only the fields this user model has (NetBox 4.5 dropped is_staff), cut to their lengths.
    fields = {field.name: field for field in model._meta.concrete_fields}
    return {name: _fit(fields[name], value) for name, value in values.items() if name in fields}


def _fit(field: Any, value: Any) -> Any:
    # A longer value would make PostgreSQL refuse the write, and the request fail.
    limit = getattr(field, "max_length", None)
    return value[:limit] if isinstance(value, str) and limit else value


def _update(user: Any, wanted: Mapping[str, Any]) -> None:
    changed = [name for name, value in wanted.items() if getattr(user, name) != value]
    if changed:
        for name in changed:
            setattr(user, name, wanted[name])
        user.save(update_fields=changed)


def _sync_groups(user: Any, names: tuple[str, ...], opts: Options) -> None:
    group_model: Any = user.groups.model
    limit = group_model._meta.get_field("name").max_length
    wanted = [name for name in names if (limit is None or len(name) <= limit) and _mirrored(name, opts)]
    current = {group.name: group for group in user.groups.all() if _mirrored(group.name, opts)}
    missing = [name for name in wanted if name not in current]
    if missing:
        found = {group.name: group for group in group_model._default_manager.filter(name__in=missing)}
        if opts.create_groups:
            for name in missing:
                if name not in found:
                    found[name], _ = group_model._default_manager.get_or_create(name=name)
        if found:
            user.groups.add(*found.values())
    if opts.sync_groups:
        stale = [group for name, group in current.items() if name not in set(wanted)]
        if stale:
            user.groups.remove(*stale)


def _mirrored(name: str, opts: Options) -> bool:
    """Whether the group header speaks for this group (MIRROR_GROUPS / MIRROR_GROUPS_EXCEPT)."""
    if name in opts.mirror_groups_except:
        return False
    return opts.mirror_groups is None or name in opts.mirror_groups


class SidecarBackend(RemoteUserBackend):
    """Creates or updates the user from the identity headers (see the module docstring).

    Works under SidecarMiddleware (updates on every request) and under NetBox's own
    RemoteUserMiddleware (which calls the backend only when a session logs in).
    """

    def authenticate(  # type: ignore[override, unused-ignore]  # stubs differ by version
        self, request: HttpRequest | None, remote_user: str | None = None, remote_groups: object = None,
    ) -> Any:
        """The user named by the verified headers; ``remote_user`` must name the same user.

        ``remote_groups`` is what NetBox's middleware passes; the verified group header is used instead.
        """
        if request is None or not remote_user:
            return None
        identity = identity_for(request)
        if identity is None or identity.username != self.clean_username(remote_user):
            return None
        user = sync_user(identity)
        if user is None or not self.user_can_authenticate(user):
            return None
        if is_api_client(request):
            # Under NetBox's middleware, which opens a session anyway: a client that sends that
            # session's cookie back is checked for CSRF from then on (SidecarMiddleware is not).
            _skip_csrf_check(request)
        return user

    async def aauthenticate(  # type: ignore[override, unused-ignore]
        self, request: HttpRequest | None, remote_user: str | None = None, remote_groups: object = None,
    ) -> Any:
        return await sync_to_async(self.authenticate)(request, remote_user, remote_groups)

    def clean_username(self, username: str) -> str:
        # NetBox's middleware passes the raw header value: latin-1 text of UTF-8 bytes.
        return decode(username)


class SidecarMiddleware(RemoteUserMiddleware):
    """Logs the header's user in, keeps them in step on every request, logs them out without one.

    Put it after AuthenticationMiddleware. The header name comes from ``SIDECAR["HEADERS"]``.
    """

    header = "HTTP_REMOTE_USER"
    force_logout_if_no_header = True

    def process_request(self, request: HttpRequest) -> None:
        if not hasattr(request, "user"):
            raise ImproperlyConfigured("SidecarMiddleware needs AuthenticationMiddleware before it in MIDDLEWARE")
        identity = identity_for(request)
        current: Any = request.user
        if identity is None:
            if current.is_authenticated:
                _log_out_header_session(request)
            return
        api_client = is_api_client(request)
        # The same account, its case aside (sync_user finds it so): no new login for Erin as erin.
        if current.is_authenticated and current.get_username().lower() == identity.username.lower():
            sync_user(identity, current)
        else:
            if current.is_authenticated:
                _log_out_header_session(request)
            user = auth.authenticate(request, remote_user=identity.username)
            if user is None:
                return
            request.user = user
            if not api_client:  # a script's identity is its request's: no session to keep
                auth.login(request, user)
        if api_client:
            _skip_csrf_check(request)

    async def aprocess_request(self, request: HttpRequest) -> None:
        await sync_to_async(self.process_request)(request)


def _log_out_header_session(request: HttpRequest) -> None:
    """Log out a session that headers opened; one opened with a password (ModelBackend) stays."""
    try:
        backend = auth.load_backend(request.session.get(auth.BACKEND_SESSION_KEY, ""))
    except ImportError:
        auth.logout(request)
        return
    if isinstance(backend, RemoteUserBackend):
        auth.logout(request)


class Utf8HeadersMiddleware:
    """Re-decodes the identity headers in ``request.META`` as UTF-8 before later middleware reads them.

    For NetBox's own RemoteUserMiddleware and RemoteUserBackend, which would store ``JosÃ©``:
    list this before ``netbox.middleware.RemoteUserMiddleware`` (examples/netbox/README.md).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        options().reader.decode_in_place(request.META)
        return self.get_response(request)

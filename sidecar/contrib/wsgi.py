"""WSGI middleware for any application behind auth-sidecar (Flask, Bottle, Pyramid, plain WSGI).

    app.wsgi_app = SidecarWSGIMiddleware(app.wsgi_app)                       # trust the proxy
    app.wsgi_app = SidecarWSGIMiddleware(app.wsgi_app, assertion={           # or check signatures
        "issuer": "https://sso.example.com", "audience": "inventory",
        "jwks_url": "https://sso.example.com/_sidecar/.well-known/jwks.json"})

With an identity, the application finds ``environ["sidecar.identity"]`` (username, first_name,
last_name, email, groups as a list, is_staff, is_superuser; names decoded from UTF-8) and
``environ["REMOTE_USER"]``. Without one, or when the assertion does not verify, neither key is
there and every identity header is removed from the environ, so the application cannot read a
refused identity by accident. A header missing next to the user's is its empty value: no flag,
no groups, an empty name, never a value from elsewhere.

Without ``assertion`` the plain headers are trusted: only the proxy may be able to reach the
application, and the proxy must overwrite every identity header (deploy/nginx does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sidecar.contrib.headers import HeaderNames, IdentityReader, Verifier, identity_dict, make_verifier

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

IDENTITY = "sidecar.identity"


class SidecarWSGIMiddleware:
    """Puts the verified identity in the environ and removes every identity header otherwise.

    ``headers`` renames headers (keys as in the sidecar's ``headers:`` section, plus ``assertion``);
    ``assertion`` is AssertionVerifier's keyword arguments (issuer, audience, jwks or jwks_url,
    leeway) or a ready verifier.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        headers: Mapping[str, str] | None = None,
        separator: str = "|",
        assertion: Mapping[str, Any] | Verifier | None = None,
    ) -> None:
        self.app = app
        self.reader = IdentityReader(HeaderNames.from_mapping(headers), separator,
                                     make_verifier(assertion, separator))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        identity = self.reader.read(environ)
        # Only this middleware says who the user is: nothing set before it counts.
        environ.pop(IDENTITY, None)
        environ.pop("REMOTE_USER", None)
        if identity is None:
            self.reader.scrub(environ)
        else:
            environ[IDENTITY] = identity_dict(identity)
            environ["REMOTE_USER"] = identity.username
        return self.app(environ, start_response)

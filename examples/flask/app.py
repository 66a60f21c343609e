"""A Flask application behind auth-sidecar, through sidecar.contrib.wsgi.

    pip install -e . flask gunicorn      # from the checkout's top (auth-sidecar is not on PyPI)
    gunicorn --bind 127.0.0.1:8000 --chdir examples/flask app:app     # behind deploy/nginx

To accept an identity only with a valid signed assertion, set SIDECAR_ASSERTION_ISSUER,
SIDECAR_ASSERTION_AUDIENCE and SIDECAR_ASSERTION_JWKS_URL (see README.md).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue

from sidecar.contrib.headers import Verifier
from sidecar.contrib.wsgi import IDENTITY, SidecarWSGIMiddleware

ASSERTION_SETTINGS = {"issuer": "SIDECAR_ASSERTION_ISSUER", "audience": "SIDECAR_ASSERTION_AUDIENCE",
                      "jwks_url": "SIDECAR_ASSERTION_JWKS_URL"}


def assertion_from_environment() -> dict[str, str] | None:
    """The assertion settings when all three variables are set, None when none is; else an error."""
    values = {key: os.environ.get(variable, "") for key, variable in ASSERTION_SETTINGS.items()}
    if not any(values.values()):
        return None
    missing = [ASSERTION_SETTINGS[key] for key, value in values.items() if not value]
    if missing:
        raise RuntimeError(f"set all of {', '.join(ASSERTION_SETTINGS.values())} (missing: {', '.join(missing)})")
    return values


def identity() -> dict[str, Any]:
    """The request's identity; 401 without one (the proxy should have stopped such a request)."""
    found: dict[str, Any] | None = request.environ.get(IDENTITY)
    if found is None:
        abort(401)
    return found


def create_app(assertion: dict[str, Any] | Verifier | None = None) -> Flask:
    app = Flask(__name__)
    app.wsgi_app = SidecarWSGIMiddleware(app.wsgi_app, assertion=assertion)  # type: ignore[method-assign]

    @app.get("/")
    def whoami() -> ResponseReturnValue:
        return jsonify(identity())

    @app.get("/admin")
    def admin() -> ResponseReturnValue:
        user = identity()
        if not user["is_superuser"]:
            abort(403)
        return jsonify({"welcome": user["first_name"] or user["username"]})

    return app


app = create_app(assertion_from_environment())

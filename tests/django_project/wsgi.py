"""The WSGI application gunicorn serves: ``tests.django_project.wsgi:application``.

With SIDECAR_TEST_RECORD set to a directory, every request that reaches the application (before
Django looks at it, so also those Django itself refuses) is written there as one JSON file named
after its ``X-Test-Id`` header: what the application received, for the chain attack tests.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
RECORDED = ("REQUEST_METHOD", "RAW_URI", "PATH_INFO", "QUERY_STRING", "SCRIPT_NAME")


def recording(app: WSGIApp, directory: Path) -> WSGIApp:
    """app, writing down each request's method, raw target and HTTP_* keys as it arrives."""

    def record(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen = {key: value for key, value in environ.items()
                if key in RECORDED or (key.startswith("HTTP_") and isinstance(value, str))}
        name = environ.get("HTTP_X_TEST_ID", "")
        if not name.isalnum():
            name = "unnamed-" + uuid.uuid4().hex
        partial = directory / f".{name}.{uuid.uuid4().hex}"
        partial.write_text(json.dumps(seen))
        partial.rename(directory / f"{name}.json")  # whole or absent, never half written
        return app(environ, start_response)

    return record


application: WSGIApp = get_wsgi_application()
if record_to := os.environ.get("SIDECAR_TEST_RECORD"):
    application = recording(application, Path(record_to))

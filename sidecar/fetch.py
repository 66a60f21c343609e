"""Fetching a JSON document over HTTP within a time and a size, over an injected aiohttp session.

:func:`fetch_json` answers the status and the document, or why there is no document (the body is
too large or not JSON); it raises :class:`FetchFailed` only when there is no answer at all (no
connection, a timeout, a broken response). What a status means is the caller's to say: a key set
wants 200, a token endpoint reads the error document of a 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from sidecar.errors import FetchFailed

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    status: int
    document: Any = None  # the parsed JSON, or None
    problem: str | None = None  # why document is None: "is larger than N bytes", "is not JSON"


async def fetch_json(session: aiohttp.ClientSession, url: str, *, method: str = "GET", timeout: float,
                     max_bytes: int, allow_redirects: bool, headers: dict[str, str] | None = None,
                     **request: Any) -> JsonAnswer:
    """The answer to a request for a JSON document of at most ``max_bytes``, within ``timeout`` seconds.

    ``request`` is passed on to aiohttp (``data``, ``auth``); ``Accept: application/json`` is sent.
    """
    try:
        async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=timeout),
                                   allow_redirects=allow_redirects,
                                   headers={"Accept": "application/json", **(headers or {})},
                                   **request) as response:
            too_large = JsonAnswer(response.status, problem=f"is larger than {max_bytes} bytes")
            if (response.content_length or 0) > max_bytes:
                return too_large
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    return too_large
    except TimeoutError:
        raise FetchFailed(f"no answer within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise FetchFailed(f"{type(exc).__name__}: {exc}") from None
    try:
        return JsonAnswer(response.status, json.loads(body))
    except (ValueError, RecursionError):
        return JsonAnswer(response.status, problem="is not JSON")

"""Fetching JSON within a time and a size, from a real aiohttp server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from sidecar.errors import FetchFailed
from sidecar.fetch import JsonAnswer, fetch_json


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"padding": "')
    for _ in range(10):
        await response.write(b"x" * 1024)
    await response.write(b'"}')
    return response


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1)
    return web.json_response({})


async def document(request: web.Request) -> web.Response:
    return web.json_response({"a": 1})


async def html(request: web.Request) -> web.Response:
    return web.Response(text="<html>", status=503)


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/doc")


async def echo(request: web.Request) -> web.Response:
    form = await request.post()
    return web.json_response({"method": request.method, "accept": request.headers.get("Accept"),
                              "form": dict(form)}, status=400)


@pytest.fixture
async def base(aiohttp_server: AiohttpServer) -> str:
    app = web.Application()
    app.router.add_get("/doc", document)
    app.router.add_get("/html", html)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/slow", slow)
    app.router.add_get("/moved", moved)
    app.router.add_post("/echo", echo)
    server = await aiohttp_server(app)
    return str(server.make_url(""))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_a_document(session: aiohttp.ClientSession, base: str) -> None:
    assert await fetch_json(session, base + "/doc", timeout=2, max_bytes=100, allow_redirects=False) == JsonAnswer(
        200, {"a": 1})


async def test_the_status_and_an_error_document_come_back(session: aiohttp.ClientSession, base: str) -> None:
    answer = await fetch_json(session, base + "/echo", method="POST", data={"grant_type": "x"}, timeout=2,
                              max_bytes=1000, allow_redirects=False)
    assert answer == JsonAnswer(400, {"method": "POST", "accept": "application/json", "form": {"grant_type": "x"}})


async def test_a_body_that_is_not_json(session: aiohttp.ClientSession, base: str) -> None:
    assert await fetch_json(session, base + "/html", timeout=2, max_bytes=100, allow_redirects=False) == JsonAnswer(
        503, None, "is not JSON")


@pytest.mark.parametrize("path", ["/doc", "/chunked"])  # announced by Content-Length, or found while reading
async def test_a_body_too_large(session: aiohttp.ClientSession, base: str, path: str) -> None:
    assert await fetch_json(session, base + path, timeout=2, max_bytes=5, allow_redirects=False) == JsonAnswer(
        200, None, "is larger than 5 bytes")


async def test_a_chunked_body_is_read_whole(session: aiohttp.ClientSession, base: str) -> None:
    answer = await fetch_json(session, base + "/chunked", timeout=2, max_bytes=20_000, allow_redirects=False)
    assert answer.status == 200 and len(answer.document["padding"]) == 10 * 1024


async def test_redirects_are_followed_only_when_asked(session: aiohttp.ClientSession, base: str) -> None:
    assert (await fetch_json(session, base + "/moved", timeout=2, max_bytes=100, allow_redirects=False)).status == 302
    assert (await fetch_json(session, base + "/moved", timeout=2, max_bytes=100, allow_redirects=True)).document == {
        "a": 1}


async def test_no_answer_in_time(session: aiohttp.ClientSession, base: str) -> None:
    with pytest.raises(FetchFailed, match=r"^no answer within 0.1 s$"):
        await fetch_json(session, base + "/slow", timeout=0.1, max_bytes=100, allow_redirects=False)


async def test_no_connection(session: aiohttp.ClientSession, unused_tcp_port: int) -> None:
    with pytest.raises(FetchFailed, match="^ClientConnectorError: "):
        await fetch_json(session, f"http://127.0.0.1:{unused_tcp_port}/", timeout=2, max_bytes=100,
                         allow_redirects=False)

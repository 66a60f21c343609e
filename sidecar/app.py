"""make_app(config): the aiohttp application, its parts built once and closed on clean-up."""

from __future__ import annotations

from aiohttp import web

from sidecar.access import AccessRules
from sidecar.auth import BasicAuthenticator, PasswordVerifier, Verdict
from sidecar.cache import VerdictCache
from sidecar.config import Config
from sidecar.forwarded import ClientAddress
from sidecar.headers import HeaderWriter
from sidecar.ldap import Directory
from sidecar.policy import GroupPolicy
from sidecar.routes import SIDECAR, Sidecar, add_routes


def make_app(config: Config) -> web.Application:
    assert config.ldap is not None  # the loader refuses a config without it
    directory = Directory(config.ldap)
    cache: VerdictCache[Verdict] = VerdictCache(
        ttl=config.ldap.cache_timeout,
        failure_ttl=config.cache.failure_timeout,
        max_entries=config.cache.max_entries,
    )
    verifier = PasswordVerifier(directory, GroupPolicy(config.ldap), cache, HeaderWriter(config.headers))
    app = web.Application()
    app[SIDECAR] = Sidecar(
        authenticators=[BasicAuthenticator(verifier)],
        rules=AccessRules(config.access),
        client_address=ClientAddress(config.server.trusted_proxies),
        directory=directory,
        realm=config.server.realm,
    )
    add_routes(app)

    async def close(app: web.Application) -> None:
        directory.close()

    app.on_cleanup.append(close)
    return app

"""make_app(config): the aiohttp application, its parts built once and closed on clean-up."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from sidecar.access import AccessRules
from sidecar.assertion import AssertionSigner
from sidecar.basic import BasicAuthenticator
from sidecar.bearer import BearerAuthenticator
from sidecar.cache import VerdictCache
from sidecar.config import Config, SessionConfig
from sidecar.errors import ConfigError, DirectoryUnavailable
from sidecar.forwarded import ClientAddress
from sidecar.headers import HeaderWriter, identity_names
from sidecar.ldap import Directory
from sidecar.local import LocalUsers
from sidecar.oidc import HttpClient, Provider, SingleSignOn, StateCookie
from sidecar.pages import Pages, Theme
from sidecar.passwords import PasswordVerifier
from sidecar.policy import GroupPolicy
from sidecar.redirects import RedirectPolicy
from sidecar.regulation import Regulator
from sidecar.routes import SIDECAR, Sidecar, add_routes
from sidecar.session_auth import SessionAuthenticator, SessionJar
from sidecar.sessions import CookieSettings, SessionCodec
from sidecar.signin import SignIn
from sidecar.sources import LdapSource, LocalSource, PasswordSource, Registry, Sources
from sidecar.verdict import Authenticator, Verdict

log = logging.getLogger("sidecar")

LOCAL_ONLY_CACHE_TIMEOUT = 300  # seconds, when there is no ldap.cache_timeout to follow
MAX_BODY = 64 * 1024  # the login form is the only body the sidecar reads
# Above nginx's own 8 KiB header line limit, so whatever a proxy forwards reaches our checks.
MAX_HEADER = 16 * 1024


def session_key(secret: str) -> bytes:
    """A 256-bit key from a configured secret (at least 32 random characters, checked at load)."""
    return hashlib.sha256(b"auth-sidecar session key v1\0" + secret.encode()).digest()


def _redirect_targets(sessions: SessionConfig, public_url: str) -> tuple[list[str], set[str]]:
    """Hosts and schemes a sign-in may return to: as configured, else this host and the default's."""
    public = urlsplit(public_url)
    hosts = list(sessions.redirect_hosts) or [public.netloc.lower()]
    default = urlsplit(sessions.default_redirect)
    if not sessions.redirect_hosts and default.netloc:
        hosts.append(default.netloc.lower())
    return hosts, set(sessions.redirect_schemes) | {public.scheme}


def _csp(hosts: list[str], domains: tuple[str, ...], schemes: set[str], providers: list[str]) -> str:
    # Browsers apply form-action to the redirect after a form POST too: after signing in, the page
    # people return to; after signing out, a provider's end-session page.
    sources = [f"{s}://{h}" for s in sorted(schemes) for h in hosts]
    sources += [f"{s}://{p}{d}" for s in sorted(schemes) for d in domains for p in ("", "*.")]
    sources += sorted({"{0.scheme}://{0.netloc}".format(urlsplit(issuer)) for issuer in providers})
    return Pages.CSP.replace("form-action 'self'", " ".join(["form-action 'self'", *sources]))


def _single_sign_on(config: Config, http: HttpClient, signin: SignIn, redirects: RedirectPolicy, public_path: str,
                    secret: str, secure: bool) -> SingleSignOn:
    assert config.server.public_url is not None
    redirect_uri = config.server.public_url + config.oidc.callback_path
    providers = [Provider(p, http, redirect_uri=redirect_uri, leeway=config.oidc.leeway) for p in config.oidc.providers]
    return SingleSignOn(
        providers, state=StateCookie(secret, secure=secure), redirects=redirects, path=public_path,
        finish=lambda grant, rd: signin.finish(grant.identity, rd, grant.refresh_token),
        page=lambda status, title, text: signin.message_page(status, title, text),
    )


def make_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY,
                          # No request body is ever decompressed: the sign-in form is small, and a body
                          # that claims an encoding it lacks would otherwise be a traceback in the log.
                          handler_args={"max_field_size": MAX_HEADER, "max_line_size": MAX_HEADER,
                                        "auto_decompress": False})
    writer = HeaderWriter(config.headers)
    client_address = ClientAddress(config.server.trusted_proxies)

    directory = Directory(config.ldap) if config.ldap is not None else None
    ldap_source = LdapSource(directory, GroupPolicy(config.ldap)) if directory and config.ldap else None
    local_source = None
    if config.local_users is not None:
        users = LocalUsers(Path(config.local_users.file), reload_every=config.local_users.reload_every)
        local_source = LocalSource(users)
    ordered: list[PasswordSource | None] = [ldap_source, local_source]
    if config.local_users is not None and config.local_users.order == "local_first":
        ordered.reverse()
    present = [source for source in ordered if source is not None]
    sources = Sources(present) if present else None  # none: single sign-on or Bearer tokens only

    cache_ttl = config.ldap.cache_timeout if config.ldap is not None else LOCAL_ONLY_CACHE_TIMEOUT
    cache: VerdictCache[Verdict] = VerdictCache(
        ttl=cache_ttl,
        failure_ttl=config.cache.failure_timeout,
        max_entries=config.cache.max_entries,
    )
    regulation = config.regulation
    # An address a user signed in from stays known as long as a cached login from it can be honoured.
    regulator = (Regulator(max_failures=regulation.max_failures, window=regulation.window, ban=regulation.ban,
                           remember=max(cache_ttl, regulation.window))
                 if regulation.enabled else None)
    verifier = PasswordVerifier(sources, cache, writer, regulator) if sources is not None else None

    authenticators: list[Authenticator] = []
    signin = None
    http = HttpClient()
    sessions = config.sessions
    if sessions is not None:
        assert config.server.public_url is not None  # the loader insists
        codec = SessionCodec([(key.id, session_key(key.secret.reveal())) for key in sessions.keys],
                             lifetime=sessions.lifetime, idle_timeout=sessions.idle_timeout)
        cookie = CookieSettings(name=sessions.cookie_name, domain=sessions.cookie_domain, secure=sessions.secure)
        max_age = int(sessions.lifetime)
        registry = Registry(present)  # the providers join it below
        jar = SessionJar(codec, registry, keep_for=sessions.lifetime)
        authenticators.append(SessionAuthenticator(jar, cookie, registry.renew, writer,
                                                   recheck_every=sessions.recheck_every, max_age=max_age))
        page = config.login_page
        public_path = urlsplit(config.server.public_url).path.rstrip("/")
        pages = Pages(Theme(title=page.title, logo_url=page.logo_url, accent=page.accent,
                            help_text=page.help_text or "", help_url=page.help_url),
                      static_prefix=public_path + "/static")
        hosts, schemes = _redirect_targets(sessions, config.server.public_url)
        redirects = RedirectPolicy(hosts=hosts, domains=sessions.redirect_domains, schemes=schemes,
                                   default=sessions.default_redirect)
        signin = SignIn(pages=pages, verifier=verifier, jar=jar, cookie=cookie, redirects=redirects,
                        client_address=client_address, public_url=config.server.public_url,
                        max_age=max_age, logout_redirect=sessions.logout_redirect,
                        csp=_csp(hosts, sessions.redirect_domains, schemes,
                                 [p.issuer for p in config.oidc.providers if p.logout and p.issuer]))
        if config.oidc.providers:
            signin.sso = _single_sign_on(config, http, signin, redirects, public_path,
                                         sessions.keys[0].secret.reveal(), sessions.secure)
            registry.add(signin.sso.providers.values())
    if config.oidc.bearer:
        authenticators.append(BearerAuthenticator(config.oidc.bearer, http, writer, leeway=config.oidc.leeway))
    if config.server.basic_auth and verifier is not None:
        authenticators.append(BasicAuthenticator(verifier, client_address))
    if config.oidc.providers or config.oidc.bearer:
        app.cleanup_ctx.append(http.lifetime)

    signer = None
    if config.assertion is not None:
        signer = AssertionSigner(
            [(key.id, key.private_key.reveal()) for key in config.assertion.keys],
            issuer=config.assertion.issuer or config.server.public_url or "auth-sidecar",
            audience=config.assertion.audience, lifetime=config.assertion.lifetime,
            group_separator=config.headers.group_separator,
        )
    app[SIDECAR] = Sidecar(
        authenticators=authenticators,
        rules=AccessRules(config.access),
        client_address=client_address,
        directory=directory,
        realm=config.server.realm,
        basic_auth=config.server.basic_auth,
        signin=signin,
        forward_auth=config.server.mode == "forward_auth",
        signer=signer,
        assertion_header=config.headers.assertion,
        identity_headers=identity_names(config.headers),
        identity_prefix=config.headers.user.lower() + "-",
    )
    add_routes(app, signin, signer, config.oidc.callback_path)

    async def check_directory(app: web.Application) -> None:
        assert directory is not None
        try:
            await directory.check_group_type()  # ConfigError when the server cannot answer it: no start
        except ConfigError:
            directory.close()  # a failed start-up runs no clean-up
            raise
        except DirectoryUnavailable as exc:
            log.warning("directory unreachable at start-up; ldap.group_type is checked on first use: %s",
                        exc.reason)

    if directory is not None:
        app.on_startup.append(check_directory)

    async def close(app: web.Application) -> None:
        if directory is not None:
            directory.close()
        if local_source is not None:
            local_source.close()

    app.on_cleanup.append(close)
    return app

"""make_app(config): the aiohttp application, assembled from one builder per feature.

Passwords (the directory, the users file, Basic), browser sign-in (sessions, the login page, single
sign-on), Bearer tokens and the signed identity each build their parts from the configuration and
return them — ways in, routes, start-up and clean-up work — and make_app puts them together. Nothing
is changed after it is made, so two applications can be built side by side from two configurations.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from sidecar.access import AccessRules
from sidecar.app_tokens import AppTokens
from sidecar.assertion import AssertionSigner
from sidecar.basic import BasicAuthenticator
from sidecar.bearer import BearerAuthenticator
from sidecar.cache import VerdictCache
from sidecar.config import Config, GroupRules, SessionConfig
from sidecar.errors import ConfigError, DirectoryUnavailable
from sidecar.factor_store import Cipher, FactorStore, RedisFactors, SqliteFactors
from sidecar.factors import Codes
from sidecar.forwarded import ClientAddress
from sidecar.headers import HeaderWriter, identity_names
from sidecar.ldap import Directory
from sidecar.local import LocalUsers
from sidecar.oidc import HttpClient, Provider, SingleSignOn, StateCookie
from sidecar.pages import Pages, Theme
from sidecar.passwords import PasswordVerifier
from sidecar.policy import GroupPolicy, NamePolicy
from sidecar.redirects import RedirectPolicy
from sidecar.regulation import Regulator
from sidecar.routes import SIDECAR, Sidecar, assertion_routes, core_routes, sign_in_routes
from sidecar.sealing import derive_key
from sidecar.second_factor import SecondFactor
from sidecar.second_factor import routes as second_factor_routes
from sidecar.session_auth import SessionAuthenticator, SessionJar
from sidecar.sessions import CookieSettings, SessionCodec
from sidecar.signin import Landing, SignIn
from sidecar.sources import LdapSource, LocalSource, PasswordSource, Registry, Sources, directory_lookup
from sidecar.state import State
from sidecar.verdict import Authenticator, Verdict

log = logging.getLogger("sidecar")

LOCAL_ONLY_CACHE_TIMEOUT = 300  # seconds, when there is no ldap.cache_timeout to follow
MAX_BODY = 64 * 1024  # the login form is the only body the sidecar reads
# Above nginx's own 8 KiB header line limit, so whatever a proxy forwards reaches our checks.
MAX_HEADER = 16 * 1024
# How the HTTP server reads requests (sidecar.server runs its own). No request body is ever decompressed:
# the sign-in form is small, and a body that claims an encoding it lacks would be a traceback in the log.
HANDLER_ARGS: dict[str, Any] = {"max_field_size": MAX_HEADER, "max_line_size": MAX_HEADER, "auto_decompress": False}


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


# What the admin channel and the server read off an application: its configuration and the state it uses.
CONFIG = web.AppKey("config", Config)
STATE = web.AppKey("state", State)


@dataclass
class Feature:
    """What one feature adds to the application: ways in, routes, and work at start and end."""

    authenticators: list[Authenticator] = field(default_factory=list)
    routes: list[web.RouteDef] = field(default_factory=list)
    on_startup: list[Hook] = field(default_factory=list)
    on_cleanup: list[Hook] = field(default_factory=list)


@dataclass
class Passwords:
    """The password sources in their order, and the verifier Basic and the login form share."""

    sources: list[PasswordSource]
    verifier: PasswordVerifier | None
    directory: Directory | None  # the first directory (readiness)
    feature: Feature
    directories: list[LdapSource] = field(default_factory=list)

    def policy(self, rules: GroupRules, where: str, prefix: str = "") -> NamePolicy:
        """A source's group rules, with groups from these directories when it asks."""
        wanted = rules.groups_from_directory
        lookup = directory_lookup(self.directories, wanted) if wanted is not None and self.directories else None
        return NamePolicy(rules, where, lookup, prefix)


def passwords(config: Config, writer: HeaderWriter, client_address: ClientAddress, state: State) -> Passwords:
    feature = Feature()
    directories = [LdapSource(Directory(ldap, state.metrics), GroupPolicy(ldap)) for ldap in config.directories]
    directory = directories[0].directory if directories else None
    found = Passwords([], None, directory, feature, directories)
    local_source = None
    if config.local_users is not None:
        users = LocalUsers(Path(config.local_users.file), reload_every=config.local_users.reload_every)
        local_source = LocalSource(users, policy=found.policy(config.local_users.rules, "local_users"))
        feature.on_cleanup.append(_quietly(local_source.close))
    present: list[PasswordSource] = list(directories)
    if local_source is not None:
        local_first = config.local_users is not None and config.local_users.order == "local_first"
        present.insert(0 if local_first else len(present), local_source)
    found.sources = present
    for source in directories:
        feature.on_startup.append(_check_group_type(source.directory))
        feature.on_cleanup.append(_quietly(source.directory.close))
    if not present:  # single sign-on or Bearer tokens only
        return found
    cache_ttl = config.ldap.cache_timeout if config.ldap is not None else LOCAL_ONLY_CACHE_TIMEOUT
    cache: VerdictCache[Verdict] = VerdictCache(ttl=cache_ttl, failure_ttl=config.cache.failure_timeout,
                                                max_entries=config.cache.max_entries, metrics=state.metrics)
    # An address a user signed in from stays known as long as a cached login from it can be honoured.
    regulator = shared_regulator(config, state, remember=max(cache_ttl, config.regulation.window))
    found.verifier = PasswordVerifier(Sources(present), cache, writer, regulator)
    if config.server.basic_auth:
        feature.authenticators.append(BasicAuthenticator(found.verifier, client_address))
    return found


def browser_sign_in(config: Config, writer: HeaderWriter, client_address: ClientAddress, found: Passwords,
                    http: HttpClient, state: State) -> tuple[SignIn | None, Feature]:
    """The login page, sessions, and single sign-on through each provider."""
    sessions = config.sessions
    if sessions is None:
        return None, Feature()
    public_url = config.server.public_url
    assert public_url is not None  # the loader insists
    codec = SessionCodec([(key.id, derive_key(key.secret.reveal(), "session key")) for key in sessions.keys],
                         lifetime=sessions.lifetime, idle_timeout=sessions.idle_timeout, metrics=state.metrics)
    cookie = CookieSettings(name=sessions.cookie_name, domain=sessions.cookie_domain, secure=sessions.secure)
    public_path = urlsplit(public_url).path.rstrip("/")
    page = config.login_page
    pages = Pages(Theme(title=page.title, logo_url=page.logo_url, accent=page.accent,
                        help_text=page.help_text or "", help_url=page.help_url),
                  static_prefix=public_path + "/static")
    hosts, schemes = _redirect_targets(sessions, public_url)
    redirects = RedirectPolicy(hosts=hosts, domains=sessions.redirect_domains, schemes=schemes,
                               default=sessions.default_redirect)
    csp = _csp(hosts, sessions.redirect_domains, schemes,
               [p.issuer for p in config.oidc.providers if p.logout and p.issuer])
    redirect_uri = public_url + config.oidc.callback_path
    fleet = state.fleet(config.state)
    trusted = config.second_factor.trust_amr if config.second_factor is not None else ()
    trusted_acr = frozenset(config.second_factor.trust_acr if config.second_factor is not None else ())
    providers = [Provider(p, http, redirect_uri=redirect_uri, leeway=config.oidc.leeway, metrics=state.metrics,
                          policy=found.policy(p.rules, f"oidc.providers[{i}]", p.username_prefix), fleet=fleet,
                          trust_amr=p.name in trusted, trust_acr=trusted_acr)
                 for i, p in enumerate(config.oidc.providers)]
    registry = Registry([*found.sources, *providers])
    revocations = state.revocations(lifetime=sessions.lifetime)
    index = state.session_index(lifetime=sessions.lifetime, idle_timeout=sessions.idle_timeout)
    if fleet is not None:
        revocations.share(fleet)
        index.share(fleet)
    jar = SessionJar(codec, registry, keep_for=sessions.lifetime, revocations=revocations, index=index,
                     metrics=state.metrics, fleet=fleet)
    codes, cipher = factor_codes(config)
    landing = Landing(pages=pages, jar=jar, cookie=cookie, max_age=int(sessions.lifetime), path=public_path, csp=csp,
                      codes=codes)
    sso = None
    if providers:
        sso = SingleSignOn(providers, state=StateCookie(sessions.keys[0].secret.reveal(), secure=sessions.secure),
                           redirects=redirects, path=public_path, landing=landing)
    signin = SignIn(landing=landing, verifier=found.verifier, sso=sso, redirects=redirects,
                    client_address=client_address, public_url=public_url, logout_redirect=sessions.logout_redirect)
    authenticator = SessionAuthenticator(jar, cookie, registry.renew, writer,
                                         recheck_every=sessions.recheck_every, max_age=int(sessions.lifetime),
                                         client_address=client_address, metrics=state.metrics)
    feature = Feature(authenticators=[authenticator], routes=sign_in_routes(signin, config.oidc.callback_path))
    if codes is not None and cipher is not None:
        # Codes are regulated like passwords: by the passwords' regulator, or (single sign-on only) its own.
        regulator = found.verifier.regulator if found.verifier is not None else \
            shared_regulator(config, state, remember=config.regulation.window)
        from sidecar.passkeys import Passkeys  # webauthn (and pyOpenSSL) only where factors are on
        from sidecar.passkeys import routes as passkey_routes

        factor = SecondFactor(signin=signin, codes=codes, cipher=cipher, regulator=regulator, passkeys=True)
        feature.routes += second_factor_routes(factor)
        assert config.second_factor is not None  # factor_codes made codes from it
        names = config.second_factor
        feature.routes += passkey_routes(Passkeys(factor, cipher, rp_id=names.rp_id, rp_name=names.rp_name,
                                                  origins=names.origins))
        feature.on_cleanup.append(_closing(codes.store))
    return signin, feature


def shared_regulator(config: Config, state: State, *, remember: float) -> Regulator | None:
    """The process's regulator with the configured budgets (None: regulation is off), sharing them
    with the fleet when there is one."""
    regulation = config.regulation
    if not regulation.enabled:
        return None
    regulator = state.regulator(max_failures=regulation.max_failures, window=regulation.window, ban=regulation.ban,
                                remember=remember)
    if (fleet := state.fleet(config.state)) is not None:
        regulator.share(fleet)
    return regulator


def factor_codes(config: Config) -> tuple[Codes | None, Cipher | None]:
    """The second factors' store and codes, when the configuration has them (sidecar.second_factor)."""
    factors = config.second_factor
    if factors is None:
        return None, None
    cipher = Cipher(derive_key(factors.key.reveal(), "second factor key"))
    store: FactorStore
    if config.state.backend == "redis":  # one store for the fleet, as its bans and sign-outs
        store = RedisFactors.from_config(config.state, cipher)
    else:
        assert factors.store is not None  # the loader sets it but with backend redis
        store = SqliteFactors(factors.store, cipher)
    return Codes(store, issuer=factors.issuer, recovery_count=factors.recovery_codes), cipher


def bearer_tokens(config: Config, writer: HeaderWriter, http: HttpClient, state: State, found: Passwords) -> Feature:
    if not config.oidc.bearer:
        return Feature()
    policies = {b.issuer: found.policy(b.rules, f"oidc.bearer[{i}]", b.username_prefix)
                for i, b in enumerate(config.oidc.bearer)}
    return Feature(authenticators=[BearerAuthenticator(config.oidc.bearer, http, writer, leeway=config.oidc.leeway,
                                                       metrics=state.metrics, policies=policies)])


def signed_identity(config: Config) -> tuple[AssertionSigner | None, Feature]:
    if config.assertion is None:
        return None, Feature()
    signer = AssertionSigner(
        [(key.id, key.private_key.reveal()) for key in config.assertion.keys],
        issuer=config.assertion.issuer or config.server.public_url or "auth-sidecar",
        audience=config.assertion.audience, lifetime=config.assertion.lifetime,
        group_separator=config.headers.group_separator,
    )
    return signer, Feature(routes=assertion_routes())


def shared_state(config: Config, state: State) -> Feature:
    """With ``state.backend: redis``: the fleet's subscription and poll, run while an application is."""
    fleet = state.fleet(config.state)
    if fleet is None:
        return Feature()

    async def start(app: web.Application) -> None:
        await fleet.start()

    async def stop(app: web.Application) -> None:
        await fleet.stop()

    return Feature(on_startup=[start], on_cleanup=[stop])


def make_app(config: Config, state: State | None = None) -> web.Application:
    """The application for one configuration. What outlives a reload (bans, sign-outs, metrics)
    comes from ``state``; nothing else is shared with another application built in the process
    (a reload builds the new one beside the old, which finishes the requests it has)."""
    state = state or State()
    shared = shared_state(config, state)  # first: the other features share through it
    writer = HeaderWriter(config.headers)
    client_address = ClientAddress(config.server.trusted_proxies)
    http = HttpClient()
    found = passwords(config, writer, client_address, state)
    signin, browser = browser_sign_in(config, writer, client_address, found, http, state)
    signer, assertion = signed_identity(config)
    bearer = bearer_tokens(config, writer, http, state, found)
    # The order ways in are tried: a session, a Bearer token, Basic credentials.
    features = [browser, bearer, found.feature, assertion, shared]

    app = web.Application(client_max_size=MAX_BODY, handler_args=HANDLER_ARGS)
    app[SIDECAR] = Sidecar(
        authenticators=[a for feature in features for a in feature.authenticators],
        rules=AccessRules(config.access),
        client_address=client_address,
        directory=found.directory,
        realm=config.server.realm,
        basic_auth=config.server.basic_auth,
        signin=signin,
        forward_auth=config.server.mode == "forward_auth",
        signer=signer,
        assertion_header=config.headers.assertion,
        identity_headers=identity_names(config.headers),
        identity_prefix=config.headers.user.lower() + "-",
        app_tokens=AppTokens(config.app_tokens.rules, config.headers),
        metrics=state.metrics,
        fleet=state.current_fleet,
    )
    app[CONFIG] = config
    app[STATE] = state
    app.add_routes([*core_routes(), *(route for feature in features for route in feature.routes)])
    if config.oidc.providers or config.oidc.bearer:
        app.cleanup_ctx.append(http.lifetime)
    for feature in features:
        app.on_startup.extend(feature.on_startup)
        app.on_cleanup.extend(feature.on_cleanup)
    return app


Hook = Callable[[web.Application], Awaitable[None]]


def _quietly(close: Callable[[], None]) -> Hook:
    async def hook(app: web.Application) -> None:
        close()

    return hook


def _closing(store: FactorStore) -> Hook:
    async def hook(app: web.Application) -> None:
        await store.close()

    return hook


def _check_group_type(directory: Directory) -> Hook:
    async def check(app: web.Application) -> None:
        try:
            await directory.check_group_type()  # ConfigError when the server cannot answer it: no start
        except ConfigError:
            directory.close()  # a failed start-up runs no clean-up
            raise
        except DirectoryUnavailable as exc:
            log.warning("directory unreachable at start-up; ldap.group_type is checked on first use: %s",
                        exc.reason)

    return check

"""Configuration: one YAML file read into frozen dataclasses, validated all at once.

Every problem is collected with its YAML path (``ldap.user_search.filter: ...``) and the line it
was written on, and reported together in one :class:`ConfigError`. What the runtime would refuse
is refused here, by the runtime's own rules: each runtime class that takes configured values
(``Theme``, ``Pages``, ``RedirectPolicy``, ``LocalUsers``) has a ``problems(...)`` method, which the
section reader calls and its constructor raises on, so ``check-config`` refuses exactly what
``serve`` would. Defaults live only in the dataclasses; enumerations are ``Literal`` types.

An unknown key gets a "did you mean"; problems under the key it probably meant, and problems that
only follow from one already reported ("is required" after a value that could not be read), are
not listed again. This module imports no aiohttp or jose (ldap3 only for its DN parser), so it is
safe to import anywhere (``auth-sidecar check-config`` uses nothing else).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, TypeVar, get_args
from urllib.parse import SplitResult, urlsplit

import yaml

from sidecar import cookies, keylist
from sidecar.canonical import parse_host, segments
from sidecar.entries import normalize_dn, within
from sidecar.errors import ConfigError, MalformedRequest, SecretSourceError
from sidecar.identity import fold
from sidecar.local import LocalUsers
from sidecar.pages import Pages, Theme
from sidecar.queries import MAX_DEPTH, AllOf, AnyOf, Not, Query, leaves, mapped
from sidecar.redirects import RedirectPolicy
from sidecar.secrets import Secret, load_secret
from sidecar.yamlfile import line_of, load_yaml

T = TypeVar("T")
S = TypeVar("S", bound=str)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

GroupTypeName = Literal["group_of_names", "nested_group_of_names", "group_of_unique_names",
                        "nested_group_of_unique_names", "organizational_role", "nested_organizational_role",
                        "member_dn", "nested_member_dn", "posix_group", "member_of", "active_directory"]
UsernameCase = Literal["lower", "preserve"]
Scope = Literal["base", "one", "subtree"]
Flag = Literal["is_active", "is_staff", "is_superuser"]
Mode = Literal["auth_request", "forward_auth"]
Policy = Literal["allow", "deny"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
Order = Literal["ldap_first", "local_first"]
Backend = Literal["memory", "redis"]
ProviderType = Literal["oidc", "oauth2"]
FactorMode = Literal["required", "optional", "never"]
GROUP_TYPES: tuple[GroupTypeName, ...] = get_args(GroupTypeName)
SCOPES: tuple[Scope, ...] = get_args(Scope)
FLAGS: tuple[Flag, ...] = get_args(Flag)
STANDARD_ATTRS = ("first_name", "last_name", "email")
# RFC 7230 token characters without "_": gunicorn >= 22 drops header names with underscores.
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^`|~-]+$")
USER_PLACEHOLDER = "%(user)s"
# An attribute compared with the user placeholder, e.g. "(uid=%(user)s)" -> "uid".
FILTER_USER_ATTR = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9-]*)\s*=\s*%\(user\)s\s*\)")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9180
    trusted_proxies: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    public_url: str | None = None
    realm: str = "auth-sidecar"
    access_log: bool = False
    # auth_request (nginx, ingress-nginx, HAProxy): browsers get 401 + Location.
    # forward_auth (Traefik, Caddy): any non-2xx goes to the browser as is, so browsers get 302.
    mode: Mode = "auth_request"
    basic_auth: bool = True
    workers: int = 1  # processes on one port; more than 1 needs state.backend: redis


@dataclass(frozen=True)
class HeaderConfig:
    user: str = "Remote-User"
    first_name: str = "Remote-User-First-Name"
    last_name: str = "Remote-User-Last-Name"
    email: str = "Remote-User-Email"
    groups: str = "Remote-User-Group"
    group_separator: str = "|"
    is_staff: str = "Remote-User-Staff"
    is_superuser: str = "Remote-User-Superuser"
    assertion: str = "Remote-User-Assertion"
    auth_methods: str = "Remote-User-Auth-Methods"  # how the user signed in: pwd, pwd|otp, pwd|hwk
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Search:
    base_dn: str
    scope: Scope = "subtree"
    filter: str = "(objectClass=*)"


@dataclass(frozen=True)
class LdapConfig:
    """One directory: ``ldap:`` as a mapping, or one item of ``ldap:`` as a list (then ``name`` is set)."""

    server_uri: tuple[str, ...]
    name: str = ""  # several directories: each one's name, its identities' source "ldap:<name>"
    bind_dn: str = ""
    bind_password: Secret | None = None
    start_tls: bool = False
    ca_file: str | None = None
    ca_dir: str | None = None  # every certificate file in it is a trusted CA (NetBox's LDAP_CA_CERT_DIR)
    client_cert: str | None = None  # mutual TLS: our certificate (PEM) and its key
    client_key: str | None = None
    client_key_password: Secret | None = None
    ignore_cert_errors: bool = False
    referrals: bool = False
    connect_timeout: float = 3.0
    timeout: int = 5  # whole seconds: ldap3 packs it as an integer socket option
    retry_dead_after: float = 30.0
    user_search: tuple[Search, ...] = ()  # several: a union, the user found in exactly one entry
    user_dn_template: str | None = None
    refresh_dn_on_bind: bool = False  # bind with user_dn_template (a UPN), then find the entry by user_search
    username_attr: str = "uid"
    # lower: Remote-User in lower case, as django-auth-ldap creates users (so migrated accounts match)
    username_case: UsernameCase = "lower"
    user_attr_map: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType(
            {"first_name": "givenName", "last_name": "sn", "email": "mail"}
        )
    )
    group_search: tuple[Search, ...] = ()  # several: their union
    group_type: GroupTypeName | None = None
    member_attr: str | None = None  # member_dn and nested_member_dn: the attribute listing member DNs
    group_name_attr: str = "cn"
    # Rules: any of the queries holds (sidecar.queries); a query's groups are DNs here.
    require_group: tuple[Query, ...] = ()
    deny_group: tuple[Query, ...] = ()
    mirror_groups: bool | tuple[str, ...] = True
    mirror_groups_except: tuple[str, ...] = ()  # every group is published but these
    user_flags_by_group: Mapping[Flag, tuple[Query, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    find_group_perms: bool = False
    cache_timeout: int = 3600
    # How long a user's entry (DN, attributes, groups; never a password) is kept, so that a login the
    # verdict cache does not know costs the bind alone: django-auth-ldap's CACHE_TIMEOUT as it means it.
    entry_cache_timeout: int = 0
    max_nesting: int = 16
    threads: int = 8

    @property
    def source_id(self) -> str:
        """The id its identities carry (sidecar.sources): ``ldap``, or ``ldap:<name>`` of several."""
        return f"ldap:{self.name}" if self.name else "ldap"


@dataclass(frozen=True)
class GroupRules:
    """The group rules of a source that names groups by name (the users file's groups, a provider's
    groups claim), as ``ldap:`` has them for DNs; and, like django-auth-ldap's AUTHORIZE_ALL_USERS,
    groups and flags taken from the directory by the user's name."""

    require_group: tuple[Query, ...] = ()
    deny_group: tuple[Query, ...] = ()
    user_flags_by_group: Mapping[Flag, tuple[Query, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # None: not; "": the directories in order (the first that knows the name); else a directory's name
    groups_from_directory: str | None = None

    def __bool__(self) -> bool:
        return bool(self.require_group or self.deny_group or self.user_flags_by_group
                    or self.groups_from_directory is not None)


@dataclass(frozen=True)
class CacheConfig:
    failure_timeout: float = 5.0
    max_entries: int = 10_000


@dataclass(frozen=True)
class AccessRule:
    """Who may reach URLs under ``path`` (and ``host``, when given), both canonical as requests are
    compared; users and groups :func:`~sidecar.identity.fold`-ed. A list left out means anyone."""

    path: str = "/"
    host: str | None = None
    methods: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    queries: tuple[Query, ...] = ()  # group queries (and / or / not) beside the plain names, folded
    allow: bool = True
    # None: access.second_factor decides. A max age asks for a factor given within that many seconds.
    second_factor: FactorMode | None = None
    second_factor_max_age: float | None = None


@dataclass(frozen=True)
class AccessConfig:
    rules: tuple[AccessRule, ...] = ()
    default: Policy = "allow"
    # Where no rule says: required (every signed-in person), optional (those who enrolled one), never.
    second_factor: FactorMode = "never"
    second_factor_max_age: float | None = None

    def asks_factors(self) -> bool:
        """Whether any request could ask a second factor."""
        modes = {self.second_factor, *(rule.second_factor for rule in self.rules)}
        return bool(modes - {"never", None})


@dataclass(frozen=True)
class AppTokenRule:
    """Requests whose ``Authorization`` is ``scheme`` (any case) and a value starting with ``prefix``,
    to one of ``hosts`` (any, when empty) under one of ``paths``: the application authenticates them
    itself, so /auth lets them through with empty identity headers (NetBox's ``Token``, ``Bearer nbt_``)."""

    scheme: str
    prefix: str = ""
    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ("/",)


@dataclass(frozen=True)
class AppTokensConfig:
    rules: tuple[AppTokenRule, ...] = ()


@dataclass(frozen=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "text"  # json: one object per line, for a log collector


@dataclass(frozen=True)
class MetricsConfig:
    """GET /metrics (Prometheus text format) on a listener of its own: never the proxy's side."""

    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class AdminConfig:
    """The local control socket of ``auth-sidecar admin``: a Unix socket only its owner can open."""

    socket: str | None = "/run/auth-sidecar/admin.sock"  # None: no admin channel


@dataclass(frozen=True)
class SessionKey:
    id: str
    secret: Secret


@dataclass(frozen=True)
class SessionConfig:
    """Browser sign-in: the login page and the encrypted session cookie."""

    keys: tuple[SessionKey, ...]
    cookie_name: str = "sidecar_session"
    cookie_domain: str | None = None
    secure: bool = True
    lifetime: float = 12 * 3600
    idle_timeout: float = 3600
    recheck_every: float = 300
    default_redirect: str = "/"
    logout_redirect: str | None = None
    redirect_hosts: tuple[str, ...] = ()
    redirect_domains: tuple[str, ...] = ()
    redirect_schemes: tuple[str, ...] = ("https",)


@dataclass(frozen=True)
class LoginPageConfig:
    title: str = "Sign in"
    logo_url: str | None = None
    accent: str = "#2563eb"
    help_text: str | None = None
    help_url: str | None = None


@dataclass(frozen=True)
class LocalUsersConfig:
    file: str
    # ldap_first: the seed's fallback, used when the directory is unreachable or does not know
    # the user; local_first: the file first, the directory for names it does not hold.
    order: Order = "ldap_first"
    reload_every: float = 2.0
    rules: GroupRules = field(default_factory=GroupRules)


@dataclass(frozen=True)
class ClaimMap:
    """Where each identity field comes from in a provider's claims (dotted paths reach nested ones)."""

    username: str = "preferred_username"
    first_name: str = "given_name"
    last_name: str = "family_name"
    email: str = "email"
    groups: str | None = "groups"


@dataclass(frozen=True)
class Allow:
    """Who a provider may sign in; empty lists allow everyone the provider vouches for."""

    groups: frozenset[str] = frozenset()
    email_domains: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OidcProvider:
    name: str
    label: str
    client_id: str
    client_secret: Secret
    type: ProviderType = "oidc"  # oidc: discovery and an ID token; oauth2: GitHub/GitLab-style, userinfo only
    issuer: str | None = None
    authorization_url: str | None = None
    token_url: str | None = None
    userinfo_url: str | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    claims: ClaimMap = field(default_factory=ClaimMap)
    allow: Allow = field(default_factory=Allow)
    use_userinfo: bool = False
    logout: bool = False  # RP-initiated logout: /logout also ends the provider's session
    algorithms: tuple[str, ...] = ()  # empty: what the provider advertises, asymmetric only
    # Beside other sources, a provider's names get this prefix, unless the operator says they are
    # the very same names (shares_usernames): a self-chosen GitHub login is no directory user.
    username_prefix: str = ""
    shares_usernames: bool = False
    rules: GroupRules = field(default_factory=GroupRules)


@dataclass(frozen=True)
class BearerIssuer:
    """Access tokens (JWT) from this issuer are accepted at /auth as ``Authorization: Bearer``."""

    issuer: str
    audiences: tuple[str, ...]
    jwks_url: str | None = None  # default: from the issuer's discovery document
    claims: ClaimMap = field(default_factory=lambda: ClaimMap(username="sub"))
    allow: Allow = field(default_factory=Allow)
    algorithms: tuple[str, ...] = ()
    username_prefix: str = ""
    shares_usernames: bool = False
    rules: GroupRules = field(default_factory=GroupRules)


@dataclass(frozen=True)
class OidcConfig:
    providers: tuple[OidcProvider, ...] = ()
    bearer: tuple[BearerIssuer, ...] = ()
    callback_path: str = "/oidc/callback"
    leeway: float = 30.0


@dataclass(frozen=True)
class SigningKey:
    id: str
    private_key: Secret  # PEM, EC P-256


@dataclass(frozen=True)
class AssertionConfig:
    """A short-lived signed statement of the identity, so applications can check the headers."""

    keys: tuple[SigningKey, ...]
    audience: str
    issuer: str | None = None  # default: server.public_url, else "auth-sidecar"
    lifetime: float = 60


@dataclass(frozen=True)
class SecondFactorConfig:
    """TOTP, passkeys and recovery codes (sidecar.factors): where enrolments are kept, the key that
    encrypts TOTP secrets there, and the names a phone's app and a browser show."""

    key: Secret  # encrypts TOTP secrets at rest and keys the recovery codes' hashes
    # The SQLite file of enrolments and used codes; None with state.backend redis, which keeps them in Redis.
    store: str | None = "/var/lib/auth-sidecar/factors.sqlite3"
    issuer: str = ""  # in the TOTP URI (the app's label); default: the login page's title
    rp_id: str = ""  # WebAuthn relying party: default server.public_url's host
    rp_name: str = ""  # default: the issuer
    origins: tuple[str, ...] = ()  # where passkeys are used; default: server.public_url's origin
    trust_amr: tuple[str, ...] = ()  # providers (oidc.providers[].name) whose amr claim is believed
    trust_acr: tuple[str, ...] = ()  # acr values of those providers that mean a second factor was given
    recovery_codes: int = 10


@dataclass(frozen=True)
class RegulationConfig:
    enabled: bool = True
    max_failures: int = 5
    window: float = 300
    ban: float = 900


@dataclass(frozen=True)
class SentinelConfig:
    """Redis Sentinel: the sentinels are asked where the master ``master`` is now."""

    master: str
    addresses: tuple[tuple[str, int], ...]
    password: Secret | None = None


@dataclass(frozen=True)
class StateConfig:
    """Where bans, revocations and server-side group lists live: in this process, or in Redis for a fleet."""

    backend: Backend = "memory"
    url: str = "redis://127.0.0.1:6379"  # redis:// or rediss:// (TLS); with sentinel, only its scheme counts
    username: str | None = None
    password: Secret | None = None
    ca_file: str | None = None
    database: int = 0
    key_prefix: str = "auth-sidecar:"
    connect_timeout: float = 1.0
    timeout: float = 0.25  # one Redis command; past it the request goes on with what is known locally
    poll_every: float = 2.0  # re-read revocations even when pub/sub is quiet (a lost message, a failover)
    sentinel: SentinelConfig | None = None


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    headers: HeaderConfig
    ldap: LdapConfig | None  # the first (or only) directory
    cache: CacheConfig
    access: AccessConfig
    log: LogConfig
    sessions: SessionConfig | None = None
    login_page: LoginPageConfig = field(default_factory=LoginPageConfig)
    local_users: LocalUsersConfig | None = None
    regulation: RegulationConfig = field(default_factory=RegulationConfig)
    oidc: OidcConfig = field(default_factory=OidcConfig)
    assertion: AssertionConfig | None = None
    metrics: MetricsConfig | None = None  # None: no metrics are kept or served
    admin: AdminConfig = field(default_factory=AdminConfig)
    app_tokens: AppTokensConfig = field(default_factory=AppTokensConfig)
    directories: tuple[LdapConfig, ...] = ()  # every directory, in the order they are asked
    state: StateConfig = field(default_factory=StateConfig)
    second_factor: SecondFactorConfig | None = None


class _Problems:
    """Every problem found, each at its YAML path with its line when the loader knows it.

    Two kinds are left out when listed: anything at or under a path that a misspelt key probably
    meant (its unknown-key message says it all), and a follow-on (``after`` names what it follows
    from) when what it follows from was reported itself.
    """

    def __init__(self) -> None:
        self._found: list[tuple[str, str, int | None, tuple[str, ...]]] = []
        self._meant: set[str] = set()

    def add(self, path: str, message: str, line: int | None = None, *, after: tuple[str, ...] = ()) -> None:
        self._found.append((path, message, line, after))

    def misspelt(self, meant: str) -> None:
        self._meant.add(meant)

    def messages(self) -> list[str]:
        def within(path: str, roots: Iterable[str]) -> bool:
            return any(path == root or path.startswith((root + ".", root + "[")) for root in roots)

        reported = [path for path, _, _, after in self._found if not after]
        return [
            f"{path}: {message}" + (f" (line {line})" if line is not None else "")
            for path, message, line, after in self._found
            if not within(path, self._meant)
            and not any(within(cause, self._meant) or within(cause, reported) for cause in after)
        ]


class _Reader:
    """Reads one YAML mapping, recording problems under their YAML path instead of raising.

    Every key it is asked about is a known key; :meth:`done` reports the others.
    """

    def __init__(self, data: object, path: str, problems: _Problems, line: int | None = None) -> None:
        self.path = path
        self.problems = problems
        self.line = line
        self.known: set[str] = set()
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        if data is not None and not isinstance(data, dict):
            self.problem(None, f"expected a mapping, got {_kind(data)}")

    def where(self, key: str | None) -> str:
        return f"{self.path}.{key}" if self.path and key else (key or self.path or "(top)")

    def line_of(self, key: str | None) -> int | None:
        """Where ``key`` is written; for a key left out (or None), where this mapping is."""
        return line_of(self.data, key) if key in self.data else self.line

    def problem(self, key: str | None, message: str) -> None:
        self.problems.add(self.where(key), message, self.line_of(key))

    def follow_on(self, key: str, message: str, *causes: str, paths: tuple[str, ...] = ()) -> None:
        """A problem that follows from ``key`` and ``causes`` (keys here) or ``paths`` (anywhere) being
        what they are: not reported when one of them was already reported as wrong."""
        after = (self.where(key), *map(self.where, causes), *paths)
        self.problems.add(self.where(key), message, self.line_of(key), after=after)

    def has(self, key: str) -> bool:
        self.known.add(key)
        return self.data.get(key) is not None

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: T) -> T:
        self.known.add(key)
        value = self.data.get(key)
        if value is None:
            return default
        # YAML's `yes` is a bool, and bool is an int: keep the two apart.
        wrong_bool = isinstance(value, bool) and kind in (int, float, (int, float))
        if wrong_bool or not isinstance(value, kind):
            self.problem(key, f"expected {_name(kind)}, got {_kind(value)} {_show(value)}")
            return default
        return value  # type: ignore[return-value]

    def text(self, key: str, default: str = "") -> str:
        return self.get(key, str, default)

    def optional_text(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, str, "")
        return value or default

    def flag(self, key: str, default: bool) -> bool:
        return self.get(key, bool, default)

    def number(self, key: str, default: float, *, minimum: float = 0) -> float:
        value = float(self.get(key, (int, float), default))
        if value < minimum:
            self.problem(key, f"must be at least {minimum}, got {value:g}")
            return default
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            self.problem(key, f"must be at least {minimum}, got {value}")
            return default
        return value

    def choice(self, key: str, default: S, choices: tuple[S, ...]) -> S:
        value = self.text(key, default)
        if value not in choices:
            self.problem(key, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        """A string or a list of strings. An empty list is refused: written out, ``require_group: []``
        reads as "nobody" to some and "anybody" to others, so it must say which by leaving the key out."""
        value: str | list[object] = self.get(key, (str, list), [])
        if isinstance(value, list) and not value and self.data.get(key) is not None:
            self.problem(key, "an empty list: leave the key out for the default, or name what you mean")
            return ()
        items = [value] if isinstance(value, str) else value
        texts = tuple(item for item in items if isinstance(item, str) and item)
        if len(texts) != len(items):
            self.problem(key, "expected a string or a list of non-empty strings")
            return ()
        return texts

    def secret(self, key: str) -> Secret | None:
        self.known.add(key)
        if key not in self.data or self.data[key] is None:
            return None
        try:
            return load_secret(self.data[key])
        except SecretSourceError as exc:
            self.problem(key, str(exc))
            return None

    def section(self, key: str) -> _Reader:
        self.known.add(key)
        return _Reader(self.data.get(key), self.where(key), self.problems, self.line_of(key))

    def items(self, key: str) -> list[_Reader]:
        self.known.add(key)
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"expected a list, got {_kind(value)}")
            return []
        return [_Reader(item, f"{self.where(key)}[{i}]", self.problems, line_of(value, i) or self.line_of(key))
                for i, item in enumerate(value)]

    def mapping(self, key: str) -> dict[str, Any] | None:
        self.known.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(key, f"expected a mapping, got {_kind(value)}")
            return None
        return value

    def report(self, found: Iterable[tuple[str, str]], keys: Mapping[str, str] | None = None) -> None:
        """Problems a runtime class found, as (its field, problem): each at the key ``keys`` maps the
        field to (the field's own name by default)."""
        for name, message in found:
            self.problem((keys or {}).get(name, name), message)

    def done(self) -> None:
        for key in self.data:
            if str(key) in self.known:
                continue
            absent = [k for k in self.known if self.data.get(k) is None]
            meant = difflib.get_close_matches(str(key), absent, n=1)
            self.problem(str(key), "unknown key" + (f" (did you mean {meant[0]}?)" if meant else ""))
            if meant:
                self.problems.misspelt(self.where(meant[0]))


def _name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a mapping"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _kind(value: object) -> str:
    # bool before int, dict and list by isinstance: the loader's mappings and lists are subclasses.
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
             (list, "a list"), (dict, "a mapping"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _listen(r: _Reader, host: str, port: int) -> tuple[str, int]:
    """``listen: HOST:PORT`` ([::1]:PORT for IPv6)."""
    listen = r.text("listen", f"{host}:{port}")
    match = re.fullmatch(r"\[?([^\]]*?)\]?:(\d{1,5})", listen)
    if match is None or not 0 < int(match.group(2)) < 65536:
        r.problem("listen", f"expected HOST:PORT, got {listen!r}")
        return host, port
    return match.group(1), int(match.group(2))


def _read_server(r: _Reader) -> ServerConfig:
    default = ServerConfig()
    host, port = _listen(r, default.host, default.port)
    proxies: list[Network] = []
    for item in r.texts("trusted_proxies") or [str(n) for n in default.trusted_proxies]:
        try:
            proxies.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            r.problem("trusted_proxies", f"not an address or network: {item!r}")
    public_url = r.optional_text("public_url", default.public_url)
    if public_url is not None and not _absolute_http(public_url):
        r.problem("public_url", f"expected an absolute http(s) URL, got {public_url!r}")
        public_url = None
    realm = r.text("realm", default.realm)
    if not realm or any(c in realm for c in '"\\\r\n'):
        r.problem("realm", "must be non-empty, without quotes, backslashes or line breaks")
    server = ServerConfig(host=host, port=port, trusted_proxies=tuple(proxies),
                          public_url=public_url.rstrip("/") if public_url else None, realm=realm,
                          access_log=r.flag("access_log", default.access_log),
                          mode=r.choice("mode", default.mode, get_args(Mode)),
                          basic_auth=r.flag("basic_auth", default.basic_auth),
                          workers=r.integer("workers", default.workers, minimum=1))
    r.done()
    return server
def _read_headers(r: _Reader) -> HeaderConfig:
    default = HeaderConfig()
    names = {key: r.text(key, getattr(default, key))
             for key in ("user", "first_name", "last_name", "email", "groups", "is_staff",
                         "is_superuser", "assertion", "auth_methods")}
    extra = {str(k): v for k, v in (r.mapping("extra") or {}).items()}
    for key, name in [*names.items(), *(("extra." + k, v) for k, v in extra.items())]:
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            r.problem(key, f"not a header name without underscores: {name!r}")
    prefix = str(names["user"]).lower() + "-"
    for key, name in extra.items():
        if isinstance(name, str) and not name.lower().startswith(prefix):
            r.problem(f"extra.{key}", f"must start with {names['user']}- (got {name!r}), so that the proxies' "
                      "deploy files, which remove every client header of that prefix, remove it too")
    lowered = [str(n).lower() for n in [*names.values(), *extra.values()]]
    for name in sorted({n for n in lowered if lowered.count(n) > 1}):
        r.problem(None, f"header name {name!r} is used twice")
    separator = r.text("group_separator", default.group_separator)
    if not separator or any(ord(c) < 32 or c in '"' for c in separator):
        r.problem("group_separator", "must be non-empty, without control characters or quotes")
    r.done()
    return HeaderConfig(**names, group_separator=separator,
                        extra=MappingProxyType({k: str(v) for k, v in extra.items()}))




def _read_search(r: _Reader, *, needs_user: bool) -> Search:
    default = Search(base_dn="")
    base_dn = r.text("base_dn")
    if not base_dn:
        r.follow_on("base_dn", "is required")
    scope = r.choice("scope", default.scope, SCOPES)
    query = r.text("filter", default.filter)
    if not (query.startswith("(") and query.endswith(")")) or query.count("(") != query.count(")"):
        r.problem("filter", f"not an LDAP filter: {query!r}")
    if needs_user and USER_PLACEHOLDER not in query:
        r.problem("filter", f"must contain {USER_PLACEHOLDER} (the login name), got {query!r}")
    if not needs_user and "%(" in query:
        r.problem("filter", "placeholders are not allowed in a group search filter")
    r.done()
    return Search(base_dn=base_dn, scope=scope, filter=query)


def _read_searches(r: _Reader, key: str, *, needs_user: bool) -> tuple[Search, ...]:
    """A search, or a list of them (django-auth-ldap's LDAPSearchUnion)."""
    if isinstance(r.data.get(key), list):
        items = r.items(key)
        if not items:
            r.problem(key, "an empty list: leave the key out, or name the searches")
        return tuple(_read_search(item, needs_user=needs_user) for item in items)
    return (_read_search(r.section(key), needs_user=needs_user),) if r.has(key) else ()


# django-auth-ldap's settings that have no key here, written as a key would be, and why.
ABSENT: Mapping[str, str] = MappingProxyType({
    "permit_empty_password": "is not available: a bind with a DN and an empty password is an unauthenticated "
                             "bind, which the directory accepts without checking anything, so an empty password "
                             "is always refused",
    "always_update_user": "is not needed: every sign-in (and every sessions.recheck_every) sends the directory's "
                          "current names, email, groups and flags; sidecar.contrib.django updates the user on "
                          "every request",
    "bind_as_authenticating_user": "is not needed: with bind_dn the service account reads the user's entry and "
                                   "groups; without it (user_dn_template) they are read as the user",
    "authorize_all_users": "is groups_from_directory here, set on the other source (local_users, "
                           "oidc.providers[], oidc.bearer[]): its users take their groups and flags from the "
                           "directory by name",
    "no_new_users": "is the application's choice: the sidecar creates no accounts (restrict sign-in with "
                    "require_group, or keep the application from creating users)",
    "user_query_field": "is not available: the application matches users by Remote-User (username_case "
                        "lower matches the accounts django-auth-ldap created)",
    "user_attrlist": "is not needed: the sidecar reads exactly the attributes user_attr_map, username_attr and "
                     "the group type need",
    "connection_options": "is not read: write referrals, timeout, connect_timeout, ca_file, ca_dir, client_cert, "
                          "client_key or ignore_cert_errors instead (auth-sidecar import-netbox translates them)",
    "global_options": "is not read: write referrals, timeout, connect_timeout, ca_file, ca_dir, client_cert, "
                      "client_key or ignore_cert_errors instead (auth-sidecar import-netbox translates them)",
    "ca_cert_file": "is ca_file here (NetBox's LDAP_CA_CERT_FILE)",
    "ca_cert_dir": "is ca_dir here (NetBox's LDAP_CA_CERT_DIR)",
    "cache_groups": "is not needed: groups are read with the user and kept as long as cache_timeout",
    "group_cache_timeout": "is cache_timeout here: groups are read with the user and kept as long",
    "profile_attr_map": "is user_attr_map here (django-auth-ldap removed profiles)",
    "profile_flags_by_group": "is user_flags_by_group here (django-auth-ldap removed profiles)",
})
DIRECTORY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def _read_directories(top: _Reader) -> tuple[tuple[LdapConfig, ...], list[_Reader]]:
    """``ldap:`` as one directory (a mapping) or several, tried in order (a list, each named)."""
    if not isinstance(top.data.get("ldap"), list):
        if not top.has("ldap"):
            return (), []
        reader = top.section("ldap")
        return (_read_ldap(reader),), [reader]
    readers = top.items("ldap")
    if not readers:
        top.problem("ldap", "an empty list: leave the section out, or list the directories")
    directories = tuple(_read_ldap(reader, named=True) for reader in readers)
    names = [d.name for d in directories if d.name]
    for name in sorted({n for n in names if names.count(n) > 1}):
        top.problem("ldap", f"directory name {name!r} is used twice")
    return directories, readers


def _read_ldap(r: _Reader, *, named: bool = False) -> LdapConfig:
    default = LdapConfig(server_uri=())
    name = r.text("name")
    if named and not DIRECTORY_NAME.match(name):
        r.problem("name", f"expected 1-32 lower-case letters, digits or - (each directory is named), got {name!r}")
    elif name and not DIRECTORY_NAME.match(name):
        r.problem("name", f"expected 1-32 lower-case letters, digits or -, got {name!r}")
    uris, tls = _ldap_servers(r, default)
    bind_dn, bind_password = _ldap_bind(r, default)
    user_search, template, username_attr, refresh = _ldap_users(r, default)
    groups = _ldap_groups(r, default)
    config = LdapConfig(
        server_uri=uris,
        name=name,
        bind_dn=bind_dn,
        bind_password=bind_password,
        **tls,
        referrals=r.flag("referrals", default.referrals),
        connect_timeout=r.number("connect_timeout", default.connect_timeout, minimum=0.1),
        timeout=r.integer("timeout", default.timeout, minimum=1),
        retry_dead_after=r.number("retry_dead_after", default.retry_dead_after),
        user_search=user_search,
        user_dn_template=template,
        refresh_dn_on_bind=refresh,
        username_attr=username_attr,
        username_case=r.choice("username_case", default.username_case, get_args(UsernameCase)),
        user_attr_map=_ldap_attr_map(r, default),
        group_search=groups.search,
        group_type=groups.type,
        member_attr=groups.member_attr,
        group_name_attr=r.text("group_name_attr", default.group_name_attr),
        require_group=groups.require,
        deny_group=groups.deny,
        mirror_groups=groups.mirror,
        mirror_groups_except=groups.mirror_except,
        user_flags_by_group=groups.flags,
        find_group_perms=r.flag("find_group_perms", default.find_group_perms),
        cache_timeout=r.integer("cache_timeout", default.cache_timeout),
        entry_cache_timeout=r.integer("entry_cache_timeout", default.entry_cache_timeout),
        max_nesting=r.integer("max_nesting", default.max_nesting, minimum=1),
        threads=r.integer("threads", default.threads, minimum=1),
    )
    if config.entry_cache_timeout and (refresh or (template and not bind_dn)):
        # There the entry is read as the user, after the bind: nothing could be kept to save a round trip.
        r.follow_on("entry_cache_timeout", "needs a service account (bind_dn) that reads the entry before the "
                    "bind, and no refresh_dn_on_bind", "bind_dn", "refresh_dn_on_bind", "user_dn_template")
    for key, why in ABSENT.items():
        if key in r.data:
            r.known.add(key)
            r.problem(key, f"django-auth-ldap's AUTH_LDAP_{key.upper()} {why}; remove the line")
    r.done()
    return config


def ca_dir_pem(directory: str) -> str:
    """Every certificate (PEM) of the files in ``directory``: the CAs ``ldap.ca_dir`` trusts. Hashed
    links (c_rehash) and the files they point to count once each; other files are left out."""
    found: dict[str, None] = {}
    for path in sorted(Path(directory).iterdir()):
        try:
            if not path.is_file():
                continue
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        for block in PEM_CERTIFICATE.findall(text):
            found[block.strip()] = None
    return "\n".join(found)


PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _ldap_servers(r: _Reader, default: LdapConfig) -> tuple[tuple[str, ...], dict[str, Any]]:
    uris = r.texts("server_uri")
    if not uris and not r.has("server_uri"):
        r.follow_on("server_uri", "is required (a URI or a list of URIs tried in order)")
    for uri in uris:
        parts = _split(uri)
        if parts is None or parts.scheme not in ("ldap", "ldaps") or not _hostname(parts):
            r.problem("server_uri", f"expected ldap://HOST[:PORT] or ldaps://..., got {uri!r}")
        elif parts.path not in ("", "/"):
            r.problem("server_uri", f"a server URI has no path: {uri!r}")
        elif not _port_ok(parts):
            r.problem("server_uri", f"the port must be 1 to 65535, got {uri!r}")
    start_tls = r.flag("start_tls", default.start_tls)
    if start_tls and any(u.startswith("ldaps:") for u in uris):
        r.problem("start_tls", "StartTLS goes with ldap:// URIs; ldaps:// is already encrypted")
    return uris, _ldap_tls(r, default, uris, start_tls)


def _ldap_tls(r: _Reader, default: LdapConfig, uris: tuple[str, ...], start_tls: bool) -> dict[str, Any]:
    """Whom we trust (ca_file, ca_dir, or nobody: ignore_cert_errors) and what we present (client_cert)."""
    files = {key: r.optional_text(key) for key in ("ca_file", "client_cert", "client_key")}
    for key, path in files.items():
        if path and not Path(path).is_file():
            r.problem(key, f"no such file: {path}")
    ca_dir = r.optional_text("ca_dir", default.ca_dir)
    if ca_dir and not Path(ca_dir).is_dir():
        r.problem("ca_dir", f"no such directory: {ca_dir}")
    elif ca_dir and not ca_dir_pem(ca_dir):
        r.problem("ca_dir", f"holds no certificate (PEM): {ca_dir}")
    key_password = r.secret("client_key_password")
    if bool(files["client_cert"]) != bool(files["client_key"]):
        r.follow_on("client_key" if files["client_cert"] else "client_cert",
                    "client_cert and client_key go together (the certificate we present, and its key)")
    if key_password is not None and not files["client_key"]:
        r.follow_on("client_key_password", "is set but client_key is not", "client_key")
    plain = [u for u in uris if not u.startswith("ldaps:")]
    if files["client_cert"] and plain and not start_tls:
        r.follow_on("client_cert", f"is presented only over TLS, but {plain[0]} is plain ldap:// without "
                    "start_tls", "server_uri", "start_tls")
    return {"start_tls": start_tls, "ca_file": files["ca_file"], "ca_dir": ca_dir,
                  "client_cert": files["client_cert"], "client_key": files["client_key"],
                  "client_key_password": key_password,
                  "ignore_cert_errors": r.flag("ignore_cert_errors", default.ignore_cert_errors)}


def _ldap_bind(r: _Reader, default: LdapConfig) -> tuple[str, Secret | None]:
    bind_dn = r.text("bind_dn", default.bind_dn)
    bind_password = r.secret("bind_password")
    if bind_password is not None and not bind_dn:
        r.follow_on("bind_password", "is set but bind_dn is empty (anonymous search takes neither)", "bind_dn")
    if bind_dn and not bind_password:
        r.follow_on("bind_password", "is required with bind_dn (an empty password binds anonymously)")
    return bind_dn, bind_password


def _ldap_users(r: _Reader, default: LdapConfig) -> tuple[tuple[Search, ...], str | None, str, bool]:
    user_search = _read_searches(r, "user_search", needs_user=True)
    template = r.optional_text("user_dn_template", default.user_dn_template)
    refresh = r.flag("refresh_dn_on_bind", default.refresh_dn_on_bind)
    if refresh and not (user_search and template):
        r.follow_on("refresh_dn_on_bind", "needs user_dn_template (what the user binds as, e.g. "
                    "%(user)s@corp.example.com) and user_search (how the entry is found after the bind)",
                    "user_search", "user_dn_template")
    elif user_search and template and not refresh:
        r.problem("user_dn_template", "set either user_search or user_dn_template, not both (or "
                  "refresh_dn_on_bind: true: bind with the template, then find the entry with the search)")
    if not user_search and not template:
        r.follow_on("user_search", "set user_search or user_dn_template to find users", "user_dn_template")
    if template and USER_PLACEHOLDER not in template:
        r.problem("user_dn_template", f"must contain {USER_PLACEHOLDER}, got {template!r}")
    username_attr = r.optional_text("username_attr") or _username_attr(user_search, None if refresh else template)
    if username_attr is None and (user_search or template):
        r.follow_on("username_attr", "cannot be derived from the user search filter: set it "
                    "(the attribute holding the canonical login name, e.g. sAMAccountName)",
                    paths=(r.where("user_search") + ".filter",))
    return user_search, template, username_attr or default.username_attr, refresh


def _ldap_attr_map(r: _Reader, default: LdapConfig) -> Mapping[str, str]:
    attr_map = r.mapping("user_attr_map")
    if attr_map is None:
        return default.user_attr_map
    for key, attr in attr_map.items():
        if not isinstance(attr, str) or not attr:
            r.problem(f"user_attr_map.{key}", "expected an attribute name")
    return MappingProxyType({str(k): str(v) for k, v in attr_map.items()})


class _Groups(NamedTuple):
    type: GroupTypeName | None
    member_attr: str | None
    search: tuple[Search, ...]
    require: tuple[Query, ...]
    deny: tuple[Query, ...]
    flags: Mapping[Flag, tuple[Query, ...]]
    mirror: bool | tuple[str, ...]
    mirror_except: tuple[str, ...]


MEMBER_ATTR_TYPES = ("member_dn", "nested_member_dn")


def _ldap_groups(r: _Reader, default: LdapConfig) -> _Groups:
    group_type = _group_type(r)
    member_attr = r.optional_text("member_attr", default.member_attr)
    if group_type in MEMBER_ATTR_TYPES and not member_attr:
        r.follow_on("member_attr", f"is required with group_type {group_type} (the attribute listing "
                    "member DNs, e.g. member or uniqueMember)", "group_type")
    if member_attr and group_type not in MEMBER_ATTR_TYPES:
        r.follow_on("member_attr", f"is for group_type {' or '.join(MEMBER_ATTR_TYPES)} only "
                    "(each other type knows its attribute)", "group_type")
    group_search = _read_searches(r, "group_search", needs_user=False)
    if group_search and not group_type:
        r.follow_on("group_type", "is required with group_search")
    if group_type and group_type != "member_of" and not group_search:
        r.follow_on("group_search", f"is required with group_type {group_type}")
    require = _group_rule(r, "require_group")
    deny = _group_rule(r, "deny_group")
    flags = _flag_rules(r)
    mirror = r.get("mirror_groups", (bool, list), default.mirror_groups)
    if isinstance(mirror, list):
        mirror = r.texts("mirror_groups")
    mirror_except = r.texts("mirror_groups_except")
    if mirror_except and r.has("mirror_groups"):
        r.problem("mirror_groups_except", "and mirror_groups say two things: every group but these, or "
                  "those mirror_groups names; choose one")
    group_rules = [require, deny, *flags.values(), mirror if isinstance(mirror, tuple) else ()]
    if any(group_rules) and not group_type:
        r.follow_on("group_type", "is required by require_group, deny_group, mirror_groups "
                    "(as a list) and user_flags_by_group")
    return _Groups(group_type, member_attr, group_search, require, deny, flags, mirror, mirror_except)


def _flag_rules(r: _Reader) -> Mapping[Flag, tuple[Query, ...]]:
    flags: dict[Flag, tuple[Query, ...]] = {}
    flag_reader = r.section("user_flags_by_group")
    for flag in FLAGS:
        if flag_reader.has(flag):
            flags[flag] = _group_rule(flag_reader, flag)
    flag_reader.done()
    return MappingProxyType(flags)


QUERY_WORDS = ("and", "or", "not")


def _group_rule(r: _Reader, key: str) -> tuple[Query, ...]:
    """A group, a group query, or a list of them (any of which may hold): see sidecar.queries."""
    r.known.add(key)
    value = r.data.get(key)
    if value is None:
        return ()
    if isinstance(value, list) and not value:
        r.problem(key, "an empty list: leave the key out for the default, or name what you mean")
        return ()
    items = value if isinstance(value, list) else [value]
    found = []
    for index, item in enumerate(items):
        path = r.where(key) + (f"[{index}]" if isinstance(value, list) else "")
        line = (line_of(value, index) if isinstance(value, list) else None) or r.line_of(key)
        query = _query(r.problems, path, item, line, 1)
        if query is not None:
            found.append(query)
    return tuple(found) if len(found) == len(items) else ()


def _query(problems: _Problems, path: str, value: object, line: int | None, depth: int) -> Query | None:
    if isinstance(value, str) and value:
        return value
    if not isinstance(value, dict) or len(value) != 1:
        problems.add(path, "expected a group, or one of {and: [...]}, {or: [...]}, {not: ...}, got "
                     f"{_kind(value)} {_show(value)}", line)
        return None
    if depth > MAX_DEPTH:
        problems.add(path, f"group queries nested deeper than {MAX_DEPTH}", line)
        return None
    ((word, inner),) = value.items()
    where, inner_line = f"{path}.{word}", line_of(value, word) or line
    if word not in QUERY_WORDS:
        meant = difflib.get_close_matches(str(word), QUERY_WORDS, n=1)
        problems.add(where, "unknown key" + (f" (did you mean {meant[0]}?)" if meant else
                                             " (a query is and, or or not)"), inner_line)
        return None
    if word == "not":
        part = _query(problems, where, inner, inner_line, depth + 1)
        return None if part is None else Not(part)
    if not isinstance(inner, list) or not inner:
        problems.add(where, f"expected a non-empty list of groups or queries, got {_kind(inner)} {_show(inner)}",
                     inner_line)
        return None
    parts = [_query(problems, f"{where}[{i}]", item, line_of(inner, i) or inner_line, depth + 1)
             for i, item in enumerate(inner)]
    if any(part is None for part in parts):
        return None
    kind = AllOf if word == "and" else AnyOf
    return kind(tuple(part for part in parts if part is not None))


def _read_group_rules(r: _Reader) -> GroupRules:
    """require_group, deny_group, user_flags_by_group (group names) and groups_from_directory, on a source
    that is not a directory."""
    source = r.get("groups_from_directory", (bool, str), False)
    if isinstance(source, str) and not source:
        r.problem("groups_from_directory", "expected true or a directory's name")
    return GroupRules(require_group=_group_rule(r, "require_group"), deny_group=_group_rule(r, "deny_group"),
                      user_flags_by_group=_flag_rules(r),
                      groups_from_directory=("" if source is True else source or None))


def _group_type(r: _Reader) -> GroupTypeName | None:
    name = r.text("group_type") or None
    if name is not None and name not in GROUP_TYPES:
        r.problem("group_type", f"must be one of {', '.join(GROUP_TYPES)}, got {name!r}")
        return None
    return name


def _username_attr(searches: tuple[Search, ...], template: str | None) -> str | None:
    if template:
        return template.split("=", 1)[0].strip() or None
    attrs = {attr for search in searches for attr in FILTER_USER_ATTR.findall(search.filter)}
    return attrs.pop() if len(attrs) == 1 else None


def _read_cache(r: _Reader) -> CacheConfig:
    default = CacheConfig()
    cache = CacheConfig(
        failure_timeout=r.number("failure_timeout", default.failure_timeout),
        max_entries=r.integer("max_entries", default.max_entries, minimum=1),
    )
    r.done()
    return cache


POLICIES: tuple[Policy, ...] = get_args(Policy)


def _read_access(r: _Reader) -> AccessConfig:
    default, rule = AccessConfig(), AccessRule()
    rules = []
    for item in r.items("rules"):
        rules.append(AccessRule(
            path=_rule_path(item, rule.path),
            host=_rule_host(item),
            methods=frozenset(m.upper() for m in item.texts("methods")),
            users=frozenset(fold(u) for u in item.texts("users")),
            **_rule_groups(item),
            allow=item.choice("policy", "allow" if rule.allow else "deny", POLICIES) == "allow",
            **_factor_demand(item, None),
        ))
        item.done()
    access = AccessConfig(rules=tuple(rules), default=r.choice("default", default.default, POLICIES),
                          **_factor_demand(r, default.second_factor))
    r.done()
    return access


def _factor_demand(r: _Reader, default: FactorMode | None) -> dict[str, Any]:
    """``second_factor`` and ``second_factor_max_age`` of a rule, or of access itself (the default)."""
    mode: FactorMode | None = None
    if r.has("second_factor"):
        mode = r.choice("second_factor", "never", FACTOR_MODES)
    max_age = r.number("second_factor_max_age", 0, minimum=1) if r.has("second_factor_max_age") else None
    if max_age is not None and (mode or default) == "never":
        r.follow_on("second_factor_max_age", "asks for a recent second factor, but second_factor is never "
                    "here: say required or optional", "second_factor")
    return {"second_factor": mode or default, "second_factor_max_age": max_age or None}


FACTOR_MODES: tuple[FactorMode, ...] = get_args(FactorMode)


def _rule_groups(r: _Reader) -> dict[str, Any]:
    """An access rule's groups: names (folded, compared as a set) and group queries (and / or / not)."""
    found = [mapped(query, fold) for query in _group_rule(r, "groups")]
    return {"groups": frozenset(q for q in found if isinstance(q, str)),
            "queries": tuple(q for q in found if not isinstance(q, str))}


def _rule_path(r: _Reader, default: str) -> str:
    """A rule's path as requests are compared: decoded, with repeated and trailing slashes collapsed."""
    path = r.text("path", default)
    if not path.startswith("/") or "%" in path or "\\" in path or {".", ".."} & set(path.split("/")):
        r.problem("path", f"must start with / and be written decoded, without dot segments or backslashes, "
                  f"as requests are compared; got {path!r}")
    return segments(path)


def _rule_host(r: _Reader) -> str | None:
    """A rule's host as requests are compared: lower case, no trailing dot; a rule has no port."""
    host = r.optional_text("host")
    if host is None:
        return None
    try:
        name, port = parse_host(host)
    except MalformedRequest:
        r.problem("host", f"expected a host name or [IPv6 address], got {host!r}")
        return host
    if port is not None:
        r.problem("host", f"a rule names a host without a port (requests are compared without), got {host!r}")
    return name




# An auth-scheme (RFC 9110 token) and the start of a token68 value.
AUTH_SCHEME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}", re.ASCII)
TOKEN_PREFIX = re.compile(r"[A-Za-z0-9._~+/-]{1,64}", re.ASCII)


def _read_app_tokens(r: _Reader) -> AppTokensConfig:
    rules = []
    for item in r.items("rules"):
        scheme = item.text("scheme")
        if not AUTH_SCHEME.fullmatch(scheme):
            item.problem("scheme", f"expected an HTTP auth scheme such as Token or Bearer, got {scheme!r}")
        elif scheme.lower() == "basic":
            item.problem("scheme", "Basic carries directory passwords: the sidecar checks those itself")
        prefix = item.text("prefix")
        if prefix and not TOKEN_PREFIX.fullmatch(prefix):
            item.problem("prefix", f"expected the first characters of a token (letters, digits, ._~+/-), "
                         f"got {prefix!r}")
        hosts = []
        for host in item.texts("hosts"):
            try:
                name, port = parse_host(host)
            except MalformedRequest:
                item.problem("hosts", f"expected host names without a port, got {host!r}")
                continue
            if port is not None:
                item.problem("hosts", f"a host without a port (requests are compared without), got {host!r}")
            hosts.append(name)
        paths = []
        for path in item.texts("paths") or AppTokenRule(scheme="").paths:
            if not path.startswith("/") or "%" in path or "\\" in path or {".", ".."} & set(path.split("/")):
                item.problem("paths", f"each must start with / and be written decoded, without dot segments, "
                             f"as requests are compared; got {path!r}")
            paths.append(segments(path))
        rules.append(AppTokenRule(scheme=scheme, prefix=prefix, hosts=tuple(hosts), paths=tuple(paths)))
        item.done()
    r.done()
    return AppTokensConfig(rules=tuple(rules))


MIN_SECRET = 32  # characters of a session secret: about 190 bits from the generator


def _key_id(item: _Reader) -> str | None:
    key_id = item.text("id")
    if keylist.KID.fullmatch(key_id):
        return key_id
    item.problem("id", f"expected 1-32 letters, digits, - or _, got {key_id!r}")
    return None


def _read_sessions(r: _Reader) -> SessionConfig:
    default = SessionConfig(keys=())
    keys = []
    for item in r.items("keys"):
        key_id = _key_id(item)
        secret = item.secret("secret")
        if secret is None:
            item.follow_on("secret", "is required (auth-sidecar generate-secret makes one)")
        elif len(secret.reveal()) < MIN_SECRET:
            item.problem("secret", f"must be at least {MIN_SECRET} characters (auth-sidecar generate-secret)")
        elif key_id is not None:
            keys.append(SessionKey(key_id, secret))
        item.done()
    if not r.has("keys") or r.data["keys"] == []:
        r.follow_on("keys", "is required: [{id: ..., secret: ...}], the first encrypts, all decrypt")
    if keys:  # each kid and secret is checked above: what is left is the list's own rule, one use per kid
        r.report(_fields(keylist.problems([(k.id, k.secret) for k in keys], lambda _: None, kind="key")))
    domain = r.optional_text("cookie_domain", default.cookie_domain)
    name = r.text("cookie_name", default.cookie_name)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):  # narrower than any cookie name: no prefix tricks
        r.problem("cookie_name", f"expected letters, digits, - or _, got {name!r}")
    lifetime = r.number("lifetime", default.lifetime, minimum=60)
    idle = r.number("idle_timeout", default.idle_timeout, minimum=60)
    if idle > lifetime:
        r.follow_on("idle_timeout", "is longer than lifetime, so it would never apply", "lifetime")
    sessions = SessionConfig(
        keys=tuple(keys),
        cookie_name=name,
        cookie_domain=domain.lstrip(".").lower() if domain else None,
        secure=r.flag("secure", default.secure),
        lifetime=lifetime,
        idle_timeout=idle,
        recheck_every=r.number("recheck_every", default.recheck_every),
        default_redirect=r.text("default_redirect", default.default_redirect),
        logout_redirect=r.optional_text("logout_redirect", default.logout_redirect),
        redirect_hosts=tuple(h.lower() for h in r.texts("redirect_hosts")) or default.redirect_hosts,
        redirect_domains=tuple(d.lstrip(".").lower() for d in r.texts("redirect_domains")) or default.redirect_domains,
        redirect_schemes=tuple(s.lower() for s in r.texts("redirect_schemes")) or default.redirect_schemes,
    )
    r.report(_fields(cookies.problems(sessions.cookie_name, domain=sessions.cookie_domain, secure=sessions.secure)),
             {"name": "cookie_name", "domain": "cookie_domain"})
    # The policy's own rules; the return after signing out is held to the same as the default one.
    r.report(RedirectPolicy.problems(hosts=sessions.redirect_hosts, domains=sessions.redirect_domains,
                                     schemes=sessions.redirect_schemes, default=sessions.default_redirect),
             REDIRECT_KEYS)
    if sessions.logout_redirect is not None:
        r.report(RedirectPolicy.problems(default=sessions.logout_redirect), {"default": "logout_redirect"})
    r.done()
    return sessions


def _fields(found: Iterable[str]) -> list[tuple[str, str]]:
    """Problems written "setting: problem" as (setting, problem)."""
    return [(name, problem) for name, _, problem in (text.partition(": ") for text in found)]


REDIRECT_KEYS = {"default": "default_redirect", "hosts": "redirect_hosts", "domains": "redirect_domains",
                 "schemes": "redirect_schemes"}


def _absolute_http(url: str) -> bool:
    parts = _split(url)
    return parts is not None and parts.scheme in ("http", "https") and bool(parts.netloc)


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # "https://[nope]": urlsplit checks a bracketed host
        return None


def _hostname(parts: SplitResult) -> str | None:
    try:
        return parts.hostname
    except ValueError:
        return None


def _port_ok(parts: SplitResult) -> bool:
    try:
        return parts.port is None or parts.port > 0
    except ValueError:  # not a number, or over 65535
        return False


def _local_path(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//") and "\\" not in url


def _read_login_page(r: _Reader) -> LoginPageConfig:
    default = LoginPageConfig()
    page = LoginPageConfig(title=r.text("title", default.title) or default.title,
                           logo_url=r.optional_text("logo_url", default.logo_url),
                           accent=r.text("accent", default.accent),
                           help_text=r.optional_text("help_text", default.help_text),
                           help_url=r.optional_text("help_url", default.help_url))
    r.report(Theme.problems(title=page.title, logo_url=page.logo_url, accent=page.accent, help_url=page.help_url))
    r.done()
    return page


def _read_local_users(r: _Reader) -> LocalUsersConfig:
    default = LocalUsersConfig(file="")
    path = r.text("file")
    if not path:
        r.follow_on("file", "is required: an htpasswd (bcrypt) or YAML (argon2id) users file")
    elif not Path(path).is_file():
        r.problem("file", f"no such file: {path}")
    else:
        r.report(LocalUsers.problems(Path(path)), {"path": "file"})
    local = LocalUsersConfig(file=path, order=r.choice("order", default.order, get_args(Order)),
                             reload_every=r.number("reload_every", default.reload_every),
                             rules=_read_group_rules(r))
    r.done()
    return local


PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def _read_claims(r: _Reader, default: ClaimMap) -> ClaimMap:
    claims = ClaimMap(
        username=r.text("username", default.username) or default.username,
        first_name=r.text("first_name", default.first_name),
        last_name=r.text("last_name", default.last_name),
        email=r.text("email", default.email),
        groups=r.optional_text("groups") if r.has("groups") else default.groups,
    )
    r.done()
    return claims


def _read_allow(r: _Reader, default: Allow) -> Allow:
    allow = Allow(groups=frozenset(r.texts("groups")) or default.groups,
                  email_domains=frozenset(d.lstrip("@").lower() for d in r.texts("email_domains"))
                  or default.email_domains)
    r.done()
    return allow


def _read_provider(r: _Reader) -> OidcProvider:
    default = OidcProvider(name="", label="", client_id="", client_secret=Secret(""))
    name = r.text("name")
    if not PROVIDER_NAME.match(name):
        r.problem("name", f"expected 1-32 lower-case letters, digits or -, got {name!r}")
    kind = r.choice("type", default.type, get_args(ProviderType))
    issuer, urls = _provider_urls(r, kind, default)
    secret = r.secret("client_secret")
    if secret is None:
        r.follow_on("client_secret", "is required")
    client_id = r.text("client_id")
    if not client_id:
        r.follow_on("client_id", "is required")
    prefix, shares = _read_namespace(r, default.username_prefix, default.shares_usernames)
    scopes = r.texts("scopes") or (default.scopes if kind == "oidc" else ())
    if kind == "oidc" and "openid" not in scopes:
        r.problem("scopes", "an OpenID Connect provider needs the openid scope")
    provider = OidcProvider(
        name=name, label=r.text("label", f"Sign in with {name}") or name, client_id=client_id,
        client_secret=secret or default.client_secret, type=kind, issuer=issuer.rstrip("/") if issuer else None,
        scopes=scopes, claims=_read_claims(r.section("claims"), default.claims),
        allow=_read_allow(r.section("allow"), default.allow),
        use_userinfo=r.flag("use_userinfo", kind == "oauth2"), logout=r.flag("logout", default.logout),
        algorithms=r.texts("algorithms") or default.algorithms, username_prefix=prefix, shares_usernames=shares,
        rules=_read_group_rules(r), **urls,
    )
    r.done()
    return provider


def _provider_urls(r: _Reader, kind: ProviderType, default: OidcProvider) -> tuple[str | None, dict[str, str | None]]:
    """The issuer (whose discovery document OpenID Connect reads) and the URLs oauth2 needs instead."""
    issuer = r.optional_text("issuer", default.issuer)
    urls = {"authorization_url": r.optional_text("authorization_url", default.authorization_url),
            "token_url": r.optional_text("token_url", default.token_url),
            "userinfo_url": r.optional_text("userinfo_url", default.userinfo_url)}
    for key, url in [("issuer", issuer), *urls.items()]:
        if url is not None and not _absolute_http(url):
            r.problem(key, f"expected an absolute http(s) URL, got {url!r}")
    if kind == "oidc" and issuer is None:
        r.follow_on("issuer", "is required for an OpenID Connect provider (its discovery document)", "type")
    if kind == "oauth2":
        for key, url in urls.items():
            if url is None:
                r.follow_on(key, "is required for an oauth2 provider (it has no discovery)", "type")
    return issuer, urls


def _read_bearer(r: _Reader) -> BearerIssuer:
    default = BearerIssuer(issuer="", audiences=())
    issuer = r.text("issuer")
    if not _absolute_http(issuer):
        r.problem("issuer", f"expected an absolute http(s) URL, got {issuer!r}")
    audiences = r.texts("audiences")
    if not audiences:
        r.follow_on("audiences", "is required: the audiences (API identifiers) tokens must be issued for")
    jwks_url = r.optional_text("jwks_url", default.jwks_url)
    if jwks_url is not None and not _absolute_http(jwks_url):
        r.problem("jwks_url", f"expected an absolute http(s) URL, got {jwks_url!r}")
    prefix, shares = _read_namespace(r, default.username_prefix, default.shares_usernames)
    bearer = BearerIssuer(issuer=issuer.rstrip("/"), audiences=audiences, jwks_url=jwks_url,
                          claims=_read_claims(r.section("claims"), default.claims),
                          allow=_read_allow(r.section("allow"), default.allow),
                          algorithms=r.texts("algorithms") or default.algorithms,
                          username_prefix=prefix, shares_usernames=shares, rules=_read_group_rules(r))
    r.done()
    return bearer


USERNAME_PREFIX = re.compile(r"[A-Za-z0-9._:@+-]{1,32}")


def _read_namespace(r: _Reader, default_prefix: str, default_shares: bool) -> tuple[str, bool]:
    prefix = r.text("username_prefix", default_prefix)
    shares = r.flag("shares_usernames", default_shares)
    if prefix and not USERNAME_PREFIX.fullmatch(prefix):
        r.problem("username_prefix", f"expected 1-32 of letters, digits and . _ : @ + -, got {prefix!r}")
    if prefix and shares:
        r.problem("shares_usernames", "is true, but username_prefix sets the names apart: choose one")
    return prefix, shares


def _read_oidc(r: _Reader) -> OidcConfig:
    default = OidcConfig()
    providers = [_read_provider(item) for item in r.items("providers")]
    names = [p.name for p in providers]
    for name in sorted({n for n in names if names.count(n) > 1}):
        r.problem("providers", f"provider name {name!r} is used twice")
    callback = r.text("callback_path", default.callback_path)
    if not _local_path(callback):
        r.problem("callback_path", f"expected a path starting with /, got {callback!r}")
    oidc = OidcConfig(providers=tuple(providers) or default.providers,
                      bearer=tuple(_read_bearer(item) for item in r.items("bearer")) or default.bearer,
                      callback_path=callback, leeway=r.number("leeway", default.leeway))
    if oidc.leeway > 60:
        r.problem("leeway", "more than 60 seconds of clock skew would accept expired tokens")
    r.done()
    return oidc


def _read_assertion(r: _Reader) -> AssertionConfig:
    default = AssertionConfig(keys=(), audience="")
    keys = []
    for item in r.items("keys"):
        key_id = _key_id(item)
        pem = item.secret("private_key")
        if pem is None:
            item.follow_on("private_key", "expected a PEM private key (auth-sidecar generate-signing-key)")
        elif (problem := keylist.pem_problem(pem.reveal())) is not None:  # the signer's own rule
            item.problem("private_key", f"{problem} (auth-sidecar generate-signing-key)")
        elif key_id is not None:
            keys.append(SigningKey(key_id, pem))
        item.done()
    if not r.has("keys") or r.data["keys"] == []:
        r.follow_on("keys", "is required: [{id: ..., private_key: {file: ...}}], the first signs, all are published")
    if keys:
        r.report(_fields(keylist.problems([(k.id, k.private_key) for k in keys], lambda _: None, kind="key")))
    audience = r.text("audience")
    if not audience:
        r.follow_on("audience", "is required: the name the application checks (e.g. netbox)")
    assertion = AssertionConfig(keys=tuple(keys), audience=audience, issuer=r.optional_text("issuer", default.issuer),
                                lifetime=r.number("lifetime", default.lifetime, minimum=10))
    r.done()
    return assertion


def _read_second_factor(r: _Reader) -> SecondFactorConfig:
    """The section alone; what it derives from server.public_url is filled in by _check_factors."""
    key = r.secret("key")
    if key is None:
        r.follow_on("key", "is required: it encrypts the TOTP secrets at rest (auth-sidecar generate-secret)")
    elif len(key.reveal()) < MIN_SECRET:
        r.problem("key", f"must be at least {MIN_SECRET} characters (auth-sidecar generate-secret)")
    default = SecondFactorConfig(key=key or Secret(""))
    store = r.text("store", default.store or "")
    if not store.startswith("/"):
        r.problem("store", f"expected an absolute path to an SQLite file, got {store!r}")
    origins = r.texts("origins")
    for origin in origins:
        parts = urlsplit(origin)
        if not _absolute_http(origin) or parts.path or parts.query or parts.fragment:
            r.problem("origins", f"expected an origin such as https://app.example.com, got {origin!r}")
    rp_id = r.text("rp_id").lower()
    if rp_id and (not re.fullmatch(r"[a-z0-9.-]+", rp_id) or rp_id.startswith(".")):
        r.problem("rp_id", f"expected a host name (WebAuthn's relying party id), got {rp_id!r}")
    found = SecondFactorConfig(
        key=default.key, store=store, issuer=r.text("issuer"), rp_id=rp_id, rp_name=r.text("rp_name"),
        origins=tuple(o.rstrip("/") for o in origins), trust_amr=r.texts("trust_amr"), trust_acr=r.texts("trust_acr"),
        recovery_codes=r.integer("recovery_codes", default.recovery_codes, minimum=1))
    if any(c in found.issuer for c in ":\r\n"):
        r.problem("issuer", "a colon or a line break would break the TOTP URI")
    r.done()
    return found


def _check_factors(parts: dict[str, Any], sections: dict[str, _Reader]) -> None:
    """What a second factor needs of the other sections; fills in the names it derives from them.
    With state.backend redis the enrolments live in Redis: ``store`` (the SQLite file) is not needed,
    and one named is refused rather than silently unread; with memory it is the file (its default)."""
    access: AccessConfig = parts["access"]
    factors: SecondFactorConfig | None = parts["second_factor"]
    _check_max_ages(access, sections["access"])
    if factors is None:
        if access.asks_factors():
            sections["access"].follow_on("second_factor", "asks for a second factor, but there is no "
                                         "second_factor section (its key and store)", paths=("second_factor",))
        return
    r = sections["second_factor"]
    if parts["state"].backend == "redis":
        # Every replica must see the same enrolments and used codes: a file of one would hold its own.
        if r.has("store"):
            r.problem("store", "is not read with state.backend redis: enrolments and used codes are kept in "
                      "Redis (leave store out; nothing in an SQLite file is moved there)")
        factors = parts["second_factor"] = dataclasses.replace(factors, store=None)
    if parts["sessions"] is None:
        r.follow_on("", "needs the sessions section: the second factor is given on the sign-in pages",
                    paths=("sessions",))
    _check_trust(factors, {p.name for p in parts["oidc"].providers}, r)
    public_url: str | None = parts["server"].public_url
    if public_url is None:
        return
    public = urlsplit(public_url)
    host = (public.hostname or "").lower()
    rp_id = factors.rp_id or host
    if not (host == rp_id or host.endswith("." + rp_id)):
        r.problem("rp_id", f"{rp_id!r} is not server.public_url's host {host!r} or a domain above it: "
                  "browsers would refuse every passkey")
    title = parts["login_page"].title
    parts["second_factor"] = dataclasses.replace(
        factors, rp_id=rp_id, issuer=factors.issuer or title.replace(":", " "),
        rp_name=factors.rp_name or factors.issuer or title,
        origins=factors.origins or (f"{public.scheme}://{public.netloc}",))


def _check_max_ages(access: AccessConfig, r: _Reader) -> None:
    for i, rule in enumerate(access.rules):
        if rule.second_factor_max_age is not None and rule.second_factor is None and access.second_factor == "never":
            r.problem(f"rules[{i}].second_factor_max_age", "asks for a recent second factor, but "
                      "access.second_factor is never and the rule says no second_factor: say required or optional")


def _check_trust(factors: SecondFactorConfig, providers: set[str], r: _Reader) -> None:
    """trust_amr names providers; trust_acr is about theirs."""
    if factors.trust_acr and not factors.trust_amr:
        r.follow_on("trust_acr", "applies to the providers of trust_amr, and it names none", "trust_amr")
    for name in factors.trust_amr:
        if name not in providers:
            r.problem("trust_amr", f"names no provider: {name!r} (oidc.providers[].name)")


def _read_regulation(r: _Reader) -> RegulationConfig:
    default = RegulationConfig()
    regulation = RegulationConfig(
        enabled=r.flag("enabled", default.enabled),
        max_failures=r.integer("max_failures", default.max_failures, minimum=1),
        window=r.number("window", default.window, minimum=1),
        ban=r.number("ban", default.ban, minimum=1),
    )
    r.done()
    return regulation


def _read_state(r: _Reader) -> StateConfig:
    default = StateConfig()
    backend = r.choice("backend", default.backend, get_args(Backend))
    url = r.text("url", default.url)
    parts = _split(url)
    if (parts is None or parts.scheme not in ("redis", "rediss") or not _port_ok(parts)
            or (not parts.hostname and not r.has("sentinel"))):
        r.problem("url", f"expected redis://HOST:PORT or rediss://HOST:PORT, got {_show(url)}")
    elif parts.password or parts.username:
        # A password in the URL would reach logs and argv: it has its own key, a secret.
        r.problem("url", "holds credentials: give them as state.username and state.password")
    ca_file = r.optional_text("ca_file")
    if ca_file and not Path(ca_file).is_file():
        r.problem("ca_file", f"no such file: {ca_file}")
    elif ca_file and parts is not None and parts.scheme != "rediss":
        r.follow_on("ca_file", "is used only over TLS: write the url as rediss://", "url")
    prefix = r.text("key_prefix", default.key_prefix)
    if not prefix or any(c.isspace() for c in prefix):
        r.problem("key_prefix", f"must be non-empty, without spaces, got {prefix!r}")
    state = StateConfig(
        backend=backend, url=url, username=r.optional_text("username"), password=r.secret("password"),
        ca_file=ca_file, database=r.integer("database", default.database),
        key_prefix=prefix or default.key_prefix,
        connect_timeout=r.number("connect_timeout", default.connect_timeout, minimum=0.01),
        timeout=r.number("timeout", default.timeout, minimum=0.01),
        poll_every=r.number("poll_every", default.poll_every, minimum=0.1),
        sentinel=_read_sentinel(r.section("sentinel")) if r.has("sentinel") else None)
    r.done()
    return state


def _read_sentinel(r: _Reader) -> SentinelConfig | None:
    master = r.text("master")
    if not master:
        r.problem("master", "is required: the name the sentinels know the master by")
    addresses: list[tuple[str, int]] = []
    for item in r.texts("addresses"):
        match = re.fullmatch(r"\[?([^\]]*?)\]?:(\d{1,5})", item)
        if match is None or not match.group(1) or not 0 < int(match.group(2)) < 65536:
            r.problem("addresses", f"expected HOST:PORT, got {item!r}")
            continue
        addresses.append((match.group(1), int(match.group(2))))
    if not r.has("addresses"):
        r.problem("addresses", "is required: where the sentinels listen (HOST:PORT, one or more)")
    sentinel = SentinelConfig(master=master, addresses=tuple(addresses), password=r.secret("password"))
    r.done()
    return sentinel if master and addresses else None


def _read_log(r: _Reader) -> LogConfig:
    default = LogConfig()
    log = LogConfig(level=r.choice("level", default.level, get_args(LogLevel)),
                    format=r.choice("format", default.format, get_args(LogFormat)))
    r.done()
    return log


def _read_metrics(r: _Reader) -> MetricsConfig:
    default = MetricsConfig()
    host, port = _listen(r, default.host, default.port)
    r.done()
    return MetricsConfig(host=host, port=port)


def _read_admin(r: _Reader) -> AdminConfig:
    default = AdminConfig()
    socket = r.optional_text("socket", default.socket) if r.flag("enabled", True) else None
    if socket is not None and not socket.startswith("/"):
        r.problem("socket", f"expected an absolute path, got {socket!r}")
    r.done()
    return AdminConfig(socket=socket)


SECTIONS: dict[str, Callable[[_Reader], Any]] = {
    "server": _read_server, "headers": _read_headers, "cache": _read_cache, "access": _read_access,
    "log": _read_log, "login_page": _read_login_page, "regulation": _read_regulation, "oidc": _read_oidc,
    "admin": _read_admin, "app_tokens": _read_app_tokens, "state": _read_state,
}
# ldap: one directory (a mapping) or several (a list): read by _read_directories.
OPTIONAL_SECTIONS: dict[str, Callable[[_Reader], Any]] = {
    "ldap": _read_ldap, "sessions": _read_sessions, "local_users": _read_local_users, "assertion": _read_assertion,
    "metrics": _read_metrics, "second_factor": _read_second_factor,
}


def parse_config(data: object) -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem.

    ``data`` is plain data (dicts, lists, scalars), or what :func:`load_yaml` made of a file, whose
    problems then carry their line numbers.
    """
    problems = _Problems()
    top = _Reader(data, "", problems)
    sections = {name: top.section(name) for name in [*SECTIONS, *OPTIONAL_SECTIONS] if name != "ldap"}
    parts = {name: read(sections[name]) for name, read in SECTIONS.items()}
    for name, read in OPTIONAL_SECTIONS.items():
        if name != "ldap":
            parts[name] = read(sections[name]) if top.has(name) else None
    directories, readers = _read_directories(top)
    sections["ldap"] = readers[0] if readers else _Reader(None, "ldap", problems)
    parts["ldap"], parts["directories"] = (directories[0] if directories else None), directories
    top.done()
    _check_together(parts, sections)
    _check_factors(parts, sections)
    _check_directories(directories, readers, parts, sections)
    if found := problems.messages():
        raise ConfigError(found)
    return Config(**parts)


def _check_together(parts: dict[str, Any], sections: dict[str, _Reader]) -> None:
    """What the sections say together: where users come from, what sessions need."""
    _check_sources(parts, sections)
    sessions: SessionConfig | None = parts["sessions"]
    server: ServerConfig = parts["server"]
    access: AccessConfig = parts["access"]
    # Group names reach access rules from the users file, a provider's claims, or a directory's find_group_perms.
    named_groups = parts["local_users"] is not None or parts["oidc"].providers or parts["oidc"].bearer
    if any(rule.groups or rule.queries for rule in access.rules) and not (
            named_groups or any(d.find_group_perms for d in parts["directories"])):
        sections["access"].follow_on("rules", "rules name groups but ldap.find_group_perms is false, "
                                     "so no group would ever match", paths=("ldap.find_group_perms",))
    if sessions is not None and server.public_url is None:
        sections["server"].follow_on("public_url", "is required with sessions (where browsers reach /login)")
    if sessions is not None and server.public_url is not None:
        _check_site(sections["server"], server.public_url, sessions)
    if parts["oidc"].bearer and any(rule.scheme.lower() == "bearer" and not rule.prefix
                                    for rule in parts["app_tokens"].rules):
        sections["app_tokens"].follow_on("rules", "a Bearer rule without a prefix passes every Bearer token "
                                         "on to the application, so oidc.bearer would never see one: "
                                         "give the application's tokens' prefix (NetBox: nbt_)",
                                         paths=("oidc.bearer",))
    if access.default == "deny" and not access.rules:
        sections["access"].follow_on("default", "is deny and there are no rules: every request would be refused "
                                     "(name who may pass in access.rules)", "rules")
    if server.workers > 1 and parts["state"].backend == "memory":
        sections["server"].follow_on("workers", f"is {server.workers} but state.backend is memory: each process "
                                     "would keep its own bans and sign-outs; use state.backend: redis",
                                     paths=("state.backend",))
    if not server.basic_auth and sessions is None and not parts["oidc"].bearer:
        sections["server"].follow_on("basic_auth", "is off and there are no sessions: nobody could sign in",
                                     paths=("sessions", "oidc.bearer"))
    if (sessions and sessions.recheck_every
            and any(d.user_dn_template and not d.bind_dn for d in parts["directories"])):
        sections["sessions"].follow_on("recheck_every", "re-checking a session needs ldap.bind_dn (without a "
                                       "password the directory can only be read by a service account)",
                                       paths=("ldap.bind_dn",))


def _check_sources(parts: dict[str, Any], sections: dict[str, _Reader]) -> None:
    """Users come from somewhere, and no two sources can produce one Remote-User unless told so."""
    oidc: OidcConfig = parts["oidc"]
    if parts["ldap"] is None and parts["local_users"] is None and not oidc.providers and not oidc.bearer:
        sections["ldap"].follow_on("", "is required unless local_users or oidc is set (where do users come from?)",
                                   paths=("local_users", "oidc"))
    if oidc.providers and parts["sessions"] is None:
        sections["oidc"].follow_on("providers", "single sign-on ends in a session: the sessions section is required",
                                   paths=("sessions",))
    namespaced: list[tuple[str, str, OidcProvider | BearerIssuer]] = [
        *(("providers", p.name, p) for p in oidc.providers), *(("bearer", b.issuer, b) for b in oidc.bearer)]
    password_sources = len(parts["directories"]) + (parts["local_users"] is not None)
    if password_sources + len(namespaced) > 1:
        for key, name, source in namespaced:
            if not source.username_prefix and not source.shares_usernames:
                sections["oidc"].problem(
                    key, f"{name!r} shares one Remote-User namespace with other sources: set "
                    "username_prefix (e.g. 'github:'), or shares_usernames: true if its names are "
                    "the directory's own (a provider federated with the same directory)")


def _check_directories(directories: tuple[LdapConfig, ...], readers: list[_Reader], parts: dict[str, Any],
                       sections: dict[str, _Reader]) -> None:
    """Each directory's groups against its group search, and what other sources ask of the directories."""
    for ldap, r in zip(directories, readers, strict=True):
        if ldap.group_search:
            _check_group_dns(r, ldap)
    names = {d.name for d in directories}
    asking = [("local_users", parts["local_users"].rules if parts["local_users"] else None, "")]
    asking += [(f"oidc.providers[{i}]", p.rules, p.username_prefix) for i, p in enumerate(parts["oidc"].providers)]
    asking += [(f"oidc.bearer[{i}]", b.rules, b.username_prefix) for i, b in enumerate(parts["oidc"].bearer)]
    for path, rules, prefix in asking:
        wanted = rules.groups_from_directory if rules is not None else None
        if wanted is None:
            continue
        reader = sections["local_users"] if path == "local_users" else sections["oidc"]
        key = "groups_from_directory" if path == "local_users" else \
            f"{path.removeprefix('oidc.')}.groups_from_directory"
        if prefix:
            # The directory's user of that name is somebody else: the prefix says these names are not its.
            reader.problem(key, f"reads the groups of the directory's user of the same name, but username_prefix "
                           f"{prefix!r} says this source's names are not the directory's: use "
                           "shares_usernames: true instead (the provider is federated with the directory)")
        if not directories:
            reader.follow_on(key, "needs an ldap section to read the groups from", paths=("ldap",))
        elif wanted and wanted not in names:
            reader.follow_on(key, f"names no directory: {wanted!r} (ldap[].name: {', '.join(sorted(names - {''}))})")


def _check_group_dns(r: _Reader, ldap: LdapConfig) -> None:
    """Every group type leaves out the groups outside group_search's bases: a group named outside them
    could never match, and a deny_group that never matches lets everyone in."""
    bases = [normalize_dn(search.base_dn) for search in ldap.group_search]
    shown = " or ".join(repr(search.base_dn) for search in ldap.group_search)
    named = [("require_group", dn) for query in ldap.require_group for dn in leaves(query)]
    named += [("deny_group", dn) for query in ldap.deny_group for dn in leaves(query)]
    named += [("user_flags_by_group", dn) for queries in ldap.user_flags_by_group.values()
              for query in queries for dn in leaves(query)]
    for key, dn in named:
        if not any(within(normalize_dn(dn), base) for base in bases):
            r.follow_on(key, f"{dn!r} is outside group_search.base_dn {shown}: groups there are never read, "
                        "so it could never match", paths=(r.where("group_search"),))


def _check_cookie_reach(r: _Reader, public: SplitResult, sessions: SessionConfig) -> None:
    """The session cookie is set on public_url's host; /auth sees it only on hosts it is sent to.
    A host a sign-in returns to that the cookie does not reach is a sign-in loop, for sure."""
    domain = sessions.cookie_domain
    if domain is not None and not _reaches(domain, public.hostname or ""):
        r.follow_on("public_url", f"is on {public.hostname!r}, which sessions.cookie_domain {domain!r} does not "
                    "cover: the browser would refuse the session cookie", paths=("sessions.cookie_domain",))
        return
    returns = list(sessions.redirect_hosts) + [f"*.{d}" for d in sessions.redirect_domains]
    default_host = urlsplit(sessions.default_redirect).hostname
    if default_host:
        returns.append(default_host)
    for host in returns:
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        reached = (_reaches(domain, name.removeprefix("*.")) if domain is not None
                   else name == (public.hostname or ""))
        if not reached:
            r.follow_on("public_url", f"a sign-in may return to {host!r}, but the session cookie is only sent to "
                        + (f"{domain!r} and its subdomains" if domain else f"{public.hostname!r} (set "
                           "sessions.cookie_domain to a domain both share)")
                        + ": that sign-in would loop back to the login page",
                        paths=("sessions.cookie_domain", "sessions.redirect_hosts", "sessions.redirect_domains",
                               "sessions.default_redirect"))


def _reaches(domain: str, host: str) -> bool:
    return host == domain or host.endswith("." + domain)


def _check_site(r: _Reader, public_url: str, sessions: SessionConfig) -> None:
    """public_url as the sign-in pages use it: their static files' path, and the host a sign-in may
    return to when no redirect_hosts are configured."""
    parts = urlsplit(public_url)
    _check_cookie_reach(r, parts, sessions)
    if parts.scheme == "http" and sessions.secure and not _loopback(parts.hostname or ""):
        r.follow_on("public_url", "is plain http, but sessions.secure is true: browsers never send a Secure "
                    "cookie over http, so every sign-in would fail (\"Your sign-in form expired\"). Serve the "
                    "site over https, or set sessions.secure: false for a trial", paths=("sessions.secure",))
    r.report(Pages.problems(static_prefix=parts.path.rstrip("/") + "/static"), {"static_prefix": "public_url"})
    if not sessions.redirect_hosts:
        r.report(RedirectPolicy.problems(hosts=[parts.netloc.lower()]), {"hosts": "public_url"})


def _loopback(host: str) -> bool:
    """Browsers treat these as secure origins: a Secure cookie is sent to them over http too."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML configuration file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror}"]) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError([f"{path}: not valid YAML ({where}): {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(data)

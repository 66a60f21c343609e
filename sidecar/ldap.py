"""Directory client: finds a user, checks the password by binding as them, resolves groups.

ldap3 is synchronous. Everything below :meth:`Directory._run` runs in a worker thread of the
directory's own pool, with connect and operation timeouts; the event loop only awaits.
Each worker thread keeps one service-account connection per server; the user's own bind
uses a fresh connection that is closed right after.

Servers are tried in the configured order. One that fails to connect or answer is remembered
as down for ``retry_dead_after`` seconds, so requests do not each pay its timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import ldap3
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from sidecar.config import LdapConfig, Search
from sidecar.errors import AuthError, DirectoryUnavailable, InvalidCredentials, UnknownUser

log = logging.getLogger("sidecar.ldap")
T = TypeVar("T")

SCOPES: dict[str, Literal["BASE", "LEVEL", "SUBTREE"]] = {
    "base": ldap3.BASE, "one": ldap3.LEVEL, "subtree": ldap3.SUBTREE,
}
AD_MATCHING_RULE_IN_CHAIN = "1.2.840.113556.1.4.1941"
# Active Directory explains a refused bind with a sub-code in the message ("... data 775, v4563").
AD_SUB_CODE = re.compile(r"\bdata ([0-9a-f]{3,4})\b", re.IGNORECASE)
AD_REASONS = {
    "525": "user not found",
    "52e": "wrong password",
    "530": "not permitted to log on at this time",
    "531": "not permitted to log on at this workstation",
    "532": "password expired",
    "533": "account disabled",
    "701": "account expired",
    "773": "user must change password",
    "775": "account locked out",
}
# Failures of the server or the network, as opposed to answers from the server.
TRANSPORT_ERRORS = (
    lx.LDAPSocketOpenError,
    lx.LDAPSocketReceiveError,
    lx.LDAPSocketSendError,
    lx.LDAPSessionTerminatedByServerError,
    lx.LDAPResponseTimeoutError,
    lx.LDAPStartTLSError,
    lx.LDAPCommunicationError,
    OSError,
)
MEMBER_ATTR = {
    "group_of_names": "member",
    "nested_group_of_names": "member",
    "group_of_unique_names": "uniqueMember",
}
OR_BATCH = 50  # values per (|(...)(...)) filter when walking nested groups


@dataclass(frozen=True, slots=True)
class Group:
    dn: str
    name: str


@dataclass(frozen=True, slots=True)
class DirectoryUser:
    """A user as the directory describes them, before any policy is applied."""

    dn: str
    username: str
    attributes: Mapping[str, str]
    groups: tuple[Group, ...]


class ServerList:
    """The configured servers in order, remembering for a while which ones are down."""

    def __init__(
        self, uris: Iterable[str], retry_after: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.uris = tuple(uris)
        self._retry_after = retry_after
        self._clock = clock
        self._down_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def candidates(self) -> list[str]:
        """Servers to try, in order: those not known to be down, else all of them."""
        now = self._clock()
        with self._lock:
            up = [u for u in self.uris if self._down_until.get(u, 0.0) <= now]
        return up or list(self.uris)

    def mark_down(self, uri: str) -> None:
        with self._lock:
            self._down_until[uri] = self._clock() + self._retry_after

    def mark_up(self, uri: str) -> None:
        if uri in self._down_until:
            with self._lock:
                self._down_until.pop(uri, None)


def normalize_dn(dn: str) -> str:
    """A DN in a form that compares equal however its case and spacing were written."""
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except lx.LDAPInvalidDnError:
        return dn.strip().lower()
    rdns: list[str] = []
    for attr, value, separator in parts:
        rdns.append(f"{attr.lower()}={value.lower()}")
        if separator == "+":
            rdns.append("+")
    return ",".join(rdns).replace(",+,", "+")


def first(attributes: Mapping[str, Any], name: str) -> str:
    value = attributes.get(name)
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def every(attributes: Mapping[str, Any], name: str) -> list[str]:
    value = attributes.get(name)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def refusal_reason(result: Mapping[str, Any]) -> str:
    """Why the directory refused a bind, with Active Directory's sub-code spelled out."""
    message = str(result.get("message") or "")
    code = AD_SUB_CODE.search(message)
    if code:
        sub = code.group(1).lower()
        return f"{AD_REASONS.get(sub, 'refused')} (AD sub-code {sub})"
    return str(result.get("description") or "refused")


class Directory:
    """Checks passwords against LDAP / Active Directory and reads the user's groups."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config
        self.servers = ServerList(config.server_uri, config.retry_dead_after)
        self._executor = ThreadPoolExecutor(config.threads, thread_name_prefix="ldap")
        self._local = threading.local()
        self._open: set[ldap3.Connection] = set()  # every thread's kept connections, for close()
        self._kept_lock = threading.Lock()
        self._tls = self._make_tls(config)
        self._user_attrs = self._attributes_to_read(config)
        if config.ignore_cert_errors:
            log.warning(
                "ldap.ignore_cert_errors is on: directory certificates are NOT verified, so "
                "anyone between us and the directory can read every password. Use ldap.ca_file."
            )

    # -- the event loop side -------------------------------------------------------------------

    async def check_password(self, username: str, password: str) -> DirectoryUser:
        """The user, if the directory accepts this password; else InvalidCredentials."""
        return await self._run(self._check_password, username, password)

    async def lookup(self, username: str) -> DirectoryUser:
        """The user as the directory describes them now, without a password (session re-checks)."""
        return await self._run(self._lookup, username)

    async def ping(self) -> bool:
        """Whether any server accepts a connection and our bind right now."""
        return await self._run(self._ping)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        # The one place where the event loop hands work to ldap3's blocking calls.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._kept_lock:
            kept, self._open = self._open, set()
        for conn in kept:
            _unbind_quietly(conn)

    # -- worker threads -------------------------------------------------------------------------

    def _check_password(self, username: str, password: str) -> DirectoryUser:
        if not password:
            # An LDAP bind with a DN and no password is an "unauthenticated bind": it succeeds.
            raise InvalidCredentials("empty password")
        return self._on_some_server(lambda uri: self._check_on(uri, username, password))

    def _lookup(self, username: str) -> DirectoryUser:
        return self._on_some_server(lambda uri: self._lookup_on(uri, username))

    def _ping(self) -> bool:
        try:
            self._on_some_server(self._service_or_anonymous)
        except AuthError:
            return False
        return True

    def _on_some_server(self, operation: Callable[[str], T]) -> T:
        failures = []
        for uri in self.servers.candidates():
            for fresh in (False, True):
                self._local.reused = False
                try:
                    result = operation(uri)
                except TRANSPORT_ERRORS as exc:
                    self._drop_service(uri)
                    if not fresh and self._local.reused:
                        continue  # a kept connection the server closed while idle: once anew
                    failures.append(f"{uri}: {_describe(exc)}")
                    log.warning("directory server %s failed: %s", uri, _describe(exc))
                    self.servers.mark_down(uri)
                    break
                self.servers.mark_up(uri)
                return result
        raise DirectoryUnavailable("no directory server answered (" + "; ".join(failures) + ")")

    def _check_on(self, uri: str, username: str, password: str) -> DirectoryUser:
        config = self.config
        service = self._service(uri)
        if config.user_dn_template is not None:
            dn = config.user_dn_template % {"user": escape_rdn(username)}
            entry: Mapping[str, Any] = {}
            user_conn = self._bind(uri, dn, password)
            reader = service or user_conn
        else:
            assert config.user_search is not None
            reader = service or self._anonymous(uri)
            dn, entry = self._find_user(reader, config.user_search, username)
            user_conn = self._bind(uri, dn, password)
        return self._describe(reader, username, dn, entry)

    def _lookup_on(self, uri: str, username: str) -> DirectoryUser:
        config = self.config
        reader = self._service(uri) or self._anonymous(uri)
        if config.user_dn_template is not None:
            dn = config.user_dn_template % {"user": escape_rdn(username)}
            entry = self._read_entry(reader, dn)
            if not entry:
                raise UnknownUser(f"no such user {username!r}")
        else:
            assert config.user_search is not None
            dn, entry = self._find_user(reader, config.user_search, username)
        return self._describe(reader, username, dn, entry)

    def _describe(self, reader: ldap3.Connection, username: str, dn: str,
                  entry: Mapping[str, Any]) -> DirectoryUser:
        config = self.config
        entry = entry or self._read_entry(reader, dn)
        groups = self._groups(reader, dn, entry)
        canonical = first(entry, config.username_attr) or username
        attributes = {key: first(entry, attr) for key, attr in config.user_attr_map.items()}
        log.debug("user %r is %s with %d groups: %s", username, dn, len(groups),
                  ", ".join(g.name for g in groups) or "-")
        return DirectoryUser(dn=dn, username=canonical, attributes=attributes, groups=groups)

    def _find_user(self, conn: ldap3.Connection, search: Search, username: str) -> tuple[str, dict[str, Any]]:
        query = search.filter % {"user": escape_filter_chars(username)}
        entries = self._search(conn, search.base_dn, search.scope, query, self._user_attrs, limit=2)
        if not entries:
            raise UnknownUser(f"no such user {username!r}")
        if len(entries) > 1:
            raise InvalidCredentials(f"user search is ambiguous: more than one entry for {query}")
        dn, attributes = entries[0]
        return dn, attributes

    def _read_entry(self, conn: ldap3.Connection, dn: str) -> dict[str, Any]:
        entries = self._search(conn, dn, "base", "(objectClass=*)", self._user_attrs, limit=1)
        return entries[0][1] if entries else {}

    def _search(
        self,
        conn: ldap3.Connection,
        base: str,
        scope: str,
        query: str,
        attributes: list[str],
        *,
        limit: int = 0,
    ) -> list[tuple[str, dict[str, Any]]]:
        log.debug("search base=%r scope=%s filter=%r", base, scope, query)
        conn.search(base, query, SCOPES[scope], attributes=attributes, size_limit=limit)
        result = conn.result or {}
        # 4 sizeLimitExceeded still returns entries; 32 noSuchObject is simply nothing found.
        if result.get("result") not in (0, 4, 10, 32):
            raise DirectoryUnavailable(
                f"search under {base!r} failed: {result.get('description')} {result.get('message')}"
            )
        entries = [
            (e["dn"], dict(e.get("attributes") or {}))
            for e in conn.response or []
            if e.get("type") == "searchResEntry"
        ]
        log.debug("search found %d entries", len(entries))
        return entries

    # -- groups -----------------------------------------------------------------------------------

    def _groups(self, conn: ldap3.Connection, dn: str, entry: Mapping[str, Any]) -> tuple[Group, ...]:
        kind = self.config.group_type
        if kind is None:
            return ()
        if kind == "member_of":
            return self._groups_from_member_of(entry)
        search = self.config.group_search
        assert search is not None
        if kind == "active_directory":
            clause = f"(member:{AD_MATCHING_RULE_IN_CHAIN}:={escape_filter_chars(dn)})"
            return self._group_search(conn, search, clause)
        if kind == "posix_group":
            clauses = [f"(memberUid={escape_filter_chars(first(entry, 'uid'))})"]
            if gid := first(entry, "gidNumber"):
                clauses.append(f"(gidNumber={escape_filter_chars(gid)})")
            return self._group_search(conn, search, "(|" + "".join(clauses) + ")")
        attr = MEMBER_ATTR[kind]
        if kind != "nested_group_of_names":
            return self._group_search(conn, search, f"({attr}={escape_filter_chars(dn)})")
        return self._nested_groups(conn, search, attr, dn)

    def _nested_groups(self, conn: ldap3.Connection, search: Search, attr: str, dn: str) -> tuple[Group, ...]:
        """Walk up member links level by level; a DN already seen is never asked for again."""
        found: dict[str, Group] = {}
        seen = {normalize_dn(dn)}
        frontier = [dn]
        for _ in range(self.config.max_nesting):
            parents: list[Group] = []
            for start in range(0, len(frontier), OR_BATCH):
                batch = frontier[start:start + OR_BATCH]
                clause = "(|" + "".join(f"({attr}={escape_filter_chars(d)})" for d in batch) + ")"
                parents += self._group_search(conn, search, clause)
            frontier = []
            for group in parents:
                key = normalize_dn(group.dn)
                if key not in seen:
                    seen.add(key)
                    found[key] = group
                    frontier.append(group.dn)
            if not frontier:
                break
        else:
            log.warning("nested groups of %s go deeper than ldap.max_nesting=%d; stopped there",
                        dn, self.config.max_nesting)
        return tuple(found.values())

    def _group_search(self, conn: ldap3.Connection, search: Search, clause: str) -> tuple[Group, ...]:
        query = f"(&{search.filter}{clause})"
        name_attr = self.config.group_name_attr
        entries = self._search(conn, search.base_dn, search.scope, query, [name_attr])
        return tuple(Group(dn, first(attrs, name_attr) or _rdn_value(dn)) for dn, attrs in entries)

    def _groups_from_member_of(self, entry: Mapping[str, Any]) -> tuple[Group, ...]:
        search = self.config.group_search
        base = normalize_dn(search.base_dn) if search else ""
        groups = []
        for dn in every(entry, "memberOf"):
            if not base or normalize_dn(dn).endswith(base):
                groups.append(Group(dn, _rdn_value(dn)))
        return tuple(groups)

    # -- connections ------------------------------------------------------------------------------

    def _service(self, uri: str) -> ldap3.Connection | None:
        """This thread's service-account connection to ``uri`` (None without a bind_dn)."""
        if not self.config.bind_dn:
            return None
        return self._kept("service", uri, self._bind_service)

    def _service_or_anonymous(self, uri: str) -> ldap3.Connection:
        return self._service(uri) or self._anonymous(uri)

    def _anonymous(self, uri: str) -> ldap3.Connection:
        return self._kept("anonymous", uri, self._bind_anonymous)

    def _kept(self, pool: str, uri: str, make: Callable[[str], ldap3.Connection]) -> ldap3.Connection:
        """This thread's connection of a kind to a server, made when missing or closed."""
        conns: dict[str, ldap3.Connection] = self._local.__dict__.setdefault(pool, {})
        conn = conns.get(uri)
        if conn is not None and not conn.closed:
            self._local.reused = True
            return conn
        conn = conns[uri] = make(uri)
        with self._kept_lock:
            self._open.add(conn)
        return conn

    def _bind_service(self, uri: str) -> ldap3.Connection:
        assert self.config.bind_password is not None
        conn = self._connect(uri)
        if not _simple_bind(conn, self.config.bind_dn, self.config.bind_password.reveal()):
            reason = refusal_reason(conn.result or {})
            conn.unbind()
            raise DirectoryUnavailable(f"service account {self.config.bind_dn!r} refused: {reason}")
        return conn

    def _bind_anonymous(self, uri: str) -> ldap3.Connection:
        conn = self._connect(uri)
        conn.bind(read_server_info=False)
        return conn

    def _drop_service(self, uri: str) -> None:
        for pool in ("service", "anonymous", "user"):
            conn = self._local.__dict__.get(pool, {}).pop(uri, None)
            if conn is not None:
                with self._kept_lock:
                    self._open.discard(conn)
                _unbind_quietly(conn)

    def _bind(self, uri: str, dn: str, password: str) -> ldap3.Connection:
        """This thread's user-bind connection, bound as ``dn``; InvalidCredentials if refused."""
        log.debug("bind as %r on %s", dn, uri)
        # One kept connection per thread for users' binds saves a connect and unbind each time.
        conn = self._kept("user", uri, self._connect)
        accepted = _simple_bind(conn, dn, password)
        conn.password = None  # ldap3 would keep the last user's password on the connection
        if accepted:
            return conn
        raise InvalidCredentials(f"directory refused the password for {dn}: {refusal_reason(conn.result or {})}")

    def _connect(self, uri: str) -> ldap3.Connection:
        """An open, not yet bound connection (TLS started when configured)."""
        config = self.config
        log.debug("connect to %s", uri)
        servers: dict[str, ldap3.Server] = self._local.__dict__.setdefault("servers", {})
        server = servers.get(uri)
        if server is None:
            server = servers[uri] = ldap3.Server(uri, tls=self._tls, connect_timeout=config.connect_timeout,
                                                 get_info=ldap3.NONE)
        conn = ldap3.Connection(
            server,
            auto_bind=ldap3.AUTO_BIND_NONE,
            client_strategy=ldap3.SYNC,
            read_only=True,
            receive_timeout=config.timeout,
            auto_referrals=config.referrals,
            raise_exceptions=False,
        )
        conn.open()
        if config.start_tls and not conn.start_tls():
            conn.unbind()
            raise lx.LDAPStartTLSError(f"StartTLS refused: {conn.result}")
        return conn

    @staticmethod
    def _make_tls(config: LdapConfig) -> ldap3.Tls:
        if config.ignore_cert_errors:
            return ldap3.Tls(validate=ssl.CERT_NONE)
        return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file)

    @staticmethod
    def _attributes_to_read(config: LdapConfig) -> list[str]:
        wanted = [config.username_attr, *config.user_attr_map.values()]
        if config.group_type == "member_of":
            wanted.append("memberOf")
        if config.group_type == "posix_group":
            wanted += ["uid", "gidNumber"]
        return list(dict.fromkeys(wanted))


def _simple_bind(conn: ldap3.Connection, dn: str, password: str) -> bool:
    """Bind an open connection as dn (again). ldap3's rebind() would turn a dropped connection
    into a plain LDAPBindError, hiding the transport failure that failover acts on."""
    conn.user, conn.password, conn.authentication = dn, password, ldap3.SIMPLE
    return bool(conn.bind(read_server_info=False))


def _unbind_quietly(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except Exception:  # noqa: BLE001 - it is being thrown away
        pass


def _rdn_value(dn: str) -> str:
    try:
        return str(parse_dn(dn, escape=False, strip=True)[0][1])
    except (lx.LDAPInvalidDnError, IndexError):
        return dn


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."

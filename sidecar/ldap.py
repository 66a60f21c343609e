"""Directory client: finds a user, checks the password by binding as them, resolves groups.

ldap3 is synchronous. Everything below :meth:`Directory._run` runs in a worker thread of the
directory's own pool, with connect and operation timeouts; the event loop only awaits.
Each worker thread keeps two connections per server: one for searches, bound as the service
account when there is a ``bind_dn``, else anonymously; and one that users' binds reuse, rebound
for each user and stripped of the password right after. With a ``user_dn_template`` and no service
account, the user's entry and groups are read over that second one, bound as the user.

Servers are tried in the configured order. One that fails to connect or answer is remembered
as down for ``retry_dead_after`` seconds, so requests do not each pay its timeout. A kept
connection the server closed while idle is retried once anew; a user's bind that went out and got
no answer is never sent again, to any server (:class:`BindUnanswered`: the directory may have
counted that password).

What the directory says is taken exactly, or not at all:

- Searches that can return many entries (every group search, each level of a nested walk,
  Active Directory's in-chain rule) are paged (RFC 2696). An answer that is not complete (a
  size, time or administrative limit, a referral, paging that stops early, nesting deeper than
  ``max_nesting``) is :class:`DirectoryUnavailable` (503), never a shorter group list.
- Values are never cleaned (:mod:`sidecar.entries`). A user whose name or published attributes
  hold a control character (or bytes that are not UTF-8) is refused; a group whose name does is
  not published, while its DN still counts for require/deny/flags. Of several ``username_attr``
  values, the one that matches the login is the identity; without exactly one, the user is refused.
- Passwords go to the server as the UTF-8 bytes typed (ldap3 would SASLprep a str).
- An unknown name costs the round trips of a wrong password: a bind to a DN that does not exist.
- How groups are found is the configured group type's (:mod:`sidecar.groups`), built once here.
  A type the server cannot answer (``active_directory`` on a server that is not Active Directory)
  is a configuration error (:meth:`Directory.check_group_type`), and every verdict is 503 while it
  stands.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar

import ldap3
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from sidecar.config import LdapConfig, Search
from sidecar.entries import first, fold, matching_value, rdn_value, values
from sidecar.errors import (
    AccessDenied,
    AuthError,
    BindUnanswered,
    ConfigError,
    DirectoryUnavailable,
    InvalidCredentials,
    UnknownUser,
)
from sidecar.groups import Group, GroupType, UserEntry, group_type_for

log = logging.getLogger("sidecar.ldap")
T = TypeVar("T")
Admit = Callable[[str], None]

SCOPES: dict[str, Literal["BASE", "LEVEL", "SUBTREE"]] = {
    "base": ldap3.BASE, "one": ldap3.LEVEL, "subtree": ldap3.SUBTREE,
}
PAGED_RESULTS = "1.2.840.113556.1.4.319"  # RFC 2696
PAGE_SIZE = 500  # below every common server limit (slapd 500, AD MaxPageSize 1000)
MAX_PAGES = 1000  # 500,000 entries: a search that pages on beyond is not ending
# A user search may match a few entries that only LDAP's loose matching makes equal (it maps
# control characters to nothing); more than this many is ambiguous whatever they hold.
USER_CANDIDATES = 8
# Bound to with the password when the name is unknown, so an unknown name costs what a wrong
# password costs. It must not exist; a bind that succeeds anyway changes nothing.
ABSENT_RDN = "cn=auth-sidecar-no-such-user"
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
        self.group_type: GroupType = group_type_for(config)
        self._user_attrs = list(dict.fromkeys(
            [config.username_attr, *config.user_attr_map.values(), *self.group_type.user_attributes]
        ))
        # Per server: None when its group type was checked and fits, else why it does not.
        self._group_type_checked: dict[str, str | None] = {}
        if config.ignore_cert_errors:
            log.warning(
                "ldap.ignore_cert_errors is on: directory certificates are NOT verified, so "
                "anyone between us and the directory can read every password. Use ldap.ca_file."
            )

    # -- the event loop side -------------------------------------------------------------------

    async def check_password(self, username: str, password: str, admit: Admit | None = None) -> DirectoryUser:
        """The user, if the directory accepts this password; else InvalidCredentials.

        ``admit`` is called in the worker thread, at most once per name, with the directory's
        spelling of the user (the typed name when the directory has no such user, or cannot say
        which value is theirs) just before the password is sent; whatever it raises propagates
        unchanged and nothing is sent.
        """
        # The worker frames see the password only through this box, emptied when done, so no
        # traceback that outlives the call can hand it out.
        box = [password.encode("utf-8")]
        del password
        try:
            return await self._run(self._check_password, username, box, admit)
        finally:
            box.clear()

    async def lookup(self, username: str) -> DirectoryUser:
        """The user as the directory describes them now, without a password (session re-checks)."""
        return await self._run(self._lookup, username)

    async def ping(self) -> bool:
        """Whether any server accepts a connection and our bind right now."""
        return await self._run(self._ping)

    async def check_group_type(self) -> None:
        """Refuse a group type the directory cannot answer: ConfigError when a server that
        answers does not announce what the type requires (``active_directory`` on a server that
        is not Active Directory), DirectoryUnavailable when no server answers. Every verdict is 503 while a mismatch is
        known, whether or not this was called (each server is checked on first use)."""
        await self._run(self._check_group_type_everywhere)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        # The one place where the event loop hands work to ldap3's blocking calls.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(_scrubbed, function, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._kept_lock:
            kept, self._open = self._open, set()
        for conn in kept:
            _unbind_quietly(conn)

    # -- worker threads -------------------------------------------------------------------------

    def _check_password(self, username: str, box: list[bytes], admit: Admit | None) -> DirectoryUser:
        if not box or not box[0]:
            # An LDAP bind with a DN and no password is an "unauthenticated bind": it succeeds.
            raise InvalidCredentials("empty password")
        once = _Once(admit)
        return self._on_some_server(lambda uri: self._check_on(uri, username, box, once))

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
        self._local.bind_sent = False
        for uri in self.servers.candidates():
            for fresh in (False, True):
                self._local.reused = False
                try:
                    self._require_group_type(uri)
                    result = operation(uri)
                except TRANSPORT_ERRORS as exc:
                    self._drop_connections(uri)
                    slow = isinstance(exc, lx.LDAPResponseTimeoutError)
                    if not fresh and self._local.reused and not (slow and self._local.bind_sent):
                        continue  # a kept connection the server closed while idle: once anew
                    failures.append(f"{uri}: {_describe(exc)}")
                    log.warning("directory server %s failed: %s", uri, _describe(exc))
                    self.servers.mark_down(uri)
                    if self._local.bind_sent:
                        # The directory may have counted this password: never ask another server.
                        raise BindUnanswered(f"{uri} did not answer a user's bind: {_describe(exc)}") from None
                    break
                self.servers.mark_up(uri)
                return result
        raise DirectoryUnavailable("no directory server answered (" + "; ".join(failures) + ")")

    def _check_on(self, uri: str, username: str, box: list[bytes], admit: _Once) -> DirectoryUser:
        config = self.config
        service = self._service(uri)
        if config.user_dn_template is not None:
            dn = config.user_dn_template % {"user": escape_rdn(username)}
            if service is None:
                # Nobody may read the entry before the bind: the typed name is all there is.
                admit(username)
                user_conn = self._bind(uri, dn, box)
                return self._describe(user_conn, username, dn, self._read_entry(user_conn, dn))
            entry = self._read_entry(service, dn)
            if not entry:
                self._unknown(uri, username, dn, box, admit)
            reader = service
        else:
            assert config.user_search is not None
            reader = service or self._anonymous(uri)
            found = self._find_user(reader, config.user_search, username)
            if found is None:
                self._unknown(uri, username, f"{ABSENT_RDN},{config.user_search.base_dn}", box, admit)
            dn, entry = found
        admit(matching_value(entry, config.username_attr, username) or username)
        self._bind(uri, dn, box)
        return self._describe(reader, username, dn, entry)

    def _unknown(self, uri: str, username: str, absent_dn: str, box: list[bytes], admit: _Once) -> NoReturn:
        """No such user: the same admission and bind round trip as a wrong password, then say so."""
        admit(username)
        try:
            self._bind(uri, absent_dn, box)
        except InvalidCredentials:
            pass
        raise UnknownUser(f"no such user {username!r}")

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
            found = self._find_user(reader, config.user_search, username)
            if found is None:
                raise UnknownUser(f"no such user {username!r}")
            dn, entry = found
        return self._describe(reader, username, dn, entry)

    def _describe(self, reader: ldap3.Connection, username: str, dn: str,
                  entry: Mapping[str, Any]) -> DirectoryUser:
        """The user as the directory holds them, or AccessDenied when that cannot be said
        exactly (the password, where there was one, has been accepted by now)."""
        config = self.config
        canonical = matching_value(entry, config.username_attr, username)
        if canonical is None:
            raise AccessDenied(
                f"{dn}: no single clean {config.username_attr} value matches the login {username!r}"
            )
        try:
            attributes = {key: first(entry, attr) for key, attr in config.user_attr_map.items()}
        except AccessDenied as exc:
            raise AccessDenied(f"{dn}: {exc.reason}") from None
        groups = self.group_type.user_groups(UserEntry(dn, username, entry),
                                             _GroupSearch(reader, config.group_search, config.group_name_attr))
        log.debug("user %r is %s with %d groups: %s", username, dn, len(groups),
                  ", ".join(g.name or "(unpublished)" for g in groups) or "-")
        return DirectoryUser(dn=dn, username=canonical, attributes=attributes, groups=groups)

    def _find_user(self, conn: ldap3.Connection, search: Search,
                   username: str) -> tuple[str, dict[str, Any]] | None:
        query = search.filter % {"user": escape_filter_chars(username)}
        entries = self._search(conn, search.base_dn, search.scope, query, self._user_attrs,
                               limit=USER_CANDIDATES)
        if len(entries) >= USER_CANDIDATES:
            raise InvalidCredentials(f"user search is ambiguous: {len(entries)} or more entries for {query}")
        if len(entries) > 1:
            # A server's matching may be looser than ours (RFC 4518's maps control characters
            # to nothing: (uid=alice) finding uid "alice\x01" too): the entry whose value is the
            # login is the user; without exactly one, nobody is.
            attr, key = self.config.username_attr, fold(username)
            entries = [e for e in entries
                       if any(isinstance(v, str) and fold(v) == key for v in values(e[1], attr))]
            if len(entries) != 1:
                raise InvalidCredentials(f"user search is ambiguous: more than one entry for {query}")
        return entries[0] if entries else None

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
        limit: int,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Entries that identify a user: at most ``limit`` + the fact there were more; nothing
        for a base that does not exist or is a referral we do not follow."""
        log.debug("search base=%r scope=%s filter=%r", base, scope, query)
        conn.search(base, query, SCOPES[scope], attributes=attributes, size_limit=limit)
        result = conn.result or {}
        entries = _entries(conn)
        code = result.get("result")
        # 4 sizeLimitExceeded with our own limit reached: there are more (an ambiguous name).
        if code not in (0, 10, 32) and not (code == 4 and len(entries) >= limit):
            raise DirectoryUnavailable(
                f"search under {base!r} failed: {result.get('description')} {result.get('message')}"
            )
        log.debug("search found %d entries", len(entries))
        return entries

    # -- is the group type one this server can answer? --------------------------------------------

    def _check_group_type_everywhere(self) -> None:
        problems, answered = [], False
        for uri in self.config.server_uri:
            try:
                self._require_group_type(uri)
                answered = True
            except TRANSPORT_ERRORS as exc:
                self._drop_connections(uri)
                log.warning("directory server %s failed: %s", uri, _describe(exc))
            except DirectoryUnavailable as exc:
                if uri in self._group_type_checked:
                    problems.append(exc.reason)
                    answered = True
                else:
                    log.warning("directory server %s failed: %s", uri, exc.reason)
        if problems:
            raise ConfigError(problems)
        if not answered:
            raise DirectoryUnavailable("no directory server answered the check of ldap.group_type")

    def _require_group_type(self, uri: str) -> None:
        """DirectoryUnavailable when this server cannot answer the configured group type."""
        if uri not in self._group_type_checked:
            self._group_type_checked[uri] = self._group_type_mismatch(uri)
            if (mismatch := self._group_type_checked[uri]) is not None:
                log.error("%s; every verdict on this server is 503 until the configuration is fixed",
                          mismatch)
        if (mismatch := self._group_type_checked[uri]) is not None:
            raise DirectoryUnavailable(mismatch)

    def _group_type_mismatch(self, uri: str) -> str | None:
        if self.group_type.requires is None:
            return None  # nothing to ask the server
        conn = self._service_or_anonymous(uri)
        conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["supportedCapabilities"])
        entries = _entries(conn)
        capabilities = {str(v) for v in values(entries[0][1], "supportedCapabilities")} if entries else set()
        return self.group_type.refusal(uri, capabilities)

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
        if not _simple_bind(conn, self.config.bind_dn, self.config.bind_password.reveal().encode("utf-8")):
            reason = refusal_reason(conn.result or {})
            conn.unbind()
            raise DirectoryUnavailable(f"service account {self.config.bind_dn!r} refused: {reason}")
        return conn

    def _bind_anonymous(self, uri: str) -> ldap3.Connection:
        conn = self._connect(uri)
        conn.bind(read_server_info=False)
        return conn

    def _drop_connections(self, uri: str) -> None:
        for pool in ("service", "anonymous", "user"):
            conn = self._local.__dict__.get(pool, {}).pop(uri, None)
            if conn is not None:
                with self._kept_lock:
                    self._open.discard(conn)
                _unbind_quietly(conn)

    def _bind(self, uri: str, dn: str, box: list[bytes]) -> ldap3.Connection:
        """This thread's user-bind connection, bound as ``dn``; InvalidCredentials if refused."""
        log.debug("bind as %r on %s", dn, uri)
        # One kept connection per thread for users' binds saves a connect and unbind each time.
        conn = self._kept("user", uri, self._connect)
        self._local.bind_sent = True
        try:
            accepted = _simple_bind(conn, dn, box[0])
        finally:
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


@dataclass(frozen=True, slots=True)
class _GroupSearch:
    """``ldap.group_search`` over one connection, paged: the GroupSearch a group type is given."""

    conn: ldap3.Connection
    search: Search | None
    name_attr: str

    def groups(self, clause: str) -> tuple[Group, ...]:
        # The configuration requires group_search with every group type that searches.
        assert self.search is not None
        search, name_attr = self.search, self.name_attr
        entries = self._all(search.base_dn, search.scope, f"(&{search.filter}{clause})", [name_attr])
        return tuple(Group.named(dn, (values(attrs, name_attr) or [rdn_value(dn)])[0]) for dn, attrs in entries)

    def _all(self, base: str, scope: str, query: str, attributes: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """Every entry that matches, page by page (RFC 2696). Anything but a complete success is
        DirectoryUnavailable: a partial list must never decide."""
        conn = self.conn
        log.debug("paged search base=%r scope=%s filter=%r", base, scope, query)
        entries: list[tuple[str, dict[str, Any]]] = []
        cookie: bytes | None = None
        for _ in range(MAX_PAGES):
            conn.search(base, query, SCOPES[scope], attributes=attributes,
                        paged_size=PAGE_SIZE, paged_cookie=cookie)
            result = conn.result or {}
            entries += _entries(conn)
            if result.get("result") != 0:
                raise DirectoryUnavailable(
                    f"incomplete answer: the search under {base!r} for {query} stopped after "
                    f"{len(entries)} entries with {result.get('description')} "
                    f"{result.get('message') or ''}".rstrip() + "; no verdict on a partial group list"
                )
            # The cookie need not change from page to page (Samba's names the search): only an
            # empty one ends it.
            cookie = _paging_cookie(result)
            if not cookie:
                log.debug("search found %d entries", len(entries))
                return entries
        raise DirectoryUnavailable(
            f"incomplete answer: paging the search under {base!r} for {query} does not end "
            f"({len(entries)} entries so far); no verdict on a partial group list"
        )


class _Once:
    """The admission callback, called at most once per name within one check_password (a retry
    on another server or connection is the same attempt)."""

    def __init__(self, admit: Admit | None) -> None:
        self._admit = admit
        self._admitted: set[str] = set()

    def __call__(self, name: str) -> None:
        if self._admit is not None and name not in self._admitted:
            self._admit(name)
            self._admitted.add(name)


def _scrubbed(function: Callable[..., T], *args: Any) -> T:
    """Run function in the worker; an exception leaves with its frames' locals cleared (they may
    hold the password), its type, message and line numbers intact."""
    try:
        return function(*args)
    except BaseException as exc:
        del args
        seen: set[int] = set()
        chained: BaseException | None = exc
        while chained is not None and id(chained) not in seen:
            seen.add(id(chained))
            traceback.clear_frames(chained.__traceback__)
            chained = chained.__cause__ or chained.__context__
        raise


def _entries(conn: ldap3.Connection) -> list[tuple[str, dict[str, Any]]]:
    """The entries of the last search (references left out), attribute names lower-cased."""
    return [
        (e["dn"], {str(k).lower(): v for k, v in (e.get("attributes") or {}).items()})
        for e in conn.response or []
        if e.get("type") == "searchResEntry"
    ]


def _paging_cookie(result: Mapping[str, Any]) -> bytes | None:
    control = (result.get("controls") or {}).get(PAGED_RESULTS) or {}
    cookie = (control.get("value") or {}).get("cookie")
    return bytes(cookie) if cookie else None


def _simple_bind(conn: ldap3.Connection, dn: str, password: bytes) -> bool:
    """Bind an open connection as dn (again), sending the password's bytes as they are (ldap3
    SASLpreps a str, which changes or refuses some passwords). ldap3's rebind() would turn a
    dropped connection into a plain LDAPBindError, hiding the transport failure failover acts on."""
    conn.user, conn.password, conn.authentication = dn, password, ldap3.SIMPLE
    try:
        return bool(conn.bind(read_server_info=False))
    finally:
        conn.request = None  # ldap3's copy of the last request, password and all


def _unbind_quietly(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except Exception:
        pass
    finally:
        # An unbind that could not be sent (a server gone quiet) leaves ldap3's socket open.
        try:
            if not conn.closed:
                conn.strategy.close()
        except Exception:
            pass


def _describe(exc: BaseException) -> str:
    said = str(exc) or type(exc).__name__
    return said if len(said) < 300 else said[:297] + "..."

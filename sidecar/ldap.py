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
- A configured base DN that does not exist (``noSuchObject`` for ``user_search``'s or
  ``group_search``'s base, or for the parent of ``user_dn_template``) is a configuration error,
  logged as "base DN does not exist" and answered 503: never "no such user", which would count
  against the user's budget. :meth:`Directory.readiness` checks the bases too (``/readyz``), and
  :meth:`Directory.examine` checks one server item by item (``check-config --online``).

Under ``auth-sidecar test-login`` every step reports to the trace (:mod:`sidecar.trace`): servers,
binds, searches and what they found; there is none otherwise.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import contextvars
import functools
import logging
import re
import ssl
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, TypeVar

import ldap3
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, to_dn

from sidecar.cache import ExpiringMap
from sidecar.config import LdapConfig, Search, ca_dir_pem
from sidecar.entries import first, fold, matching_value, normalize_dn, rdn_value, values
from sidecar.errors import (
    AccessDenied,
    AccountRefused,
    AuthError,
    BindUnanswered,
    ConfigError,
    DirectoryUnavailable,
    InvalidCredentials,
    UnknownUser,
)
from sidecar.groups import (
    AD_CAPABILITY,
    AD_MATCHING_RULE_IN_CHAIN,
    ActiveDirectory,
    Group,
    GroupType,
    MemberOf,
    NestedMemberDN,
    NoGroups,
    UserEntry,
    group_type_for,
)
from sidecar.metrics import NO_METRICS, Metrics
from sidecar.trace import Trace, current

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
# Sub-codes Active Directory gives only for the right password (775, locked out, comes for a wrong
# one too): the account may not sign in, and the person at the keyboard is its owner (AccountRefused).
RIGHT_PASSWORD_REFUSALS = frozenset({"530", "531", "532", "533", "701", "773"})
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
# ldap3's words for a failure, as failure_text() makes them plain.
TLS_FAILED = re.compile(r"^(?:socket ssl wrapping error|wrap socket error): ")
SSL_NOISE = re.compile(r"\[SSL: [A-Z0-9_]+\] |\s*\(_ssl\.c:\d+\)")
CONNECT_FAILED = re.compile(r"^socket connection error while opening: (?:\[Errno -?\d+\] )?")
NO_SUCH_OBJECT = 32
ENTRY_CACHE_MAX = 10_000  # users' entries kept (ldap.entry_cache_timeout); full, the oldest go first


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

    def down_for(self) -> list[tuple[str, float]]:
        """Each server and the seconds it is still passed over for a failure (0: not known down)."""
        now = self._clock()
        with self._lock:
            return [(uri, max(0.0, self._down_until.get(uri, 0.0) - now)) for uri in self.uris]


# One line of check-config --online: passed (True), failed (False) or could not be checked (None).
Check = tuple[bool | None, str]


@dataclass(frozen=True, slots=True)
class ServerReport:
    """What one server answered to ``check-config --online``, check by check, and how far its
    clock is from ours when it says (Active Directory's rootDSE ``currentTime``)."""

    uri: str
    checks: tuple[Check, ...]
    clock_skew: float | None = None  # seconds: the server's time minus ours


def refusal_reason(result: Mapping[str, Any]) -> str:
    """Why the directory refused a bind, with Active Directory's sub-code spelled out."""
    sub = ad_sub_code(result)
    if sub is not None:
        return f"{AD_REASONS.get(sub, 'refused')} (AD sub-code {sub})"
    return str(result.get("description") or "refused")


def ad_sub_code(result: Mapping[str, Any]) -> str | None:
    """Active Directory's sub-code of a refused bind (``data 533``), lower case; None elsewhere."""
    code = AD_SUB_CODE.search(str(result.get("message") or ""))
    return code.group(1).lower() if code else None


class Directory:
    """Checks passwords against LDAP / Active Directory and reads the user's groups."""

    def __init__(self, config: LdapConfig, metrics: Metrics = NO_METRICS) -> None:
        self.config = config
        self.servers = ServerList(config.server_uri, config.retry_dead_after)
        # Each operation on each server, counted by outcome and timed (metrics).
        self._timed = metrics.directory(config.server_uri, ("check_password", "lookup", "ping"))
        self._requests = metrics.directory_requests()  # and each round trip they took
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
        # Users' entries as found for a password accepted (ldap.entry_cache_timeout), by login name:
        # the next login of that name the verdict cache does not know is the bind alone.
        self._entries: ExpiringMap[str, DirectoryUser] | None = (
            ExpiringMap(ENTRY_CACHE_MAX, config.entry_cache_timeout) if config.entry_cache_timeout else None)
        self._entries_lock = threading.Lock()
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
        """Whether the directory can serve sign-ins right now (see :meth:`readiness`)."""
        return await self.readiness() is None

    async def readiness(self) -> str | None:
        """Why the directory cannot serve sign-ins right now, or None when it can: no server accepts
        a connection and our bind, a base DN we search does not exist, or the group type does not fit."""
        try:
            await self._run(self._ready)
        except AuthError as exc:
            return exc.reason
        return None

    async def examine(self, uri: str) -> ServerReport:
        """``check-config --online`` for one server: each thing it must do, tried on a connection of
        its own (nothing is remembered, no server is marked down)."""
        return await self._run(self._examine, uri)

    async def check_group_type(self) -> None:
        """Refuse a group type the directory cannot answer: ConfigError when a server that
        answers does not announce what the type requires (``active_directory`` on a server that
        is not Active Directory), DirectoryUnavailable when no server answers. Every verdict is 503 while a mismatch is
        known, whether or not this was called (each server is checked on first use)."""
        await self._run(self._check_group_type_everywhere)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        # The one place where the event loop hands work to ldap3's blocking calls.
        loop = asyncio.get_running_loop()
        call = functools.partial(_scrubbed, function, *args)
        if current() is not None:  # test-login: the trace follows the work into the worker thread
            call = functools.partial(contextvars.copy_context().run, call)
        return await loop.run_in_executor(self._executor, call)

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
        return self._on_some_server("check_password", lambda uri: self._check_on(uri, username, box, once))

    def _lookup(self, username: str) -> DirectoryUser:
        return self._on_some_server("lookup", lambda uri: self._lookup_on(uri, username))

    def _ready(self) -> None:
        self._on_some_server("ping", self._ready_on)

    def _ready_on(self, uri: str) -> None:
        conn = self._service_or_anonymous(uri)
        for dn, key in self._searched_bases():
            if (result := _read_base(conn, dn)).get("result") == NO_SUCH_OBJECT:
                raise _base_missing(dn, key, result, logged=False)  # /readyz says it; probes come often

    def _on_some_server(self, kind: str, operation: Callable[[str], T]) -> T:
        failures = []
        self._local.bind_sent = False
        timed = self._timed[kind]
        trace = current()
        for uri in self.servers.candidates():
            if trace is not None:
                trace.step("server", uri)
            started = time.perf_counter()
            for fresh in (False, True):
                self._local.reused = False
                _TALLY.counts = tally = Counter[str]()
                try:
                    self._require_group_type(uri)
                    result = operation(uri)
                except TRANSPORT_ERRORS as exc:
                    self._drop_connections(uri)
                    slow = isinstance(exc, lx.LDAPResponseTimeoutError)
                    if not fresh and self._local.reused and not (slow and self._local.bind_sent):
                        continue  # a kept connection the server closed while idle: once anew
                    timed[uri].count("error", started)
                    failures.append(f"{uri}: {failure_text(exc)}")
                    log.warning("directory server %s failed: %s", uri, failure_text(exc))  # test-login shows it too
                    self.servers.mark_down(uri)
                    if self._local.bind_sent:
                        # The directory may have counted this password: never ask another server.
                        raise BindUnanswered(f"{uri} did not answer a user's bind: {failure_text(exc)}") from None
                    break
                except AuthError as exc:  # an answer: no such user, wrong password, an incomplete search...
                    timed[uri].refused(exc, started)
                    raise
                finally:
                    _TALLY.counts = None
                    for request, n in tally.items():
                        self._requests(uri, request, n)
                timed[uri].ok(started)
                self.servers.mark_up(uri)
                return result
        raise DirectoryUnavailable("directory unreachable: " + "; ".join(failures))

    def _check_on(self, uri: str, username: str, box: list[bytes], admit: _Once) -> DirectoryUser:
        config = self.config
        if (kept := self._kept_entry(username)) is not None:
            return self._check_kept(uri, username, box, admit, kept)
        service = self._service(uri)
        if config.refresh_dn_on_bind:
            return self._check_then_find(uri, username, box, admit, service)
        if config.user_dn_template is not None:
            dn = config.user_dn_template % {"user": escape_rdn(username)}
            if (trace := current()) is not None:
                trace.step("user DN", f"{dn} (ldap.user_dn_template, no search)")
            if service is None:
                # Nobody may read the entry before the bind: the typed name is all there is.
                admit(username)
                try:
                    user_conn = self._bind(uri, dn, box)
                except InvalidCredentials:
                    if self._absent(uri, dn):  # the next source may know the name (local_users)
                        raise UnknownUser(f"no such user {username!r} (no entry {dn})") from None
                    raise
                return self._describe(user_conn, username, dn, self._read_entry(user_conn, dn))
            entry = self._read_entry(service, dn)
            if not entry:
                self._unknown(uri, username, dn, box, admit)
            reader = service
        else:
            reader = service or self._anonymous(uri)
            found = self._find_user(reader, config.user_search, username)
            if found is None:
                self._unknown(uri, username, f"{ABSENT_RDN},{config.user_search[0].base_dn}", box, admit)
            dn, entry = found
        admit(matching_value(entry, config.username_attr, username) or username)
        self._bind(uri, dn, box)
        return self._keep_entry(username, self._describe(reader, username, dn, entry))

    def _kept_entry(self, username: str) -> DirectoryUser | None:
        if self._entries is None or current() is not None:  # a trace shows every step as it is now
            return None
        with self._entries_lock:
            return self._entries.get(username)

    def _keep_entry(self, username: str, user: DirectoryUser) -> DirectoryUser:
        if self._entries is not None:
            with self._entries_lock:
                self._entries[username] = user
        return user

    def _check_kept(self, uri: str, username: str, box: list[bytes], admit: _Once,
                    kept: DirectoryUser) -> DirectoryUser:
        """A user whose entry was found within entry_cache_timeout: their bind is the one round trip.
        A refused bind forgets the entry and finds it again: when it has moved, the password is
        tried on the new DN (once); else the refusal stands (a wrong password costs what it did)."""
        admit(kept.username)
        try:
            self._bind(uri, kept.dn, box)
        except AuthError:
            with self._entries_lock:
                assert self._entries is not None
                self._entries.pop(username)
            found = self._current_dn(uri, username)
            if found is None or normalize_dn(found) == normalize_dn(kept.dn):
                raise
            log.info("user %r moved from %s to %s: the password goes to the new entry", username, kept.dn, found)
            return self._check_on(uri, username, box, admit)
        return kept

    def _current_dn(self, uri: str, username: str) -> str | None:
        """The DN of the user's entry now (as _check_on finds it), or None when there is none."""
        config = self.config
        service = self._service(uri)
        if config.user_dn_template is not None:
            dn = config.user_dn_template % {"user": escape_rdn(username)}
            return dn if service is not None and self._read_entry(service, dn) else None
        found = self._find_user(service or self._anonymous(uri), config.user_search, username)
        return None if found is None else found[0]

    def _check_then_find(self, uri: str, username: str, box: list[bytes], admit: _Once,
                         service: ldap3.Connection | None) -> DirectoryUser:
        """refresh_dn_on_bind: bind as user_dn_template makes the name (a UPN such as erin@corp.example.com,
        which is no DN), then find the user's real entry with user_search, as the user (django-auth-ldap's
        REFRESH_DN_ON_BIND). A refused bind is an unknown name when the search, as the service account
        or anonymously, finds no such user."""
        config = self.config
        assert config.user_dn_template is not None
        bind_name = config.user_dn_template % {"user": escape_rdn(username)}
        if (trace := current()) is not None:
            trace.step("user DN", f"bind as {bind_name} (ldap.user_dn_template), then ldap.user_search finds the "
                                  "entry (ldap.refresh_dn_on_bind)")
        admit(username)
        try:
            user_conn = self._bind(uri, bind_name, box)
        except InvalidCredentials:
            reader = service or self._anonymous(uri)
            try:
                unknown = self._find_user(reader, config.user_search, username) is None
            except (DirectoryUnavailable, InvalidCredentials):
                unknown = False  # cannot say: the refusal stands
            if unknown:
                raise UnknownUser(f"no such user {username!r}") from None
            raise
        found = self._find_user(service or user_conn, config.user_search, username)
        if found is None:
            # The directory took the password but the search does not find whom for: nobody to describe.
            raise AccessDenied(f"{bind_name} was accepted, but ldap.user_search finds no entry for {username!r}")
        dn, entry = found
        return self._describe(service or user_conn, username, dn, entry)

    def _absent(self, uri: str, dn: str) -> bool:
        """Whether the directory says, to an anonymous reader, that there is no entry ``dn`` while its
        parent exists: only then is a refused bind an unknown name. Anything else (the entry, a
        refusal, a hidden entry) leaves the bind's refusal as it was."""
        try:
            result = _read_base(self._anonymous(uri), dn)
        except TRANSPORT_ERRORS:
            self._drop_connections(uri)
            return False
        parent = _parent_dn(dn)
        said = result.get("result") == NO_SUCH_OBJECT and bool(parent) and \
            normalize_dn(str(result.get("dn") or "")) == normalize_dn(parent)
        if (trace := current()) is not None:
            trace.step("found", f"no entry {dn} (anonymously: its parent exists, it does not): an unknown name"
                       if said else f"the refusal stands: anonymously, {dn} is {result.get('description')}")
        return said

    def _unknown(self, uri: str, username: str, absent_dn: str, box: list[bytes], admit: _Once) -> NoReturn:
        """No such user: the same admission and bind round trip as a wrong password, then say so."""
        if (trace := current()) is not None:
            trace.step("found", f"no user {username!r}; a bind to {absent_dn}, which does not exist, costs "
                                "what a wrong password would")
        admit(username)
        try:
            self._bind(uri, absent_dn, box)
        except InvalidCredentials:
            pass
        raise UnknownUser(f"no such user {username!r}")

    def _lookup_on(self, uri: str, username: str) -> DirectoryUser:
        config = self.config
        reader = self._service(uri) or self._anonymous(uri)
        if config.user_dn_template is not None and not config.refresh_dn_on_bind:
            dn = config.user_dn_template % {"user": escape_rdn(username)}
            entry = self._read_entry(reader, dn)
            if not entry:
                raise UnknownUser(f"no such user {username!r}")
        else:
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
        trace = current()
        # Active Directory walks nested groups itself: traced, each group's memberOf shows the way.
        parents = "memberOf" if trace is not None and isinstance(self.group_type, ActiveDirectory) else None
        if trace is not None:
            trace.step("mapped", "\n".join(
                [f"username ({config.username_attr}): {canonical!r}",
                 *(f"{key} ({attr}): {attributes[key]!r}" if attributes[key] else f"{key} ({attr}): not set"
                   for key, attr in config.user_attr_map.items())]))
            trace.step("groups", _how_groups_are_found(self.group_type, config))
            for group_dn in values(entry, "memberOf") if parents else ():
                trace.member(dn, str(group_dn))
        groups = self.group_type.user_groups(UserEntry(dn, username, entry),
                                             _GroupSearch(reader, config.group_search, config.group_name_attr,
                                                          parents))
        log.debug("user %r is %s with %d groups: %s", username, dn, len(groups),
                  ", ".join(g.name or "(unpublished)" for g in groups) or "-")
        if trace is not None:
            trace.step("groups", _group_paths(trace, dn, canonical, groups, self.group_type))
        return DirectoryUser(dn=dn, username=canonical, attributes=attributes, groups=groups)

    def _user_attributes(self) -> list[str]:
        if current() is not None and isinstance(self.group_type, ActiveDirectory):
            return [*self._user_attrs, "memberOf"]  # traced: the user's direct groups, for the paths
        return self._user_attrs

    def _find_user(self, conn: ldap3.Connection, searches: tuple[Search, ...],
                   username: str) -> tuple[str, dict[str, Any]] | None:
        """The one entry the user search (of several, their union) finds for this name; None for none.
        An entry two searches find counts once; two entries are nobody (ambiguous)."""
        union: dict[str, tuple[str, dict[str, Any]]] = {}
        queries = []
        for search in searches:
            query = search.filter % {"user": escape_filter_chars(username)}
            queries.append(query)
            for entry in self._search(conn, search.base_dn, search.scope, query, self._user_attributes(),
                                      limit=USER_CANDIDATES, configured="ldap.user_search.base_dn"):
                union.setdefault(normalize_dn(entry[0]), entry)
        entries = list(union.values())
        query = " or ".join(dict.fromkeys(queries))
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
        """A user's entry by its DN (from ``user_dn_template``); {} when there is no such entry."""
        entries = self._search(conn, dn, "base", "(objectClass=*)", self._user_attributes(), limit=1,
                               configured=None)
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
        configured: str | None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Entries that identify a user: at most ``limit`` + the fact there were more; nothing for
        a referral we do not follow. ``configured`` names the key ``base`` comes from: a base that does
        not exist is DirectoryUnavailable. None: ``base`` is a user's entry, which may not exist; its
        parent must (the server says which entry it found nearest, RFC 4511's matchedDN)."""
        log.debug("search base=%r scope=%s filter=%r", base, scope, query)
        _sent("search")
        conn.search(base, query, SCOPES[scope], attributes=attributes, size_limit=limit)
        result = conn.result or {}
        entries = _entries(conn)
        code = result.get("result")
        if code == NO_SUCH_OBJECT:
            if configured is not None:
                raise _base_missing(base, configured, result)
            parent = _parent_dn(base)
            if parent and normalize_dn(str(result.get("dn") or "")) != normalize_dn(parent):
                raise _base_missing(parent, "the parent of ldap.user_dn_template", result)
        # 4 sizeLimitExceeded with our own limit reached: there are more (an ambiguous name).
        elif code not in (0, 10) and not (code == 4 and len(entries) >= limit):
            raise DirectoryUnavailable(
                f"search under {base!r} failed: {result.get('description')} {result.get('message')}"
            )
        log.debug("search found %d entries", len(entries))
        if (trace := current()) is not None:
            trace.step("search", f"base {base}, scope {scope}, filter {query}: {_found(entries)}")
        return entries

    # -- check-config --online ----------------------------------------------------------------

    def _examine(self, uri: str) -> ServerReport:
        config = self.config
        checks: list[Check] = []
        try:
            conn = self._connect(uri)
        except TRANSPORT_ERRORS as exc:
            self._drop_connections(uri)
            return ServerReport(uri, ((False, f"reachable: {failure_text(exc)}"),))
        skew = None
        try:
            checks.append((True, f"reachable: {self.transport_security(uri)}"))
            if config.bind_dn:
                refused = self._authenticate(conn)
                checks.append((refused is None, f"service bind as {config.bind_dn}: "
                               + ("accepted" if refused is None else f"refused: {refused}")))
                if refused is not None:
                    return ServerReport(uri, tuple(checks))
            else:
                accepted = conn.bind(read_server_info=False)
                checks.append((bool(accepted), "anonymous bind (no ldap.bind_dn): " + (
                    "accepted" if accepted else f"refused: {refusal_reason(conn.result or {})}")))
            asked = time.time()
            conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["supportedCapabilities", "currentTime"])
            root = (_entries(conn) or [("", {})])[0][1]
            skew = _clock_skew(first(root, "currentTime"), (asked + time.time()) / 2)
            as_user = config.user_dn_template is not None and not config.bind_dn
            for dn, key in self._searched_bases(everything=True):
                checks.append(self._base_check(conn, dn, key, as_user=as_user and key != "ldap.user_search.base_dn"))
            if not isinstance(self.group_type, MemberOf | NoGroups):
                checks += [self._group_search_check(conn, search, as_user=as_user) for search in config.group_search]
            checks += self._group_type_checks(uri, {str(v) for v in values(root, "supportedCapabilities")})
        except TRANSPORT_ERRORS as exc:
            self._drop_connections(uri)
            checks.append((False, f"stopped answering: {failure_text(exc)}"))
        finally:
            _unbind_quietly(conn)
        return ServerReport(uri, tuple(checks), skew)

    def _searched_bases(self, *, everything: bool = False) -> list[tuple[str, str]]:
        """The base DNs the configuration names, with their keys. Without a service account, a
        user_dn_template's entries and groups are read as the user, so only ``everything`` has those."""
        config = self.config
        as_user = config.user_dn_template is not None and not config.bind_dn
        bases: list[tuple[str, str]] = []
        bases += [(search.base_dn, "ldap.user_search.base_dn") for search in config.user_search]
        if config.user_dn_template is not None and not config.refresh_dn_on_bind and (everything or not as_user):
            bases.append((template_parent(config.user_dn_template), "the parent of ldap.user_dn_template"))
        if everything or not as_user:
            bases += [(search.base_dn, "ldap.group_search.base_dn") for search in config.group_search]
        return bases

    def _base_check(self, conn: ldap3.Connection, dn: str, key: str, *, as_user: bool) -> Check:
        result = _read_base(conn, dn)
        code, nearest = result.get("result"), str(result.get("dn") or "")
        if code == 0:
            return True, f"{key} {dn} exists"
        if as_user:  # read as the user at sign-in: an anonymous search may be refused, or told nothing
            return None, (f"{key} {dn}: not checked, the directory is read as the user (no ldap.bind_dn); "
                          f"anonymously: {result.get('description')}")
        if code == NO_SUCH_OBJECT:
            return False, f"{key} {dn}: base DN does not exist" + (
                f" (the nearest entry that does: {nearest})" if nearest else "")
        if code == 10:
            where = ", ".join(result.get("referrals") or []) or "another server"
            followed = "followed" if self.config.referrals else "NOT followed (ldap.referrals is false)"
            return self.config.referrals, f"{key} {dn} is a referral to {where}: {followed}"
        return False, f"{key} {dn}: cannot be read: {result.get('description')} {result.get('message') or ''}".rstrip()

    def _group_search_check(self, conn: ldap3.Connection, search: Search, *, as_user: bool) -> Check:
        conn.search(search.base_dn, search.filter, SCOPES[search.scope], attributes=["1.1"], size_limit=1)
        result, entries = conn.result or {}, _entries(conn)
        what = f"group search {search.filter} under {search.base_dn}"
        if entries:
            return True, f"{what} answers (a group: {entries[0][0]})"
        if as_user:
            return None, f"{what}: not checked, groups are read as the user (no ldap.bind_dn)"
        if result.get("result") == NO_SUCH_OBJECT:
            return None, f"{what}: not asked, its base DN does not exist"
        if result.get("result") == 0:
            return False, f"{what} finds no group at all: nobody would be in any group"
        return False, f"{what} failed: {result.get('description')} {result.get('message') or ''}".rstrip()

    def _group_type_checks(self, uri: str, capabilities: set[str]) -> list[Check]:
        kind = self.group_type
        if isinstance(kind, NoGroups):
            return [(None, "no ldap.group_type: users are in no groups")]
        refusal = kind.refusal(uri, capabilities)
        checks: list[Check] = [(refusal is None, refusal or (
            f"ldap.group_type {kind.name} fits: the server is {kind.requires.server}" if kind.requires
            else f"ldap.group_type {kind.name} needs nothing the server must announce"))]
        if AD_CAPABILITY in capabilities and not isinstance(kind, ActiveDirectory):
            checks.append((None, f"the server is Active Directory: ldap.group_type active_directory would find "
                                 f"nested groups in one search ({kind.name} is configured)"))
        return checks

    # -- is the group type one this server can answer? --------------------------------------------

    def _check_group_type_everywhere(self) -> None:
        problems, answered = [], False
        for uri in self.config.server_uri:
            try:
                self._require_group_type(uri)
                answered = True
            except TRANSPORT_ERRORS as exc:
                self._drop_connections(uri)
                log.warning("directory server %s failed: %s", uri, failure_text(exc))
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
            if (trace := current()) is not None and self.group_type.requires is not None:
                trace.step("group type", mismatch or f"{uri} announces {self.group_type.requires.server} "
                           f"(capability {self.group_type.requires.oid}): ldap.group_type fits")
        if (mismatch := self._group_type_checked[uri]) is not None:
            raise DirectoryUnavailable(mismatch)

    def _group_type_mismatch(self, uri: str) -> str | None:
        if self.group_type.requires is None:
            return None  # nothing to ask the server
        conn = self._service_or_anonymous(uri)
        _sent("search")
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
        conn = self._connect(uri)
        with _closed_on_failure(conn):
            reason = self._authenticate(conn)
        if reason is not None:
            conn.unbind()
            raise DirectoryUnavailable(f"service account {self.config.bind_dn!r} refused: {reason}")
        return conn

    def _authenticate(self, conn: ldap3.Connection) -> str | None:
        """Bind an open connection as the service account: None, or why the directory refused."""
        assert self.config.bind_password is not None
        accepted = _simple_bind(conn, self.config.bind_dn, self.config.bind_password.reveal().encode("utf-8"))
        reason = None if accepted else refusal_reason(conn.result or {})
        if (trace := current()) is not None:
            trace.step("bind", f"as the service account {self.config.bind_dn}: "
                               + ("accepted" if reason is None else f"refused: {reason}"))
        return reason

    def _bind_anonymous(self, uri: str) -> ldap3.Connection:
        conn = self._connect(uri)
        _sent("bind")
        with _closed_on_failure(conn):
            accepted = conn.bind(read_server_info=False)
        if (trace := current()) is not None:
            trace.step("bind", "anonymously (no ldap.bind_dn): " + ("accepted" if accepted else "refused"))
        return conn

    def _drop_connections(self, uri: str) -> None:
        for pool in ("service", "anonymous", "user"):
            conn = self._local.__dict__.get(pool, {}).pop(uri, None)
            if conn is not None:
                with self._kept_lock:
                    self._open.discard(conn)
                _unbind_quietly(conn)
        # ldap3's Server remembers a failed address for a while and then refuses to try it at all
        # ("invalid server address"): the next attempt gets a new one, and the real reason.
        self._local.__dict__.get("servers", {}).pop(uri, None)

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
        reason = None if accepted else refusal_reason(conn.result or {})
        if (trace := current()) is not None:
            trace.step("bind", f"as {dn}: " + ("password accepted" if reason is None else f"refused: {reason}"))
        if reason is None:
            return conn
        if ad_sub_code(conn.result or {}) in RIGHT_PASSWORD_REFUSALS:
            raise AccountRefused(f"directory accepted the password for {dn} but refused the sign-in: {reason}")
        raise InvalidCredentials(f"directory refused the password for {dn}: {reason}")

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
        _sent("connect")
        try:
            conn.open()
            if config.start_tls and not conn.start_tls():
                result = conn.result or {}
                raise lx.LDAPStartTLSError(f"StartTLS refused: {result.get('description')} "
                                           f"{result.get('message') or ''}".rstrip())
        except TRANSPORT_ERRORS:
            _unbind_quietly(conn)
            # ldap3 leaves the socket of a connection that failed to open for the garbage collector.
            with contextlib.suppress(Exception):
                conn.socket.close()
            raise
        if (trace := current()) is not None:
            trace.step("connect", f"{uri}: connected, {self.transport_security(uri)}")
        return conn

    def transport_security(self, uri: str) -> str:
        """How a connection to ``uri`` is protected, in words."""
        config = self.config
        if not uri.lower().startswith("ldaps:") and not config.start_tls:
            return "no TLS: passwords cross the network in clear (use ldaps:// or ldap.start_tls)"
        how = "TLS (ldaps)" if uri.lower().startswith("ldaps:") else "StartTLS"
        if config.ignore_cert_errors:
            return f"{how}, the certificate NOT checked (ldap.ignore_cert_errors)"
        trusted = " and ".join(filter(None, [config.ca_file, config.ca_dir and f"the CAs in {config.ca_dir}"]))
        ours = f", our certificate {config.client_cert} presented" if config.client_cert else ""
        return f"{how}, the certificate checked against " + (trusted or "the system's CAs") + ours

    @staticmethod
    def _make_tls(config: LdapConfig) -> ldap3.Tls:
        """Certificates checked against ca_file and the CAs of ca_dir (the system's without either); ours
        presented when the directory asks for one (mutual TLS)."""
        client: dict[str, Any] = {}
        if config.client_cert:
            client = {"local_certificate_file": config.client_cert, "local_private_key_file": config.client_key,
                      "local_private_key_password": config.client_key_password.reveal()
                      if config.client_key_password else None}
        if config.ignore_cert_errors:
            return ldap3.Tls(validate=ssl.CERT_NONE, **client)
        return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file,
                         ca_certs_data=ca_dir_pem(config.ca_dir) if config.ca_dir else None, **client)


@dataclass(frozen=True, slots=True)
class _GroupSearch:
    """``ldap.group_search`` over one connection, paged: the GroupSearch a group type is given."""

    conn: ldap3.Connection
    searches: tuple[Search, ...]
    name_attr: str
    parents_attr: str | None = None  # traced only: an attribute naming each group's own groups

    def groups(self, clause: str) -> tuple[Group, ...]:
        # The configuration requires group_search with every group type that searches.
        assert self.searches
        name_attr, parents = self.name_attr, self.parents_attr
        union: dict[str, tuple[str, dict[str, Any]]] = {}
        for search in self.searches:  # of several, the union: a group two of them find counts once
            for dn, attrs in self._all(search.base_dn, search.scope, f"(&{search.filter}{clause})",
                                       [name_attr, parents] if parents else [name_attr]):
                union.setdefault(normalize_dn(dn), (dn, attrs))
        entries = list(union.values())
        if parents and (trace := current()) is not None:
            for dn, attrs in entries:
                for parent in values(attrs, parents):
                    trace.member(dn, str(parent))
        return tuple(Group.named(dn, (values(attrs, name_attr) or [rdn_value(dn)])[0]) for dn, attrs in entries)

    def _all(self, base: str, scope: str, query: str, attributes: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """Every entry that matches, page by page (RFC 2696). Anything but a complete success is
        DirectoryUnavailable: a partial list must never decide."""
        conn = self.conn
        log.debug("paged search base=%r scope=%s filter=%r", base, scope, query)
        entries: list[tuple[str, dict[str, Any]]] = []
        cookie: bytes | None = None
        for _ in range(MAX_PAGES):
            _sent("search")
            conn.search(base, query, SCOPES[scope], attributes=attributes,
                        paged_size=PAGE_SIZE, paged_cookie=cookie)
            result = conn.result or {}
            entries += _entries(conn)
            if result.get("result") == NO_SUCH_OBJECT:  # base is ldap.group_search.base_dn
                raise _base_missing(base, "ldap.group_search.base_dn", result)
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
                if (trace := current()) is not None:
                    trace.step("search", f"base {base}, scope {scope}, filter {query}: {_found(entries)}")
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


# This thread's round trips in the try under way on one server (Directory._on_some_server counts
# them into auth_sidecar_directory_requests_total once the try ends); None outside a try.
_TALLY = threading.local()


def _sent(request: str) -> None:
    """One request about to go to the directory server of the try under way."""
    counts: Counter[str] | None = getattr(_TALLY, "counts", None)
    if counts is not None:
        counts[request] += 1


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
    _sent("bind")
    try:
        return bool(conn.bind(read_server_info=False))
    finally:
        conn.request = None  # ldap3's copy of the last request, password and all


@contextlib.contextmanager
def _closed_on_failure(conn: ldap3.Connection) -> Iterator[None]:
    """A connection not yet kept is closed when its first bind fails in transit (a directory that
    refuses our TLS session once it sees no client certificate): nobody else would close it."""
    try:
        yield
    except TRANSPORT_ERRORS:
        _unbind_quietly(conn)
        with contextlib.suppress(Exception):
            conn.socket.close()
        raise


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


def failure_text(exc: BaseException) -> str:
    """Why a server failed, in plain words. ldap3 wraps some of its messages in the text of a tuple,
    nested (a TLS failure: ``("('socket ssl wrapping error: [SSL: ...] ... (_ssl.c:1006)',)",)``),
    and says others its own way ("socket connection error while opening: [Errno 111] ...")."""
    args = exc.args
    if len(args) == 2 and isinstance(args[1], list):  # ldap3 tried several addresses: each and why
        said = "; ".join(f"{address[0] if isinstance(address, tuple) else address}: {failure_text(failed)}"
                         for failed, address in args[1])
    else:
        said = _innermost(args) or str(exc) or type(exc).__name__
    if (tls := TLS_FAILED.match(said)) is not None:
        said = "TLS failed: " + _tls_reason(SSL_NOISE.sub("", said[tls.end():]).strip())
    elif (connect := CONNECT_FAILED.match(said)) is not None:
        rest = said[connect.end():]
        said = "cannot connect: " + rest[:1].lower() + rest[1:]
    elif said == "invalid server address":
        said = "its host name does not resolve (invalid server address)"
    return said if len(said) < 300 else said[:297] + "..."


def _innermost(said: Any) -> str:
    """The message within ldap3's wrappings: the first of a tuple, or of the text of one."""
    for _ in range(5):
        if isinstance(said, tuple | list):
            if not said:
                return ""
            said = said[0]
        elif isinstance(said, str) and said[:2] in ("('", '("') and said.endswith(")"):
            try:
                said = ast.literal_eval(said)
            except (ValueError, SyntaxError):
                break
        else:
            break
    return str(said)


def _tls_reason(said: str) -> str:
    verify = "certificate verify failed: "
    if said.startswith(verify):
        why = said[len(verify):]
        if "mismatch" in why or "not valid for" in why:
            return f"the server's certificate does not name this host ({why}): connect by a name it holds"
        return f"the server's certificate is not trusted ({why}): ldap.ca_file must be the CA that signed it"
    if "wrong version number" in said or "packet length too long" in said:
        return f"{said}: the server does not speak TLS on this port (ldaps:// needs its TLS port, often 636)"
    return said


def _base_missing(dn: str, key: str, result: Mapping[str, Any], *, logged: bool = True) -> DirectoryUnavailable:
    """A base DN of the configuration that the server says does not exist (noSuchObject): a 503 to
    raise, logged unless ``logged`` is false. The server names the nearest entry it found (matchedDN)."""
    nearest = str(result.get("dn") or "")
    reason = f"base DN does not exist: {dn} ({key}" + (f"; the nearest entry that does: {nearest}" if nearest
                                                        else "") + ")"
    if logged:
        log.error("%s", reason)  # test-login shows log lines among its steps
    elif (trace := current()) is not None:
        trace.step("search", reason)
    return DirectoryUnavailable(reason)


def _clock_skew(current_time: str, ours: float) -> float | None:
    """The server's clock minus ours from a GeneralizedTime (``20240315123456.0Z``), if it gave one."""
    try:
        theirs = datetime.strptime(current_time[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return theirs.timestamp() - ours


def _read_base(conn: ldap3.Connection, dn: str) -> Mapping[str, Any]:
    """The server's answer to reading the entry at ``dn`` (no attributes): whether it exists."""
    _sent("search")
    conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["1.1"], size_limit=1)
    return conn.result or {}


def _parent_dn(dn: str) -> str:
    try:
        return ",".join(to_dn(dn)[1:])
    except lx.LDAPInvalidDnError:
        return ""


def template_parent(template: str) -> str:
    """Where a ``user_dn_template`` puts users: the DN without its first RDN."""
    return _parent_dn(template % {"user": "x"})


def _found(entries: list[tuple[str, dict[str, Any]]]) -> str:
    if not entries:
        return "no entry"
    shown = "; ".join(dn for dn, _ in entries[:5]) + ("; ..." if len(entries) > 5 else "")
    return f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}: {shown}"


def _how_groups_are_found(kind: GroupType, config: LdapConfig) -> str:
    if isinstance(kind, NoGroups):
        return "no ldap.group_type: the user is in no groups"
    among = " under " + " and ".join(f"{s.base_dn} ({s.scope}, {s.filter})" for s in config.group_search) \
        if config.group_search else ""
    name = f"ldap.group_type {kind.name}"
    if isinstance(kind, MemberOf):
        return f"{name}: the user entry's memberOf, direct groups only" + (
            ", those under " + " or ".join(s.base_dn for s in config.group_search) if config.group_search else "")
    if isinstance(kind, ActiveDirectory):
        return f"{name}: one search{among}; the server walks nested groups (matching rule {AD_MATCHING_RULE_IN_CHAIN})"
    if isinstance(kind, NestedMemberDN):
        return f"{name}: the groups{among} that list the user, then theirs, up to ldap.max_nesting={kind.max_nesting}"
    return f"{name}: the groups{among} that list the user (direct groups only)"


def _group_paths(trace: Trace, user_dn: str, username: str, groups: tuple[Group, ...], kind: GroupType) -> str:
    """Each group, and the way the user is in it: the memberships the trace saw, from the user up."""
    if not groups:
        return "the user is in no group"
    names = {normalize_dn(g.dn): g.name or rdn_value(g.dn) for g in groups}
    user = normalize_dn(user_dn)
    names[user] = username
    up: dict[str, list[str]] = {}
    for member, of in trace.memberships:
        up.setdefault(normalize_dn(member), []).append(normalize_dn(of))
    came_from: dict[str, str] = {}
    frontier, seen = [user], {user}
    while frontier:  # breadth first: the shortest way in
        next_level = []
        for node in frontier:
            for parent in up.get(node, ()):
                if parent not in seen:
                    seen.add(parent)
                    came_from[parent] = node
                    next_level.append(parent)
        frontier = next_level
    nested = isinstance(kind, NestedMemberDN | ActiveDirectory)
    lines = [f"{len(groups)} group{'' if len(groups) == 1 else 's'}, each with the way in:"]
    for group in sorted(groups, key=lambda g: (g.name or g.dn).casefold()):
        key = normalize_dn(group.dn)
        if key in came_from:
            chain = [key]
            while chain[-1] != user:
                chain.append(came_from[chain[-1]])
            way = " → ".join(names.get(k, k) for k in reversed(chain))
        else:
            way = f"{username} → {names[key]}" if not nested else "(the way in was not seen)"
        lines.append(f"  {way}   ({group.dn}{'' if group.name else ', a name that is not published'})")
    return "\n".join(lines)

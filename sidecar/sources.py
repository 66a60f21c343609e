"""Identity sources: where identities come from, each behind one small protocol, in one registry.

Every source has an ``id`` — ``ldap``, ``local``, ``oidc:<provider>`` — that the identities it makes
carry as ``Identity.source``, and describes a signed-in user again on demand (:meth:`renew`): the
directory and the users file read the user anew, a provider uses the session's refresh token. The
:class:`Registry` finds a session's source by that id, so a session is re-checked, or has its
groups read again after a restart, through whichever source signed it in.

Password sources also check a username and password; :class:`Sources` asks them in the configured
order. The next is asked only when one does not know the user or cannot be reached; a wrong
password for a user a source knows ends the search.

Several directories (``ldap:`` as a list) are asked in order, and a name none of them knows goes on
to the next source. A directory that cannot answer (down, or an incomplete answer) ends the search
through the directories: the ones after it are not asked, since the same name there may be somebody
else. The users file is still asked (the seed's "fall back to built-in users in the event of a
failure": its names are the operator's own); when it does not know the name either, the answer is
the outage (503), never "no such user".
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from sidecar.errors import AccountRefused, AuthError, DirectoryUnavailable, InvalidCredentials, UnknownUser
from sidecar.identity import Identity
from sidecar.ldap import Directory, DirectoryUser
from sidecar.local import LocalUsers
from sidecar.policy import GroupPolicy, NamePolicy
from sidecar.sessions import Session
from sidecar.trace import current

T = TypeVar("T")


# Called with a source's own spelling of the user once it has found them, before it checks the
# password: the regulation's budget for that name (it raises Throttled when spent).
Admit = Callable[[str], None]


class IdentitySource(Protocol):
    id: str

    async def renew(self, session: Session) -> Session:
        """The session with its identity described anew; AuthError when it no longer stands."""
        ...


class PasswordSource(IdentitySource, Protocol):
    async def check_password(self, username: str, password: str, admit: Admit | None = None) -> Identity: ...

    async def lookup(self, username: str) -> Identity: ...


async def _read_again(source: PasswordSource, session: Session) -> Session:
    return dataclasses.replace(session, identity=await source.lookup(session.identity.username))


class LdapSource:
    """A directory; its identities' source is ``ldap``, or ``ldap:<name>`` of several."""

    def __init__(self, directory: Directory, policy: GroupPolicy) -> None:
        self.directory = directory
        self.policy = policy
        self.id = directory.config.source_id

    async def check_password(self, username: str, password: str, admit: Admit | None = None) -> Identity:
        return self.policy.identity(await self.directory.check_password(username, password, admit))

    async def lookup(self, username: str) -> Identity:
        return self.policy.identity(await self.directory.lookup(username))

    def unknown(self, username: str) -> Identity:
        """The identity of a name this directory does not know, under its rules: no groups, no flags
        (refused when its rules require a group)."""
        return self.policy.identity(DirectoryUser(dn="", username=username, attributes={}, groups=()))

    async def renew(self, session: Session) -> Session:
        return await _read_again(self, session)


def directory_lookup(directories: Sequence[LdapSource], wanted: str) -> Callable[[str], Awaitable[Identity]]:
    """groups_from_directory: the identity the directory named ``wanted`` ("": each in order, the first
    that knows the name) gives a name. One that cannot answer raises, and no later one is asked."""
    chosen = [d for d in directories if not wanted or d.directory.config.name == wanted]

    async def lookup(username: str) -> Identity:
        for source in chosen:
            try:
                return await source.lookup(username)
            except UnknownUser:
                continue
        return chosen[0].unknown(username)

    return lookup


class LocalSource:
    """The users file. Hashing is slow on purpose, so it runs in this source's own threads. Its
    ``local_users`` group rules (and groups from the directory) apply to every user it vouches for."""

    id = "local"

    def __init__(self, users: LocalUsers, threads: int = 2, policy: NamePolicy | None = None) -> None:
        self.users = users
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="hash")
        self._policy = policy

    async def check_password(self, username: str, password: str, admit: Admit | None = None) -> Identity:
        if admit is not None and (known := self.users.lookup(username)) is not None:
            admit(known.username)
        user = await self._run(self.users.verify, username, password)
        if (trace := current()) is not None:
            trace.step("users file", f"{self.users.path}: " + (
                "password accepted" if user else "no such user" if self.users.lookup(username) is None
                else "wrong password"))
        if user is None:
            if self.users.lookup(username) is None:  # fresh: verify has just re-read the file
                raise UnknownUser(f"no local user {username!r}")
            raise InvalidCredentials(f"wrong password for local user {username!r}")
        return await self._allowed(user.identity(), user.is_active)

    async def lookup(self, username: str) -> Identity:
        user = await self._run(self.users.lookup, username)  # it may re-read a changed file
        if user is None:
            raise UnknownUser(f"local user {username!r} is gone")
        return await self._allowed(user.identity(), user.is_active)

    async def renew(self, session: Session) -> Session:
        return await _read_again(self, session)

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _allowed(self, identity: Identity, active: bool) -> Identity:
        if not active:
            raise AccountRefused(f"local user {identity.username} is not active")
        return identity if not self._policy else await self._policy.admit(identity)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Sources:
    """The password sources, in the order they are asked."""

    def __init__(self, sources: Sequence[PasswordSource]) -> None:
        if not sources:
            raise ValueError("at least one password source is needed")
        self.sources = tuple(sources)

    async def check_password(self, username: str, password: str, admit: Admit | None = None) -> Identity:
        passed_over: AuthError | None = None
        outage: DirectoryUnavailable | None = None
        trace = current()
        for source in self.sources:
            if outage is not None and isinstance(source, LdapSource):
                # An earlier directory could not say whether the name is its user's: this one's
                # user of that name may be somebody else.
                if trace is not None:
                    trace.step("source", f"{source.id} is not asked: an earlier directory could not answer")
                continue
            if trace is not None:
                trace.step("source", f"asking {source.id}")
            try:
                return await source.check_password(username, password, admit)
            except (UnknownUser, DirectoryUnavailable) as exc:
                passed_over = exc  # this source cannot say: ask the next one
                if isinstance(exc, DirectoryUnavailable) and outage is None:
                    outage = exc
                if trace is not None:
                    more = "the next source is asked" if source is not self.sources[-1] else "no other source"
                    trace.step("source", f"{source.id} cannot say ({exc.reason}): {more}")
        # Nobody knows the name, but a directory could not answer: that is the answer (503), not "no such user".
        failure = outage or passed_over
        assert failure is not None
        raise failure


class Registry:
    """Every configured identity source, by id."""

    def __init__(self, sources: Iterable[IdentitySource] = ()) -> None:
        self._by_id: dict[str, IdentitySource] = {}
        self.add(sources)

    def add(self, sources: Iterable[IdentitySource]) -> None:
        for source in sources:
            self._by_id[source.id] = source

    def __contains__(self, source_id: str) -> bool:
        return source_id in self._by_id

    def ids(self) -> list[str]:
        """Every source's id, in the order they were added."""
        return list(self._by_id)

    async def renew(self, session: Session) -> Session:
        who = session.identity
        source = self._by_id.get(who.source)
        if source is None:
            raise UnknownUser(f"{who.username} came from {who.source!r}, which is not configured")
        return await source.renew(session)

"""Password sources: the places a username and password are checked, asked in a configured order.

Each source turns credentials into an :class:`~sidecar.identity.Identity` (or raises), and can
describe a user again without the password, so a browser session stays true to its source.
The next source is asked only when one does not know the user or cannot be reached; a wrong
password for a user a source knows ends the search.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from sidecar.errors import AccessDenied, AuthError, DirectoryUnavailable, InvalidCredentials, UnknownUser
from sidecar.identity import Identity
from sidecar.ldap import Directory
from sidecar.local import LocalUsers
from sidecar.policy import GroupPolicy

T = TypeVar("T")


# Called with a source's own spelling of the user once it has found them, before it checks the
# password: the regulation's budget for that name (it raises Throttled when spent).
Admit = Callable[[str], None]


class PasswordSource(Protocol):
    name: str

    async def check_password(self, username: str, password: str, admit: Admit | None = None) -> Identity: ...

    async def lookup(self, username: str) -> Identity: ...


class LdapSource:
    name = "ldap"

    def __init__(self, directory: Directory, policy: GroupPolicy) -> None:
        self.directory = directory
        self.policy = policy

    async def check_password(self, username: str, password: str, admit: Admit | None = None) -> Identity:
        return self.policy.identity(await self.directory.check_password(username, password, admit))

    async def lookup(self, username: str) -> Identity:
        return self.policy.identity(await self.directory.lookup(username))


class LocalSource:
    """The users file. Hashing is slow on purpose, so it runs in this source's own threads."""

    name = "local"

    def __init__(self, users: LocalUsers, threads: int = 2) -> None:
        self.users = users
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="hash")

    async def check_password(self, username: str, password: str, admit: Admit | None = None) -> Identity:
        if admit is not None and (known := self.users.lookup(username)) is not None:
            admit(known.username)
        user = await self._run(self.users.verify, username, password)
        if user is None:
            if self.users.lookup(username) is None:  # fresh: verify has just re-read the file
                raise UnknownUser(f"no local user {username!r}")
            raise InvalidCredentials(f"wrong password for local user {username!r}")
        return self._allowed(user.identity(), user.is_active)

    async def lookup(self, username: str) -> Identity:
        user = await self._run(self.users.lookup, username)  # it may re-read a changed file
        if user is None:
            raise UnknownUser(f"local user {username!r} is gone")
        return self._allowed(user.identity(), user.is_active)

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    @staticmethod
    def _allowed(identity: Identity, active: bool) -> Identity:
        if not active:
            raise AccessDenied(f"local user {identity.username} is not active")
        return identity

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Sources:
    def __init__(self, sources: Sequence[PasswordSource]) -> None:
        if not sources:
            raise ValueError("at least one password source is needed")
        self.sources = tuple(sources)
        self._by_name = {source.name: source for source in sources}

    async def check_password(self, username: str, password: str, admit: Admit | None = None) -> Identity:
        passed_over: AuthError | None = None
        for source in self.sources:
            try:
                return await source.check_password(username, password, admit)
            except (UnknownUser, DirectoryUnavailable) as exc:
                passed_over = exc  # this source cannot say: ask the next one
        assert passed_over is not None
        raise passed_over

    async def lookup(self, identity: Identity) -> Identity:
        source = self._by_name.get(identity.source)
        if source is None:
            raise UnknownUser(f"{identity.username} came from {identity.source!r}, which is not configured")
        return await source.lookup(identity.username)

"""Group queries: and, or and not over a user's groups (django-auth-ldap's ``LDAPGroupQuery``).

A query is a group (a DN for ``ldap:``, a name elsewhere), or ``{and: [...]}``, ``{or: [...]}``,
``{not: ...}`` of queries, nested. A *rule* (``require_group``, ``deny_group``, a flag of
``user_flags_by_group``, an access rule's ``groups``) is a list of queries, any of which may hold:
a plain list of groups means "a member of one of them", as it always has.

Pure data and logic: the configuration builds queries, :class:`Rule` compiles them once (each
group in the form it is compared in), and a rule that is a plain list is a set intersection, as
cheap as before queries existed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass

MAX_DEPTH = 16  # queries nested deeper are refused by the configuration


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Query


Query = str | AllOf | AnyOf | Not


def holds(query: Query, member: Callable[[str], bool]) -> bool:
    """Whether the query holds for a user in exactly the groups ``member`` says yes to."""
    if isinstance(query, str):
        return member(query)
    if isinstance(query, AllOf):
        return all(holds(part, member) for part in query.parts)
    if isinstance(query, AnyOf):
        return any(holds(part, member) for part in query.parts)
    return not holds(query.part, member)


def leaves(query: Query) -> Iterator[str]:
    """Every group the query names."""
    if isinstance(query, str):
        yield query
    elif isinstance(query, Not):
        yield from leaves(query.part)
    else:
        for part in query.parts:
            yield from leaves(part)


def mapped(query: Query, key: Callable[[str], str]) -> Query:
    """The same query with every group written as ``key`` makes it."""
    if isinstance(query, str):
        return key(query)
    if isinstance(query, Not):
        return Not(mapped(query.part, key))
    return type(query)(tuple(mapped(part, key) for part in query.parts))


def shown(query: Query) -> str:
    """The query as the configuration says it, on one line."""
    if isinstance(query, str):
        return query
    if isinstance(query, Not):
        return f"not {shown(query.part)}"
    word = " and " if isinstance(query, AllOf) else " or "
    return "(" + word.join(shown(part) for part in query.parts) + ")"


class Rule:
    """A rule compiled once: its queries with each group as ``key`` writes it (normalize_dn, fold)."""

    __slots__ = ("groups", "queries", "_plain")

    def __init__(self, queries: tuple[Query, ...], key: Callable[[str], str]) -> None:
        self.queries = tuple(mapped(query, key) for query in queries)
        self.groups = frozenset(group for query in self.queries for group in leaves(query))
        self._plain = all(isinstance(query, str) for query in self.queries)

    def __bool__(self) -> bool:
        return bool(self.queries)

    def holds(self, groups: Set[str]) -> bool:
        """Whether one of the queries holds for a user in ``groups`` (written as ``key`` writes them)."""
        if self._plain:
            return not self.groups.isdisjoint(groups)
        return any(holds(query, groups.__contains__) for query in self.queries)

    def __repr__(self) -> str:
        return f"<Rule {', '.join(map(shown, self.queries))}>"

"""``auth-sidecar import-netbox ldap_config.py``: NetBox's django-auth-ldap settings as an ``ldap:`` section.

The file is read, never executed: :mod:`ast` parses it and a restricted reader evaluates what
settings are made of — literals, names assigned earlier in the file, ``+`` of strings, the
django-auth-ldap constructors (``LDAPSearch``, ``LDAPSearchUnion``, every group type,
``LDAPGroupQuery`` with ``&``, ``|``, ``~``), ``ldap.SCOPE_*`` and ``ldap.OPT_*`` constants,
``ldap.set_option(...)`` and values read from ``os.environ`` (a secret becomes ``{env: NAME}``,
anything else its default). Nothing else is evaluated: an expression it cannot read is a warning.

The output is YAML with a comment for each key saying which setting it came from, and a
``# WARNING`` line for each setting that has no equivalent, and why. Settings with another prefix
than ``AUTH_LDAP_`` (django-auth-ldap's multiple backends, ``AUTH_LDAP_CORP_SERVER_URI``) become
several named directories. Exit status 0, or 2 when the file cannot be parsed.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.cli import fail
from sidecar.config import ABSENT

SETTINGS = (
    "ALWAYS_UPDATE_USER", "AUTHORIZE_ALL_USERS", "BIND_AS_AUTHENTICATING_USER", "REFRESH_DN_ON_BIND", "BIND_DN",
    "BIND_PASSWORD", "CONNECTION_OPTIONS", "GLOBAL_OPTIONS", "DENY_GROUP", "FIND_GROUP_PERMS", "CACHE_TIMEOUT",
    "GROUP_SEARCH", "GROUP_TYPE", "MIRROR_GROUPS", "MIRROR_GROUPS_EXCEPT", "PERMIT_EMPTY_PASSWORD",
    "REQUIRE_GROUP", "NO_NEW_USERS", "SERVER_URI", "START_TLS", "USER_QUERY_FIELD", "USER_ATTRLIST",
    "USER_ATTR_MAP", "USER_DN_TEMPLATE", "USER_FLAGS_BY_GROUP", "USER_SEARCH", "GROUP_CACHE_TIMEOUT",
    "CACHE_GROUPS", "PROFILE_ATTR_MAP", "PROFILE_FLAGS_BY_GROUP",
)
SETTING = re.compile(r"^AUTH_LDAP_(?:(?P<prefix>[A-Z0-9_]+?)_)??(?P<name>" + "|".join(
    sorted(SETTINGS, key=len, reverse=True)) + ")$")
NETBOX = {"LDAP_IGNORE_CERT_ERRORS": "ignore_cert_errors", "LDAP_CA_CERT_DIR": "ca_dir",
          "LDAP_CA_CERT_FILE": "ca_file"}
SCOPES = {"SCOPE_SUBTREE": "subtree", "SCOPE_ONELEVEL": "one", "SCOPE_BASE": "base"}
# django-auth-ldap's group types, as group_type (and member_attr) here.
GROUP_TYPES = {
    "GroupOfNamesType": ("group_of_names", None),
    "NestedGroupOfNamesType": ("nested_group_of_names", None),
    "GroupOfUniqueNamesType": ("group_of_unique_names", None),
    "NestedGroupOfUniqueNamesType": ("nested_group_of_unique_names", None),
    "OrganizationalRoleGroupType": ("organizational_role", None),
    "NestedOrganizationalRoleGroupType": ("nested_organizational_role", None),
    "PosixGroupType": ("posix_group", None),
    "MemberDNGroupType": ("member_dn", "member_attr"),
    "NestedMemberDNGroupType": ("nested_member_dn", "member_attr"),
    # Direct "member", as django-auth-ldap's ActiveDirectoryGroupType: not nested.
    "ActiveDirectoryGroupType": ("group_of_names", None),
    # Nested "member": Active Directory walks them itself (the same groups, one search).
    "NestedActiveDirectoryGroupType": ("active_directory", None),
}
NOT_NEEDED = {
    "OPT_X_TLS_NEWCTX": "python-ldap's way of applying the TLS options: nothing to say here",
    "OPT_PROTOCOL_VERSION": "the sidecar always speaks LDAPv3",
}
SECRET_KEYS = ("bind_password", "client_key_password")
FLAG_NAMES = ("is_active", "is_staff", "is_superuser")


class Unreadable(Exception):
    """An expression the restricted reader does not evaluate."""


@dataclass(frozen=True)
class Sym:
    """A name of python-ldap's (``ldap.SCOPE_SUBTREE``) or os.environ's, kept by name."""

    name: str


@dataclass(frozen=True)
class Env:
    name: str
    default: Any = None
    has_default: bool = False


@dataclass(frozen=True)
class Search:
    base_dn: Any
    scope: Any
    filter: Any = "(objectClass=*)"
    attrlist: Any = None


@dataclass(frozen=True)
class Union:
    searches: tuple[Any, ...]


@dataclass(frozen=True)
class GroupType:
    kind: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Query:
    """LDAPGroupQuery: a DN, or and / or of queries, possibly negated."""

    op: str  # "dn", "and", "or", "not"
    parts: tuple[Any, ...]


@dataclass
class Directory:
    """One prefix's settings as YAML keys, each with the comment saying where it came from."""

    name: str
    keys: dict[str, tuple[Any, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, comment: str) -> None:
        self.keys[key] = (value, comment)


class Reader:
    """Evaluates the expressions of the file that make its settings, and nothing else."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {}

    def value(self, node: ast.expr) -> Any:  # noqa: C901 - one case per kind of expression
        match node:
            case ast.Constant(value=value):
                return value
            case ast.JoinedStr(values=parts):
                return "".join(str(self.text(part)) for part in parts)
            case ast.FormattedValue(value=inner):
                return self.text(inner)
            case ast.Name(id=name):
                if name in self.names:
                    return self.names[name]
                if name in GROUP_TYPES or name in ("LDAPSearch", "LDAPSearchUnion", "LDAPGroupQuery"):
                    return Sym(name)
                raise Unreadable(f"the name {name} is not assigned earlier in the file")
            case ast.Attribute(value=ast.Name(id="ldap"), attr=attr):
                return Sym(f"ldap.{attr}")
            case ast.Attribute(value=ast.Attribute(value=ast.Name(id="os"), attr="environ")):
                raise Unreadable("os.environ is read with [NAME], .get(NAME) or os.getenv(NAME)")
            case ast.List(elts=items) | ast.Tuple(elts=items) | ast.Set(elts=items):
                return [self.value(item) for item in items]
            case ast.Dict(keys=keys, values=values):
                if any(key is None for key in keys):
                    raise Unreadable("** in a dict")
                return {self._key(key): self.value(value) for key, value in zip(keys, values, strict=True)
                        if key is not None}
            case ast.BinOp(left=left, op=op, right=right):
                return self._binary(self.value(left), op, self.value(right))
            case ast.UnaryOp(op=ast.Invert(), operand=operand):
                inner = self.value(operand)
                if not isinstance(inner, Query):
                    raise Unreadable("~ of something that is no LDAPGroupQuery")
                return Query("not", (inner,))
            case ast.UnaryOp(op=ast.USub(), operand=ast.Constant(value=int() | float() as number)):
                return -number
            case ast.Subscript(value=ast.Attribute(value=ast.Name(id="os"), attr="environ"), slice=key):
                return Env(str(self.value(key)))
            case ast.Call():
                return self._call(node)
        raise Unreadable(f"{type(node).__name__} is not read (only literals, names and the django-auth-ldap "
                         "constructors are)")

    def text(self, node: ast.expr) -> Any:
        value = self.value(node)
        if isinstance(value, Env):
            raise Unreadable(f"${value.name} inside a string")
        return value

    def _key(self, node: ast.expr) -> Any:
        key = self.value(node)
        return key.name if isinstance(key, Sym) else key

    @staticmethod
    def _binary(left: Any, op: ast.operator, right: Any) -> Any:
        if isinstance(op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            return left + right
        if isinstance(op, ast.BitAnd | ast.BitOr) and isinstance(left, Query) and isinstance(right, Query):
            word = "and" if isinstance(op, ast.BitAnd) else "or"
            parts = [p for side in (left, right) for p in (side.parts if side.op == word else (side,))]
            return Query(word, tuple(parts))
        raise Unreadable(f"{type(op).__name__} of {type(left).__name__} and {type(right).__name__}")

    def _call(self, node: ast.Call) -> Any:
        func = node.func
        args = [self.value(arg) for arg in node.args if not isinstance(arg, ast.Starred)]
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise Unreadable("*arguments")
        kwargs = {kw.arg: self.value(kw.value) for kw in node.keywords if kw.arg is not None}
        name = func.id if isinstance(func, ast.Name) else None
        match func:
            case ast.Attribute(value=ast.Attribute(value=ast.Name(id="os"), attr="environ"), attr="get") | \
                    ast.Attribute(value=ast.Name(id="os"), attr="getenv"):
                default = args[1] if len(args) > 1 else kwargs.get("default")
                return Env(str(args[0]), default, len(args) > 1 or "default" in kwargs)
        if name == "LDAPSearch":
            names = ("base_dn", "scope", "filterstr", "attrlist")
            given = dict(zip(names, args, strict=False)) | kwargs
            return Search(given.get("base_dn"), given.get("scope"), given.get("filterstr", "(objectClass=*)"),
                          given.get("attrlist"))
        if name == "LDAPSearchUnion":
            return Union(tuple(args))
        if name == "LDAPGroupQuery":
            if len(args) != 1 or kwargs:
                raise Unreadable("LDAPGroupQuery takes one group DN here")
            return Query("dn", (args[0],))
        if name in GROUP_TYPES:
            return GroupType(name, tuple(args), kwargs)
        if name in CONVERSIONS and len(args) == 1:
            return _converted(name, args[0])
        shown = ast.unparse(func)
        raise Unreadable(f"the call {shown}(...) is not read")


CONVERSIONS: dict[str, Callable[[Any], Any]] = {"str": str, "int": int, "bool": bool, "float": float}


def _converted(name: str, value: Any) -> Any:
    """str(...), int(...), bool(...), float(...) of a value; of os.environ, the variable itself."""
    if isinstance(value, Env):
        return value
    try:
        return CONVERSIONS[name](value)
    except (TypeError, ValueError):
        raise Unreadable(f"{name}({value!r}) is no value") from None


def read_settings(text: str) -> tuple[dict[str, tuple[Any, int]], list[tuple[Any, int]], list[str]]:
    """Every module-level assignment (name -> value and line), ldap.set_option's options, and warnings."""
    tree = ast.parse(text)
    reader = Reader()
    settings: dict[str, tuple[Any, int]] = {}
    options: list[tuple[Any, int]] = []
    warnings: list[str] = []
    for statement in tree.body:
        line = statement.lineno
        match statement:
            case ast.Import() | ast.ImportFrom():
                continue
            case ast.Assign(targets=targets, value=value) | ast.AnnAssign(target=targets, value=value):
                targets = targets if isinstance(targets, list) else [targets]
                _assign(reader, [t.id for t in targets if isinstance(t, ast.Name)], value, line, settings, warnings)
            case ast.Expr(value=ast.Call(func=ast.Attribute(value=ast.Name(id="ldap"), attr="set_option"),
                                         args=[option, value])):
                try:
                    options.append(({reader._key(option): reader.value(value)}, line))
                except Unreadable as exc:
                    warnings.append(f"ldap.set_option (line {line}): not converted: {exc}")
            case _:
                what = ast.unparse(statement).split("\n")[0][:60]
                if "logging" in what or "logger" in what or "handler" in what:
                    warnings.append(f"line {line}: not read: {what} (the sidecar's log: log.level debug, and "
                                    "auth-sidecar test-login for one sign-in step by step)")
                else:
                    warnings.append(f"line {line}: not read: {what} (only settings are)")
    return settings, options, warnings


def _assign(reader: Reader, names: list[str], value: ast.expr | None, line: int,
            settings: dict[str, tuple[Any, int]], warnings: list[str]) -> None:
    if value is None or not names:
        warnings.append(f"line {line}: not read: only assignments to plain names are")
        return
    try:
        evaluated = reader.value(value)
    except Unreadable as exc:
        if _is_setting(names[0]):
            warnings.append(f"{names[0]} (line {line}): not converted: {exc}")
        return
    for name in names:
        reader.names[name] = evaluated
        settings[name] = (evaluated, line)


def _is_setting(name: str) -> bool:
    return name.startswith("AUTH_LDAP_") or name in NETBOX


def convert(text: str, source: str = "ldap_config.py") -> tuple[str, list[str]]:
    """The YAML of the file's settings, and every warning."""
    settings, options, warnings = read_settings(text)
    directories = _directories(settings, options, warnings)
    return _yaml(directories, warnings, source), warnings


def _directories(settings: dict[str, tuple[Any, int]], options: list[tuple[Any, int]],
                 warnings: list[str]) -> dict[str, Directory]:
    """The settings by prefix: one directory each, its keys converted."""
    directories: dict[str, Directory] = {}
    for name, (value, line) in settings.items():
        match = SETTING.match(name)
        if match is None:
            if name.startswith("AUTH_LDAP_"):
                warnings.append(f"{name} (line {line}): not a django-auth-ldap setting; left out")
            continue
        prefix = match.group("prefix") or ""
        directory = directories.setdefault(prefix, Directory(_directory_name(prefix)))
        where = f"{name} (line {line})"
        try:
            _convert(directory, match.group("name"), value, where)
        except Unreadable as exc:
            directory.warnings.append(f"{where}: not converted: {exc}")
    if not directories:
        directories[""] = Directory("")
        warnings.append("no AUTH_LDAP_ setting in the file: fill in server_uri and the user search")
    for directory in directories.values():
        for name, key in NETBOX.items():
            if name in settings:
                value, line = settings[name]
                _plain(directory, key, value, f"NetBox's {name} (line {line})")
        for option, line in options:
            _options(directory, option, f"ldap.set_option (line {line})")
        _defaults(directory, settings)
    return directories


def _yaml(directories: dict[str, Directory], warnings: list[str], source: str) -> str:
    lines = [f"# The ldap: section of {source}, converted by auth-sidecar import-netbox.",
             "# Check it with: auth-sidecar check-config FILE (and --online). Each key says where it came from."]
    lines += [f"# WARNING {w}" for w in warnings]
    listed = len(directories) > 1
    lines.append("ldap:")
    for prefix, directory in sorted(directories.items()):
        lines += [f"# WARNING {w}" for w in directory.warnings]
        warnings += directory.warnings
        indent = "    " if listed else "  "
        first = True
        if listed:
            lines.append(f"  - name: {directory.name}   # settings AUTH_LDAP_{prefix + '_' if prefix else ''}*")
            first = False
        for key, (value, comment) in directory.keys.items():
            lines.append(f"{indent}# {comment}")
            lines.append(f"{'  - ' if listed and first else indent}{key}: {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def _directory_name(prefix: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:32] or "ldap"


def _convert(d: Directory, name: str, value: Any, where: str) -> None:  # noqa: C901 - one setting each
    if name in ("BIND_PASSWORD",):
        _plain(d, "bind_password", value, where)
    elif name == "SERVER_URI":
        uris = value.split() if isinstance(value, str) else value
        _plain(d, "server_uri", uris[0] if isinstance(uris, list) and len(uris) == 1 else uris,
               f"{where}; a list is tried in order")
    elif name in ("BIND_DN", "START_TLS", "USER_DN_TEMPLATE", "FIND_GROUP_PERMS", "REFRESH_DN_ON_BIND",
                  "CACHE_TIMEOUT", "MIRROR_GROUPS_EXCEPT"):
        if name == "MIRROR_GROUPS_EXCEPT" and value is None:
            return
        _plain(d, name.lower(), value, where)
    elif name in ("USER_SEARCH", "GROUP_SEARCH"):
        _plain(d, name.lower(), _search(value), where + ("; a list is their union" if isinstance(value, Union)
                                                         else ""))
        if name == "USER_SEARCH":
            d.set("username_attr", *_username_attr(value, where))
    elif name == "USER_ATTR_MAP":
        if not isinstance(value, dict):
            raise Unreadable("expected a dict")
        _plain(d, "user_attr_map", value, where)
    elif name == "GROUP_TYPE":
        _group_type(d, value, where)
    elif name in ("REQUIRE_GROUP", "DENY_GROUP"):
        if value is not None:
            d.set(name.lower(), _query(value), where)
    elif name == "USER_FLAGS_BY_GROUP":
        _flags(d, value, where)
    elif name == "MIRROR_GROUPS":
        d.set("mirror_groups", _resolved(value, where) if value is not None else False, where + (
            "; a list: only these groups (sidecar.contrib.django's SIDECAR MIRROR_GROUPS leaves the "
            "application's others alone)" if isinstance(value, list) else ""))
    elif name in ("CONNECTION_OPTIONS", "GLOBAL_OPTIONS"):
        if not isinstance(value, dict):
            raise Unreadable("expected a dict of ldap.OPT_* options")
        _options(d, value, where)
    elif name == "PERMIT_EMPTY_PASSWORD":
        if value:
            d.warnings.append(f"{where}: {ABSENT['permit_empty_password']}")
    elif name == "ALWAYS_UPDATE_USER":
        if value is False:
            d.warnings.append(f"{where}: False has no equivalent: every sign-in (and every "
                              "sessions.recheck_every) sends the directory's current names, email, groups and flags")
    else:
        if value not in (None, False, {}, [], ()):
            d.warnings.append(f"{where}: {ABSENT.get(name.lower(), 'has no equivalent')}")


def _resolved(value: Any, where: str) -> Any:
    """A plain value; os.environ's default (a warning says so), or a placeholder without one."""
    if isinstance(value, Env):
        if value.has_default:
            return value.default
        raise Unreadable(f"read from ${value.name} at NetBox's start, with no default: write its value")
    if isinstance(value, Sym):
        raise Unreadable(f"{value.name} is not a value here")
    if isinstance(value, list):
        return [_resolved(v, where) for v in value]
    return value


def _plain(d: Directory, key: str, value: Any, where: str) -> None:
    if isinstance(value, Env):
        if key in SECRET_KEYS:
            d.set(key, {"env": value.name}, f"{where}: read from ${value.name} when the sidecar starts")
            return
        if value.has_default:
            d.set(key, value.default, f"{where}: ${value.name} at NetBox's start, its default here")
            d.warnings.append(f"{where}: ${value.name} read at NetBox's start: its default {value.default!r} "
                              f"is written; set {key} to the value in use")
            return
    elif key in SECRET_KEYS and isinstance(value, str):
        d.warnings.append(f"{where}: the password is written in the file: better {{file: PATH}} or {{env: NAME}}")
    d.set(key, _resolved(value, where), where)


def _search(value: Any) -> Any:
    if isinstance(value, Union):
        return [_search(s) for s in value.searches]
    if not isinstance(value, Search):
        raise Unreadable("expected LDAPSearch(...) or LDAPSearchUnion(...)")
    scope = value.scope.name.removeprefix("ldap.") if isinstance(value.scope, Sym) else value.scope
    if scope not in SCOPES and scope not in (0, 1, 2):
        raise Unreadable(f"the scope {scope!r}")
    found = {"base_dn": _resolved(value.base_dn, ""),
             "scope": SCOPES.get(scope) if isinstance(scope, str) else ("base", "one", "subtree")[scope],
             "filter": _resolved(value.filter, "")}
    return found


def _username_attr(value: Any, where: str) -> tuple[str, str]:
    filters = [s.filter for s in (value.searches if isinstance(value, Union) else (value,)) if isinstance(s, Search)]
    attrs = list(dict.fromkeys(re.findall(r"\(\s*([A-Za-z][A-Za-z0-9-]*)\s*=\s*%\(user\)s\s*\)",
                                          " ".join(str(f) for f in filters))))
    attr = attrs[0] if attrs else "uid"
    return attr, (f"the attribute the login is matched on (django-auth-ldap names the user as typed; "
                  f"of {', '.join(attrs)}, set the one that holds it)" if len(attrs) > 1
                  else "the attribute the login is matched on")


def _group_type(d: Directory, value: Any, where: str) -> None:
    if not isinstance(value, GroupType):
        raise Unreadable("expected one of django-auth-ldap's group types")
    kind, takes = GROUP_TYPES[value.kind]
    args = list(value.args)
    member = value.kwargs.get("member_attr", args.pop(0) if args else None) if takes else None
    if takes and member is None:  # before anything is written: a group type is converted whole, or not
        raise Unreadable(f"{value.kind} without member_attr")
    d.set("group_type", kind, f"{where}: {value.kind}" + (
        " (direct members, as django-auth-ldap reads it)" if value.kind == "ActiveDirectoryGroupType" else
        " (Active Directory walks the nesting itself: the same groups in one search)"
        if value.kind == "NestedActiveDirectoryGroupType" else ""))
    if member is not None:
        d.set("member_attr", member, where)
    name_attr = value.kwargs.get("name_attr", args[0] if args else "cn")
    if name_attr != "cn":
        d.set("group_name_attr", name_attr, f"{where}: name_attr")


def _query(value: Any) -> Any:
    """REQUIRE_GROUP, DENY_GROUP, a flag's groups: a DN, a list of DNs (any) or an LDAPGroupQuery."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_query(v) for v in value]
    if isinstance(value, Query):
        if value.op == "dn":
            return value.parts[0]
        if value.op == "not":
            return {"not": _query(value.parts[0])}
        return {value.op: [_query(p) for p in value.parts]}
    raise Unreadable("expected a group DN, a list of them or an LDAPGroupQuery")


def _flags(d: Directory, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise Unreadable("expected a dict")
    flags = {}
    for flag, groups in value.items():
        if flag in FLAG_NAMES:
            flags[flag] = _query(groups)
        else:
            d.warnings.append(f"{where}: the flag {flag!r} has no header: only is_active, is_staff and is_superuser "
                              "reach the application")
    d.set("user_flags_by_group", flags, where)


def _options(d: Directory, options: dict[Any, Any], where: str) -> None:
    for option, value in options.items():
        name = str(option).removeprefix("ldap.")
        shown = value.name.removeprefix("ldap.") if isinstance(value, Sym) else value
        if name == "OPT_REFERRALS":
            d.set("referrals", bool(shown), f"{where}: {name}")
        elif name == "OPT_X_TLS_REQUIRE_CERT":
            never = shown in ("OPT_X_TLS_NEVER", "OPT_X_TLS_ALLOW", 0, 3)
            d.set("ignore_cert_errors", never, f"{where}: {name} {shown}")
        elif name in ("OPT_X_TLS_CACERTFILE", "OPT_X_TLS_CACERTDIR", "OPT_X_TLS_CERTFILE", "OPT_X_TLS_KEYFILE"):
            key = {"OPT_X_TLS_CACERTFILE": "ca_file", "OPT_X_TLS_CACERTDIR": "ca_dir",
                   "OPT_X_TLS_CERTFILE": "client_cert", "OPT_X_TLS_KEYFILE": "client_key"}[name]
            _plain(d, key, value, f"{where}: {name}")
        elif name == "OPT_NETWORK_TIMEOUT":
            d.set("connect_timeout", _resolved(value, where), f"{where}: {name}")
        elif name == "OPT_TIMEOUT":
            seconds = _resolved(value, where)
            try:
                d.set("timeout", max(1, int(seconds)), f"{where}: {name}")
            except (TypeError, ValueError):
                d.warnings.append(f"{where}: {name} {seconds!r} is no number of seconds; left out")
        elif name in NOT_NEEDED:
            continue
        elif name == "OPT_DEBUG_LEVEL":
            d.warnings.append(f"{where}: {name}: the sidecar's log.level debug, and auth-sidecar test-login")
        else:
            d.warnings.append(f"{where}: {name} has no equivalent; left out")


def _defaults(d: Directory, settings: dict[str, tuple[Any, int]]) -> None:
    """What django-auth-ldap does without a setting, where the sidecar's default differs."""
    d.set("username_case", "lower", "as django-auth-ldap names new users: the accounts NetBox has keep matching")
    if "mirror_groups" not in d.keys:
        d.set("mirror_groups", False, "AUTH_LDAP_MIRROR_GROUPS is not set: django-auth-ldap leaves Django's groups "
                                      "alone (with sidecar.contrib.django, set SIDECAR SYNC_GROUPS False too)")
    if "cache_timeout" not in d.keys:
        d.set("cache_timeout", 0, "AUTH_LDAP_CACHE_TIMEOUT is not set: django-auth-ldap caches nothing "
                                  "(3600 saves the directory a search per Basic request)")
    if "user_attr_map" not in d.keys:
        d.set("user_attr_map", {}, "AUTH_LDAP_USER_ATTR_MAP is not set: no name or email is copied")


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("file", metavar="LDAP_CONFIG_PY", help="NetBox's ldap_config.py (read, never executed)")


def main(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"{path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        output, warnings = convert(text, path.name)
    except SyntaxError as exc:
        return fail(f"{path}: not Python (line {exc.lineno}): {exc.msg}")
    sys.stdout.write(output)
    for warning in warnings:
        print(f"auth-sidecar: warning: {warning}", file=sys.stderr)
    return 0

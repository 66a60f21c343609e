"""Directory entries read exactly: attribute values as ldap3 returned them, clean text or
nothing, DNs compared in one normal form. No connection and no ldap3 client here.

A value is never cleaned into another value: one that holds a control character (or bytes that
are not UTF-8) is not text at all, and whoever asked decides what that means (a user refused, a
group not published).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

from sidecar.errors import AccessDenied

# Unicode Cc: C0, DEL and C1. A value holding one is never cleaned into another value.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def normalize_dn(dn: str) -> str:
    """A DN in a form that compares equal however its case and spacing were written."""
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except LDAPInvalidDnError:
        return dn.strip().lower()
    rdns: list[str] = []
    for attr, value, separator in parts:
        rdns.append(f"{attr.lower()}={value.lower()}")
        if separator == "+":
            rdns.append("+")
    return ",".join(rdns).replace(",+,", "+")


def within(dn: str, base: str) -> bool:
    """Whether ``dn`` is ``base`` or an entry under it (both as :func:`normalize_dn` gives them): the
    RDN boundary counts, so ``ou=mygroups`` is not under ``ou=groups``."""
    return dn == base or dn.endswith("," + base)


def rdn_value(dn: str) -> str:
    """The value of a DN's first RDN (``staff`` of ``cn=staff,ou=groups``); the DN if unparsable."""
    try:
        return str(parse_dn(dn, escape=False, strip=True)[0][1])
    except (LDAPInvalidDnError, IndexError):
        return dn


def values(attributes: Mapping[str, Any], name: str) -> list[Any]:
    """Every value of an attribute as ldap3 returned it (str, or bytes it could not decode)."""
    value = attributes.get(name.lower())
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def text(value: Any) -> str | None:
    """The value as text exactly as the directory holds it; None when it is not clean text
    (bytes that are not UTF-8, or a control character): such a value is never cleaned."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    result = str(value)
    return None if CONTROL.search(result) else result


def first(attributes: Mapping[str, Any], name: str) -> str:
    """The first value of an attribute as clean text ("" when absent); AccessDenied if unclean."""
    found = values(attributes, name)
    if not found:
        return ""
    clean = text(found[0])
    if clean is None:
        raise AccessDenied(f"attribute {name} holds a control character or bytes that are not UTF-8")
    return clean


def fold(name: str) -> str:
    """How a login and a directory value compare: NFKC (as typed names are) and case-folded."""
    return unicodedata.normalize("NFKC", name).casefold()


def matching_value(attributes: Mapping[str, Any], name: str, login: str) -> str | None:
    """The value of a (possibly multi-valued) attribute that is this login's name.

    One value: that value (a login by another attribute, such as AD's UPN, gets it too). Several:
    the one that equals the login, folded. None when there is no such value, more than one, or
    the value is not clean text. An absent attribute gives the login itself.
    """
    found = values(attributes, name)
    if not found:
        return login
    if len(found) > 1:
        key = fold(login)
        found = [v for v in found if isinstance(v, str) and fold(v) == key]
        if len(found) != 1:
            return None
    return text(found[0])

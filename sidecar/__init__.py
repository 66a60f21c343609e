"""auth-sidecar: answers a reverse proxy's authentication subrequests with identity headers.

Vocabulary used throughout the package:

- **dn**: an LDAP distinguished name, such as ``uid=alice,ou=people,dc=example,dc=com``.
- **credentials**: what a client presents to prove who it is: a username and password (HTTP Basic,
  the login form), a session cookie, a Bearer token.
- **identity**: who a request belongs to once its credentials are accepted: username, names,
  email, groups and flags (:class:`sidecar.identity.Identity`). It is what the headers carry.
- **verdict**: the answer for one set of credentials: an identity with its headers, or a refusal
  (:mod:`sidecar.verdict`).
- **source**: where an identity comes from and can be described again: the directory, the users
  file, a single sign-on provider (:mod:`sidecar.sources`); ``Identity.source`` is its id.
- **directory**: the LDAP or Active Directory servers that hold users and groups.
- **claims / subject**: the fields of a signed token and the user it speaks for (single sign-on).
"""

__version__ = "0.1.0"

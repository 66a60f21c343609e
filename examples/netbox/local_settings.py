"""NetBox local_settings.py: auth-sidecar's middleware in place of NetBox's RemoteUserMiddleware.

Copy it next to NetBox's settings.py, with configuration_sidecar.py merged into configuration.py:
/opt/netbox/netbox/netbox/local_settings.py for a NetBox from git or a release archive, and
<NetBox's venv>/lib/python3.12/site-packages/netbox/local_settings.py for NetBox installed with pip
(put it back after each upgrade of the package). NetBox's settings.py ends with
``from .local_settings import *`` (which NetBox calls unsupported), so the names defined here
replace NetBox's own.

What changes: SidecarMiddleware runs where NetBox's RemoteUserMiddleware ran, so the user is
brought in line with the headers on every request (not only at login), a session ends when a
request comes without headers, and a configured assertion is checked on every request.
"""

from .settings import MIDDLEWARE as _NETBOX_MIDDLEWARE  # NetBox's list, complete (plugins included)

_NETBOX_REMOTE_USER = "netbox.middleware.RemoteUserMiddleware"
if _NETBOX_REMOTE_USER not in _NETBOX_MIDDLEWARE:
    raise RuntimeError(f"local_settings.py: {_NETBOX_REMOTE_USER} is not in NetBox's MIDDLEWARE any more")

# Same place in the list: after AuthenticationMiddleware, before NetBox's CoreMiddleware.
MIDDLEWARE = [
    "sidecar.contrib.django.SidecarMiddleware" if name == _NETBOX_REMOTE_USER else name
    for name in _NETBOX_MIDDLEWARE
]

# Every key is optional; these are the defaults (see sidecar/contrib/django.py).
SIDECAR = {
    "HEADERS": {
        "user": "Remote-User",
        "first_name": "Remote-User-First-Name",
        "last_name": "Remote-User-Last-Name",
        "email": "Remote-User-Email",
        "groups": "Remote-User-Group",
        "is_staff": "Remote-User-Staff",
        "is_superuser": "Remote-User-Superuser",
        "assertion": "Remote-User-Assertion",
    },
    "GROUP_SEPARATOR": "|",
    # Create NetBox groups named in the header; remove the user from groups it does not name.
    "CREATE_GROUPS": True,
    "SYNC_GROUPS": True,
    # None: is_superuser (and is_staff, on NetBox versions that have it) follow the flag headers.
    # A list of group names instead: a member of one of them gets the flag.
    "STAFF_GROUPS": None,
    "SUPERUSER_GROUPS": None,
    # Require a signed identity: a request whose Remote-User-Assertion is missing, invalid or
    # different from the plain headers is anonymous. To require it, append the lines of
    # local_settings_assertion.py to this file.
    "ASSERTION": None,
}

# NetBox behind auth-sidecar with auth-sidecar's backend (sidecar.contrib.django.SidecarBackend).
#
# Merge these lines into /opt/netbox/netbox/netbox/configuration.py and install the sidecar's
# Python package into NetBox's virtual environment, so NetBox can import it:
#
#     wheel=/usr/local/src/auth-sidecar/dist/auth_sidecar-0.1.0-py3-none-any.whl   # built from a checkout: not on PyPI
#     /opt/netbox/venv/bin/pip install "$wheel"
#     echo "$wheel" >> /opt/netbox/local_requirements.txt    # kept across NetBox upgrades
#
# Compared with configuration_stock.py, at every login: names and email are decoded from UTF-8
# ("José", "山田"), is_superuser (and is_staff where NetBox still has it) follow the sidecar's
# Remote-User-Superuser / Remote-User-Staff flags, groups are synchronised, and NetBox never
# stores a garbled name. For the same on EVERY request (directory changes show at once, and a
# request without headers ends the session), add local_settings.py as well (README.md).
#
# SECURITY: as with any header login, only nginx (deploy/nginx) may reach NetBox's gunicorn.

# NetBox's RemoteUserMiddleware still runs and calls the backend when a session logs in.
REMOTE_AUTH_ENABLED = True

# Any dotted path works: NetBox puts it first in Django's AUTHENTICATION_BACKENDS, before its
# ObjectPermissionBackend, which keeps granting NetBox's object permissions.
REMOTE_AUTH_BACKEND = "sidecar.contrib.django.SidecarBackend"

# NetBox's middleware reads the username from here and passes it to the backend, which accepts
# it only if it names the same user as the sidecar's Remote-User header (SIDECAR["HEADERS"]).
REMOTE_AUTH_HEADER = "HTTP_REMOTE_USER"

# After the backend returns, NetBox's middleware copies these three environ values onto the user
# itself. The backend has decoded them in place by then, so NetBox copies the right text; keep
# them naming the same headers as SIDECAR["HEADERS"] (the defaults agree).
REMOTE_AUTH_USER_FIRST_NAME = "HTTP_REMOTE_USER_FIRST_NAME"
REMOTE_AUTH_USER_LAST_NAME = "HTTP_REMOTE_USER_LAST_NAME"
REMOTE_AUTH_USER_EMAIL = "HTTP_REMOTE_USER_EMAIL"

# Without local_settings.py, NetBox updates the user only when a session logs in: bound how long
# a directory change takes to reach a signed-in browser (NetBox's default is 14 days). Never
# longer than the sidecar's sessions.lifetime (12 hours by default). With local_settings.py the
# user is updated on every request, and this only ends idle NetBox sessions.
LOGIN_TIMEOUT = 43200  # 12 hours

# NetBox's "Log Out" ends only NetBox's session: the sidecar's cookie would sign the user straight
# back in. Send them on to the sidecar's sign-out page (server.public_url + /logout), which ends
# the sidecar's session and returns to NetBox (the sidecar's sessions.logout_redirect).
LOGOUT_REDIRECT_URL = "/_sidecar/logout"

# Not read by SidecarBackend; shown so nobody expects them to work with it:
# - REMOTE_AUTH_AUTO_CREATE_USER: the backend always creates the user; who may sign in at all
#   is the sidecar's decision (ldap.require_group, deny_group, is_active, access rules).
# - REMOTE_AUTH_GROUP_SYNC_ENABLED, REMOTE_AUTH_GROUP_HEADER, REMOTE_AUTH_GROUP_SEPARATOR,
#   REMOTE_AUTH_AUTO_CREATE_GROUPS, REMOTE_AUTH_SUPERUSER_GROUPS: the backend always syncs groups,
#   configured by SIDECAR["HEADERS"]["groups"], GROUP_SEPARATOR, CREATE_GROUPS, SYNC_GROUPS and
#   SUPERUSER_GROUPS (default: the Remote-User-Superuser flag, from the sidecar's
#   ldap.user_flags_by_group.is_superuser).
# - REMOTE_AUTH_SUPERUSERS (usernames): no counterpart; use a directory group.
# - REMOTE_AUTH_DEFAULT_GROUPS, REMOTE_AUTH_DEFAULT_PERMISSIONS: not applied; put users in a
#   directory group and give that NetBox group the permissions.
#
# SIDECAR = {...} does NOT work here: NetBox copies only the settings it knows from
# configuration.py into Django's settings. The defaults (NetBox's header names, "|", create and
# sync groups, flags from the flag headers, no assertion) need no SIDECAR at all; to change
# them, or to require a signed assertion, define SIDECAR in local_settings.py.

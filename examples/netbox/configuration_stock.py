# NetBox behind auth-sidecar with NetBox's OWN header backend (netbox.authentication.RemoteUserBackend).
#
# Merge these lines into /opt/netbox/netbox/netbox/configuration.py; ALLOWED_HOSTS, DATABASE,
# REDIS, SECRET_KEY and the rest stay as they are. Then restart NetBox (systemctl restart netbox).
# Every name below is one of NetBox's documented REMOTE_AUTH_* settings.
#
# What this gives and what it does not (examples/netbox/README.md has the details):
# - users are created and logged in from the headers nginx copies from auth-sidecar;
# - names, email and groups are copied only when a session logs in, not on later requests;
# - non-ASCII names arrive garbled ("José" is stored as "JosÃ©"): use configuration_sidecar.py,
#   or add sidecar.contrib.django.Utf8HeadersMiddleware as the README shows.
#
# SECURITY: NetBox believes these headers from anyone who can reach it. gunicorn must listen on
# 127.0.0.1 only (NetBox's default gunicorn.py binds 127.0.0.1:8001; deploy/nginx/site.conf
# expects 127.0.0.1:8000, so make them agree), and only the nginx set up with deploy/nginx may
# reach it: that nginx overwrites every identity header a client sends.

# Turn header authentication on (NetBox's RemoteUserMiddleware does nothing without it).
REMOTE_AUTH_ENABLED = True

# NetBox's own backend, which reads the headers below. A list is accepted too.
REMOTE_AUTH_BACKEND = "netbox.authentication.RemoteUserBackend"

# The WSGI environ keys gunicorn builds from the sidecar's headers: "HTTP_" + the header name
# upper-cased with "-" turned into "_". These are NetBox's defaults, written out for clarity.
REMOTE_AUTH_HEADER = "HTTP_REMOTE_USER"                       # Remote-User: the username
REMOTE_AUTH_USER_FIRST_NAME = "HTTP_REMOTE_USER_FIRST_NAME"   # Remote-User-First-Name
REMOTE_AUTH_USER_LAST_NAME = "HTTP_REMOTE_USER_LAST_NAME"     # Remote-User-Last-Name
REMOTE_AUTH_USER_EMAIL = "HTTP_REMOTE_USER_EMAIL"             # Remote-User-Email

# Create a NetBox user the first time someone signs in. Who may sign in at all is decided by
# the sidecar (ldap.require_group, deny_group, is_active, access rules), before NetBox is asked.
REMOTE_AUTH_AUTO_CREATE_USER = True

# Replace the user's NetBox groups with those of Remote-User-Group at each login.
REMOTE_AUTH_GROUP_SYNC_ENABLED = True
REMOTE_AUTH_GROUP_HEADER = "HTTP_REMOTE_USER_GROUP"           # Remote-User-Group
REMOTE_AUTH_GROUP_SEPARATOR = "|"                             # the sidecar's headers.group_separator

# Create NetBox groups named in the header that do not exist yet (otherwise they are skipped
# with an error in NetBox's log). Give those groups permissions in NetBox's admin pages.
REMOTE_AUTH_AUTO_CREATE_GROUPS = True

# Members of these groups (names as in Remote-User-Group) become superusers at login, and stop
# being superusers at the next login once they leave them. NetBox ignores Remote-User-Superuser.
# netbox-admins: the directory's admin group, and the group of the sidecar's break-glass user
# (examples/users.yaml), so that user is a NetBox superuser with this backend too.
REMOTE_AUTH_SUPERUSER_GROUPS = ["netbox-admins"]

# Usernames that are always superusers. Prefer a directory group above.
REMOTE_AUTH_SUPERUSERS: list[str] = []

# Groups and object permissions given to a NEW user. NetBox applies them only when
# REMOTE_AUTH_GROUP_SYNC_ENABLED is False (with group sync, the header decides the groups).
REMOTE_AUTH_DEFAULT_GROUPS: list[str] = []
REMOTE_AUTH_DEFAULT_PERMISSIONS: dict[str, object] = {}

# How long a NetBox session lasts, in seconds. NetBox copies names, email, groups and the
# superuser flag only when a session logs in, so this bounds how long a change in the directory
# (a group or the admin flag taken away) takes to reach a signed-in browser. NetBox's default is
# 14 days; never make it longer than the sidecar's sessions.lifetime (12 hours by default).
LOGIN_TIMEOUT = 43200  # 12 hours

# NetBox's "Log Out" ends only NetBox's session: the sidecar's cookie would sign the user straight
# back in. Send them on to the sidecar's sign-out page (server.public_url + /logout), which ends
# the sidecar's session and returns to NetBox (the sidecar's sessions.logout_redirect).
LOGOUT_REDIRECT_URL = "/_sidecar/logout"

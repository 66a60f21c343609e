"""gunicorn settings for an application behind a proxy that uses auth-sidecar.

The proxy (deploy/nginx, deploy/apache, ...) checks every request with the sidecar and hands the
application the identity in headers (Remote-User, Remote-User-Email, Remote-User-Group, ...). The
application believes them, so two things matter here: nothing but the proxy may reach gunicorn, and
gunicorn must never turn a header the client wrote into one of those names.

NetBox reads this file as /opt/netbox/gunicorn.py (`gunicorn -c /opt/netbox/gunicorn.py
netbox.wsgi`); any other WSGI application: `gunicorn -c gunicorn.conf.py module:app`.
Needs gunicorn >= 22.0 (header_map, forwarder_headers).
"""

# Localhost only. Anything that reaches gunicorn without going through the proxy can send
# "Remote-User: admin" and be admin. (The proxies' examples proxy to 127.0.0.1:8000.)
bind = "127.0.0.1:8000"

# NetBox's recommended sizing; tune for your machine.
workers = 5
threads = 3
timeout = 120
max_requests = 5000
max_requests_jitter = 500

# What to do with a request header whose name has an underscore, like Remote_User.
# "drop" (the default, stated here on purpose) throws it away; the proxies send only hyphenated
# names (Remote-User), which every mode keeps. Never "dangerous": it maps Remote_User to
# HTTP_REMOTE_USER as well, so a client's Remote_User would merge with the proxy's Remote-User
# ("alice,admin") in the one variable the application reads. ("refuse" answers such requests
# with 400, which is also safe.)
header_map = "drop"

# The longest request header line gunicorn accepts (default 8190 bytes). Remote-User-Group lists
# every group of the user, "|"-separated: a user in a few hundred groups goes past 8 KiB and would
# get a 400 from gunicorn. 16 KiB covers that; the proxy's own buffers must allow it too (the
# nginx example allows 32 KiB for the sidecar's answer). Or publish fewer groups with the
# sidecar's ldap.mirror_groups.
limit_request_field_size = 16384

# Only the proxy on this machine may tell gunicorn the original scheme (X-Forwarded-Proto, so
# NetBox builds https:// links and secure cookies) and the client's address.
forwarded_allow_ips = "127.0.0.1"

# The underscore headers gunicorn still maps, despite header_map, when they come from
# forwarded_allow_ips. These are the defaults. Never add REMOTE_USER (or any identity name): a
# Remote_User header from the proxy would then become HTTP_REMOTE_USER, the very variable NetBox
# reads, and a proxy passes on any header it was not told to remove.
forwarder_headers = "SCRIPT_NAME,PATH_INFO"

"""A user model shaped like NetBox 4.5's: its own Group model, and no is_staff field.

NetBox itself is too heavy to install for the tests; this app has what SidecarBackend must cope
with in it (``users.User`` and ``users.Group`` as read in NetBox's source). ``python -m
tests.django_project.netboxlike`` runs requests through SidecarMiddleware against it and prints
what was stored: it needs its own process, as Django's settings are set once per process.
"""

"""Application side: helpers that run inside the applications behind the proxy (Django, Flask, ...).

Nothing here imports aiohttp, ldap3 or PyYAML: only the standard library, python-jose and
cryptography, so an application can depend on it without the sidecar's server stack.
"""

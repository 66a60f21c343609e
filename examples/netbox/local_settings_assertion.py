# Append these lines to local_settings.py to require the sidecar's signed identity
# (Remote-User-Assertion): NetBox then accepts the identity headers only when the assertion
# verifies and names exactly the same identity; otherwise the request is anonymous (and a NetBox
# session it had is logged out), with one warning in NetBox's log.
#
# The sidecar side (its configuration file):
#
#     server:    { public_url: https://netbox.example.com/_sidecar }
#     assertion: { keys: [{ id: k1, private_key: { file: /etc/auth-sidecar/assertion.pem } }],
#                  audience: netbox }
#
# The values here must be the sidecar's: the issuer is the sidecar's assertion.issuer, which is
# its server.public_url unless set; the keys are fetched from the sidecar's JWKS, which nginx
# (deploy/nginx/site.conf) serves under the same prefix. Replace https://netbox.example.com with
# your NetBox's address, in all three lines.
SIDECAR["ASSERTION"] = {  # noqa: F821  # SIDECAR: defined above, in local_settings.py
    "issuer": "https://netbox.example.com/_sidecar",
    "audience": "netbox",
    "jwks_url": "https://netbox.example.com/_sidecar/.well-known/jwks.json",
}

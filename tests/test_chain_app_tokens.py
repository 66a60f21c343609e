"""Through every proxy we ship files for (nginx, Apache, Caddy, HAProxy) with a real sidecar:

- the application's own tokens (app_tokens) reach the application with the Authorization and no
  identity header, whatever identity headers the client sent (fail closed: the proxy clears them);
- an htmx request after the session ended gets 401 with HX-Redirect and no Basic challenge.

(Traefik's file is checked by tests/test_deploy_static.py; Traefik itself is not packaged in Debian.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import yaml

from tests.conftest import group, ldap_settings, need
from tests.testbed import ROOT, free_port
from tests.testbed.proxies import BINARIES, PROXIES, mode, proxy_server
from tests.testbed.rawhttp import SPOOFS, Headers, Response, identity_seen, send
from tests.testbed.sidecar import SidecarProcess
from tests.testbed.slapd import Slapd
from tests.testbed.upstream import EchoApp, header_values

TOKEN = "Token 0123456789abcdef0123456789abcdef01234567"
V2 = "Bearer nbt_sidecartest1.S3cretSidecarTestTokenValue0123456789abc"


@dataclass
class Chain:
    proxy: str
    port: int
    app: EchoApp

    @property
    def base(self) -> str:
        return f"http://localhost:{self.port}"

    def get(self, path: str, headers: Headers = ()) -> Response:
        return send(self.port, path, headers)




@pytest.fixture(scope="module", params=PROXIES)
def chain(request: pytest.FixtureRequest, slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    proxy: str = request.param
    need(BINARIES[proxy])
    workdir = tmp_path_factory.mktemp(f"app-tokens-{proxy}")
    sidecar_port, listen_port = free_port(), free_port()
    base = f"http://localhost:{listen_port}"
    config = {
        "server": {"listen": f"127.0.0.1:{sidecar_port}", "public_url": f"{base}/_sidecar",
                   "mode": mode(proxy)},
        "ldap": ldap_settings(slapd, user_flags_by_group={"is_active": group("active")}),
        "sessions": {"keys": [{"id": "k1", "secret": "t" * 40}], "secure": False, "default_redirect": f"{base}/"},
        "app_tokens": {"rules": [{"scheme": "Token", "paths": ["/api/"]},
                                 {"scheme": "Bearer", "prefix": "nbt_", "paths": ["/api/"]}]},
    }
    with EchoApp() as app, SidecarProcess(workdir, config):
        with proxy_server(proxy, workdir / proxy, listen_port=listen_port, sidecar_port=sidecar_port,
                          app_port=app.port):
            yield Chain(proxy, listen_port, app)


@pytest.mark.parametrize("token", [TOKEN, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("spoof", [[], *SPOOFS], ids=lambda s: "+".join(n for n, _ in s) or "none")
def test_the_application_s_token_arrives_with_no_identity_header(chain: Chain, token: str, spoof: Headers) -> None:
    response = chain.get("/api/dcim/sites/", [*spoof, ("Authorization", token)])
    assert response.status == 200, (response.status, response.body[:300])
    echo = response.echo()
    assert header_values(echo, "Authorization") == [token]
    assert [(name, value) for name, value in identity_seen(echo) if value] == []


def test_a_token_outside_the_configured_paths_is_refused(chain: Chain) -> None:
    before = len(chain.app.requests)
    assert chain.get("/dcim/sites/", [("Authorization", TOKEN)]).status == 401
    assert chain.get("/api/dcim/sites/", [("Authorization", "Negotiate abc")]).status == 401
    assert len(chain.app.requests) == before


def test_htmx_without_a_session_gets_hx_redirect_and_no_basic_prompt(chain: Chain) -> None:
    before = len(chain.app.requests)
    response = chain.get("/dcim/sites/?sort=name", [("HX-Request", "true"), ("Accept", "*/*"),
                                                    ("HX-Current-URL", f"{chain.base}/dcim/sites/")])
    assert response.status == 401
    assert response.values("WWW-Authenticate") == [] and response.values("Location") == []
    back = quote(chain.base + "/dcim/sites/", safe="")
    assert response.values("HX-Redirect") == [f"{chain.base}/_sidecar/login?rd={back}"]
    assert len(chain.app.requests) == before
    # Everyone else as before: a script gets the Basic challenge, a browser the login page.
    assert chain.get("/dcim/sites/").values("WWW-Authenticate")
    page = chain.get("/dcim/sites/", [("Accept", "text/html")])
    assert page.status == 302 and page.values("HX-Redirect") == []


def test_traefik_hands_htmx_s_headers_to_the_sidecar() -> None:
    # Traefik sends the sidecar only the headers listed (and hands every refusal to the client as is).
    config = yaml.safe_load((ROOT / "deploy" / "traefik" / "auth-sidecar.yml").read_text())
    passed = config["http"]["middlewares"]["auth-sidecar"]["forwardAuth"]["authRequestHeaders"]
    assert {"HX-Request", "HX-Current-URL", "Authorization"} <= set(passed)

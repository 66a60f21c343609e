"""Deploy files whose real surroundings cannot run here, checked as far as possible without them.

Traefik and ingress-nginx (no Traefik, no cluster): parsed, and every security-relevant setting
asserted. systemd (no systemd as PID 1 in a container): the unit's settings, `systemd-analyze
verify` and its offline security score. gunicorn: the shipped settings loaded into a real gunicorn
in front of a small WSGI application (a real run; it has no proxy to need).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import parse_config
from tests.conftest import need
from tests.testbed import ROOT, free_port, in_ci, wait_for_port
from tests.testbed.rawhttp import send

DEPLOY = ROOT / "deploy"
IDENTITY = ["Remote-User", "Remote-User-First-Name", "Remote-User-Last-Name", "Remote-User-Email",
            "Remote-User-Group", "Remote-User-Staff", "Remote-User-Superuser", "Remote-User-Auth-Methods",
            "Remote-User-Assertion"]
# The spellings the chain tests send (tests/test_chain_proxies.py), plus the seven real names.
SPOOFED_NAMES = ["remote-user", "REMOTE-USER", "Remote_User", "Remote-User_Email", "Remote_User_Group",
                 "remote_user-first_name", *IDENTITY]


def go_canonical(name: str) -> str:
    """How Go's net/http (Traefik, Caddy) writes a header name: Remote_User -> Remote_user."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


# -- Traefik ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traefik() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "traefik" / "auth-sidecar.yml").read_text())
    http: dict[str, Any] = config["http"]
    return http


def test_traefik_copies_every_identity_header_and_strips_every_spelling(traefik: dict[str, Any]) -> None:
    forward_auth = traefik["middlewares"]["auth-sidecar"]["forwardAuth"]
    assert forward_auth["authResponseHeaders"] == IDENTITY
    strip = re.compile(forward_auth["authResponseHeadersRegex"])
    assert all(strip.search(go_canonical(name)) for name in SPOOFED_NAMES)
    assert not any(strip.search(name) for name in ["Authorization", "Cookie", "X-Remote-User", "Accept"])


def test_traefik_shows_the_sidecar_only_its_own_description_of_the_request(traefik: dict[str, Any]) -> None:
    forward_auth = traefik["middlewares"]["auth-sidecar"]["forwardAuth"]
    assert forward_auth["address"] == "http://127.0.0.1:9180/auth"
    assert forward_auth["trustForwardHeader"] is False
    # The sidecar prefers X-Original-* (and X-Real-IP) to Traefik's X-Forwarded-*: never the client's.
    # X-Request-ID: Traefik makes none; one from a load balancer in front reaches the sidecar's log.
    passed = set(forward_auth["authRequestHeaders"])
    assert {"Accept", "Authorization", "Cookie", "X-Requested-With", "X-Request-ID"} <= passed
    assert not passed & {"X-Original-URL", "X-Original-URI", "X-Original-Method", "X-Real-IP", "X-Forwarded-For",
                         "X-Forwarded-Host", "X-Forwarded-Uri", "X-Forwarded-Proto", "X-Forwarded-Method"}
    # The client's own X-Original-URL never reaches the sidecar, and no router rewrites the path
    # between the check and the application.
    assert "X-Original-URL" not in forward_auth["authRequestHeaders"]
    assert forward_auth["addAuthCookiesToResponse"] == ["sidecar_session"]


# Authorization values that could be Basic to someone (what the chain suites send through the
# other proxies), and values that are not.
BASIC_LIKE = ["Basic eA==", "basic eA==", "BASIC eA==", "\tBasic eA==", "\u00a0Basic eA==", "\u2003Basic eA==",
              "\u3000Basic eA==", ",Basic eA==", "Token abc, Basic eA=="]
NOT_BASIC = ["Token 0123456789abcdef", "Bearer eyJ.eyJ.sig", "Negotiate YII="]


def test_traefik_checks_every_route_to_the_app_and_drops_basic_credentials(traefik: dict[str, Any]) -> None:
    routers = traefik["routers"]
    to_app = {name: router for name, router in routers.items() if router["service"] == "netbox"}
    assert to_app and all(router["middlewares"][:2] == ["drop-connection", "auth-sidecar"]
                          for router in to_app.values())
    basic = routers["netbox-basic"]
    (pattern,) = re.findall(r"HeaderRegexp\(`Authorization`, `([^`]+)`\)", basic["rule"])
    assert all(re.search(pattern, value) for value in BASIC_LIKE)  # Go's RE2 reads this one as Python does
    assert not any(re.search(pattern, value) for value in NOT_BASIC)
    assert basic["middlewares"] == ["drop-connection", "auth-sidecar", "drop-authorization"]
    assert basic["priority"] > routers["netbox"]["priority"]
    assert traefik["middlewares"]["drop-authorization"]["headers"]["customRequestHeaders"] == {"Authorization": ""}


def test_traefik_drops_the_client_s_connection_header_before_the_check(traefik: dict[str, Any]) -> None:
    # Otherwise `Connection: Remote-User` makes the proxy to the app delete what forwardAuth set.
    assert traefik["middlewares"]["drop-connection"]["headers"]["customRequestHeaders"] == {"Connection": ""}


def test_traefik_serves_the_sidecars_pages_unchecked_but_not_its_auth_endpoint(traefik: dict[str, Any]) -> None:
    pages = traefik["routers"]["auth-sidecar-pages"]
    assert pages["service"] == "auth-sidecar" and "auth-sidecar" not in pages["middlewares"]
    assert "PathPrefix(`/_sidecar/`)" in pages["rule"] and "!Path(`/_sidecar/auth`)" in pages["rule"]
    assert pages["priority"] > max(r["priority"] for r in traefik["routers"].values() if r["service"] == "netbox")


def test_traefik_answers_the_icon_and_robots_txt_from_the_sidecar_unchecked(traefik: dict[str, Any]) -> None:
    public = traefik["routers"]["auth-sidecar-public"]
    assert public["service"] == "auth-sidecar" and "middlewares" not in public  # no check, no prefix to strip
    assert public["rule"] == "Host(`netbox.example.com`) && (Path(`/favicon.ico`) || Path(`/robots.txt`))"
    assert public["priority"] > max(r["priority"] for r in traefik["routers"].values() if r["service"] == "netbox")


# -- Kubernetes / ingress-nginx --------------------------------------------------------------------


def load_documents(name: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The file's documents by (kind, name)."""
    documents = yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in documents if d}


@pytest.fixture(scope="module")
def kubernetes() -> dict[tuple[str, str], dict[str, Any]]:
    return {**load_documents("auth-sidecar.yaml"), **load_documents("ingress.yaml")}


def ingress_annotations(kubernetes: dict[tuple[str, str], dict[str, Any]], ingress: str) -> dict[str, str]:
    found: dict[str, str] = kubernetes[("Ingress", ingress)]["metadata"].get("annotations", {})
    return {key.removeprefix("nginx.ingress.kubernetes.io/"): value for key, value in found.items()}


def test_ingress_checks_with_the_sidecar_and_copies_every_identity_header(
        kubernetes: dict[tuple[str, str], dict[str, Any]]) -> None:
    netbox = ingress_annotations(kubernetes, "netbox")
    assert netbox["auth-url"] == "http://auth-sidecar.netbox.svc.cluster.local:9180/auth"
    assert netbox["auth-signin"] == "https://$host/_sidecar/login"
    assert [h.strip() for h in netbox["auth-response-headers"].split(",")] == IDENTITY
    for header in IDENTITY:
        assert re.search(rf'^proxy_set_header {header} +"";$', netbox["auth-snippet"], re.M), header


def test_ingress_drops_basic_credentials_before_the_app(kubernetes: dict[tuple[str, str], dict[str, Any]]) -> None:
    snippet = ingress_annotations(kubernetes, "netbox")["configuration-snippet"]
    (pattern,) = re.findall(r'if \(\$http_authorization ~\* "([^"]+)"\)', snippet)
    assert all(re.search(pattern, value, re.I) for value in BASIC_LIKE)  # PCRE reads this one as Python does
    assert not any(re.search(pattern, value, re.I) for value in NOT_BASIC)
    assert "proxy_set_header Authorization $auth_sidecar_app_authorization;" in snippet


def test_ingress_hands_the_sidecar_host_and_raw_target_separately(
        kubernetes: dict[tuple[str, str], dict[str, Any]]) -> None:
    auth = ingress_annotations(kubernetes, "netbox")["auth-snippet"]
    for line in ["X-Forwarded-Host       $http_host", "X-Forwarded-Uri        $request_uri",
                 "X-Forwarded-Proto      $pass_access_scheme", "X-Forwarded-Method     $request_method"]:
        assert f"proxy_set_header {line};" in auth
    assert "X-Original-URL" not in auth  # ingress-nginx's own is ignored once X-Forwarded-Uri is there


def test_ingress_refuses_a_host_it_does_not_route_on(kubernetes: dict[tuple[str, str], dict[str, Any]]) -> None:
    snippet = ingress_annotations(kubernetes, "netbox")["configuration-snippet"]
    assert 'set $auth_sidecar_hosts "$host|$http_host";' in snippet
    (pattern,) = re.findall(r'if \(\$auth_sidecar_hosts !~\* "([^"]+)"\) \{\n\s+return 400;', snippet)
    # ($host, $http_host) as nginx sets them; PCRE reads this pattern (backreference, caseless) as Python does.
    agree = [("app.test", "app.test"), ("app.test", "App.Test."), ("app.test", "app.test:8443"), ("app.test", "")]
    differ = [("admin.app.test", "admin.app.test:80:80"), ("admin.app.test", "app.test"), ("app.test", "x@app.test")]
    assert all(re.search(pattern, f"{h}|{hh}", re.I) for h, hh in agree[:3])
    assert not any(re.search(pattern, f"{h}|{hh}", re.I) for h, hh in differ + agree[3:])


def test_ingress_hands_the_sidecar_s_400_and_503_to_the_client(
        kubernetes: dict[tuple[str, str], dict[str, Any]]) -> None:
    annotations = ingress_annotations(kubernetes, "netbox")
    snippet = annotations["configuration-snippet"]
    assert "auth_request_set $auth_sidecar_status $upstream_status;" in snippet
    assert "error_page 500 = @auth_sidecar_error;" in snippet
    # The same handler as deploy/nginx's, word for word.
    shipped = (DEPLOY / "nginx" / "auth-sidecar.conf").read_text()
    handler = shipped[shipped.index("location @auth_sidecar_error {"):].strip()
    assert " ".join(annotations["server-snippet"].split()) == " ".join(handler.split())


def test_ingress_serves_the_sidecars_pages_unchecked_but_not_its_auth_endpoint(
        kubernetes: dict[tuple[str, str], dict[str, Any]]) -> None:
    pages = kubernetes[("Ingress", "auth-sidecar-pages")]
    assert "auth-url" not in ingress_annotations(kubernetes, "auth-sidecar-pages")
    (rule,) = pages["spec"]["rules"]
    path, public = rule["http"]["paths"]
    assert path["backend"]["service"] == public["backend"]["service"] == {"name": "auth-sidecar",
                                                                         "port": {"number": 9180}}
    # ingress-nginx matches the regex from the start of the path (PCRE, like Python's re here).
    pattern = re.compile("^" + path["path"])
    assert all(pattern.match(p) for p in ["/_sidecar/login", "/_sidecar/logout", "/_sidecar/static/x.css",
                                          "/_sidecar/forbidden", "/_sidecar/signed-out"])
    assert not pattern.match("/_sidecar/auth")
    # The icon and robots.txt, unchecked; rewrite-target /$1 keeps their names.
    unchecked = re.compile("^" + public["path"])
    assert all(unchecked.match(p) for p in ["/favicon.ico", "/robots.txt"])
    assert not any(unchecked.match(p) for p in ["/favicon.ico/x", "/robots.txt.bak", "/favicon.icon", "/xrobots.txt"])
    assert ingress_annotations(kubernetes, "auth-sidecar-pages")["rewrite-target"] == "/$1"


def test_ingress_shows_the_sidecars_page_for_a_refusal_and_lets_its_request_id_through(
        kubernetes: dict[tuple[str, str], dict[str, Any]]) -> None:
    annotations = ingress_annotations(kubernetes, "netbox")
    # No "=": the status stays 403; the page is the unchecked auth-sidecar-pages Ingress's.
    assert "error_page 403 /_sidecar/forbidden;" in annotations["configuration-snippet"].splitlines()
    # ingress-nginx sends X-Request-ID ($req_id) to /auth and to NetBox by itself: once is enough.
    assert "X-Request-ID" not in annotations["auth-snippet"] + annotations["configuration-snippet"]


def test_sidecar_pod_is_locked_down_and_probed(kubernetes: dict[tuple[str, str], dict[str, Any]]) -> None:
    pod = kubernetes[("Deployment", "auth-sidecar")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 9180}]


def test_only_the_ingress_controller_reaches_the_sidecar_and_netbox(
        kubernetes: dict[tuple[str, str], dict[str, Any]]) -> None:
    ingress_namespace = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    for policy in ("auth-sidecar", "netbox-only-from-ingress"):
        (rule,) = kubernetes[("NetworkPolicy", policy)]["spec"]["ingress"]
        assert rule["from"] == [ingress_namespace]


def test_configmap_is_a_valid_configuration_with_secrets_only_in_the_secret(
        kubernetes: dict[tuple[str, str], dict[str, Any]], tmp_path: Path) -> None:
    pod = kubernetes[("Deployment", "auth-sidecar")]["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "secrets"]
    secret_keys = set(kubernetes[("Secret", "auth-sidecar")]["stringData"])
    text = kubernetes[("ConfigMap", "auth-sidecar")]["data"]["config.yaml"]
    referenced = set(re.findall(rf"\{{file: {re.escape(mount['mountPath'])}/([\w-]+)\}}", text))
    assert referenced == secret_keys == {"bind-password", "session-secret", "redis-password"}
    for key in secret_keys:  # stand-ins for the mounted Secret
        (tmp_path / key).write_text("x" * 40)
    config = parse_config(yaml.safe_load(text.replace(mount["mountPath"], str(tmp_path))))
    assert config.ldap is not None and config.ldap.bind_password is not None
    assert config.ldap.bind_password.reveal() == "x" * 40


# -- systemd ---------------------------------------------------------------------------------------

UNIT = DEPLOY / "systemd" / "auth-sidecar.service"


def unit_settings() -> dict[str, list[str]]:
    """Every Key=value of the unit, repeated keys kept in order."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_is_hardened() -> None:
    settings = unit_settings()
    expected = {
        "DynamicUser": ["yes"], "NoNewPrivileges": ["yes"], "ProtectSystem": ["strict"], "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"], "PrivateDevices": ["yes"], "MemoryDenyWriteExecute": ["yes"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"], "CapabilityBoundingSet": [""],
        "LoadCredential": ["bind-password:/etc/auth-sidecar/bind-password",
                           "session-secret:/etc/auth-sidecar/session-secret"],
    }
    assert {key: settings.get(key) for key in expected} == expected
    assert settings["SystemCallFilter"][0] == "@system-service"


def test_systemd_unit_reloads_drains_and_keeps_the_admin_socket() -> None:
    settings = unit_settings()
    program = "/opt/auth-sidecar/bin/auth-sidecar"
    assert settings["Type"] == ["notify"]  # serve says READY=1 once it listens
    assert settings["ExecStart"] == [f"{program} serve --config /etc/auth-sidecar/config.yaml"]
    # A bad file fails `systemctl reload` itself; then SIGHUP, which the sidecar reloads on.
    assert settings["ExecReload"] == [f"{program} check-config --config /etc/auth-sidecar/config.yaml",
                                      "/bin/kill -HUP $MAINPID"]
    assert settings["KillSignal"] == ["SIGTERM"]
    stop = settings["TimeoutStopSec"][0]
    assert stop.endswith("s") and float(stop[:-1]) > 30  # longer than the sidecar's 30 s drain
    # admin.socket's default, /run/auth-sidecar/admin.sock, in a directory the service may write.
    assert settings["RuntimeDirectory"] == ["auth-sidecar"] and settings["RuntimeDirectoryMode"] == ["0750"]
    assert settings["User"] == settings["Group"] == ["auth-sidecar"]


# -- Containerfile ---------------------------------------------------------------------------------


def containerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", (ROOT / "Containerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_containerfile_stops_on_sigterm_as_a_non_root_user() -> None:
    instructions = containerfile_instructions()
    assert {kind for kind, _ in instructions} <= {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "USER", "VOLUME",
                                                  "EXPOSE", "STOPSIGNAL", "HEALTHCHECK", "ENTRYPOINT", "CMD"}
    final = instructions[max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM"):]
    last = {kind: arguments for kind, arguments in final}  # the last of each kind wins, as in a build
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert last["USER"].split(":")[0] not in ("", "0", "root")
    assert json.loads(last["ENTRYPOINT"]) == ["auth-sidecar"]  # exec form: the sidecar gets the signals
    assert json.loads(last["CMD"]) == ["serve", "--config", "/etc/auth-sidecar/config.yaml"]
    assert json.loads(last["VOLUME"]) == ["/run/auth-sidecar"]  # the admin socket under --read-only
    assert "/healthz" in last["HEALTHCHECK"]
    assert "EXPOSE" in last and "9180" in last["EXPOSE"].split()


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's auth-sidecar: verify wants a real program."""
    unit = tmp_path / UNIT.name
    program = Path(sys.executable).with_name("auth-sidecar")
    if not program.exists():
        message = f"{program} is not installed (pip install -e .)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    unit.write_text(UNIT.read_text().replace("/opt/auth-sidecar/bin/auth-sidecar", str(program)))
    return unit


def test_systemd_accepts_the_unit(runnable_unit: Path) -> None:
    analyze = need("systemd-analyze")
    verify = subprocess.run([analyze, "verify", str(runnable_unit)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run([analyze, "security", "--offline=true", str(runnable_unit)],
                              capture_output=True, text=True)
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert score is not None, security.stdout + security.stderr
    assert float(score.group(1)) <= 1.5  # 1.1 when written: only network access is left


# -- gunicorn --------------------------------------------------------------------------------------

GUNICORN_CONF = DEPLOY / "gunicorn" / "gunicorn.conf.py"
WSGI_APP = """
import json

def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_REMOTE") or k == "REMOTE_USER"}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""


def test_gunicorn_settings() -> None:
    settings: dict[str, Any] = {}
    exec(GUNICORN_CONF.read_text(), settings)  # gunicorn reads the file the same way
    assert settings["bind"] == "127.0.0.1:8000"
    assert settings["header_map"] == "drop"
    assert settings["limit_request_field_size"] == 16384
    assert settings["forwarded_allow_ips"] == "127.0.0.1"
    assert "REMOTE_USER" not in settings["forwarder_headers"].upper()


def gunicorn(tmp_path: Path, *extra: str) -> Iterator[int]:
    """gunicorn with the shipped settings (one worker, a free port) serving WSGI_APP; yields the port."""
    (tmp_path / "echo_environ.py").write_text(WSGI_APP)
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "-b", f"127.0.0.1:{port}",
               "-w", "1", "--threads", "1", "--chdir", str(tmp_path), *extra, "echo_environ:app"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def shipped_gunicorn(tmp_path: Path) -> Iterator[int]:
    yield from gunicorn(tmp_path)


def test_gunicorn_drops_underscore_spellings(shipped_gunicorn: int) -> None:
    spoofs = [("Remote_User", "admin"), ("Remote-User_Email", "admin@evil.test"), ("REMOTE_USER", "root")]
    response = send(shipped_gunicorn, "/", [("Remote-User", "alice"), *spoofs])
    assert json.loads(response.body) == {"HTTP_REMOTE_USER": "alice"}


def test_gunicorn_takes_a_long_group_list(shipped_gunicorn: int) -> None:
    groups = "|".join(f"group-{n:05d}" for n in range(1400))  # 16,799 bytes: over gunicorn's default
    short = groups[:16000]
    assert send(shipped_gunicorn, "/", [("Remote-User-Group", short)]).status == 200
    assert send(shipped_gunicorn, "/", [("Remote-User-Group", groups + "x" * 1000)]).status == 431


def test_gunicorn_with_remote_user_in_forwarder_headers_would_believe_a_client(tmp_path: Path) -> None:
    # Why gunicorn.conf.py says never: from the trusted proxy, Remote_User becomes HTTP_REMOTE_USER.
    for port in gunicorn(tmp_path, "--forwarder-headers", "SCRIPT_NAME,PATH_INFO,REMOTE_USER"):
        response = send(port, "/", [("Remote_User", "admin")])
        assert json.loads(response.body) == {"HTTP_REMOTE_USER": "admin"}

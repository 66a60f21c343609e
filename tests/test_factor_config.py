"""The second_factor section and the access rules' second_factor: what works is read, what cannot
work is refused at load (check-config refuses what serve would), each problem at its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.config import parse_config
from sidecar.errors import ConfigError


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    users = tmp_path / "users.yaml"
    users.write_text("users: {}\n")
    return {"server": {"public_url": "https://app.example.com/_sidecar"}, "local_users": {"file": str(users)},
            "sessions": {"keys": [{"id": "k1", "secret": "s" * 40}]}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_names_are_derived_from_the_public_url_and_the_login_page(base: dict[str, Any]) -> None:
    base["second_factor"] = {"key": "k" * 40, "store": "/var/lib/x/factors.sqlite3"}
    base["login_page"] = {"title": "Sign in: NetBox"}
    factors = parse_config(base).second_factor
    assert factors is not None
    assert factors.rp_id == "app.example.com"
    assert factors.origins == ("https://app.example.com",)
    assert factors.issuer == "Sign in  NetBox"  # a colon would end the issuer in the TOTP URI's label
    assert factors.rp_name == "Sign in: NetBox"  # what a browser shows by a passkey
    assert "k" * 40 not in repr(factors)  # the key is a Secret


def test_rules_and_the_default_say_when_a_factor_is_asked(base: dict[str, Any]) -> None:
    base["second_factor"] = {"key": "k" * 40, "rp_id": "example.com"}
    base["access"] = {"second_factor": "optional", "rules": [
        {"path": "/admin", "second_factor": "required", "second_factor_max_age": 300}, {"path": "/api"}]}
    config = parse_config(base)
    admin, api = config.access.rules
    assert (admin.second_factor, admin.second_factor_max_age) == ("required", 300)
    assert (api.second_factor, api.second_factor_max_age) == (None, None)  # the default decides
    assert config.access.second_factor == "optional" and config.access.asks_factors()
    assert config.second_factor is not None and config.second_factor.rp_id == "example.com"


@pytest.mark.parametrize(("section", "access", "expected"), [
    (None, {"second_factor": "required"},
     "access.second_factor: asks for a second factor, but there is no second_factor section"),
    (None, {"rules": [{"path": "/admin", "second_factor": "optional"}]},
     "access.second_factor: asks for a second factor, but there is no second_factor section"),
    ({"store": "/x.sqlite3"}, {}, "second_factor.key: is required"),
    ({"key": "short"}, {}, "second_factor.key: must be at least 32 characters"),
    ({"key": "k" * 40, "store": "relative.sqlite3"}, {}, "second_factor.store: expected an absolute path"),
    ({"key": "k" * 40, "rp_id": "evil.example"}, {}, "second_factor.rp_id: 'evil.example' is not server.public_url"),
    ({"key": "k" * 40, "origins": ["https://app.example.com/path"]}, {}, "second_factor.origins: expected an origin"),
    ({"key": "k" * 40, "trust_amr": ["corp"]}, {}, "second_factor.trust_amr: names no provider: 'corp'"),
    ({"key": "k" * 40, "trust_acr": ["mfa"]}, {}, "second_factor.trust_acr: applies to the providers of trust_amr"),
    ({"key": "k" * 40, "recovery_codes": 0}, {}, "second_factor.recovery_codes: must be at least 1"),
    ({"key": "k" * 40}, {"rules": [{"path": "/a", "second_factor": "sometimes"}]},
     "access.rules[0].second_factor: must be one of required, optional, never"),
    ({"key": "k" * 40}, {"rules": [{"path": "/a", "second_factor": "never", "second_factor_max_age": 60}]},
     "access.rules[0].second_factor_max_age: asks for a recent second factor, but second_factor is never"),
    ({"key": "k" * 40}, {"second_factor_max_age": 60}, "access.second_factor_max_age: asks for a recent"),
    ({"key": "k" * 40}, {"rules": [{"path": "/a", "second_factor": "required", "second_factor_max_age": 0}]},
     "access.rules[0].second_factor_max_age: must be at least 1"),
    ({"key": "k" * 40, "pin": 1}, {}, "second_factor.pin: unknown key"),
    ({"key": "k" * 40}, {"rules": [{"path": "/a", "second_factor_max_age": 60}]},
     "access.rules[0].second_factor_max_age: asks for a recent second factor, but access.second_factor is never"),
])
def test_what_cannot_work_is_refused(base: dict[str, Any], section: dict[str, Any] | None,
                                     access: dict[str, Any], expected: str) -> None:
    if section is not None:
        base["second_factor"] = section
    base["access"] = access
    found = problems(base)
    assert any(p.startswith(expected) for p in found), found


def test_a_second_factor_needs_sessions(base: dict[str, Any]) -> None:
    del base["sessions"]
    base["second_factor"] = {"key": "k" * 40}
    assert any(p.startswith("second_factor: needs the sessions section") for p in problems(base))


def test_check_config_refuses_what_serve_refuses(base: dict[str, Any], tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    base["access"] = {"second_factor": "required"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    result = subprocess.run([sys.executable, "-m", "sidecar", "check-config", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "access.second_factor: asks for a second factor" in result.stderr + result.stdout


def test_with_state_in_redis_the_store_is_redis_and_no_file_is_named(base: dict[str, Any]) -> None:
    base["second_factor"] = {"key": "k" * 40}
    assert parse_config(base).second_factor.store == "/var/lib/auth-sidecar/factors.sqlite3"  # type: ignore[union-attr]
    base["state"] = {"backend": "redis", "url": "redis://redis.internal:6379"}
    factors = parse_config(base).second_factor
    assert factors is not None and factors.store is None  # enrolments and used codes live in Redis
    base["second_factor"]["store"] = "/var/lib/x/factors.sqlite3"  # a file every replica would have its own of
    assert any(p.startswith("second_factor.store: is not read with state.backend redis") for p in problems(base))


@pytest.mark.parametrize(("factors", "metrics"), [(False, False), (True, False), (False, True)])
def test_optional_libraries_are_loaded_only_by_a_sidecar_that_uses_them(base: dict[str, Any], tmp_path: Path,
                                                                        factors: bool, metrics: bool) -> None:
    # webauthn (with pyOpenSSL and cbor2), pyotp and segno cost ~5 MB of RSS in every process, sqlite3
    # and prometheus_client ~2 MB more (issue 15): each is imported where it is used.
    import subprocess
    import sys

    import yaml

    if factors:
        base["second_factor"] = {"key": "k" * 40, "store": str(tmp_path / "factors.sqlite3")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    optional = ("webauthn", "pyotp", "segno", "OpenSSL", "sqlite3", "prometheus_client")
    # Only what the sidecar loads counts: coverage, measuring this child too, brings its own sqlite3.
    probe = ("import sys\nalready = set(sys.modules)\n"
             "from sidecar.app import make_app\nfrom sidecar.config import load_config\n"
             "from sidecar.metrics import Metrics\nfrom sidecar.state import State\n"
             f"make_app(load_config({str(path)!r}), State(Metrics(enabled={metrics})))\n"
             f"print(sorted(m for m in {optional!r} if m in sys.modules and m not in already))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # pyotp and segno: at the first code or enrolment; sqlite3: at the factor store's first use.
    loaded = (["OpenSSL", "webauthn"] if factors else []) + (["prometheus_client"] if metrics else [])
    assert result.stdout.split("\n")[-2] == repr(sorted(loaded))

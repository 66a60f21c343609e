"""What a release says about itself, checked without a server: its version (-V) and changelog, its
licence, a description for every subcommand, check-config's two ways of naming the file, one
configuration path, no install instruction that cannot work (auth-sidecar is not on PyPI), and the
README's "Deploy for real" blocks taken as printed."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from sidecar import __version__, cli
from sidecar.config import parse_config
from tests.conftest import need
from tests.testbed import ROOT
from tests.testbed.tls import make_pki

README = ROOT / "README.md"
CONFIG_PATH = "/etc/auth-sidecar/config.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def deploy_section() -> str:
    text = README.read_text()
    start = text.index("\n## Deploy for real\n")
    return text[start:text.index("\n## ", start + 1)]


def test_dash_v_prints_the_version() -> None:
    for flag in ("-V", "--version"):
        result = run(flag)
        assert (result.returncode, result.stdout) == (0, f"auth-sidecar {__version__}\n")


def test_the_changelog_has_an_unreleased_section_then_this_version() -> None:
    releases = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert releases[:2] == ["Unreleased", __version__]


def test_the_licence_is_the_apache_license_that_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (project["license"], project["license-files"]) == ("Apache-2.0", ["LICENSE"])
    words = (ROOT / "LICENSE").read_text().split()
    assert words[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in " ".join(words)


@pytest.mark.parametrize("command", [command.name for command in cli.COMMANDS])
def test_every_subcommand_prints_its_description(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    (described,) = [c for c in cli.COMMANDS if c.name == command]
    assert len(described.description.split()) >= 8 and described.help
    with pytest.raises(SystemExit) as stopped:
        cli.main([command, "--help"])
    assert stopped.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the text to the terminal
    assert shown.startswith(f"usage: auth-sidecar {command}")
    assert " ".join(described.description.split()) in shown


def test_the_command_lists_every_subcommand_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for command in cli.COMMANDS:
        assert f"{command.name} {' '.join(command.help.split())}" in shown


def test_check_config_takes_the_file_positionally_or_with_config(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"ldap": {"server_uri": "ldap://127.0.0.1",
                                             "user_dn_template": "uid=%(user)s,dc=x"}}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("ldap: {server_uri: http://x}\n")
    for file, status in ((good, 0), (bad, 2)):
        for how in ([str(file)], ["--config", str(file)]):
            result = run("check-config", *how)
            assert result.returncode == status, (how, result.stderr)
            assert str(file) in result.stdout + result.stderr


def test_check_config_reads_the_one_configuration_path_by_default() -> None:
    if Path(CONFIG_PATH).exists():
        pytest.skip(f"{CONFIG_PATH} exists on this machine")
    result = run("check-config")
    assert result.returncode == 2 and CONFIG_PATH in result.stderr and "Traceback" not in result.stderr
    assert cli.DEFAULT_CONFIG == CONFIG_PATH


def tracked_text_files() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = {}
    for name in names:
        try:
            files[name] = (ROOT / name).read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
    return files


def test_nothing_tells_people_to_install_auth_sidecar_from_an_index() -> None:
    # It is not published: `pip install auth-sidecar` would find nothing, or somebody else's. A wheel
    # file (auth_sidecar-0.1.0-py3-none-any.whl) is fine, and so is a line that says it does not work.
    claim = re.compile(r"pip3? install (-[-\w]+ )*auth[-_]sidecar(?=[\s`'\"[]|$)")
    claims = [f"{name}: {line.strip()}" for name, text in tracked_text_files().items() for line in text.splitlines()
              if claim.search(line) and not re.search(r"\bnot\b", line) and name != "tests/test_release.py"]
    assert claims == []


def test_the_configuration_has_one_path_everywhere() -> None:
    found = {(name, path) for name, text in tracked_text_files().items()
             for path in re.findall(r"/etc/auth-sidecar/[\w.-]+\.ya?ml", text)}
    assert {path for _, path in found} <= {CONFIG_PATH, "/etc/auth-sidecar/users.yaml"}, found


def test_the_deploy_configuration_is_accepted_as_printed(tmp_path: Path) -> None:
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", deploy_section(), re.S) if CONFIG_PATH in b]
    credentials = "/run/credentials/auth-sidecar.service/"
    for name in set(re.findall(re.escape(credentials) + r"([\w-]+)", block)):  # what LoadCredential= hands over
        (tmp_path / name).write_text("x" * 43 + "\n")
    config = parse_config(yaml.safe_load(block.replace(credentials, f"{tmp_path}/")))
    assert config.server.public_url is not None and config.server.public_url.startswith("https://")
    assert config.sessions is not None and config.sessions.secure
    unit = (ROOT / "deploy" / "systemd" / "auth-sidecar.service").read_text()
    for name in re.findall(re.escape(credentials) + r"([\w-]+)", block):
        assert f"LoadCredential={name}:/etc/auth-sidecar/{name}" in unit


def test_the_deploy_https_site_passes_nginx_t(tmp_path: Path) -> None:
    """The nginx block as the README says to use it: site.conf's server head replaced by the
    block's first server, the block's redirect server beside it."""
    nginx = need("nginx")
    (block,) = re.findall(r"```nginx\n(.*?)```", deploy_section(), re.S)
    https, redirect = block.split("\n}\n", 1)
    head = https.split("server {\n", 1)[1].split("\n    # ...then the rest of site.conf")[0] + "\n"
    pki = make_pki(tmp_path / "pki")  # nginx -t loads the certificate and its key
    head = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {pki.cert_file};", head)
    head = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {pki.key_file};", head)
    site = (ROOT / "deploy" / "nginx" / "site.conf").read_text()
    assert "    listen 80;\n    server_name _;\n" in site  # what the README says to replace
    site = site.replace("    listen 80;\n    server_name _;\n", head)
    site = site.replace("/etc/nginx/snippets/", f"{ROOT}/deploy/nginx/")
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
                    f"http {{\n{site}\n{redirect}\n}}\n")
    checked = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr

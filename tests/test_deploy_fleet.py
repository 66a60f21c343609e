"""The deploy files of a fleet (deploy/kubernetes/redis.yaml, the replicas and state: of
auth-sidecar.yaml, the systemd unit with workers), checked without a cluster: parsed, and every
piece that must name another asserted to name it (the Service the sidecar's url points at selects
the Redis pod; the ACL's user, keys and channel are the sidecar's username and key prefix...).
The ACL line itself is loaded into a real redis-server and tried with the kinds of command the
store sends (scripts, scans, pipelines, pub/sub) and some it must not (FLUSHALL, CONFIG, KEYS)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from sidecar.config import parse_config
from tests.conftest import ldap_settings, need
from tests.testbed import ROOT
from tests.testbed.redis import RedisServer
from tests.testbed.slapd import Slapd

KUBERNETES = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "auth-sidecar.service"
Documents = dict[tuple[str, str], dict[str, Any]]


def documents(name: str) -> Documents:
    found = yaml.safe_load_all((KUBERNETES / name).read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in found if d}


@pytest.fixture(scope="module")
def manifests() -> Documents:
    return {**documents("auth-sidecar.yaml"), **documents("redis.yaml")}


def sidecar_settings(manifests: Documents) -> dict[str, Any]:
    settings: dict[str, Any] = yaml.safe_load(manifests[("ConfigMap", "auth-sidecar")]["data"]["config.yaml"])
    return settings


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    return labels


def test_two_replicas_share_their_state_through_redis(manifests: Documents, tmp_path: Path) -> None:
    sidecar = manifests[("Deployment", "auth-sidecar")]
    assert sidecar["spec"]["replicas"] >= 2
    text = manifests[("ConfigMap", "auth-sidecar")]["data"]["config.yaml"]
    for key in manifests[("Secret", "auth-sidecar")]["stringData"]:
        (tmp_path / key).write_text("x" * 40)
    config = parse_config(yaml.safe_load(text.replace("/run/secrets/auth-sidecar", str(tmp_path))))
    assert config.state.backend == "redis" and config.server.workers == 1  # one process per pod
    assert config.state.password is not None and config.state.password.reveal() == "x" * 40
    budget = manifests[("PodDisruptionBudget", "auth-sidecar")]["spec"]
    assert budget["minAvailable"] == 1 and budget["selector"]["matchLabels"].items() <= pod_labels(sidecar).items()


def test_the_sidecar_s_url_names_the_redis_service_which_selects_the_redis_pod(manifests: Documents) -> None:
    url = urlsplit(sidecar_settings(manifests)["state"]["url"])
    service = manifests[("Service", url.hostname or "")]["spec"]
    (port,) = service["ports"]
    assert port["port"] == url.port
    redis = manifests[("Deployment", "auth-sidecar-redis")]
    assert service["selector"].items() <= pod_labels(redis).items()
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert [p["name"] for p in container["ports"]] == [port["targetPort"]]


def test_redis_persists_every_write_evicts_nothing_and_lets_nobody_in_as_default(manifests: Documents) -> None:
    conf = manifests[("ConfigMap", "auth-sidecar-redis")]["data"]["redis.conf"]
    settings = dict(line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.startswith("#"))
    assert (settings["appendonly"], settings["appendfsync"]) == ("yes", "always")
    assert settings["maxmemory-policy"] == "noeviction"
    pod = manifests[("Deployment", "auth-sidecar-redis")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[settings["dir"]]]["persistentVolumeClaim"]["claimName"] in \
        {name for kind, name in manifests if kind == "PersistentVolumeClaim"}
    acl_dir, acl_file = settings["aclfile"].rsplit("/", 1)
    assert volumes[mounts[acl_dir]]["secret"]["secretName"] == "auth-sidecar-redis"
    acl = manifests[("Secret", "auth-sidecar-redis")]["stringData"][acl_file]
    assert "user default off" in acl.splitlines()
    assert container["args"] == ["redis-server", "/etc/redis/redis.conf"] and mounts["/etc/redis"] == "config"
    assert manifests[("Deployment", "auth-sidecar-redis")]["spec"]["strategy"] == {"type": "Recreate"}


def test_the_acl_user_is_the_sidecar_s_limited_to_its_prefix(manifests: Documents) -> None:
    state = sidecar_settings(manifests)["state"]
    prefix = state.get("key_prefix", "auth-sidecar:")
    acl = manifests[("Secret", "auth-sidecar-redis")]["stringData"]["users.acl"]
    (line,) = [line for line in acl.splitlines() if line.startswith(f"user {state['username']} ")]
    rules = line.split()
    assert "on" in rules and f"~{prefix}*" in rules and f"&{prefix}*" in rules
    # Everything taken away first, categories given back, the dangerous taken away again: only
    # single commands (TIME, INFO) come after.
    assert rules.index("-@all") < rules.index("-@dangerous")
    assert all(not rule.startswith("+@") for rule in rules[rules.index("-@dangerous"):])
    password = next(rule[1:] for rule in rules if rule.startswith(">"))
    assert manifests[("Secret", "auth-sidecar")]["stringData"]["redis-password"] == password


def test_only_the_sidecar_s_pods_reach_redis_and_both_pods_are_locked_down(manifests: Documents) -> None:
    (rule,) = manifests[("NetworkPolicy", "auth-sidecar-redis")]["spec"]["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= pod_labels(manifests[("Deployment", "auth-sidecar")]).items()
    assert rule["ports"] == [{"port": 6379}]
    for name in ("auth-sidecar", "auth-sidecar-redis"):
        pod = manifests[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}


def test_the_systemd_unit_signals_the_supervisor_alone_and_kills_the_rest_at_the_timeout() -> None:
    settings = [line.split("=", 1) for line in UNIT.read_text().splitlines()
                if "=" in line and not line.startswith(("#", "["))]
    found = dict(settings)
    assert found["KillMode"] == "mixed" and found["Type"] == "notify"
    assert "NotifyAccess" not in found  # main, the default: only the supervisor speaks to systemd
    assert found["ExecReload"] == "/bin/kill -HUP $MAINPID"  # the last one: SIGHUP to the supervisor
    assert float(found["TimeoutStopSec"].rstrip("s")) >= 40  # the workers' drain, and the supervisor's wait


class ShippedAclRedis(RedisServer):
    """A redis-server with deploy/kubernetes/redis.yaml's ACL: nobody as default, the sidecar's user
    as shipped; ``username`` and ``password`` are what state: signs in with."""

    username = "auth-sidecar"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        acl = documents("redis.yaml")[("Secret", "auth-sidecar-redis")]["stringData"]["users.acl"]
        (workdir / "users.acl").write_text(acl)
        found = re.search(rf"^user {self.username} .*>(\S+)", acl, re.M)
        assert found is not None, acl
        self.acl_password = found.group(1)

    def prepare(self) -> None:
        super().prepare()
        with (self.workdir / "redis.conf").open("a") as conf:
            conf.write(f'aclfile "{self.workdir / "users.acl"}"\n')

    def state(self) -> dict[str, Any]:
        """A state: section signing in as the shipped user (the password from a file, as deployed)."""
        secret = self.workdir / "redis-password"
        secret.write_text(self.acl_password)
        return {"backend": "redis", "url": self.url, "username": self.username, "password": {"file": str(secret)}}


@pytest.mark.server
def test_the_acl_allows_what_the_store_does_and_nothing_else(tmp_path: Path) -> None:
    """A real redis-server with the shipped ACL line: the store's kinds of command pass, others not."""
    need("redis-server")
    import redis

    with ShippedAclRedis(tmp_path / "redis") as server:
        client = redis.Redis(port=server.port, username=server.username, password=server.acl_password,
                             socket_timeout=5)
        script = client.register_script("local t = redis.call('TIME'); "
                                        "redis.call('set', KEYS[1], ARGV[1], 'px', 60000); "
                                        "redis.call('publish', 'auth-sidecar:events', 'x'); "
                                        "return redis.call('zadd', KEYS[2], t[1], 'a')")
        assert script(keys=["auth-sidecar:ban:user:x", "auth-sidecar:fail:user:x"], args=["1"]) == 1
        assert sorted(client.scan_iter(match="auth-sidecar:*")) == [b"auth-sidecar:ban:user:x",
                                                                    b"auth-sidecar:fail:user:x"]
        pipe = client.pipeline()
        pipe.zcount("auth-sidecar:fail:user:x", 0, "+inf")
        pipe.pttl("auth-sidecar:ban:user:x")
        assert pipe.execute()[0] == 1
        assert client.time() and client.info("server")["redis_version"]
        pubsub = client.pubsub()
        pubsub.subscribe("auth-sidecar:events")
        pubsub.close()
        for refused in (lambda: client.set("elsewhere", 1), client.flushall, lambda: client.config_get("*"),
                        lambda: client.keys("*"), lambda: client.publish("elsewhere", "x")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                refused()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=server.port, socket_timeout=5).set("auth-sidecar:x", 1)
        client.close()


@pytest.mark.server
def test_check_config_online_passes_through_the_shipped_acl(tmp_path: Path, slapd: Slapd) -> None:
    """What `check-config --online` asks of the store (scripts reading TIME, writes, publishing,
    the version, the clock) is what the shipped ACL allows."""
    need("redis-server")
    with ShippedAclRedis(tmp_path / "redis") as server:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"ldap": ldap_settings(slapd), "state": server.state()}))
        result = subprocess.run([sys.executable, "-m", "sidecar", "check-config", "--online", "--config",
                                 str(config)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "runs scripts (TIME too)" in result.stdout + result.stderr


def test_kubernetes_readme_lists_redis_yaml() -> None:
    readme = (KUBERNETES / "README.md").read_text()
    assert "redis.yaml" in readme and "kubectl apply -f redis.yaml" in readme

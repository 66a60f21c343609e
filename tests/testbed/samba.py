r"""A private Samba Active Directory domain controller on 127.0.0.1, for tests and the demo.

    with SambaDC(tmp_path, cache_dir=tmp_cache) as ad:
        ad.uri, ad.ldaps_uri, ad.gc_uri, ad.ca_file, ad.users["alice"]  # -> "Passw0rd!Alice"

Domain: realm EXAMPLE.TEST, NetBIOS domain EXAMPLE, base DN DC=example,DC=test.
Samba's ports are fixed (389 LDAP, 636 LDAPS, 3268 Global Catalog, 3269 Global Catalog over TLS),
so each SambaDC runs in a network namespace of its own (tests/testbed/netns.py) and is reached
through relays on free ports of 127.0.0.1: `uri`, `ldaps_uri`, `gc_uri`, `gc_ldaps_uri` (and
`relay_ports`, inner port -> outer port). Any number can run side by side, two checkouts' tests too.
The TLS certificate comes from tests.testbed.tls (SAN DNS:localhost, IP:127.0.0.1), freshly made
on every start: verify `ldaps_uri` against `ca_file` with hostname checks on.

Seeded entries, all in CN=Users,DC=example,DC=test (UPN <sAMAccountName>@example.test):

    | sAMAccountName  | password       | CN of the DN    | givenName, sn, mail                | state   |
    |-----------------|----------------|-----------------|------------------------------------|---------|
    | Administrator   | Passw0rd!Admin | Administrator   |                                    | admin   |
    | svc-sidecar     | Passw0rd!Svc   | svc-sidecar     |                                    | service |
    | alice           | Passw0rd!Alice | Alice Liddell   | Alice, Liddell, alice@example.test |         |
    | bob             | Passw0rd!Bob   | Bob Builder     | Bob, Builder, bob@example.test     |         |
    | disabled-user   | Passw0rd!Dis   | disabled-user   |                                    | 533     |
    | expired-user    | Passw0rd!Exp   | expired-user    |                                    | 701     |
    | mustchange-user | Passw0rd!Chg   | mustchange-user |                                    | 773     |
    | locked-user     | Passw0rd!Lck   | locked-user     |                                    | 775     |

    Groups (global security groups, CN=<name>): developers = alice; engineering = developers;
    division = engineering; netbox-users = division; staff = alice. So alice is transitively in
    developers, engineering, division, netbox-users and staff; bob is in no group of ours.
    memberOf lists direct groups only; `(member:1.2.840.113556.1.4.1941:=<user DN>)` finds all.

Binds: a simple bind works with the UPN (alice@example.test), the down-level name
(EXAMPLE\alice) or the full DN (CN=Alice Liddell,CN=Users,DC=example,DC=test). A bare
sAMAccountName (alice) does NOT bind: it fails like a wrong password. Plain ldap:// simple binds
are allowed (`ldap server require strong auth = no`). Anonymous binds may read the rootDSE only.

Refusals: every failed simple bind is result 49 (invalidCredentials) with the message

    80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data <code>, v1db1

where <code> is 52e for a wrong password or an unknown name and, with the right password, 533
for disabled-user, 701 for expired-user, 773 for mustchange-user, 775 for locked-user. ldap3
shows it as conn.result["message"] after conn.bind() returns False, or as the `.message` of the
LDAPInvalidCredentialsResult that bind() raises under raise_exceptions=True. auto_bind=True
loses it: its LDAPBindError says only "automatic bind not successful - invalidCredentials".

Password policy: complexity off, no minimum length, age or history. Lockout is off
(lockoutThreshold 0) once seeding is done, so wrong passwords never lock anyone out: locked-user
was locked by three bad binds under a temporary threshold of 3 and Samba keeps that lock for
the lockout duration (99999 minutes) after the threshold is reset.

Timing on a 2-core machine: provisioning takes 5-6 s (7 s for a whole first start) and happens
once per cache_dir, which keeps a provisioned template for the installed Samba version; a start
from that template takes 0.7-1.2 s (copy, Samba listening after ~0.5 s, seeding ~0.3 s), and
restarting a stopped SambaDC in its own, already seeded workdir about 0.25 s.

Passwords go over LDAPS, never on a command line, except the Administrator's, which
`samba-tool domain provision --adminpass` only takes as an argument (acceptable in a test fixture).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ldap3 import MODIFY_REPLACE, NONE, Connection, Server, Tls

from tests.testbed import require_binary
from tests.testbed.netns import Namespace, has_own_network, in_own_network, relays
from tests.testbed.process import ManagedProcess
from tests.testbed.tls import Pki, make_pki

REALM = "EXAMPLE.TEST"
DOMAIN = "EXAMPLE"
BASE_DN = "DC=example,DC=test"
USERS_DN = f"CN=Users,{BASE_DN}"
LDAP, LDAPS, GC, GC_LDAPS = PORTS = (389, 636, 3268, 3269)  # inside the DC's own network

PROVISION_TIMEOUT = 120.0

LOCKOUT_THRESHOLD = 3
# AD stores durations as negative counts of 100 ns; 99999 minutes is samba-tool's maximum.
LOCKOUT_DURATION = -99999 * 60 * 10**7
# accountExpires is a FILETIME (100 ns since 1601); this one is 2000-01-01, long past.
EXPIRED_IN_2000 = 125911584000000000


@dataclass(frozen=True)
class SeedUser:
    sam: str
    password: str
    given_name: str = ""
    surname: str = ""
    mail: str = ""
    refusal: str = ""  # the AD sub-code a bind with the right password gets

    @property
    def cn(self) -> str:
        return f"{self.given_name} {self.surname}" if self.given_name else self.sam


SERVICE = SeedUser("svc-sidecar", "Passw0rd!Svc")
SEED_USERS = (
    SeedUser("alice", "Passw0rd!Alice", "Alice", "Liddell", "alice@example.test"),
    SeedUser("bob", "Passw0rd!Bob", "Bob", "Builder", "bob@example.test"),
    SeedUser("disabled-user", "Passw0rd!Dis", refusal="533"),
    SeedUser("expired-user", "Passw0rd!Exp", refusal="701"),
    SeedUser("mustchange-user", "Passw0rd!Chg", refusal="773"),
    SeedUser("locked-user", "Passw0rd!Lck", refusal="775"),
)
# (group, members): members name users or groups made earlier in this list.
SEED_GROUPS = (
    ("developers", ("alice",)),
    ("engineering", ("developers",)),
    ("division", ("engineering",)),
    ("netbox-users", ("division",)),
    ("staff", ("alice",)),
)
# Attributes that put an account in its refusal state when it is added; 775 needs bad binds.
REFUSAL_ATTRIBUTES: dict[str, dict[str, int]] = {
    "533": {"userAccountControl": 514},  # NORMAL_ACCOUNT | ACCOUNTDISABLE
    "701": {"accountExpires": EXPIRED_IN_2000},
    "773": {"pwdLastSet": 0},
}


class SambaDC(ManagedProcess):
    """A `samba -i -M single` child process serving EXAMPLE.TEST, seeded with the table above."""

    name = "samba"
    start_timeout = 30.0
    stop_timeout = 5.0
    new_session = True
    realm = REALM
    domain = DOMAIN
    base_dn = BASE_DN
    admin_dn = f"CN=Administrator,{USERS_DN}"
    admin_password = "Passw0rd!Admin"
    service_dn = f"CN={SERVICE.cn},{USERS_DN}"
    service_password = SERVICE.password

    def __init__(self, workdir: Path, cache_dir: Path | None = None) -> None:
        """workdir holds the DC; cache_dir (optional) keeps a provisioned template between runs."""
        self.workdir = workdir.resolve()
        self.cache_dir = cache_dir
        self.users: dict[str, str] = {user.sam: user.password for user in SEED_USERS}
        self.refusals: dict[str, str] = {u.sam: u.refusal for u in SEED_USERS if u.refusal}
        self.pki: Pki = make_pki(self.workdir / "tls")
        self.ca_file: Path = self.pki.ca_file  # verifies ldaps://127.0.0.1 with hostname checks
        self._added: list[SeedUser] = []
        self.log_file = self.workdir / "log" / "samba.log"
        self._relays = relays(PORTS)
        self.relay_ports = {inner: relay.port for inner, relay in self._relays.items()}
        self.host = "127.0.0.1"
        self.uri = f"ldap://{self.host}:{self.relay_ports[LDAP]}"
        self.ldaps_uri = f"ldaps://{self.host}:{self.relay_ports[LDAPS]}"
        self.gc_uri = f"ldap://{self.host}:{self.relay_ports[GC]}"
        self.gc_ldaps_uri = f"ldaps://{self.host}:{self.relay_ports[GC_LDAPS]}"
        self._namespace: Namespace | None = None

    def user_dn(self, sam: str) -> str:
        """The DN of a seeded or added user (its CN is the full name where it has one)."""
        user = next(u for u in (SERVICE, *SEED_USERS, *self._added) if u.sam == sam)
        return f"CN={user.cn},{USERS_DN}"

    # Changes for tests that need more than the seed. They stay for the life of this workdir.

    def add_user(self, sam: str, password: str) -> str:
        """Add an enabled user CN=<sam> (UPN <sam>@example.test) over LDAPS; return its DN."""
        user = SeedUser(sam, password)
        self._added.append(user)
        with self._admin() as conn:
            self._add_user(conn, user)
        self.users[sam] = password
        return self.user_dn(sam)

    def add_groups(self, names: list[str], member_dns: list[str]) -> None:
        """Add a global security group CN=<name> per name, each with these members, in one ldbadd
        on the running DC's database: 2,000 groups take 4 s, over LDAP 10 s."""
        members = "".join(f"member: {dn}\n" for dn in member_dns)
        ldif = "".join(
            f"dn: {self.group_dn(name)}\nobjectClass: group\nsAMAccountName: {name}\n{members}\n"
            for name in names
        )
        command = [_binary("ldbadd"), "-H", str(self.workdir / "private" / "sam.ldb")]
        result = subprocess.run(command, input=ldif, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"ldbadd of {len(names)} groups failed: {result.stdout}{result.stderr}")

    def group_dn(self, name: str) -> str:
        return f"CN={name},{USERS_DN}"

    def prepare(self) -> None:
        """Provision (or copy the cached template) once per workdir; write smb.conf."""
        _check_can_run()
        if not (self.workdir / "private" / "sam.ldb").exists():
            self._materialize()
        self._config = self._write_config()

    def command(self) -> Sequence[str]:
        # stdin is a pipe we hold: `samba -i` exits when it closes, even if pytest dies.
        return in_own_network([_binary("samba"), "-s", str(self._config), "-i", "-M", "single", "--debug-stdout"])

    def stdin(self) -> int | None:
        return subprocess.PIPE

    def ready(self) -> bool:
        """Ready when every port accepts inside the DC's network; the relays then lead there."""
        if self._namespace is None:
            assert self.process is not None
            if not has_own_network(self.process.pid):
                return False  # unshare has not made it yet
            self._namespace = Namespace(self.process.pid)
            for relay in self._relays.values():
                relay.namespace = self._namespace
        return all(self._namespace.accepts(port) for port in PORTS)

    def started(self) -> None:
        """Seed the domain once per workdir."""
        if not self._seeded_marker.exists():
            self._seed()
            self._seeded_marker.touch()

    def terminate(self, process: subprocess.Popen[bytes]) -> None:
        """Close Samba's stdin (it exits on EOF), kill its process group if it lingers, wait."""
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for relay in self._relays.values():
            relay.namespace = None
        if self._namespace is not None:
            self._namespace.close()
            self._namespace = None

    def close(self) -> None:
        """Stop, and give the relays' ports back."""
        self.stop()
        for relay in self._relays.values():
            relay.close()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # Provisioning

    def _materialize(self) -> None:
        """Fill workdir with a provisioned domain: from the cached template, else from scratch."""
        if self.cache_dir is None:
            _provision(self.workdir)
        else:
            shutil.copytree(_template(self.cache_dir), self.workdir, dirs_exist_ok=True)

    def _write_config(self) -> Path:
        """Our own smb.conf: provision's copy names the directory it was provisioned in."""
        for name in ("etc", "run", "log", "cache"):
            (self.workdir / name).mkdir(exist_ok=True)
        config = self.workdir / "etc" / "smb.conf"
        config.write_text(_smb_conf(self.workdir, self.pki))
        return config

    # Seeding, as the Administrator over LDAPS (AD only takes passwords on encrypted connections)

    @property
    def _seeded_marker(self) -> Path:
        return self.workdir / "seeded"

    def _seed(self) -> None:
        with self._admin() as conn:
            _relax_password_policy(conn)
            for user in (SERVICE, *SEED_USERS):
                self._add_user(conn, user)
            for group, members in SEED_GROUPS:
                dns = [self._member_dn(member) for member in members]
                conn.add(self.group_dn(group), ["top", "group"], {"sAMAccountName": group, "member": dns})
            self._lock_out(conn, "locked-user")

    def _add_user(self, conn: Connection, user: SeedUser) -> None:
        attributes: dict[str, object] = {
            "sAMAccountName": user.sam,
            "userPrincipalName": f"{user.sam}@{REALM.lower()}",
            "unicodePwd": _unicode_pwd(user.password),
            "userAccountControl": 512,  # NORMAL_ACCOUNT, enabled
        }
        if user.given_name:
            attributes.update(givenName=user.given_name, sn=user.surname, displayName=user.cn)
        if user.mail:
            attributes["mail"] = user.mail
        attributes.update(REFUSAL_ATTRIBUTES.get(user.refusal, {}))
        conn.add(self.user_dn(user.sam), ["top", "person", "organizationalPerson", "user"], attributes)

    def _lock_out(self, conn: Connection, sam: str) -> None:
        """Lock sam by bad binds under a temporary threshold; the lock outlives the reset to 0."""
        _set_domain(conn, lockoutThreshold=LOCKOUT_THRESHOLD)
        server = Server(self.uri, get_info=NONE)
        for _ in range(LOCKOUT_THRESHOLD):
            attempt = Connection(server, f"{sam}@{REALM.lower()}", "wrong password")
            attempt.bind()
            attempt.unbind()
        _set_domain(conn, lockoutThreshold=0)

    def _member_dn(self, name: str) -> str:
        is_user = any(user.sam == name for user in SEED_USERS)
        return self.user_dn(name) if is_user else self.group_dn(name)

    def _admin(self) -> Connection:
        """A connection that binds as Administrator on `with` and raises on any failed operation."""
        # Our own child on loopback; ldap3's certificate name check warns (ssl.match_hostname).
        server = Server(self.ldaps_uri, tls=Tls(validate=ssl.CERT_NONE), get_info=NONE)
        return Connection(server, self.admin_dn, self.admin_password, raise_exceptions=True)


def _check_can_run() -> None:
    if os.geteuid() != 0:
        raise PermissionError("a Samba AD DC must run as root")


def _template(cache_dir: Path) -> Path:
    """A provisioned domain under cache_dir for this Samba version, made once (race-free)."""
    version = subprocess.run(
        [_binary("samba"), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    # The provisioning's own arguments are part of the name: a template made with others is not ours.
    arguments = hashlib.sha256(" ".join(_provision_arguments()).encode()).hexdigest()[:12]
    template = cache_dir / f"samba-dc-{version}-{arguments}"
    if not template.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
        try:
            _provision(building)
            with contextlib.suppress(OSError):  # another process finished first: theirs is as good
                building.rename(template)
        finally:
            shutil.rmtree(building, ignore_errors=True)  # already gone after the rename
    return template


def _provision(directory: Path) -> None:
    """samba-tool domain provision into directory (~5 s); -s /dev/null ignores /etc/samba."""
    command = [_binary("samba-tool"), "domain", "provision", "-s", os.devnull, f"--targetdir={directory}",
               *_provision_arguments()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=PROVISION_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"samba-tool domain provision failed:\n{result.stdout}{result.stderr}")


def _provision_arguments() -> list[str]:
    return [
        f"--realm={REALM}", f"--domain={DOMAIN}", "--host-name=dc1", "--server-role=dc",
        "--dns-backend=NONE", "--use-rfc2307", f"--adminpass={SambaDC.admin_password}",
    ]  # fmt: skip


def _smb_conf(workdir: Path, pki: Pki) -> str:
    """Only the LDAP service, loopback only, every path inside workdir."""
    return f"""\
[global]
	netbios name = DC1
	realm = {REALM}
	workgroup = {DOMAIN}
	server role = active directory domain controller
	server services = ldap
	interfaces = lo
	bind interfaces only = yes
	ldap server require strong auth = no
	idmap_ldb:use rfc2307 = yes
	tls enabled = yes
	tls keyfile = {pki.key_file}
	tls certfile = {pki.cert_file}
	tls cafile = {pki.ca_file}
	private dir = {workdir}/private
	state directory = {workdir}/state
	cache directory = {workdir}/cache
	lock directory = {workdir}
	binddns dir = {workdir}/bind-dns
	pid directory = {workdir}/run
	ncalrpc dir = {workdir}/run/ncalrpc
	winbindd socket directory = {workdir}/run/winbindd
	log file = {workdir}/log/log.%m
"""


def _relax_password_policy(conn: Connection) -> None:
    """No complexity, length, age or history rules, so seeded passwords are taken as given."""
    _set_domain(
        conn,
        pwdProperties=0,
        minPwdLength=0,
        minPwdAge=0,
        pwdHistoryLength=0,
        lockoutThreshold=0,
        lockoutDuration=LOCKOUT_DURATION,
        lockOutObservationWindow=LOCKOUT_DURATION,
    )


def _set_domain(conn: Connection, **values: int) -> None:
    conn.modify(BASE_DN, {name: [(MODIFY_REPLACE, [value])] for name, value in values.items()})


def _unicode_pwd(password: str) -> bytes:
    """AD's write-only password attribute: the password in double quotes, UTF-16LE."""
    return f'"{password}"'.encode("utf-16-le")


def _binary(name: str) -> str:
    return require_binary(name, "packages samba, samba-ad-dc, ldb-tools")


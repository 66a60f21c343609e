r"""A private OpenLDAP slapd on 127.0.0.1 with a fixed demo directory, for tests and the demo.

    with Slapd(tmp_path) as ldap:
        ldap.uri, ldap.ldaps_uri, ldap.pki.ca_file, ldap.users["alice"]  # -> "alice-pass"

One slapd process serves two databases (memberof + refint overlays on the first):

dc=example,dc=com  (example.ldif; rootdn cn=admin,dc=example,dc=com, password "admin-pass")
  ou=services: cn=sidecar (organizationalRole + simpleSecurityObject), password "sidecar-pass"
  ou=people: uid=<uid>, inetOrgPerson with cn "<givenName> <sn>":

    | uid     | givenName | sn       | mail               | password    | notes                   |
    |---------|-----------|----------|--------------------|-------------|-------------------------|
    | alice   | Alice     | Liddell  | alice@example.com  | alice-pass  | posixAccount 10001/5000 |
    | bob     | Bob       | Builder  | bob@example.com    | bob-pass    | posixAccount 10002/6000 |
    | carol   | Carol     | Danvers  | carol@example.com  | carol-pass  | nested + cyclic groups  |
    | jose    | José      | 山田     | jose@example.com   | jose-pass   | non-ASCII names         |
    | dave    | Dave      | Disabled | dave@example.com   | dave-pass   | in no group: inactive   |
    | o'brien | Conan     | O'Brien  | obrien@example.com | obrien-pass |                         |
    | a+b     | Plus      | Sign     | ab@example.com     | ab-pass     | DN uid=a\+b             |
    | x,y     | Comma     | Sign     | xy@example.com     | xy-pass     | DN uid=x\,y             |
    | star*   | Star      | Sign     | star@example.com   | star-pass   |                         |

  ou=groups: cn=<cn>
    groupOfNames (member): active = alice bob carol jose o'brien a+b x,y star*; staff = alice;
      superuser = alice; netbox-users = alice bob carol jose; banned = bob;
      level1 = carol, level2 = cn=level1, level3 = cn=level2 (carol is in all three transitively);
      cycle-a = carol + cn=cycle-b, cycle-b = cn=cycle-a.
    groupOfUniqueNames (uniqueMember): unique-team = alice.
    posixGroup: ops, gidNumber 5000 (alice's primary group), memberUid bob.
  ou=partners: a referral (ref) to ldap://127.0.0.1:<port>/ou=people,dc=other,dc=com

dc=other,dc=com  (other.ldif; rootdn cn=admin,dc=other,dc=com, password "admin-pass")
  uid=remote,ou=people: Remote Partner, remote@other.com, password "remote-pass"

memberOf (operational: ask for it by name) lists an entry's direct groupOfNames groups only.
userPassword is readable by nobody; everything else by anyone, anonymous included.
slapd returns DNs with hex escapes (uid=a\2Bb for uid=a\+b): compare DNs parsed, not as strings.
A subtree search from dc=example,dc=com returns ou=partners as a continuation reference, which
ldap3 never follows; a search based at or below ou=partners gets a referral result instead.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from string import Template

from ldap3 import BASE, LEVEL, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, NONE, Connection, Server
from ldap3.utils.dn import escape_rdn

from tests.testbed import free_port, require_binary
from tests.testbed.process import ManagedProcess
from tests.testbed.tls import Pki, make_pki

HERE = Path(__file__).resolve().parent

DEMO_USERS: dict[str, str] = {
    "alice": "alice-pass",
    "bob": "bob-pass",
    "carol": "carol-pass",
    "jose": "jose-pass",
    "dave": "dave-pass",
    "o'brien": "obrien-pass",
    "a+b": "ab-pass",
    "x,y": "xy-pass",
    "star*": "star-pass",
}


CONFIG = Template("""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload refint
pidfile "$workdir/slapd.pid"
argsfile "$workdir/slapd.args"
TLSCACertificateFile "$ca_file"
TLSCertificateFile "$cert_file"
TLSCertificateKeyFile "$key_file"
$verify_client

database mdb
maxsize 104857600
suffix "dc=example,dc=com"
rootdn "cn=admin,dc=example,dc=com"
rootpw $rootpw
directory "$workdir/example-data"
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
$limits
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
overlay refint
refint_attributes member

database mdb
maxsize 104857600
suffix "dc=other,dc=com"
rootdn "cn=admin,dc=other,dc=com"
rootpw $rootpw
directory "$workdir/other-data"
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read

database monitor
access to * by * read
""")
# With a size limit, every account (the service account too) gets at most that many entries per
# search, paged or not; the pager account pages through any number (size.prtotal unlimited).
LIMITS = Template("""\
sizelimit $limit
limits dn.exact="$pager_dn" size.soft=$limit size.hard=$limit size.prtotal=unlimited
""")
PAGER = Template("""\
dn: $pager_dn
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: pager
description: a service account that may page through any number of entries
userPassword: $password
""")


def ssha(password: str) -> str:
    """The {SSHA} userPassword value slappasswd would produce for password."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


class Slapd(ManagedProcess):
    """A slapd child process on two free ports (ldap:// and ldaps://), seeded with the demo data."""

    base_dn = "dc=example,dc=com"
    admin_dn = "cn=admin,dc=example,dc=com"
    admin_password = "admin-pass"
    other_admin_dn = "cn=admin,dc=other,dc=com"
    service_dn = "cn=sidecar,ou=services,dc=example,dc=com"
    service_password = "sidecar-pass"
    pager_dn = "cn=pager,ou=services,dc=example,dc=com"  # only with a size_limit
    pager_password = "pager-pass"

    name = "slapd"
    start_timeout = 10.0
    stop_timeout = 5.0
    new_session = True

    def __init__(self, workdir: Path, *, size_limit: int | None = None, require_client_cert: bool = False) -> None:
        """size_limit: slapd's sizelimit for dc=example,dc=com, and a pager account exempt from
        it when it pages (see LIMITS); None: slapd's defaults, the shared test directory's."""
        self.workdir = workdir.resolve()
        self.size_limit = size_limit
        self.require_client_cert = require_client_cert  # TLS sessions need a certificate the test CA signed
        self.port = free_port()
        self.ldaps_port = free_port()
        while self.ldaps_port == self.port:  # two quick free_port() calls may agree
            self.ldaps_port = free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_uri = f"ldaps://127.0.0.1:{self.ldaps_port}"
        self.pki: Pki = make_pki(self.workdir / "tls")
        self.users: dict[str, str] = dict(DEMO_USERS)  # kept current by the helpers below
        self.log_file = self.workdir / "slapd.log"

    def prepare(self) -> None:
        self._config = self._write_config()

    def command(self) -> Sequence[str]:
        # -d none: stay in the foreground and log only errors.
        return [require_binary("slapd"), "-d", "none", "-f", str(self._config), "-h",
                f"{self.uri}/ {self.ldaps_uri}/"]

    def ports(self) -> Sequence[int]:
        return (self.port,)  # both listeners open together at startup: the plain one stands for both

    def started(self) -> None:
        """Load other.ldif and example.ldif (and the pager account with a size limit)."""
        self._load(HERE / "other.ldif", self.other_admin_dn)
        self._load(HERE / "example.ldif", self.admin_dn)
        if self.size_limit is not None:
            self._load_text(PAGER.substitute(pager_dn=self.pager_dn, password=self.pager_password),
                            self.admin_dn, "the pager account")

    # DNs

    def user_dn(self, uid: str) -> str:
        return f"uid={escape_rdn(uid)},ou=people,{self.base_dn}"

    def group_dn(self, cn: str) -> str:
        return f"cn={escape_rdn(cn)},ou=groups,{self.base_dn}"

    # Changes made as the rootdn, for tests that need the directory to change under the daemon.

    def add_user(
        self,
        uid: str,
        password: str,
        *,
        given_name: str = "Test",
        sn: str = "User",
        mail: str | None = None,
        groups: tuple[str, ...] = ("active",),
    ) -> str:
        """Add an inetOrgPerson (no mail attribute when mail is None) to groups; return its DN."""
        dn = self.user_dn(uid)
        attributes: dict[str, str | list[str]] = {
            "uid": uid,
            "cn": f"{given_name} {sn}",
            "givenName": given_name,
            "sn": sn,
            "userPassword": ssha(password),
        }
        if mail is not None:
            attributes["mail"] = mail
        with self._admin() as conn:
            conn.add(dn, ["inetOrgPerson"], attributes)
        self.users[uid] = password
        for group in groups:
            self.add_to_group(uid, group)
        return dn

    def set_password(self, uid: str, password: str) -> None:
        self.modify_user(uid, userPassword=ssha(password))
        self.users[uid] = password

    def add_to_group(self, uid: str, group_cn: str) -> None:
        with self._admin() as conn:
            conn.modify(self.group_dn(group_cn), {"member": [(MODIFY_ADD, [self.user_dn(uid)])]})

    def remove_from_group(self, uid: str, group_cn: str) -> None:
        """Remove a member; slapd refuses to remove a groupOfNames' last member."""
        with self._admin() as conn:
            conn.modify(self.group_dn(group_cn), {"member": [(MODIFY_DELETE, [self.user_dn(uid)])]})

    def delete_user(self, uid: str) -> None:
        """Delete the entry; memberof removes it from its groups before the delete returns."""
        with self._admin() as conn:
            conn.delete(self.user_dn(uid))
        self.users.pop(uid, None)

    def modify_user(self, uid: str, /, **attributes: str | list[str] | None) -> None:
        """Replace attributes, e.g. modify_user("carol", givenName="Caroline"); None deletes one."""
        changes = {
            name: [(MODIFY_REPLACE, [] if value is None else value)] for name, value in attributes.items()
        }
        with self._admin() as conn:
            conn.modify(self.user_dn(uid), changes)

    def add_groups(self, cns: list[str], uids: list[str]) -> None:
        """Add one groupOfNames per cn, each with these members, in one ldapadd (fast in bulk)."""
        members = "".join(f"member: {self.user_dn(uid)}\n" for uid in uids)
        text = "".join(
            f"dn: {self.group_dn(cn)}\nobjectClass: groupOfNames\ncn: {cn}\n{members}\n" for cn in cns
        )
        self._load_text(text, self.admin_dn, f"{len(cns)} groups")

    def operations(self) -> dict[str, int]:
        """slapd's count of completed operations by kind ("bind", "search", ...) since it started,
        from its monitor backend; reading it costs one bind and one search of its own."""
        with Connection(Server(self.uri, get_info=NONE), raise_exceptions=True) as conn:
            conn.search("cn=Operations,cn=Monitor", "(objectClass=monitorOperation)", LEVEL,
                        attributes=["cn", "monitorOpCompleted"])
            return {str(e.cn.value).lower(): int(e.monitorOpCompleted.value) for e in conn.entries}

    def members(self, group_cn: str) -> list[str]:
        """The group's member DNs as stored, to check what the helpers did."""
        with self._admin() as conn:
            conn.search(self.group_dn(group_cn), "(objectClass=*)", BASE, attributes=["member"])
            return list(conn.entries[0].member.values)

    # Internals

    def _admin(self) -> Connection:
        """A connection that binds as the rootdn on `with` and raises on any failed operation."""
        server = Server(self.uri, get_info=NONE)
        return Connection(server, self.admin_dn, self.admin_password, raise_exceptions=True)

    def _write_config(self) -> Path:
        for data in ("example-data", "other-data"):
            (self.workdir / data).mkdir(parents=True, exist_ok=True)
        config = self.workdir / "slapd.conf"
        limits = "" if self.size_limit is None else LIMITS.substitute(
            limit=self.size_limit, pager_dn=self.pager_dn)
        config.write_text(
            CONFIG.substitute(
                limits=limits,
                verify_client="TLSVerifyClient demand" if self.require_client_cert else "",
                workdir=self.workdir,
                ca_file=self.pki.ca_file,
                cert_file=self.pki.cert_file,
                key_file=self.pki.key_file,
                rootpw=ssha(self.admin_password),
            )
        )
        return config

    def _load(self, ldif: Path, bind_dn: str) -> None:
        """ldapadd the file; -M (ManageDsaIT) so the referral entry is stored, not followed."""
        self._load_text(Template(ldif.read_text()).substitute(port=self.port), bind_dn, ldif.name)

    def _load_text(self, text: str, bind_dn: str, what: str) -> None:
        ldapadd = require_binary("ldapadd", "package ldap-utils")
        command = [ldapadd, "-x", "-M", "-H", self.uri, "-D", bind_dn, "-w", self.admin_password]
        result = subprocess.run(command, input=text.encode(), capture_output=True, check=False)
        if result.returncode != 0:
            error = result.stderr.decode(errors="replace")
            raise RuntimeError(f"ldapadd {what} failed: {error}")


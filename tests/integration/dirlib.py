"""Real directory servers for the directory-account tests: OpenLDAP's slapd
(Slapd) and MIT Kerberos' krb5kdc (Kdc), each in a temporary directory of
its own, listening on loopback only, started once per test session (the
`slapd` and `kdc` fixtures in conftest.py).

Slapd
  dc=natter,dc=test from data/directory.ldif: users alice, bob, carol,
  dave (locked: employeeType=disabled) and erin under ou=people; groups
  staff (groupOfNames: alice, bob and the nested group devs), devs
  (carol) and ops (posixGroup: erin, bob) under ou=groups; natter's
  service account cn=natter,ou=services, which may read everything but
  userPassword.  Plain LDAP (StartTLS offered) on one port, LDAPS on
  another, with a certificate for 127.0.0.1 and localhost from a test CA.

Kdc
  One krb5kdc serving two realms, NATTER.TEST (alice, bob, carol and the
  services xmpp/localhost and xmpp/ldap.test, exported to a keytab) and
  OTHER.TEST (mallory), with a one-way trust so that OTHER.TEST's users get
  tickets for NATTER.TEST's services.

ldap_host()/kerberos_section() build the per-host natter configuration the
tests use.

Nothing here sleeps to synchronise: readiness is polled with a deadline.
"""

import asyncio
import base64
import hashlib
import os
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from pathlib import Path

from imlib import Inbox, roster_get, send_available
from natterlib import IO_TIMEOUT, NS_SASL, q

DATA = Path(__file__).resolve().parent / "data"

START_TIMEOUT = float(os.environ.get("NATTER_DIR_START_TIMEOUT", 30))
CMD_TIMEOUT = 30

SUFFIX = "dc=natter,dc=test"
PEOPLE = "ou=people," + SUFFIX
GROUPS = "ou=groups," + SUFFIX
ROOT_DN = "cn=admin," + SUFFIX
ROOT_PASSWORD = "root-secret"
SERVICE_DN = "cn=natter,ou=services," + SUFFIX
SERVICE_PASSWORD = "service-secret"

# The directory's users and their passwords.
LDAP_PASSWORDS = {
    "alice": "alice-ldap-pw",
    "bob": "bob-ldap-pw",
    "carol": "carol-ldap-pw",
    "dave": "dave-ldap-pw",
    "erin": "erin-ldap-pw",
}
# Stored hashed ({SSHA}, via slappasswd) rather than in plain text.
HASHED = ("alice", "bob")

STAFF_DN = "cn=staff," + GROUPS
DEVS_DN = "cn=devs," + GROUPS
OPS_DN = "cn=ops," + GROUPS


def user_dn(name):
    return "uid=%s,%s" % (name, PEOPLE)


def tiny_jpeg():
    """A valid 8x8 grey baseline JPEG (one block, DC only), built by hand so
    the tests need no imaging library."""
    def seg(marker, payload):
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") \
            + payload
    one_code = bytes([1] + [0] * 15) + b"\x00"   # one code, length 1: "0"
    return (b"\xff\xd8"
            + seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + seg(0xFE, b"natter test photo")
            + seg(0xDB, b"\x00" + b"\x01" * 64)
            + seg(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")
            + seg(0xC4, b"\x00" + one_code)       # DC table 0
            + seg(0xC4, b"\x10" + one_code)       # AC table 0
            + seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
            # DC diff category 0 ("0"), EOB ("0"), padding ones
            + b"\x3f"
            + b"\xff\xd9")


ALICE_PHOTO = tiny_jpeg()
ALICE_PHOTO_SHA1 = hashlib.sha1(ALICE_PHOTO).hexdigest()


def free_port(udp_too=False):
    """A port on 127.0.0.1 free for TCP (and UDP with udp_too) a moment
    ago."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise AssertionError("no free loopback port")


def dead_port():
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


def run(args, *, env=None, input=None, check=True, timeout=CMD_TIMEOUT):
    proc = subprocess.run(args, input=input, capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d):\nstdout: %s\nstderr: %s"
                             % (" ".join(map(str, args)), proc.returncode,
                                proc.stdout, proc.stderr))
    return proc


def require_tools(*names):
    missing = [n for n in names if shutil.which(n) is None and
               not Path("/usr/sbin", n).exists()]
    if missing:
        raise AssertionError(
            "missing %s: install the packages in scripts/deps-test.txt "
            "(slapd ldap-utils krb5-kdc krb5-admin-server krb5-user "
            "python3-kerberos)" % ", ".join(missing))


def tool(name):
    found = shutil.which(name)
    if found:
        return found
    return str(Path("/usr/sbin", name))


def apparmor_hint(profile):
    """A note for failure messages when AppArmor may confine profile."""
    try:
        enabled = Path("/sys/module/apparmor/parameters/enabled") \
            .read_text().strip()
    except OSError:
        return ""
    if enabled != "Y":
        return ""
    try:
        text = Path("/sys/kernel/security/apparmor/profiles").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if profile in line and "enforce" in line:
            return ("\nAppArmor enforces the %s profile, which keeps it from "
                    "using files under %s: run `aa-complain %s` (or "
                    "aa-disable) on this machine."
                    % (profile, tempfile.gettempdir(), profile))
    return ""


# ------------------------------------------------------------------ TLS ---

def make_ca(directory, name="Natter Test CA"):
    """A self-signed CA; returns (cert_path, key_path)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    slug = name.lower().replace(" ", "-")
    cert, key = directory / (slug + ".pem"), directory / (slug + ".key")
    run(["openssl", "req", "-x509", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "3",
         "-subj", "/O=Natter tests/CN=%s" % name,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return cert, key


def make_server_cert(directory, ca_cert, ca_key, name="localhost",
                     san="IP:127.0.0.1,DNS:localhost"):
    """A server certificate signed by the CA; returns (cert, key)."""
    directory = Path(directory)
    cert, key = directory / (name + ".pem"), directory / (name + ".key")
    csr, ext = directory / (name + ".csr"), directory / (name + ".ext")
    ext.write_text("basicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=%s\n" % san)
    run(["openssl", "req", "-new", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", "/CN=%s" % name])
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert),
         "-CAkey", str(ca_key), "-CAcreateserial", "-days", "3",
         "-extfile", str(ext), "-out", str(cert)])
    return cert, key


# ---------------------------------------------------------------- slapd ---

SLAPD_CONF = """\
# Made by tests/integration/dirlib.py
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema

pidfile {root}/slapd.pid
argsfile {root}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
loglevel stats

TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}

database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{rootdn}"
rootpw {rootpw}
directory {root}/db
index objectClass eq
index uid eq
index member eq
index memberUid eq
# natter lists every account (paged); slapd's default limit of 500 would
# cut that list short (docs/directory.md, OpenLDAP step 1).
limits dn.exact="{service}" size=unlimited time=unlimited

# Passwords: anyone may bind (auth), nobody may read them; natter's
# service account may read everything else.
access to attrs=userPassword
    by anonymous auth
    by * auth
access to *
    by dn.exact="{service}" read
    by self read
    by anonymous auth
    by * none
"""


class Slapd:
    """slapd in a temporary directory; see the module docstring."""

    def __init__(self):
        require_tools("slapd", "slapadd", "slappasswd", "ldapwhoami",
                      "ldapsearch", "ldapmodify", "openssl")
        self.root = Path(tempfile.mkdtemp(prefix="natter-slapd-"))
        self.port = free_port()
        self.ldaps_port = free_port()
        self.proc = None
        self.paused = False
        self._log = None
        self._make_tls()
        self._write_config()
        self._load()

    # -- properties -------------------------------------------------------

    @property
    def uri(self):
        return "ldap://127.0.0.1:%d" % self.port

    @property
    def ldaps_uri(self):
        return "ldaps://127.0.0.1:%d" % self.ldaps_port

    @property
    def ca_file(self):
        return str(self.ca_cert)

    @property
    def other_ca_file(self):
        """A CA that did NOT sign slapd's certificate."""
        return str(self.other_ca_cert)

    @property
    def service_dn(self):
        return SERVICE_DN

    @property
    def service_password(self):
        return SERVICE_PASSWORD

    @property
    def log_path(self):
        return self.root / "slapd.log"

    @property
    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- setup ------------------------------------------------------------

    def _make_tls(self):
        tls = self.root / "tls"
        self.ca_cert, ca_key = make_ca(tls, "Natter Test LDAP CA")
        self.cert, self.key = make_server_cert(tls, self.ca_cert, ca_key)
        self.other_ca_cert, _ = make_ca(tls, "Some Other CA")

    def _write_config(self):
        (self.root / "db").mkdir()
        self.conf = self.root / "slapd.conf"
        self.conf.write_text(SLAPD_CONF.format(
            root=self.root, ca=self.ca_cert, cert=self.cert, key=self.key,
            suffix=SUFFIX, rootdn=ROOT_DN, rootpw=ROOT_PASSWORD,
            service=SERVICE_DN))

    def _password_value(self, name):
        if name not in HASHED:
            return LDAP_PASSWORDS[name]
        return run([tool("slappasswd"), "-h", "{SSHA}", "-s",
                    LDAP_PASSWORDS[name]]).stdout.strip()

    def _load(self):
        template = string.Template((DATA / "directory.ldif").read_text())
        values = {"%s_password" % n: self._password_value(n)
                  for n in LDAP_PASSWORDS}
        values["service_password"] = SERVICE_PASSWORD
        values["alice_photo"] = base64.b64encode(ALICE_PHOTO).decode()
        ldif = self.root / "directory.ldif"
        ldif.write_text(template.substitute(values))
        run([tool("slapadd"), "-q", "-f", str(self.conf), "-l", str(ldif)])

    # -- lifecycle --------------------------------------------------------

    def start(self):
        assert self.proc is None, "slapd already running"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [tool("slapd"), "-f", str(self.conf),
             "-h", "%s/ %s/" % (self.uri, self.ldaps_uri), "-d", "0"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True)
        self.paused = False
        self.wait_ready()
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        """Polls (with a deadline) until the service account can bind."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "slapd exited with status %s:\n%s%s"
                    % (self.proc.returncode, self.log,
                       apparmor_hint("slapd")))
            proc = self.whoami(check=False, timeout=5)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    "slapd did not answer within %.0fs: %s\n%s%s"
                    % (timeout, proc.stderr, self.log,
                       apparmor_hint("slapd")))
            time.sleep(0.05)  # poll interval, not synchronisation

    def stop(self):
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._log.close()
        self._log = None

    def restart(self):
        self.stop()
        return self.start()

    def pause(self):
        """SIGSTOP: connections stay open, nothing is answered."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- clients ----------------------------------------------------------

    def tls_env(self, ca_file=None):
        env = dict(os.environ)
        env["LDAPTLS_CACERT"] = ca_file or self.ca_file
        env["LDAPTLS_REQCERT"] = "demand"
        # The LDAPTLS_* variables override /etc/ldap/ldap.conf.
        return env

    def whoami(self, uri=None, *, starttls=False, dn=SERVICE_DN,
               password=SERVICE_PASSWORD, ca_file=None, check=True,
               timeout=CMD_TIMEOUT):
        args = [tool("ldapwhoami"), "-x", "-H", uri or self.uri,
                "-D", dn, "-w", password, "-o", "nettimeout=3"]
        if starttls:
            args.append("-ZZ")
        return run(args, env=self.tls_env(ca_file), check=check,
                   timeout=timeout)

    def search(self, base, filt="(objectClass=*)", *attrs, dn=SERVICE_DN,
               password=SERVICE_PASSWORD, scope="sub"):
        """ldapsearch; returns the LDIF text."""
        return run([tool("ldapsearch"), "-x", "-LLL", "-o", "ldif-wrap=no",
                    "-H", self.uri, "-D", dn, "-w", password,
                    "-b", base, "-s", scope, filt, *attrs],
                   env=self.tls_env()).stdout

    def ldapmodify(self, ldif_text):
        """Applies an LDIF change as the rootdn."""
        return run([tool("ldapmodify"), "-x", "-H", self.uri,
                    "-D", ROOT_DN, "-w", ROOT_PASSWORD],
                   input=ldif_text, env=self.tls_env())

    def modify_members(self, group_dn, op, attr, *values):
        """op 'add' or 'delete' values of attr (member, memberUid)."""
        lines = ["dn: " + group_dn, "changetype: modify", "%s: %s" % (op, attr)]
        lines += ["%s: %s" % (attr, v) for v in values]
        return self.ldapmodify("\n".join(lines) + "\n")

    def self_test(self):
        """What the tests rely on, checked with OpenLDAP's own tools."""
        self.whoami()
        self.whoami(starttls=True)
        self.whoami(self.ldaps_uri)
        proc = self.whoami(self.ldaps_uri, ca_file=self.other_ca_file,
                           check=False)
        assert proc.returncode != 0, "ldaps verified against the wrong CA"
        for name, password in LDAP_PASSWORDS.items():
            self.whoami(dn=user_dn(name), password=password)
        assert self.whoami(dn=user_dn("alice"), password="wrong",
                           check=False).returncode != 0
        people = self.search(PEOPLE, "(objectClass=inetOrgPerson)",
                             "uid", "userPassword")
        assert "uid: alice" in people and "uid: erin" in people, people
        assert "userPassword" not in people, \
            "the service account can read passwords:\n" + people
        photo = self.search(user_dn("alice"), "(objectClass=*)", "jpegPhoto",
                            scope="base")
        assert base64.b64encode(ALICE_PHOTO).decode() in photo, photo
        groups = self.search(GROUPS, "(objectClass=*)", "member",
                             "memberUid")
        assert "memberUid: erin" in groups and \
            "member: " + DEVS_DN in groups, groups


def ldap_section(slapd, **overrides):
    """The `ldap:` map of a host served from the test directory."""
    section = {
        "uri": slapd.uri,
        "starttls": True,
        "ca_file": slapd.ca_file,
        "verify": True,
        "bind_dn": slapd.service_dn,
        "bind_password": slapd.service_password,
        "base_dn": PEOPLE,
        "user_filter": "(&(objectClass=inetOrgPerson)(uid=%u))",
        "locked_filter": "(employeeType=disabled)",
        "timeout": 2,
        "cache_ttl": 0,
        "refresh_interval": 300,
        "groups": [
            {"dn": STAFF_DN, "name": "Staff"},
            {"dn": OPS_DN},
        ],
        "vcard": {"enabled": True, "read_only": True},
    }
    for key, value in overrides.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    return section


def ldap_host(slapd, domain="ldap.test", kerberos=None, **ldap_overrides):
    """A hosts entry with auth: ldap."""
    host = {"domain": domain, "auth": "ldap",
            "ldap": ldap_section(slapd, **ldap_overrides)}
    if kerberos is not None:
        host["kerberos"] = kerberos
    return host


# ------------------------------------------------------------------ KDC ---

REALM = "NATTER.TEST"
OTHER_REALM = "OTHER.TEST"
KRB_PASSWORDS = {
    "alice@NATTER.TEST": "alice-krb-pw",
    "bob@NATTER.TEST": "bob-krb-pw",
    "carol@NATTER.TEST": "carol-krb-pw",
    "dave@NATTER.TEST": "dave-krb-pw",     # locked in the directory
    "zoe@NATTER.TEST": "zoe-krb-pw",       # not in the directory at all
    "mallory@OTHER.TEST": "mallory-krb-pw",
}
# Service principals xmpp/HOST@NATTER.TEST, all in the keytab.
SERVICE_HOSTS = ("localhost", "ldap.test")
CROSS_REALM_PASSWORD = "cross-realm-trust-pw"
MASTER_PASSWORD = "kdc-master-pw"
ENCTYPES = "aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal"

KDC_CONF = """\
# Made by tests/integration/dirlib.py
[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}

[realms]
    NATTER.TEST = {{
        database_name = {root}/natter/principal
        key_stash_file = {root}/natter/stash
        acl_file = {root}/kadm5.acl
        kdc_listen = 127.0.0.1:{port}
        kdc_tcp_listen = 127.0.0.1:{port}
        max_life = 2h
        max_renewable_life = 0
        supported_enctypes = {enctypes}
    }}
    OTHER.TEST = {{
        database_name = {root}/other/principal
        key_stash_file = {root}/other/stash
        acl_file = {root}/kadm5.acl
        kdc_listen = 127.0.0.1:{port}
        kdc_tcp_listen = 127.0.0.1:{port}
        max_life = 2h
        max_renewable_life = 0
        supported_enctypes = {enctypes}
    }}

[logging]
    kdc = FILE:{root}/kdc.log
    admin_server = FILE:{root}/kadmin.log
    default = FILE:{root}/krb5lib.log
"""

KRB5_CONF = """\
# Made by tests/integration/dirlib.py
[libdefaults]
    default_realm = NATTER.TEST
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    dns_canonicalize_hostname = false
    udp_preference_limit = 1
    forwardable = false
    default_ccache_name = FILE:{root}/ccache-default

[realms]
    NATTER.TEST = {{
        kdc = 127.0.0.1:{port}
    }}
    OTHER.TEST = {{
        kdc = 127.0.0.1:{port}
    }}

[domain_realm]
    localhost = NATTER.TEST
    ldap.test = NATTER.TEST
    krb.test = NATTER.TEST
    .test = NATTER.TEST

[capaths]
    OTHER.TEST = {{
        NATTER.TEST = .
    }}
"""


class Kdc:
    """krb5kdc with two realms in a temporary directory; see the module
    docstring."""

    def __init__(self):
        require_tools("krb5kdc", "kdb5_util", "kadmin.local", "kinit",
                      "kvno", "klist")
        self.root = Path(tempfile.mkdtemp(prefix="natter-kdc-"))
        self.port = free_port(udp_too=True)
        self.proc = None
        self._ccaches = 0
        (self.root / "natter").mkdir()
        (self.root / "other").mkdir()
        (self.root / "kadm5.acl").write_text("")
        fill = {"root": self.root, "port": self.port, "enctypes": ENCTYPES}
        self.kdc_conf = self.root / "kdc.conf"
        self.kdc_conf.write_text(KDC_CONF.format(**fill))
        self._krb5_conf = self.root / "krb5.conf"
        self._krb5_conf.write_text(KRB5_CONF.format(**fill))
        self._keytab = self.root / "xmpp.keytab"
        self._create()

    # -- properties -------------------------------------------------------

    @property
    def keytab(self):
        return str(self._keytab)

    @property
    def krb5_conf(self):
        return str(self._krb5_conf)

    @property
    def env(self):
        """Environment additions for natterd (and natterctl)."""
        return {"KRB5_CONFIG": self.krb5_conf}

    @property
    def log(self):
        try:
            return (self.root / "kdc.log").read_text(errors="replace")
        except OSError:
            return ""

    def _admin_env(self):
        env = dict(os.environ)
        env["KRB5_CONFIG"] = self.krb5_conf
        env["KRB5_KDC_PROFILE"] = str(self.kdc_conf)
        return env

    # -- setup ------------------------------------------------------------

    def kadmin(self, realm, *queries):
        """Runs kadmin.local queries against realm's database."""
        for query in queries:
            run([tool("kadmin.local"), "-r", realm, "-q", query],
                env=self._admin_env())

    def _create(self):
        env = self._admin_env()
        for realm in (REALM, OTHER_REALM):
            run([tool("kdb5_util"), "-r", realm, "create", "-s",
                 "-P", MASTER_PASSWORD], env=env)
        queries = {REALM: [], OTHER_REALM: []}
        for principal, password in KRB_PASSWORDS.items():
            realm = principal.split("@", 1)[1]
            queries[realm].append("addprinc -pw %s %s" % (password,
                                                          principal))
        for host in SERVICE_HOSTS:
            queries[REALM].append("addprinc -randkey xmpp/%s@%s"
                                  % (host, REALM))
        # The trust: the same key for krbtgt/NATTER.TEST@OTHER.TEST in both
        # databases (same password, salt, kvno and enctypes).
        cross = "krbtgt/%s@%s" % (REALM, OTHER_REALM)
        for realm in (REALM, OTHER_REALM):
            queries[realm].append("addprinc -pw %s -e \"%s\" %s"
                                  % (CROSS_REALM_PASSWORD, ENCTYPES, cross))
        for host in SERVICE_HOSTS:
            queries[REALM].append("ktadd -k %s xmpp/%s@%s"
                                  % (self._keytab, host, REALM))
        for realm, items in queries.items():
            self.kadmin(realm, *items)

    # -- lifecycle --------------------------------------------------------

    def start(self):
        assert self.proc is None
        self._out = open(self.root / "krb5kdc.out", "ab")
        self.proc = subprocess.Popen(
            [tool("krb5kdc"), "-n", "-r", REALM, "-r", OTHER_REALM,
             "-P", str(self.root / "krb5kdc.pid")],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._out,
            env=self._admin_env(), start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "krb5kdc exited with status %s:\n%s\n%s%s"
                    % (self.proc.returncode,
                       (self.root / "krb5kdc.out").read_text(), self.log,
                       apparmor_hint("krb5kdc")))
            try:
                self.kinit("alice@NATTER.TEST", timeout=5)
                return self
            except AssertionError as e:
                if time.monotonic() > deadline:
                    raise AssertionError("krb5kdc did not issue tickets "
                                         "within %.0fs: %s\n%s"
                                         % (START_TIMEOUT, e, self.log))
            time.sleep(0.05)  # poll interval, not synchronisation

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._out.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- clients ----------------------------------------------------------

    def kinit(self, principal, password=None, timeout=CMD_TIMEOUT):
        """Gets a TGT for principal into a fresh ccache; returns the
        environment variables a client process needs (KRB5_CONFIG,
        KRB5CCNAME)."""
        if password is None:
            password = KRB_PASSWORDS[principal]
        self._ccaches += 1
        ccache = self.root / ("ccache-%d-%s" % (
            self._ccaches, principal.replace("/", "_").replace("@", "_")))
        env = {"KRB5_CONFIG": self.krb5_conf,
               "KRB5CCNAME": "FILE:%s" % ccache}
        run([tool("kinit"), principal], input=password + "\n",
            env=dict(os.environ, **env), timeout=timeout)
        return env

    def kvno(self, client_env, service):
        """Gets a service ticket with the client's ccache; returns kvno's
        output."""
        return run([tool("kvno"), service],
                   env=dict(os.environ, **client_env)).stdout

    def self_test(self):
        alice = self.kinit("alice@NATTER.TEST")
        for host in SERVICE_HOSTS:
            out = self.kvno(alice, "xmpp/%s@%s" % (host, REALM))
            assert "kvno" in out, out
        mallory = self.kinit("mallory@OTHER.TEST")
        out = self.kvno(mallory, "xmpp/localhost@%s" % REALM)
        assert "kvno" in out, out
        listing = run([tool("klist")],
                      env=dict(os.environ, **mallory)).stdout
        assert "krbtgt/%s@%s" % (REALM, OTHER_REALM) in listing, listing
        keys = run([tool("klist"), "-k", self.keytab]).stdout
        for host in SERVICE_HOSTS:
            assert "xmpp/%s@%s" % (host, REALM) in keys, keys


def kerberos_section(kdc, hostname=None, realms=REALM, **extra):
    """The `kerberos:` map of a host."""
    section = {"keytab": kdc.keytab, "service": "xmpp"}
    if hostname is not None:
        section["hostname"] = hostname
    if realms is not None:
        section["realms"] = realms
    section.update(extra)
    return section


# ------------------------------------------------------ XMPP helpers ------
# (natterlib and imlib do the real work)

LDAP_DOMAIN = "ldap.test"


def ljid(name, domain=LDAP_DOMAIN):
    return "%s@%s" % (name, domain)


async def sasl_attempt(net, server, domain, mechanism, initial=b""):
    """Opens a stream to domain, STARTTLS, sends <auth/> with the initial
    response; returns (outcome, condition, elapsed, features) where outcome
    is 'success' or 'failure' and condition the <failure/> child."""
    stream, features = await net.raw_tls(server, domain)
    token = base64.b64encode(initial).decode() if initial else "="
    started = time.monotonic()
    await stream.send("<auth xmlns='%s' mechanism='%s'>%s</auth>"
                      % (NS_SASL, mechanism, token))
    reply = await stream.next(timeout=IO_TIMEOUT + 10)
    elapsed = time.monotonic() - started
    if reply is None:
        raise AssertionError("stream closed after <auth/>:\n%s"
                             % stream.describe())
    if reply.tag == q(NS_SASL, "success"):
        return "success", None, elapsed, features
    assert reply.tag == q(NS_SASL, "failure"), stream.describe()
    conditions = [c.tag.split("}", 1)[1] for c in reply
                  if c.tag != q(NS_SASL, "text")]
    return "failure", conditions[0] if conditions else None, elapsed, \
        features


async def plain_attempt(net, server, user, password, domain=LDAP_DOMAIN):
    """SASL PLAIN by hand with any authcid (even one no JID could hold);
    returns (outcome, condition, elapsed)."""
    outcome, condition, elapsed, _ = await sasl_attempt(
        net, server, domain, "PLAIN",
        ("\0%s\0%s" % (user, password)).encode("utf-8"))
    return outcome, condition, elapsed


def mechanisms(features):
    return [m.text for m in features.iter(q(NS_SASL, "mechanism"))]


async def ldap_connect(net, server, name, resource="r", *, password=None,
                       roster=False, available=False):
    """A logged-in slixmpp session (SASL PLAIN) of NAME@ldap.test with an
    imlib Inbox and slixmpp's automatic subscription answers off."""
    client = await net.login(
        server, "%s/%s" % (ljid(name, getattr(server, "ldap_domain", LDAP_DOMAIN)), resource),
        LDAP_PASSWORDS[name] if password is None else password,
        mechanism="PLAIN")
    client.roster.auto_authorize = None
    client.roster.auto_subscribe = False
    client.inbox = Inbox(client)
    if roster:
        await roster_get(client)
    if available:
        await send_available(client)
    return client


async def poll(condition, what, timeout=15.0, interval=0.1):
    """Awaits an async condition() returning a true value, polling with a
    deadline; returns the value.  The last failure is reported."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = await condition()
            if value:
                return value
            last = value
        except AssertionError as e:
            last = e
        except Exception as e:  # e.g. LoginFailed while reconnecting
            last = e
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.0fs; last: %r"
                                 % (what, timeout, last))
        await asyncio.sleep(interval)  # poll interval, not synchronisation


async def run_ctl(server, *args):
    """natterctl in a thread, so the test's event loop keeps reading."""
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: server.ctl(*args))


async def in_thread(func, *args):
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)

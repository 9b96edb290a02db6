"""DNS for federation (docs/dns.md) against a real DNS server (dnsmasq):

- `natterctl dns DOMAIN` prints the SRV records to publish for the running
  config and checks them: ok, missing, wrong, target addresses;
- `natterctl dns --remote DOMAIN` runs natterd's own asynchronous lookup
  (dns_resolve_s2s): XEP-0368 and RFC 6120 SRV records in RFC 2782 order,
  IPv6 before IPv4, the fallback to the domain, "." = no service.
"""

import pytest

from dnslib import Dnsmasq
from natterlib import NatterServer, free_port

DOMAIN = "fed-a.nattertest"
TARGET = "srv.fed-a.nattertest"


@pytest.fixture
def dns():
    server = Dnsmasq()
    yield server
    server.cleanup()


@pytest.fixture
def configured():
    """Builds (does not start) a natter config: host fed-a.nattertest with
    all four listener types on free ports, resolver from dns_resolver."""
    servers = []

    def make(resolver, listeners=None):
        ports = {t: free_port() for t in ("c2s", "c2s_tls", "s2s", "s2s_tls")}
        if listeners is None:
            listeners = [{"type": t, "address": "127.0.0.1", "port": p}
                         for t, p in ports.items()]
        # s2s listeners need federation on; natterd is never started here.
        server = NatterServer({"hosts": [{"domain": DOMAIN}],
                               "listeners": listeners,
                               "s2s": {"enabled": True},
                               "dns": {"resolver": resolver}})
        server.ports = {l["type"]: l["port"] for l in listeners}
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.cleanup()


def published(ports, target=TARGET):
    """dnsmasq SRV records exactly as natterctl says they should be."""
    names = {"c2s": "_xmpp-client._tcp", "c2s_tls": "_xmpps-client._tcp",
             "s2s": "_xmpp-server._tcp", "s2s_tls": "_xmpps-server._tcp"}
    return [("%s.%s" % (names[t], DOMAIN), target, p)
            for t, p in ports.items()]


def status_of(stdout, service):
    """The verdict printed for one SRV owner name in the check section."""
    owner = "%s.%s." % (service, DOMAIN)
    section = stdout.split("; in DNS now", 1)[1]
    for line in section.splitlines():
        if line.startswith(owner):
            return line[len(owner):].split(None, 1)[1]
    raise AssertionError("no check line for %s in:\n%s" % (owner, stdout))


def test_publish_and_all_ok(dns, configured):
    dns.start()
    server = configured(dns.resolver)
    dns.restart(srv=published(server.ports), hosts={TARGET: ["127.0.0.1", "::1"]})

    proc = server.ctl("dns", DOMAIN, "--target", TARGET)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for service, kind in (("_xmpp-client._tcp", "c2s"),
                          ("_xmpps-client._tcp", "c2s_tls"),
                          ("_xmpp-server._tcp", "s2s"),
                          ("_xmpps-server._tcp", "s2s_tls")):
        lines = [l.split() for l in out.splitlines()
                 if l.startswith("%s.%s." % (service, DOMAIN)) and " IN SRV " in l]
        assert lines == [["%s.%s." % (service, DOMAIN), "3600", "IN", "SRV",
                          "0", "5", str(server.ports[kind]), TARGET + "."]], out
        assert status_of(out, service) == "ok", out
    assert "%s." % TARGET in out
    assert "A 127.0.0.1, AAAA ::1" in out
    assert out.rstrip().endswith("all records ok")


def test_missing_wrong_and_dead_targets(dns, configured):
    dns.start()
    server = configured(dns.resolver)
    ports = server.ports
    dns.restart(
        srv=[
            # c2s: nothing published
            ("_xmpps-client._tcp." + DOMAIN, TARGET, ports["c2s_tls"]),
            ("_xmpp-server._tcp." + DOMAIN, TARGET, 5999),               # wrong port
            ("_xmpps-server._tcp." + DOMAIN, "old.fed-a.nattertest", ports["s2s_tls"]),
        ],
        hosts={TARGET: ["127.0.0.1"]})

    proc = server.ctl("dns", DOMAIN, "--target", TARGET)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert status_of(out, "_xmpp-client._tcp") == "missing", out
    assert status_of(out, "_xmpps-client._tcp") == "ok", out
    assert status_of(out, "_xmpp-server._tcp") == \
        "wrong: published 0 5 5999 %s." % TARGET, out
    assert status_of(out, "_xmpps-server._tcp") == \
        "wrong: published 0 5 %d old.fed-a.nattertest." % ports["s2s_tls"], out
    assert "A 127.0.0.1, AAAA none" in out
    assert ("warning: _xmpps-server._tcp.%s. points to old.fed-a.nattertest., "
            "which has no A or AAAA record: direct TLS" % DOMAIN) in out
    assert "3 problems" in out


def test_target_without_address(dns, configured):
    dns.start()
    server = configured(dns.resolver)
    dns.restart(srv=published(server.ports), hosts={})
    proc = server.ctl("dns", DOMAIN, "--target", TARGET)
    assert proc.returncode == 1
    assert "%s." % TARGET in proc.stdout
    assert "missing: no A or AAAA record" in proc.stdout
    assert "1 problem\n" in proc.stdout


def test_records_only_for_configured_listeners(dns, configured):
    dns.start()
    port = free_port()
    server = configured(dns.resolver,
                        listeners=[{"type": "s2s", "address": "127.0.0.1", "port": port}])
    dns.restart(srv=[("_xmpp-server._tcp." + DOMAIN, TARGET, port)],
                hosts={TARGET: ["127.0.0.1"]})
    proc = server.ctl("dns", DOMAIN, "--target", TARGET)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "_xmpp-server._tcp" in proc.stdout
    for other in ("_xmpp-client", "_xmpps-client", "_xmpps-server"):
        assert other not in proc.stdout


def test_resolver_option_overrides_config(dns, configured):
    dns.start()
    # The config's resolver answers nothing (nobody listens there).
    server = configured("127.0.0.1@%d" % free_port())
    dns.restart(srv=published(server.ports), hosts={TARGET: ["127.0.0.1"]})
    proc = server.ctl("dns", DOMAIN, "--target", TARGET, "--resolver", dns.resolver)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resolver %s" % dns.resolver in proc.stdout


def test_unconfigured_domain_and_bad_resolver(configured):
    server = configured("127.0.0.1@53")
    proc = server.ctl("dns", "elsewhere.nattertest", "--target", TARGET)
    assert proc.returncode == 1
    assert "elsewhere.nattertest is not a configured host" in proc.stderr
    proc = server.ctl("dns", DOMAIN, "--target", TARGET, "--resolver", "dns.example@53")
    assert proc.returncode == 1
    assert "not a numeric IPv4 or IPv6 address" in proc.stderr


# ---------------------------------------------- natterd's own s2s lookup ---

def remote(server, domain, resolver, *extra):
    proc = server.ctl("dns", "--remote", domain, "--resolver", resolver, *extra)
    lines = proc.stdout.splitlines()
    assert lines and lines[0].startswith("; server-to-server candidates for %s: "
                                         % domain), proc.stdout + proc.stderr
    verdict = lines[0].split(": ", 1)[1]
    return proc.returncode, verdict, [l.split() for l in lines[1:]]


def test_remote_srv_order_and_families(dns, configured):
    dns.srv = [
        ("_xmpp-server._tcp.fed-b.nattertest", "backup.fed-b.nattertest", 5269, 20, 0),
        ("_xmpp-server._tcp.fed-b.nattertest", "main.fed-b.nattertest", 5269, 10, 5),
        ("_xmpps-server._tcp.fed-b.nattertest", "main.fed-b.nattertest", 5270, 5, 5),
    ]
    dns.hosts = {"main.fed-b.nattertest": ["127.0.0.10", "::10"],
                 "backup.fed-b.nattertest": ["127.0.0.20"]}
    dns.start()
    server = configured(dns.resolver)
    rc, verdict, cands = remote(server, "fed-b.nattertest", dns.resolver)
    assert rc == 0 and verdict == "ok"
    assert [c[:4] for c in cands] == [
        ["main.fed-b.nattertest", "5270", "direct-tls", "::10"],
        ["main.fed-b.nattertest", "5270", "direct-tls", "127.0.0.10"],
        ["main.fed-b.nattertest", "5269", "starttls", "::10"],
        ["main.fed-b.nattertest", "5269", "starttls", "127.0.0.10"],
        ["backup.fed-b.nattertest", "5269", "starttls", "127.0.0.20"],
    ]
    assert all(c[4] == "ttl" and 0 < int(c[5]) <= 300 for c in cands)


def test_remote_fallback_no_service_not_found(dns, configured):
    dns.srv = [("_xmpp-server._tcp.nofed.nattertest", ".", 0),
               ("_xmpps-server._tcp.half.nattertest", ".", 0),
               ("_xmpp-server._tcp.half.nattertest", "x.half.nattertest", 5299)]
    dns.hosts = {"plain.nattertest": ["127.0.0.30"],
                 "nofed.nattertest": ["127.0.0.31"],
                 "x.half.nattertest": ["127.0.0.32"]}
    dns.start()
    server = configured(dns.resolver)

    rc, verdict, cands = remote(server, "plain.nattertest", dns.resolver)
    assert (rc, verdict) == (0, "ok")
    assert [c[:4] for c in cands] == [["plain.nattertest", "5269", "starttls", "127.0.0.30"]]

    rc, verdict, cands = remote(server, "nofed.nattertest", dns.resolver)
    assert rc == 1 and verdict.startswith("no service") and cands == []

    # "." for direct TLS only: STARTTLS is still offered.
    rc, verdict, cands = remote(server, "half.nattertest", dns.resolver)
    assert (rc, verdict) == (0, "ok")
    assert [c[:4] for c in cands] == [["x.half.nattertest", "5299", "starttls", "127.0.0.32"]]

    rc, verdict, cands = remote(server, "nothing.nattertest", dns.resolver)
    assert rc == 1 and verdict.startswith("not found") and cands == []


def test_remote_resolver_down_is_error(configured):
    server = configured("127.0.0.1@53")
    rc, verdict, cands = remote(server, "fed-b.nattertest", "127.0.0.1@%d" % free_port(),
                                "--timeout", "2")
    assert rc == 1 and verdict.startswith("error") and cands == []

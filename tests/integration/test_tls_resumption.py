"""TLS session resumption on the c2s listeners (issue 13, "TLS 1.3 session
resumption"): a reconnecting client offers the ticket of its last
connection and skips the certificate signature.

* Python's ssl module (OpenSSL underneath) keeps `SSLSocket.session` and
  offers it again; `session_reused` says whether natterd took it, on the
  STARTTLS and the direct TLS port, TLS 1.3 and 1.2;
* ticket keys are shared by the event loops and survive a SIGHUP, are
  rotated every `tls.ticket_rotation` seconds (a ticket is accepted while
  its key is current or the one before), and die with the process;
* a FAST token bound to tls-exporter on a resumed session;
* SCRAM-*-PLUS over a resumed session: the channel binding (tls-exporter,
  and tls-unique as slixmpp sends it) is the resumed connection's own."""

import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

from natterlib import (IO_TIMEOUT, NATTERD, NS_STREAM, NS_TLS, insecure_client_context,
                       read_until)
from imlib import restart_on_same_data
from test_login import ALICE, ALICE_PASSWORD, run_plus_client

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='%s' to='localhost' version='1.0'>" % NS_STREAM
          ).encode()
ROTATED = re.compile(r"TLS session tickets: key (\d+) is current")
RETIRED = "a session ticket of a retired key"

TLS_MAX = {"TLSv1.3": None, "TLSv1.2": ssl.TLSVersion.TLSv1_2}


def tls_connect(server, ctx, *, direct, session=None, source=None):
    """A TLS stream to natterd (STARTTLS on the c2s port, or direct TLS)
    offering `session`; returns the SSLSocket once the features after TLS
    have arrived, by when the server's TLS 1.3 tickets have too."""
    port = server.tls_port if direct else server.c2s_port
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=IO_TIMEOUT,
        source_address=(source, 0) if source else None)
    if not direct:
        sock.sendall(HEADER)
        read_until(sock, b"</stream:features>")
        sock.sendall(("<starttls xmlns='%s'/>" % NS_TLS).encode())
        read_until(sock, b"<proceed")
    tls = ctx.wrap_socket(sock, server_hostname="localhost", session=session)
    tls.sendall(HEADER)
    read_until(tls, b"</stream:features>")
    return tls


def reconnect(server, ctx, session, *, direct=False, source=None):
    """Connects offering session; returns (resumed?, the new session)."""
    tls = tls_connect(server, ctx, direct=direct, session=session,
                      source=source)
    try:
        return tls.session_reused, tls.session
    finally:
        tls.close()


def first_session(server, ctx, *, direct=False):
    tls = tls_connect(server, ctx, direct=direct)
    try:
        assert not tls.session_reused
        assert tls.session is not None and tls.session.has_ticket, \
            "natterd sent no session ticket"
        return tls.session
    finally:
        tls.close()


# ------------------------------------------------------ plain resumption --

@pytest.mark.parametrize("tls", ["TLSv1.3", "TLSv1.2"])
@pytest.mark.parametrize("direct", [False, True],
                         ids=["starttls", "direct-tls"])
def test_second_connection_resumes(natter, tls, direct):
    ctx = insecure_client_context(maximum=TLS_MAX[tls])
    session = first_session(natter, ctx, direct=direct)
    assert "established, session resumed" not in natter.log
    sock = tls_connect(natter, ctx, direct=direct, session=session)
    try:
        assert sock.version() == tls
        assert sock.session_reused, "natterd did not resume the session"
    finally:
        sock.close()
    natter.wait_for_log("%s established, session resumed" % tls)


def test_ticket_works_across_ports(natter):
    """One ticket key for the whole server: a ticket from the STARTTLS
    port resumes on the direct TLS port (both c2s)."""
    ctx = insecure_client_context()
    session = first_session(natter, ctx, direct=False)
    resumed, _ = reconnect(natter, ctx, session, direct=True)
    assert resumed


def test_resumes_on_every_loop(natter):
    """The two event loops share the ticket keys: reconnects from many
    source addresses (SO_REUSEPORT spreads them over both loops) all
    resume, each with the ticket of the one before."""
    ctx = insecure_client_context()
    session = first_session(natter, ctx)
    for i in range(24):
        resumed, session = reconnect(natter, ctx, session,
                                     source="127.0.%d.%d" % (i, 10 + i))
        assert resumed, "reconnect %d was not resumed" % i


@pytest.mark.natter_config(tls={"session_tickets": False})
def test_tickets_off(natter):
    ctx = insecure_client_context()
    tls = tls_connect(natter, ctx, direct=False)
    session = tls.session
    tls.close()
    assert not (session and session.has_ticket)
    resumed, _ = reconnect(natter, ctx, session)
    assert not resumed


def test_tickets_survive_a_reload_and_the_certificate_is_logged(natter):
    """SIGHUP makes new TLS contexts; the ticket keys are not theirs, so
    tickets stay good. The certificate is logged at start and again."""
    assert "host localhost: certificate self-signed for" in natter.log
    ctx = insecure_client_context()
    session = first_session(natter, ctx)
    mark = natter.log_mark()
    natter.proc.send_signal(signal.SIGHUP)
    natter.wait_for_log("SIGHUP: reloaded", since=mark)
    natter.wait_for_log("host localhost: certificate self-signed for",
                        since=mark)
    resumed, _ = reconnect(natter, ctx, session)
    assert resumed


def test_restart_invalidates_tickets(natter, natter_factory):
    """The keys live in memory only: after a restart (same data, so the
    same certificate) a ticket is refused."""
    ctx = insecure_client_context()
    session = first_session(natter, ctx)
    natter = restart_on_same_data(natter_factory, natter, keep_config=True)
    resumed, _ = reconnect(natter, ctx, session)
    assert not resumed
    # ... and a full handshake gives a ticket that works again.
    session = first_session(natter, ctx)
    assert reconnect(natter, ctx, session)[0]


# --------------------------------------------------------------- rotation --

def wait_rotation(server, since, after=None):
    """Waits for the next "key N is current" log line after position since
    (with N > after); returns (N, the log position after it)."""
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        text = server.wait_for_log("is current",
                                   timeout=max(0.1, deadline - time.monotonic()),
                                   since=since)
        for m in ROTATED.finditer(text, since):
            if after is None or int(m.group(1)) > after:
                return int(m.group(1)), m.end()
        since = len(text)


ROTATION = 3


@pytest.mark.natter_config(tls={"ticket_rotation": ROTATION})
def test_ticket_of_a_rotated_out_key_is_refused(natter):
    """A ticket is accepted after the next rotation and refused after the
    one after. Its lifetime (two periods) has not run out then: the ticket
    is taken late in a period, so the key decides, and natterd says so."""
    ctx = insecure_client_context()
    k, pos = wait_rotation(natter, natter.log_mark())
    # Late in period k (only the clock can say when: poll a deadline).
    late = time.monotonic() + 0.6 * ROTATION
    while time.monotonic() < late:
        time.sleep(0.02)
    session = first_session(natter, ctx)
    taken = time.monotonic()

    k1, pos = wait_rotation(natter, pos, after=k)
    assert k1 == k + 1, "the ticket was taken after rotation %d" % k1
    resumed, _ = reconnect(natter, ctx, session)
    assert resumed, "a ticket of the previous key was refused"

    k2, pos = wait_rotation(natter, pos, after=k1)
    assert k2 == k + 2
    resumed, fresh = reconnect(natter, ctx, session)
    assert time.monotonic() - taken < 2 * ROTATION, \
        "too slow to tell the key from the lifetime"
    assert not resumed, "a ticket of a retired key was accepted"
    natter.wait_for_log(RETIRED, since=pos)
    # The full handshake that followed gave a ticket of the current key.
    assert reconnect(natter, ctx, fresh)[0]


@pytest.mark.parametrize("value", ["0", "1h", "302401"])
def test_bad_rotation_is_refused_with_file_and_line(tmp_path, value):
    path = tmp_path / "natter.yaml"
    path.write_text("log_level: info\ntls:\n  session_tickets: true\n"
                    "  ticket_rotation: %s\n" % value)
    proc = subprocess.run([str(NATTERD), "-c", str(path), "--check-config"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "%s:4:" % path in proc.stderr and "ticket_rotation" in proc.stderr, \
        proc.stderr


# ----------------------------------------- channel binding when resumed --

RESUMED_PLUS = [
    ([], "TLSv1.3"),
    (["--direct"], "TLSv1.3"),
    (["--tls12"], "TLSv1.2"),
    (["--tls12", "--cb", "tls-unique"], "TLSv1.2"),
    # slixmpp's way: "p=tls-unique" on TLS 1.3 too (decisions/0006).
    (["--cb", "tls-unique"], "TLSv1.3"),
]


@pytest.mark.parametrize("options,tls", RESUMED_PLUS,
                         ids=["tls13-exporter", "direct-tls13-exporter",
                              "tls12-exporter", "tls12-unique",
                              "tls13-unique"])
def test_scram_plus_over_a_resumed_session(natter, options, tls):
    natter.add_user(ALICE, ALICE_PASSWORD)
    port = natter.tls_port if "--direct" in options else None
    status, lines, err = run_plus_client(natter, "SCRAM-SHA-256-PLUS",
                                         "--resume", *options, port=port)
    assert status == 0, "%s\n%s\n%s" % (lines, err, natter.log[-4000:])
    assert lines.count("tls: %s" % tls) == 2, lines
    second = lines[lines.index("tls: %s" % tls, 1):]
    assert "resumed: no" in lines[:len(lines) - len(second)], lines
    assert second[1] == "resumed: yes", lines
    assert second[-2:] == ["success", "bound: %s/sasl-plus" % ALICE], lines


@pytest.mark.parametrize("options", [[], ["--cb", "tls-unique"],
                                     ["--tls12", "--cb", "tls-unique"]],
                         ids=["tls13-exporter", "tls13-unique",
                              "tls12-unique"])
def test_scram_plus_binding_checked_on_a_resumed_session(natter, options):
    """A flipped bit in the resumed connection's binding is refused: the
    server computes the binding from the resumed handshake too."""
    natter.add_user(ALICE, ALICE_PASSWORD)
    status, lines, err = run_plus_client(natter, "SCRAM-SHA-256-PLUS",
                                         "--resume", "--tamper-cb", *options)
    assert status == 1, "%s\n%s" % (lines, err)
    assert "resumed: yes" in lines
    assert lines[-1].startswith("failure: "), lines


# ----------------------------------------------- FAST over a resumed session --

def exporter_fast_login(port, user, token, device, session=None,
                        tamper=False):
    """A blocking HT-SHA-256-EXPR login (XEP-0484) offering session (if
    any), its tls-exporter binding off by one bit with tamper; returns
    (the server's answer, the TLS session to offer next)."""
    from sasl2lib import fast_login_exporter

    flip = (lambda cb: bytes([cb[0] ^ 1]) + cb[1:]) if tamper else None
    return fast_login_exporter(port, user, token, device,
                               session=session if session is not None else True,
                               cb_filter=flip)


async def test_fast_token_with_tls_exporter_on_a_resumed_session(natter, net):
    """A phone's reconnect: TLS resumed with the last connection's ticket,
    then the FAST token bound to that (resumed) connection's tls-exporter
    value. The binding is the resumed connection's own: a value off by a
    bit is refused there too."""
    import asyncio

    from imlib import accounts
    from sasl2lib import new_device
    from test_fast import token_by_password

    accounts(natter, "alice")
    device = new_device()
    token, _ = await token_by_password(net, natter, "alice", device,
                                       mech="HT-SHA-256-EXPR")
    text, session = await asyncio.to_thread(
        exporter_fast_login, natter.c2s_port, "alice", token, device)
    assert "<success" in text, text
    token = re.search(r"token='([^']+)'", text).group(1)

    mark = natter.log_mark()
    text, _ = await asyncio.to_thread(
        exporter_fast_login, natter.c2s_port, "alice", token, device,
        session, tamper=True)
    assert "<not-authorized" in text, text
    await natter.await_log("TLSv1.3 established, session resumed", since=mark)

    mark = natter.log_mark()
    text, _ = await asyncio.to_thread(
        exporter_fast_login, natter.c2s_port, "alice", token, device, session)
    assert "<success" in text, text
    await natter.await_log("TLSv1.3 established, session resumed", since=mark)

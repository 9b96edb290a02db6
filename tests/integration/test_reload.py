"""SIGHUP: natterd reads its configuration again. Certificates are read
again (a renewed certificate is served to new connections), the keys that
may change while running take effect, and a file with an error changes
nothing (the error names file:line)."""

import shutil
import signal
import socket
import ssl

from imlib import accounts, connect
from natterlib import self_signed_cert


def served_certificate(server):
    """The DER certificate natterd presents on its direct TLS port."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def reload(server):
    mark = server.log_mark()
    server.proc.send_signal(signal.SIGHUP)
    return mark


async def test_sighup_serves_a_renewed_certificate(natter_factory, net, tmp_path):
    cert1, key1 = self_signed_cert(tmp_path, "one")
    cert2, key2 = self_signed_cert(tmp_path, "two")
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(cert1, live_cert)
    shutil.copy(key1, live_key)
    server = natter_factory(hosts=[{"domain": "localhost", "tls_cert": str(live_cert),
                                    "tls_key": str(live_key)}])
    accounts(server, "alice")
    first = served_certificate(server)
    assert first == ssl.PEM_cert_to_DER_cert(cert1.read_text())
    alice = await connect(net, server, "alice")
    # Renewed on disk (as certbot does), then SIGHUP.
    shutil.copy(cert2, live_cert)
    shutil.copy(key2, live_key)
    mark = reload(server)
    await server.await_log("SIGHUP: reloaded", since=mark)
    assert served_certificate(server) == ssl.PEM_cert_to_DER_cert(cert2.read_text())
    # The session from before goes on.
    await alice.barrier()


async def test_sighup_with_a_broken_file_changes_nothing(natter_factory, net):
    server = natter_factory()
    accounts(server, "alice")
    before = served_certificate(server)
    text = server.config_path.read_text()
    assert "hide_version" not in text
    server.config_path.write_text(text + "\nhide_version: maybe\n")
    mark = reload(server)
    line = len((text + "\n").splitlines()) + 1
    await server.await_log("SIGHUP: %s:%d: 'hide_version' must be true or false; the running "
                           "configuration stays" % (server.config_path, line), since=mark)
    assert served_certificate(server) == before
    alice = await connect(net, server, "alice")
    await alice.barrier()


async def test_sighup_applies_log_level(natter_factory, net):
    server = natter_factory()
    accounts(server, "alice")
    text = server.config_path.read_text().replace("log_level: debug", "log_level: warn")
    assert "log_level: warn" in text
    server.config_path.write_text(text)
    mark = reload(server)
    await server.await_log("SIGHUP: reloaded", since=mark)
    after = server.log_mark()
    alice = await connect(net, server, "alice")
    await alice.barrier()
    # At warn, a login logs nothing (it did at debug and info).
    assert "authenticated as" not in server.log[after:]

"""natterd --check-config and natterctl's account commands."""

import os
import subprocess

import pytest

from natterlib import (
    NATTERD, LoginFailed, NatterServer, require_binary, sanitizer_reports)

ALICE, ALICE_PW = "alice@localhost", "alice-secret"


@pytest.fixture
def unstarted():
    """A NatterServer whose config is written but which is not running."""
    server = NatterServer()
    yield server
    problems = server.stop()
    server.cleanup()
    assert not problems, problems


def check_config(path):
    require_binary(NATTERD)
    proc = subprocess.run([str(NATTERD), "-c", str(path), "--check-config"],
                          capture_output=True, text=True, timeout=60)
    assert not sanitizer_reports(proc.stderr), proc.stderr
    return proc


def line_of(text, needle):
    """1-based number of the first line containing needle."""
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError("%r not in config" % needle)


def test_default_config_is_valid(unstarted):
    proc = check_config(unstarted.config_path)
    assert proc.returncode == 0, proc.stderr


def insert_after(text, anchor, new_line):
    """text with new_line inserted after the first line containing anchor,
    at the anchor's column (so it joins the same mapping, also inside a
    "- " list item)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if anchor in line:
            lines.insert(i + 1, " " * line.index(anchor) + new_line)
            return "\n".join(lines) + "\n"
    raise AssertionError("%r not in config" % anchor)


BROKEN = {
    # name: (anchor line, inserted line or replacement, needle for the line)
    "unknown-top-level-key": ("workers:", "frobnicate: 3", "frobnicate"),
    "unknown-limit": ("max_depth:", "max_frobs: 3", "max_frobs"),
    "unknown-host-key": ("domain:", "colour: blue", "colour"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_unknown_key_reported_with_file_and_line(unstarted, case):
    anchor, inserted, needle = BROKEN[case]
    text = insert_after(unstarted.config_path.read_text(), anchor, inserted)
    unstarted.config_path.write_text(text)
    proc = check_config(unstarted.config_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    where = "%s:%d:" % (unstarted.config_path, line_of(text, needle))
    lines = [l for l in proc.stderr.splitlines() if where in l]
    assert lines, "expected %r in stderr:\n%s" % (where, proc.stderr)
    assert any(needle in l for l in lines), proc.stderr


@pytest.mark.parametrize("old,new", [
    ("workers: 2", "workers: many"),
    ("type:", None),
    ("auth_timeout: 30", "auth_timeout: -5"),
], ids=["non-integer", "unknown-listener-type", "negative-timeout"])
def test_bad_value_reported_with_file_and_line(unstarted, old, new):
    text = unstarted.config_path.read_text()
    if new is None:  # the first listener's type becomes nonsense
        number = line_of(text, "type:")
        lines = text.splitlines()
        lines[number - 1] = lines[number - 1].split("type:")[0] + \
            'type: "carrier-pigeon"'
        text = "\n".join(lines) + "\n"
        needle = "carrier-pigeon"
    else:
        assert old in text
        text = text.replace(old, new, 1)
        needle = new
    unstarted.config_path.write_text(text)
    proc = check_config(unstarted.config_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    where = "%s:%d:" % (unstarted.config_path, line_of(text, needle))
    assert where in proc.stderr, "expected %r in:\n%s" % (where, proc.stderr)


@pytest.mark.parametrize("line", ["resume_timeout: -1", "max_unacked: 5",
                                  "max_unacked_size: 1k", "request_every: 0",
                                  "resumption: yes"])
def test_bad_stream_management_key_reported_with_file_and_line(unstarted, line):
    text = unstarted.config_path.read_text().rstrip("\n") + \
        "\nstream_management:\n  %s\n" % line
    unstarted.config_path.write_text(text)
    proc = check_config(unstarted.config_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    where = "%s:%d:" % (unstarted.config_path, line_of(text, line))
    assert where in proc.stderr, "expected %r in:\n%s" % (where, proc.stderr)


def test_yaml_syntax_error_reported_with_file_and_line(unstarted):
    text = unstarted.config_path.read_text() + "limits: [unclosed\n"
    unstarted.config_path.write_text(text)
    proc = check_config(unstarted.config_path)
    assert proc.returncode == 1
    assert "%s:" % unstarted.config_path in proc.stderr, proc.stderr


def test_missing_config_file_fails(tmp_path):
    proc = check_config(tmp_path / "nope.yaml")
    assert proc.returncode != 0


# ------------------------------------------------------------- natterctl ---

def listed(server):
    proc = server.ctl("user", "list", check=True)
    return {line.strip() for line in proc.stdout.splitlines()
            if line.strip()}


async def test_user_add_list_passwd_del(natter, net):
    natter.add_user(ALICE, ALICE_PW)
    assert ALICE in listed(natter)
    assert (await net.login(natter, ALICE, ALICE_PW)).boundjid.bare == ALICE

    natter.ctl("user", "passwd", ALICE, input="new-secret\n", check=True)
    with pytest.raises(LoginFailed) as failed:
        await net.login(natter, ALICE, ALICE_PW)
    assert failed.value.condition == "not-authorized"
    assert (await net.login(natter, ALICE, "new-secret")).boundjid.bare \
        == ALICE

    natter.ctl("user", "del", ALICE, check=True)
    assert ALICE not in listed(natter)
    with pytest.raises(LoginFailed) as failed:
        await net.login(natter, ALICE, "new-secret")
    assert failed.value.condition == "not-authorized"


async def test_user_add_with_password_file(natter, net, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    os.chmod(secret, 0o600)
    natter.ctl("user", "add", ALICE, "--password-file", str(secret),
               check=True)
    client = await net.login(natter, ALICE, "from-a-file")
    assert client.boundjid.bare == ALICE


async def test_user_added_while_server_is_down(natter_factory, net):
    server = natter_factory(start=False)
    server.add_user(ALICE, ALICE_PW)
    assert ALICE in listed(server)
    server.start()
    client = await net.login(server, ALICE, ALICE_PW)
    assert client.boundjid.bare == ALICE


def test_user_add_rejects_malformed_jid(unstarted):
    proc = unstarted.ctl("user", "add", "a@b@c", input="pw\n")
    assert proc.returncode != 0
    assert "a@b@c" not in listed(unstarted)


def test_passwords_are_not_stored_in_plaintext(unstarted):
    password = "CorrectHorseBatteryStaple-8142"
    unstarted.add_user(ALICE, password)
    for path in unstarted.root.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), \
                "password in clear in %s" % path


def test_second_server_on_same_port_refused(natter):
    """SO_REUSEPORT would let a second natterd share the ports and take half
    the connections; it must refuse to start instead."""
    from natterlib import NATTERD
    proc = subprocess.run([str(NATTERD), "-c", str(natter.config_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "another process already listens there" in proc.stderr
    assert natter.alive()


def test_natterctl_ports_lists_what_to_open(natter_factory):
    server = natter_factory(start=False, s2s={"enabled": True},
                            extra_listeners=[{"type": "s2s", "address": "0.0.0.0",
                                              "port": 5269}])
    out = server.ctl("ports", check=True).stdout.splitlines()
    assert out[0].split()[:3] == ["PORT", "PROTO", "ADDRESS"], out
    rows = {line.split()[0]: line for line in out[1:]}
    assert "loopback only" in rows[str(server.c2s_port)], out
    assert "federation" in rows["5269"] and "the Internet" in rows["5269"], out

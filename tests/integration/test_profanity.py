"""Interop with a real client: Profanity 0.13 (Debian 12), driven through
tmux like a user at a terminal, gets a conversation back from natter's
message archive (XEP-0313) after natterd was restarted.

Profanity runs at its defaults except for two things a user has to do:
  - answer the untrusted-certificate question with `/tls allow` (natterd
    serves a self-signed certificate here);
  - `/mam on`: Profanity 0.13 ships with MAM off ("MAM is in experimental
    state", /help mam; `/mam` shows OFF on a fresh install) and asks the
    archive only when a chat window opens while it is on, so it is typed
    before the chat window is opened.
Waits poll the tmux pane (capture-pane) until the expected text is there,
bounded by a deadline."""

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from imlib import accounts, connect, msg, password_of, restart_on_same_data

PROFANITY = "/usr/bin/profanity"
TMUX = "/usr/bin/tmux"
ALICE, BOB = "alice@localhost", "bob@localhost"
# A bound, not a delay: a login (TLS, SCRAM, roster, disco) or a history
# fetch normally shows on the screen well within a second.
UI_TIMEOUT = float(os.environ.get("NATTER_IO_TIMEOUT", 10)) * 2


class Profanity:
    """One Profanity process in a detached tmux session on a private tmux
    server (its own socket), with HOME and the XDG directories under
    root; data_dir is XDG_DATA_HOME (accounts, chat log database,
    logs)."""

    def __init__(self, root, data_dir):
        self.root = root
        self.data_dir = data_dir
        self.socket = str(root / "tmux.sock")
        self.session = Path(data_dir).name
        self.last_pane = ""
        self.server = None

    def tmux(self, *args, check=True):
        return subprocess.run([TMUX, "-S", self.socket, *args],
                              capture_output=True, text=True, check=check,
                              timeout=10)

    def start(self):
        for binary in (PROFANITY, TMUX):
            assert os.access(binary, os.X_OK), \
                "%s is missing: make deps-test (scripts/deps-test.txt)" % binary
        env = ["HOME=%s" % self.root,
               "XDG_CONFIG_HOME=%s" % (self.root / "config"),
               "XDG_DATA_HOME=%s" % self.data_dir,
               "TERM=xterm-256color", "LANG=C.UTF-8", "PATH=/usr/bin:/bin"]
        # remain-on-exit keeps the last screen of a Profanity that died.
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", self.session,
                  "-x", "160", "-y", "50", "env", "-i", *env, PROFANITY,
                  "-l", "DEBUG", ";", "set-option", "-t", self.session,
                  "remain-on-exit", "on")
        return self

    def pane(self):
        done = self.tmux("capture-pane", "-p", "-J", "-t", self.session,
                         check=False)
        if done.returncode == 0:
            self.last_pane = done.stdout
        return self.last_pane

    def dead(self):
        done = self.tmux("display-message", "-p", "-t", self.session,
                         "#{pane_dead}", check=False)
        return done.returncode != 0 or done.stdout.strip() == "1"

    def log_tail(self, lines=60):
        log = Path(self.data_dir) / "profanity" / "logs" / "profanity.log"
        if not log.exists():
            return "(no profanity.log)"
        return "".join(log.read_text(errors="replace")
                       .splitlines(True)[-lines:])

    def describe(self):
        text = "---- pane ----\n%s\n---- profanity.log (end) ----\n%s" % (
            self.pane(), self.log_tail())
        if self.server is not None:
            text += "\n---- natterd log (end) ----\n" + "".join(
                self.server.log.splitlines(True)[-40:])
        return text

    async def wait_for(self, *texts, timeout=UI_TIMEOUT):
        """Waits until every one of texts is on the screen at once."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.pane()
            if all(t in screen for t in texts):
                return screen
            if self.dead() or time.monotonic() > deadline:
                missing = [t for t in texts if t not in screen]
                raise AssertionError(
                    "Profanity %s %r within %.0fs\n%s" % (
                        "exited without showing" if self.dead() else
                        "did not show", missing, timeout, self.describe()))
            await asyncio.sleep(0.1)  # the polling interval

    def type(self, line):
        self.tmux("send-keys", "-t", self.session, "-l", line)
        self.tmux("send-keys", "-t", self.session, "Enter")

    async def login(self, server, name):
        self.server = server
        jid = "%s@%s" % (name, server.domain)
        await self.wait_for("Type '/help' to show complete help")
        self.type("/connect %s server 127.0.0.1 port %d"
                  % (jid, server.c2s_port))
        await self.wait_for("Enter password:")
        self.type(password_of(name))
        # natterd's certificate is self-signed: accept it for this session.
        await self.wait_for("Use '/tls allow' to accept this certificate.")
        self.type("/tls allow")
        await self.wait_for("logged in successfully")

    async def quit(self):
        self.type("/quit")
        deadline = time.monotonic() + UI_TIMEOUT
        while not self.dead():
            assert time.monotonic() < deadline, \
                "Profanity did not quit\n" + self.describe()
            await asyncio.sleep(0.1)  # the polling interval

    def kill(self):
        self.tmux("kill-server", check=False)


@pytest.fixture
def profanity():
    """Starts Profanity sessions (one at a time) in a private directory
    under /tmp (short: the tmux socket path is limited); the tmux server
    is killed and the directory removed at teardown.  A failing test
    shows the last screen and the end of Profanity's log."""
    root = Path(tempfile.mkdtemp(prefix="natter-prof-"))
    started = []

    def start(data_dir):
        client = Profanity(root, root / data_dir)
        started.append(client)
        return client.start()

    yield start
    for client in started:
        # pytest shows this output only when the test failed.
        print("==== Profanity in %s ====\n%s" % (client.data_dir,
                                                 client.describe()))
        client.kill()
    if os.environ.get("NATTER_KEEP"):
        print("kept %s" % root)
    else:
        shutil.rmtree(root, ignore_errors=True)


async def test_history_comes_from_the_archive_after_restart(
        natter_factory, profanity, net):
    first = accounts(natter_factory(), "alice", "bob")
    bob = await connect(net, first, "bob", available=True)
    alice = profanity("data-before")
    await alice.login(first, "alice")

    incoming = ["bob-to-alice-%d-quince" % i for i in range(3)]
    for i, body in enumerate(incoming):
        bob.send_raw("<message to='%s' id='in%d' type='chat'><body>%s"
                     "</body></message>" % (ALICE, i, body))
    # Profanity opens a window for them (window 2) and tells the console.
    await alice.wait_for("<< chat message: %s/r (win 2)" % BOB)
    outgoing = "alice-to-bob-marmalade"
    alice.type("/msg %s %s" % (BOB, outgoing))
    got = await bob.inbox.get(msg(frm_bare=ALICE), "alice's message")
    assert got["body"] == outgoing
    await alice.wait_for(*incoming, "me: " + outgoing)
    await alice.quit()
    await bob.close()

    second = restart_on_same_data(natter_factory, first)
    # A new XDG_DATA_HOME (a new device): no chat log database, no account
    # file.  What the chat window shows can only come from the archive.
    alice = profanity("data-after")
    assert not (alice.data_dir / "profanity").exists()
    await alice.login(second, "alice")
    alice.type("/mam on")
    await alice.wait_for("Message Archive Management enabled.")
    alice.type("/msg %s" % BOB)
    # Both directions, each with its sender.
    await alice.wait_for(*["%s/r: %s" % (BOB, body) for body in incoming],
                         "me: " + outgoing)

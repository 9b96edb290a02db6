"""Storage off the loops (docs/architecture.md, "Storage"): no event loop
waits for the store's write lock.

The storage thread holds SQLite's write lock through each batch of
archive writes, and another process may hold it too (a backup,
`natterctl mam expire`). Here the test holds it, from its own SQLite
connection. A roster change is made at once all the same: every session
of the account gets its push, and the loop goes on delivering messages.
Its result waits until the change is committed (a result means that what
it set is durable), comes once the lock is free, and the change survives
a kill -9 after it."""

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from imlib import (
    NS_REGISTER, accounts, await_push, connect, msg, password_of,
    restart_on_same_data, roster_get, roster_set, send_marker)
from natterlib import IO_TIMEOUT, LoginFailed

@pytest.fixture
def server(natter):
    return accounts(natter, "alice", "bob")


class StoreLock:
    """SQLite's write lock on natterd's store, held by this process."""

    def __init__(self, server):
        path = Path(server.config["data_dir"]) / "natter.db"
        self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self):
        self.db.execute("ROLLBACK")
        self.db.close()


async def sessions(net, server):
    """alice's phone and laptop, both interested in the roster, and bob;
    each has had an answer, so nothing they did waits in the store."""
    phone = await connect(net, server, "alice", "phone")
    laptop = await connect(net, server, "alice", "laptop")
    bob = await connect(net, server, "bob")
    for client in (phone, laptop):
        await roster_get(client)
    await bob.iq(None, "<ping xmlns='urn:xmpp:ping'/>")
    return phone, laptop, bob


async def test_roster_change_is_made_while_the_store_is_locked(natter_factory, server,
                                                              net):
    phone, laptop, bob = await sessions(net, server)
    lock = StoreLock(server)
    try:
        result = asyncio.ensure_future(
            roster_set(phone, "bob@localhost", name="Bob", groups=["Friends"]))
        # Made at once: before natter queued map writes, the loop waited
        # for the lock (5 s) and the change failed.
        await await_push(laptop, "bob@localhost", name="Bob")
        await await_push(phone, "bob@localhost", name="Bob")
        send_marker(bob, "alice@localhost/phone", "while-locked")
        await phone.inbox.get(msg(id="while-locked"), "bob's message")
        # The push and the message went out after the result would have:
        # it waits for the store.
        assert not result.done(), result
        assert lock.db.in_transaction
    finally:
        lock.release()
    await result
    server = restart_on_same_data(natter_factory, server, kill=True)
    again = await connect(net, server, "alice", "again")
    _, items = await roster_get(again)
    assert items["bob@localhost"]["name"] == "Bob", items
    assert items["bob@localhost"]["groups"] == ["Friends"], items


async def test_removal_while_locked_is_seen_and_kept(natter_factory, server, net):
    """A roster item removed while the store is locked is gone for every
    session at once, and stays gone after a clean restart, which commits
    what is queued."""
    phone, laptop, _ = await sessions(net, server)
    await roster_set(phone, "bob@localhost", name="Bob")
    await await_push(laptop, "bob@localhost", name="Bob")
    lock = StoreLock(server)
    try:
        result = asyncio.ensure_future(roster_set(phone, "bob@localhost", remove=True))
        await await_push(laptop, "bob@localhost", subscription="remove")
        assert not result.done(), result
    finally:
        lock.release()
    await result
    _, items = await roster_get(laptop)
    assert "bob@localhost" not in items, items
    server = restart_on_same_data(natter_factory, server)
    again = await connect(net, server, "alice", "again")
    _, items = await roster_get(again)
    assert "bob@localhost" not in items, items


async def test_room_history_is_stored_while_the_store_is_locked(natter_factory,
                                                                net):
    """A persistent room of a host without archives keeps its history in
    the store. A message said while the store is locked goes to every
    occupant at once and is in the room's history after a restart: its
    write waited on the storage thread, not on the room's loop (which
    used to wait for the lock until SQLite gave up, and lose it)."""
    from test_muc import join, say, body_of
    from test_muc_admin import configure, no_archive_host
    server = accounts(natter_factory(**no_archive_host(5)), "alice", "bob")
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    await join(alice, "alice")
    await configure(alice, persistentroom=True)
    await join(bob, "bob")
    lock = StoreLock(server)
    try:
        await say(alice, "while-locked")
        await bob.inbox.get(
            lambda s: s.xml.findtext("{jabber:client}body") == "while-locked",
            "alice's message in the room, while the store is locked")
        assert lock.db.in_transaction
        # The history entry waits on the storage thread and counts what
        # it holds (the room's names and the message's copy; a job that
        # said nothing would count its own 56 bytes) against the queue's
        # bound; nothing had to wait for room.
        await job_queued(server, "room history")
        status = await asyncio.to_thread(storage_status, server)
        assert status["jobs_bytes"] > 256, status
        assert status["loop_waits"] == 0, status
    finally:
        lock.release()
    server = restart_on_same_data(natter_factory, server, keep_config=True)
    carol = await connect(net, server, "alice", "again", available=True)
    joined = await join(carol, "alice")
    assert [body_of(s) for s in joined.history] == ["while-locked"], (
        [body_of(s) for s in joined.history])


def storage_status(server):
    """`natterctl storage`, as a dict of ints."""
    proc = server.ctl("storage", check=True)
    return {k: int(v) for k, v in (line.split() for line in proc.stdout.splitlines()
                                   if len(line.split()) == 2)}


def backlog(server):
    """`natterctl storage`: jobs queued on the storage thread."""
    return storage_status(server)["jobs_queued"]


async def job_queued(server, what):
    """Waits until a job is queued on the storage thread (the store is
    locked, so it stays queued): the loop handed its write over."""
    deadline = time.monotonic() + IO_TIMEOUT
    while await asyncio.to_thread(backlog, server) < 1:
        assert time.monotonic() < deadline, (
            "%s: no job was queued on the storage thread" % what)
        await asyncio.sleep(0.05)


async def round_trip(sender, receiver, marker):
    send_marker(sender, str(receiver.boundjid), marker)
    await receiver.inbox.get(msg(id=marker), marker)


# One loop, so that the loop that registers is the one that delivers.
REGISTRATION = {"workers": 1, "allow_registration": True,
                "registration_interval": 0}


async def test_registration_waits_for_the_store_not_the_loop(natter_factory,
                                                            net):
    """An account registered in-band while the store is locked: its keys
    are written by the storage thread, the loop goes on delivering, the
    result comes once they are committed, and they survive a kill -9
    (the loop used to wait for the lock itself, and fail after 5 s)."""
    server = accounts(natter_factory(**REGISTRATION), "alice", "bob")
    alice = await connect(net, server, "alice")
    bob = await connect(net, server, "bob")
    stream, _ = await net.raw_tls(server)
    lock = StoreLock(server)
    try:
        result = asyncio.ensure_future(stream.iq_roundtrip(
            "reg-1", "<query xmlns='%s'><username>newbie</username>"
            "<password>newbie-pass</password></query>" % NS_REGISTER,
            type_="set"))
        await job_queued(server, "registration")
        await round_trip(alice, bob, "during-registration")
        assert not result.done(), result
    finally:
        lock.release()
    reply = await result
    assert reply.get("type") == "result", reply
    server = restart_on_same_data(natter_factory, server, kill=True,
                                  keep_config=True)
    newbie = await net.login(server, "newbie@localhost/again", "newbie-pass")
    await newbie.close()


async def test_password_change_waits_for_the_store_not_the_loop(
        natter_factory, net):
    server = accounts(natter_factory(**REGISTRATION), "alice", "bob")
    alice = await connect(net, server, "alice")
    bob = await connect(net, server, "bob")
    lock = StoreLock(server)
    try:
        result = asyncio.ensure_future(alice.iq(
            "localhost", "<query xmlns='%s'><username>alice</username>"
            "<password>new-secret</password></query>" % NS_REGISTER, "set"))
        await job_queued(server, "password change")
        await round_trip(bob, alice, "during-change")
        assert not result.done(), result
    finally:
        lock.release()
    await result
    server = restart_on_same_data(natter_factory, server, kill=True,
                                  keep_config=True)
    again = await net.login(server, "alice@localhost/again", "new-secret")
    await again.close()
    with pytest.raises(LoginFailed):
        await net.login(server, "alice@localhost/old",
                        password_of("alice"))


NS_PRIVATE = "jabber:iq:private"
NOTE = "<note xmlns='urn:example:note'>%s</note>"


async def test_account_removal_waits_for_the_store_not_the_loop(
        natter_factory, net):
    """An account removed in-band while the store is locked: the loop
    goes on delivering (it used to wait until every queued write was
    committed, here until the lock was gone); the result comes once the
    account is gone, and what another of its sessions wrote meanwhile
    goes too, so an account made again with the name inherits nothing."""
    server = accounts(natter_factory(**REGISTRATION), "alice", "bob",
                      "carol")
    phone = await connect(net, server, "alice", "phone")
    laptop = await connect(net, server, "alice", "laptop")
    bob = await connect(net, server, "bob")
    carol = await connect(net, server, "carol")
    await laptop.iq(None, "<query xmlns='%s'>%s</query>"
                    % (NS_PRIVATE, NOTE % "before"), "set")
    lock = StoreLock(server)
    try:
        result = asyncio.ensure_future(phone.iq(
            "localhost", "<query xmlns='%s'><remove/></query>" % NS_REGISTER,
            "set"))
        await job_queued(server, "account removal")
        laptop.send_raw("<iq type='set' id='late-note'><query xmlns='%s'>%s"
                        "</query></iq>" % (NS_PRIVATE, NOTE % "during"))
        await round_trip(bob, carol, "during-removal")
        assert not result.done(), result
    finally:
        lock.release()
    reply = await result
    assert reply["type"] == "result", reply
    await phone.wait_closed()
    await laptop.wait_closed()
    with pytest.raises(LoginFailed):
        await net.login(server, "alice@localhost/again", password_of("alice"))
    # A write of bob's, queued after the removal's sweep: once it is
    # answered, the sweep is committed.
    await bob.iq(None, "<query xmlns='%s'>%s</query>"
                 % (NS_PRIVATE, NOTE % "bob"), "set")
    server.add_user("alice@localhost", "fresh-pass")
    again = await net.login(server, "alice@localhost/again", "fresh-pass")
    got = await again.iq(None, "<query xmlns='%s'><note xmlns="
                         "'urn:example:note'/></query>" % NS_PRIVATE)
    assert "before" not in str(got) and "during" not in str(got), got
    # The new account keeps what it writes.
    await again.iq(None, "<query xmlns='%s'>%s</query>"
                   % (NS_PRIVATE, NOTE % "anew"), "set")
    server = restart_on_same_data(natter_factory, server, kill=True,
                                  keep_config=True)
    later = await net.login(server, "alice@localhost/later", "fresh-pass")
    got = await later.iq(None, "<query xmlns='%s'><note xmlns="
                         "'urn:example:note'/></query>" % NS_PRIVATE)
    assert "anew" in str(got), got
    await later.close()
    with sqlite3.connect(str(Path(server.config["data_dir"]) / "natter.db")) as db:
        rows = db.execute("SELECT store, key FROM map WHERE domain = "
                          "'localhost' AND local = 'alice'").fetchall()
    # (The last logout may be written yet or not.)
    assert set(rows) - {("account", "last")} == {
        ("private", "urn:example:note")}, rows

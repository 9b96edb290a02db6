"""The archive-all journal (docs/archive.md, "The journal"): every message
through a host with journal.enabled is recorded once, in hash-chained
segment files with signed checkpoints; natterctl journal verify finds
and locates any edit, removal, reordering or cut; retention removes whole
old segments; export writes JSON and mbox; users see a disco feature and
a login notice.

The journal is written by a thread of its own, after the message went on:
a test knows every accepted message is on disk once natterd has stopped
(SIGTERM drains the writer's queue and seals the segment), so the tests
stop natterd before they read the files, and never sleep.

Federation (a message in and out over s2s) is in
test_journal_federation.py, which uses the fixed federation addresses."""

import datetime
import email.parser
import email.policy
import json
import os
import re
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from imlib import NS_DISCO_INFO, accounts, connect, msg, password_of
from natterlib import IO_TIMEOUT, NS_CLIENT, q
from test_muc import join, say

NS_JOURNAL = "urn:natter:journal:0"
ROOM = "team@conference.localhost"
NOTICE = "Messages on this server are journaled for compliance."

KIND_MESSAGE, KIND_CHECKPOINT, KIND_RETENTION = 1, 2, 3


def journal_host(**journal):
    settings = {"enabled": True, "notice": NOTICE}
    settings.update(journal)
    return {"hosts": [{"domain": "localhost", "journal": settings}]}


@pytest.fixture
def server(natter_factory):
    return accounts(natter_factory(**journal_host()), "alice", "bob", "carol")


# Small segments and frequent checkpoints: a few dozen messages make
# several segments.
SMALL = journal_host(segment_size=4096, checkpoint_records=5)


@pytest.fixture
def small(natter_factory):
    return accounts(natter_factory(**SMALL), "alice", "bob")


def journal_dir(server):
    return Path(server.config["data_dir"]) / "journal" / "localhost"


def segments(server):
    return sorted(journal_dir(server).glob("seg-*.njl"))


class Rec:
    def __init__(self, path, offset, data):
        self.path, self.offset, self.data = path, offset, data
        self.kind = data[8]
        self.seq = struct.unpack_from("<Q", data, 9)[0]


def records(path):
    """The whole records of a segment file, in order."""
    data = Path(path).read_bytes()
    out, off = [], 0
    while off + 8 <= len(data):
        assert data[off:off + 4] == b"NJR1", "no record at %s:%d" % (path, off)
        length = struct.unpack_from("<I", data, off + 4)[0]
        if off + length > len(data):
            break
        out.append(Rec(path, off, data[off:off + length]))
        off += length
    return out


def stop(server):
    problems = server.stop()
    assert not problems, "natterd: %s\n%s" % ("; ".join(problems), server.log)


def verify(server, *args):
    return server.ctl("journal", "verify", *args)


def assert_verifies(server, *args):
    proc = verify(server, *args)
    assert proc.returncode == 0 and "FAIL" not in proc.stdout, (
        "journal verify failed:\n%s%s" % (proc.stdout, proc.stderr))
    return proc.stdout


def assert_detected(server, *expected):
    proc = verify(server)
    assert proc.returncode == 1, (
        "verify did not fail (%d):\n%s%s" % (proc.returncode, proc.stdout,
                                             proc.stderr))
    fails = [line for line in proc.stdout.splitlines()
             if line.startswith("FAIL")]
    for text in expected:
        assert any(text in line for line in fails), (
            "verify did not say %r:\n%s" % (text, proc.stdout))
    return proc.stdout


def export(server, *args, fmt="json"):
    proc = server.ctl("journal", "export", "--format", fmt, *args, check=True)
    return json.loads(proc.stdout) if fmt == "json" else proc.stdout


async def chat(alice, bob, count, tag, size=60):
    """alice sends count chat messages to bob's session and waits for the
    last one; returns the bodies in order."""
    bodies = []
    for i in range(count):
        body = "%s %d %s" % (tag, i, "x" * size)
        bodies.append(body)
        alice.send_raw("<message to='%s' id='%s-%d' type='chat'><body>%s"
                       "</body></message>" % (bob.boundjid.full, tag, i, body))
    await bob.inbox.get(msg(id="%s-%d" % (tag, count - 1)),
                        "the last of %d messages" % count)
    return bodies


# ------------------------------------------------------------ recording ---

async def test_one_to_one_recorded_once_with_its_fields(server, net):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    alice.send_raw("<message to='%s' id='m1' type='chat'><body>hello &amp; "
                   "&lt;bob&gt;</body><thread>t-42</thread></message>"
                   % bob.boundjid.full)
    # A chat state carries no conversation: not recorded.
    alice.send_raw("<message to='%s' id='cs' type='chat'><composing xmlns="
                   "'http://jabber.org/protocol/chatstates'/></message>"
                   % bob.boundjid.full)
    # m2 answers m1: sent after m1 arrived, so the journal's order is
    # theirs (two connections may sit on two loops).
    await bob.inbox.get(msg(id="m1"), "m1")
    bob.send_raw("<message to='alice@localhost' id='m2' type='chat'>"
                 "<body>line one\nline two</body></message>")
    await alice.inbox.get(msg(id="m2"), "m2")
    stop(server)
    out = assert_verifies(server)
    assert "2 message(s)" in out, out
    got = export(server, "--user", "alice@localhost")
    assert [(m["id"], m["from"], m["to"], m["type"], m["body"], m["recorded"])
            for m in got] == [
        ("m1", alice.boundjid.full, bob.boundjid.full, "chat",
         "hello & <bob>", "sent"),
        ("m2", bob.boundjid.full, "alice@localhost", "chat",
         "line one\nline two", "sent")], got
    assert got[0]["thread"] == "t-42" and "thread" not in got[1]
    assert got[0]["time"].endswith("Z") and got[0]["seq"] < got[1]["seq"]
    # bob's export is the same conversation; carol's is empty.
    assert [m["seq"] for m in export(server, "--user", "bob@localhost")] == \
        [m["seq"] for m in got]
    assert export(server, "--user", "carol@localhost") == []


async def test_offline_message_recorded_once(server, net):
    alice = await connect(net, server, "alice", available=True)
    alice.send_raw("<message to='bob@localhost' id='off1' type='chat'>"
                   "<body>while you were out</body></message>")
    # bob logs in later and gets it from offline storage.
    bob = await connect(net, server, "bob", available=True)
    await bob.inbox.get(msg(id="off1"), "the offline message")
    stop(server)
    assert_verifies(server)
    got = export(server, "--user", "bob@localhost")
    assert [(m["id"], m["body"]) for m in got] == [
        ("off1", "while you were out")], got


async def test_private_message_in_a_room_is_recorded_once(server, net):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    await join(alice, "Alice", room=ROOM)
    await join(bob, "Bob", room=ROOM)
    alice.send_raw("<message to='%s/Bob' type='chat' id='pm1'><body>just "
                   "between us</body></message>" % ROOM)
    await bob.inbox.get(lambda s: s.xml.get("id") == "pm1", "the private message")
    stop(server)
    assert_verifies(server)
    got = [m for m in export(server, "--user", "alice@localhost")
           if m.get("body") == "just between us"]
    assert [(m["from"], m["to"], m["type"], m["recorded"]) for m in got] == [
        (alice.boundjid.full, ROOM + "/Bob", "chat", "sent")], got


async def test_groupchat_recorded_once_per_room_message(server, net):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    carol = await connect(net, server, "carol", available=True)
    await join(alice, "Alice", room=ROOM)
    await join(bob, "Bob", room=ROOM)
    await join(carol, "Carol", room=ROOM)
    await say(alice, "first", room=ROOM)
    await say(bob, "second", room=ROOM)
    await say(alice, "third", room=ROOM)
    alice.send_raw("<message to='%s' type='groupchat' id='subj'><subject>"
                   "Quarterly numbers</subject></message>" % ROOM)
    await carol.inbox.get(lambda s: s.xml.get("id") == "subj"
                          or s.xml.find(q(NS_CLIENT, "subject")) is not None
                          and s.xml.findtext(q(NS_CLIENT, "subject")) ==
                          "Quarterly numbers", "the subject change")
    stop(server)
    assert_verifies(server)
    got = export(server, "--room", ROOM)
    # Three occupants got each message: the journal holds it once.
    assert [(m["from"], m["to"], m["type"], m.get("body"), m.get("subject"))
            for m in got] == [
        (alice.boundjid.full, ROOM, "groupchat", "first", None),
        (bob.boundjid.full, ROOM, "groupchat", "second", None),
        (alice.boundjid.full, ROOM, "groupchat", "third", None),
        (alice.boundjid.full, ROOM, "groupchat", None, "Quarterly numbers"),
    ], got
    assert all(m["recorded"] == "groupchat" for m in got)
    # alice's own export has what she said in the room.
    assert [m.get("body") for m in export(server, "--user", "alice@localhost")
            if m["type"] == "groupchat"] == ["first", "third", None]


async def test_no_journal_records_nothing_and_says_nothing(natter, net):
    accounts(natter, "alice")
    raw = await net.raw_login(natter, "alice@localhost", password_of("alice"))
    reply = await raw.iq_roundtrip(
        "d1", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="localhost")
    features = [f.get("var") for f in reply.iter(q(NS_DISCO_INFO, "feature"))]
    assert NS_JOURNAL not in features
    await raw.ping_server()
    assert not any(e.tag == q(NS_CLIENT, "message") for e in raw._queue), \
        raw.describe()
    stop(natter)
    assert not (Path(natter.config["data_dir"]) / "journal").exists()


# ------------------------------------------------------ users are told ---

async def test_disco_feature_and_login_notice(server, net):
    raw = await net.raw_login(server, "alice@localhost", password_of("alice"))
    # The notice comes right after bind, before anything the client asks.
    notice = None
    deadline = time.monotonic() + IO_TIMEOUT
    while notice is None:
        elem = await raw.next(max(0.01, deadline - time.monotonic()))
        assert elem is not None, raw.describe()
        if elem.tag == q(NS_CLIENT, "message"):
            notice = elem
    assert notice.get("from") == "localhost"
    assert notice.findtext(q(NS_CLIENT, "body")) == NOTICE
    assert notice.find(q(NS_JOURNAL, "journal")) is not None
    reply = await raw.iq_roundtrip(
        "d1", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="localhost")
    features = [f.get("var") for f in reply.iter(q(NS_DISCO_INFO, "feature"))]
    assert NS_JOURNAL in features, features


# ------------------------------------------------------------ tampering ---

async def many_segments(small, net, count=40, min_segments=3):
    alice = await connect(net, small, "alice", available=True)
    bob = await connect(net, small, "bob", available=True)
    bodies = await chat(alice, bob, count, "t")
    stop(small)
    segs = segments(small)
    assert len(segs) >= min_segments, "only %d segment(s)" % len(segs)
    assert_verifies(small)
    return segs, bodies


def message_records(path):
    return [r for r in records(path) if r.kind == KIND_MESSAGE]


async def test_edited_body_byte_is_found(small, net):
    segs, _ = await many_segments(small, net)
    victim = message_records(segs[1])[2]
    data = bytearray(segs[1].read_bytes())
    at = victim.offset + victim.data.index(b"xxxx")
    data[at] = ord("y")
    segs[1].write_bytes(bytes(data))
    assert_detected(small, "%s: record %d (message) at offset %d: chain hash "
                    "mismatch" % (segs[1].name, victim.seq, victim.offset))


async def test_removed_record_is_found(small, net):
    segs, _ = await many_segments(small, net)
    victim = message_records(segs[0])[1]
    data = segs[0].read_bytes()
    segs[0].write_bytes(data[:victim.offset] +
                        data[victim.offset + len(victim.data):])
    assert_detected(small, "%s: record %d at offset %d where record %d was "
                    "expected" % (segs[0].name, victim.seq + 1, victim.offset,
                                  victim.seq))


async def test_swapped_records_are_found(small, net):
    segs, _ = await many_segments(small, net)
    first, second = message_records(segs[1])[1:3]
    assert second.offset == first.offset + len(first.data)
    data = segs[1].read_bytes()
    segs[1].write_bytes(data[:first.offset] + second.data + first.data +
                        data[second.offset + len(second.data):])
    assert_detected(small, "%s: record %d at offset %d where record %d was "
                    "expected" % (segs[1].name, second.seq, first.offset,
                                  first.seq))


async def test_deleted_middle_segment_is_found(small, net):
    segs, _ = await many_segments(small, net)
    segs[1].unlink()
    assert_detected(small, "%s: segment(s) 2..2 are missing" % segs[2].name)


async def test_truncated_tail_is_found(small, net):
    segs, _ = await many_segments(small, net)
    last = records(segs[-1])[-1]
    with open(segs[-1], "r+b") as f:
        f.truncate(last.offset + len(last.data) // 2)
    assert_detected(small, "%s: truncated tail: %d byte(s) of an incomplete "
                    "record at offset %d" % (segs[-1].name,
                                             len(last.data) // 2, last.offset))


async def test_truncated_sealed_segment_is_found(small, net):
    segs, _ = await many_segments(small, net)
    last = records(segs[0])[-1]
    with open(segs[0], "r+b") as f:
        f.truncate(last.offset)
    assert_detected(small, "%s: holds %d bytes of whole records, but the opening "
                    "checkpoint of %s says %d" % (
                        segs[0].name, last.offset, segs[1].name,
                        last.offset + len(last.data)))


async def test_edited_checkpoint_signature_is_found(small, net):
    segs, _ = await many_segments(small, net)
    opening = records(segs[1])[0]
    assert opening.kind == KIND_CHECKPOINT
    # The chain hash the segment claims to continue from (prev_hash).
    data = bytearray(segs[1].read_bytes())
    data[25 + 4 + 1 + 4 + 8 + 8 + 3] ^= 0x01
    segs[1].write_bytes(bytes(data))
    assert_detected(small, "%s: record %d (offset 0): bad checkpoint signature"
                    % (segs[1].name, opening.seq))


async def test_another_key_is_refused(small, net, tmp_path):
    await many_segments(small, net, count=8, min_segments=1)
    other = tmp_path / "other.key"
    pub = tmp_path / "other.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out",
                    str(other)], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(other), "-pubout", "-out",
                    str(pub)], check=True, capture_output=True)
    proc = verify(small, "--key", str(pub))
    assert proc.returncode == 1 and "signed by another key" in proc.stdout, \
        proc.stdout
    exported = small.ctl("journal", "pubkey", check=True).stdout
    mine = tmp_path / "mine.pub"
    mine.write_text(exported)
    assert_verifies(small, "--key", str(mine))


# ------------------------------------------------------------ retention ---

async def test_retention_removes_old_segments_and_verify_still_passes(
        natter_factory, net):
    server = accounts(natter_factory(**journal_host(
        segment_size=4096, checkpoint_records=5, retention_days=1)),
        "alice", "bob")
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    await chat(alice, bob, 60, "old")
    stop(server)
    segs = segments(server)
    assert len(segs) >= 4, segs
    # The first three were last written three days ago.
    old = time.time() - 3 * 86400
    for path in segs[:3]:
        os.utime(path, (old, old))
    again = natter_factory(**journal_host(
        segment_size=4096, checkpoint_records=5, retention_days=1),
        data_dir=server.config["data_dir"])
    again.wait_for_log("retention removed 3 segment(s) below 4")
    stop(again)
    left = segments(again)
    assert [p.name for p in left][0] == "seg-00000004.njl", left
    out = assert_verifies(again)
    assert "segments below 4 were removed by retention" in out, out
    # Deleting more than retention did is still found.
    left[0].unlink()
    assert_detected(again, "seg-00000005.njl: segment(s) 1..4 before it are "
                    "missing, and no retention record says they were removed")


# --------------------------------------------------------------- export ---

async def test_export_mbox_escapes_from_lines(server, net):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    body = "Hi Bob,\nFrom the top:\n>From quoted\nplain\r\nFrom me"
    alice.send_raw("<message to='%s' id='mb1' type='chat'><subject>Plans\n"
                   "Bcc: eve@evil</subject><body>%s</body></message>"
                   % (bob.boundjid.full, body))
    await bob.inbox.get(msg(id="mb1"), "mb1")
    stop(server)
    out = export(server, "--user", "alice@localhost", fmt="mbox")
    lines = out.split("\n")
    starts = [l for l in lines if l.startswith("From ")]
    assert len(starts) == 1 and starts[0].startswith("From alice@localhost "), \
        out
    text = out.split("\n", 1)[1]
    message = email.parser.Parser(policy=email.policy.default).parsestr(text)
    assert message["Subject"] == "Plans Bcc: eve@evil", out
    assert message["Bcc"] is None
    assert message["To"].addresses[0].addr_spec == "bob@localhost"
    assert message["From"].addresses[0].addr_spec == "alice@localhost"
    assert message["X-XMPP-Id"] == "mb1"
    assert message.get_content().split("\n")[:5] == [
        "Hi Bob,", ">From the top:", ">>From quoted", "plain", ">From me"], out


def mbox_messages(text):
    """The messages of an mboxrd export, in order: (its "From " line, the
    parsed RFC 5322 message, its body with the quoting undone).  Each
    body line ends with a newline, and a blank line ends the message."""
    out = []
    for chunk in re.split(r"(?m)^(?=From )", text):
        if not chunk:
            continue
        start, rest = chunk.split("\n", 1)
        message = email.parser.Parser(policy=email.policy.default).parsestr(
            rest)
        content = message.get_content()
        assert content.endswith("\n"), "no blank line ends %r" % chunk
        body = content[:-1]
        body = body[:-1] if body.endswith("\n") else body
        body = re.sub(r"(?m)^>(>*From )", r"\1", body)
        out.append((start, message, body))
    return out


# RFC 5322 3.6.4: msg-id = "<" id-left "@" id-right ">", each side a
# dot-atom-text (no "@", no space).
MSG_ID = re.compile(r"^<[!#-'*+/-9=?A-Z^-~.-]+@[!#-'*+/-9=?A-Z^-~.-]+>$")


async def test_export_room_as_mbox(server, net):
    """A room's conversation exported as mbox: one RFC 5322 message per
    groupchat message and subject change, in the journal's order, from
    the occupant's real JID to the room, with the body (a line that
    starts with "From " quoted), the subject, the XMPP type and id, the
    journal's sequence number, and a well-formed Message-ID of its own; a
    1:1 chat between the same users is not in it."""
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    await join(alice, "Alice", room=ROOM)
    await join(bob, "Bob", room=ROOM)
    await say(alice, "Morning all", room=ROOM, msg_id="r1")
    await say(bob, "From the minutes:\nship it\n>From before", room=ROOM,
              msg_id="r2")
    alice.send_raw("<message to='%s' id='aside' type='chat'><body>just us"
                   "</body></message>" % bob.boundjid.full)
    await bob.inbox.get(msg(id="aside"), "the 1:1 message")
    alice.send_raw("<message to='%s' type='groupchat' id='r3'><subject>"
                   "Release</subject></message>" % ROOM)
    await bob.inbox.get(lambda s: s.xml.findtext(q(NS_CLIENT, "subject"))
                        == "Release", "the subject change")
    stop(server)
    assert_verifies(server)
    records = export(server, "--room", ROOM)
    got = mbox_messages(export(server, "--room", ROOM, fmt="mbox"))
    expected = [
        (alice.boundjid.full, "r1", "(chat message)", "Morning all"),
        (bob.boundjid.full, "r2", "(chat message)",
         "From the minutes:\nship it\n>From before"),
        (alice.boundjid.full, "r3", "Release", ""),
    ]
    assert [(m["From"].addresses[0].display_name, m["X-XMPP-Id"],
             m["Subject"], body) for _, m, body in got] == expected, got
    assert len(records) == len(got), (records, got)
    ids = set()
    for (start, message, _), record in zip(got, records):
        sender = message["From"].addresses[0]
        assert start.startswith("From %s " % sender.addr_spec), start
        assert sender.addr_spec == record["from"].split("/")[0]
        to = message["To"].addresses[0]
        assert (to.display_name, to.addr_spec) == (ROOM, ROOM), message
        assert (message["X-XMPP-Type"], message["X-Natter-Journal-Recorded"],
                int(message["X-Natter-Journal-Seq"])) == (
            "groupchat", "groupchat", record["seq"]), message
        when = datetime.datetime.fromisoformat(
            record["time"].replace("Z", "+00:00")).replace(microsecond=0)
        assert message["Date"].datetime == when, (message["Date"], when)
        defects = [(name, message[name].defects) for name in message.keys()
                   if message[name].defects]
        assert not defects, "malformed header fields: %s" % defects
        assert MSG_ID.match(message["Message-ID"]), (
            "Message-ID %r is not an RFC 5322 msg-id" % message["Message-ID"])
        ids.add(message["Message-ID"])
    assert len(ids) == len(got), "Message-IDs repeat: %s" % sorted(ids)


async def test_export_time_range(server, net):
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    await chat(alice, bob, 1, "early")
    stop(server)
    recorded = export(server, "--user", "alice@localhost")[0]["time"]
    # The same instant as the record: --from is inclusive, --to exclusive.
    assert len(export(server, "--user", "alice@localhost",
                      "--from", recorded)) == 1
    assert export(server, "--user", "alice@localhost", "--to", recorded) == []
    assert export(server, "--user", "alice@localhost",
                  "--from", "2000-01-01", "--to", "2000-01-02") == []
    assert len(export(server, "--user", "alice@localhost",
                      "--from", "2000-01-01T00:00:00+02:00")) == 1
    bad = server.ctl("journal", "export", "--user", "alice@localhost",
                     "--from", "yesterday")
    assert bad.returncode == 1 and "ISO 8601" in bad.stderr


# ----------------------------------------------------------- crash -------

async def test_kill_9_mid_traffic_leaves_a_journal_that_verifies(
        natter_factory, net):
    config = journal_host(checkpoint_records=50)
    server = accounts(natter_factory(**config), "alice", "bob")
    alice = await connect(net, server, "alice", available=True)
    bob = await connect(net, server, "bob", available=True)
    sent = ["burst %d" % i for i in range(300)]
    for i, body in enumerate(sent):
        alice.send_raw("<message to='%s' id='b%d' type='chat'><body>%s</body>"
                       "</message>" % (bob.boundjid.full, i, body))
    await bob.inbox.get(msg(id="b100"), "message 100 of the burst")
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server.stop()
    proc = verify(server)
    fails = [l for l in proc.stdout.splitlines() if l.startswith("FAIL")]
    # A kill can cut the last write short: then, and only then, verify
    # reports a truncated tail until natterd has restarted.
    assert all("truncated tail" in l for l in fails), proc.stdout
    assert (proc.returncode == 0) == (not fails), proc.stdout
    before = [m["body"] for m in export(server, "--user", "alice@localhost")]
    # What was recorded is what was sent, in order, each once.
    assert before == sent[:len(before)], before
    # Restarted, natterd goes on in a new segment whose signed opening
    # checkpoint continues the chain (and declares a torn tail, if any).
    # Same data directory: the accounts are there.
    again = natter_factory(**config, data_dir=server.config["data_dir"])
    alice = await connect(net, again, "alice", available=True)
    bob = await connect(net, again, "bob", available=True)
    after = await chat(alice, bob, 3, "after")
    stop(again)
    assert_verifies(again)
    got = [m["body"] for m in export(again, "--user", "alice@localhost")]
    assert got[:len(before)] == before and got[len(before):] == after, got


async def test_torn_record_is_a_truncated_tail_until_restart(
        small, natter_factory, net):
    segs, bodies = await many_segments(small, net, count=8, min_segments=1)
    last = records(segs[-1])[-1]
    # What a power cut in the middle of a write leaves: half a record.
    with open(segs[-1], "ab") as f:
        f.write(last.data[:len(last.data) // 2])
    assert_detected(small, "%s: truncated tail" % segs[-1].name)
    restarted = natter_factory(**SMALL, data_dir=small.config["data_dir"])
    alice = await connect(net, restarted, "alice", available=True)
    bob = await connect(net, restarted, "bob", available=True)
    more = await chat(alice, bob, 2, "more")
    stop(restarted)
    out = assert_verifies(restarted)
    assert "%s: truncated tail of %d byte(s) at offset %d (natterd stopped " \
        "while writing); declared by the restart" % (
            segs[-1].name, len(last.data) // 2,
            last.offset + len(last.data)) in out, out
    got = [m["body"] for m in export(restarted, "--user", "alice@localhost")]
    assert got == bodies + more, got


# ------------------------------------------------------------- config ----

def test_config_error_names_file_and_line(natter_factory):
    server = natter_factory(start=False, **journal_host(segment_size=10))
    proc = server.ctl("journal", "verify")
    assert proc.returncode == 1
    line = next(i for i, l in enumerate(
        server.config_path.read_text().splitlines(), 1)
        if "segment_size" in l)
    assert "%s:%d:" % (server.config_path, line) in proc.stderr, proc.stderr

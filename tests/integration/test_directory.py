"""Directory accounts (auth: ldap) against a real OpenLDAP slapd (the
session-scoped `slapd` fixture, see dirlib): SASL PLAIN checked by binding
as the user, locked accounts, LDAP filter injection, StartTLS / LDAPS /
certificate verification / failover, routing to directory users, auto-buddy
groups (nested, posixGroup) applied to rosters and refreshed with
`natterctl directory refresh`, vCards and avatar hashes from the
directory, and directory outages (slapd stopped with SIGSTOP, or killed)
that must never stall anything else.

Every natterd serves two hosts: localhost (internal accounts) and
ldap.test (the directory).  Tests that change the directory restore it in
a finally; tests that pause or stop slapd resume/restart it in a finally.
"""

import asyncio
import base64
import hashlib
import re
import time
import xml.etree.ElementTree as ET

import pytest

from dirlib import (
    ALICE_PHOTO, ALICE_PHOTO_SHA1, LDAP_DOMAIN, LDAP_PASSWORDS, OPS_DN,
    STAFF_DN, dead_port, ldap_connect, ldap_host, ljid, mechanisms,
    plain_attempt, poll, run_ctl, user_dn)
from imlib import (
    NS_ROSTER, NS_VCARD, accounts, connect, error_condition, iq_error, msg,
    pres, roster_get, roster_set, send_available)
from natterlib import LoginFailed, q

ALICE, BOB, CAROL, ERIN = (ljid(n) for n in ("alice", "bob", "carol",
                                              "erin"))
NS_VCARD_UPDATE = "vcard-temp:x:update"
LDAP_TIMEOUT = 2          # the ldap.timeout the tests configure
# A refused login while the directory hangs takes at most the timeout; the
# slack is for sanitizer builds and loaded machines.
OUTAGE_SLACK = 4.0
RECOVERY_TIMEOUT = 45.0   # natter's reconnect back-off tops out at 30 s


def start_ldap(natter_factory, slapd, *, domain=LDAP_DOMAIN,
               kerberos=None, env=None, **ldap_overrides):
    """natterd with hosts localhost (internal) and DOMAIN (auth: ldap)."""
    hosts = [{"domain": "localhost"},
             ldap_host(slapd, domain, kerberos=kerberos, **ldap_overrides)]
    server = natter_factory(hosts=hosts, env=env)
    server.ldap_domain = domain
    return server


@pytest.fixture
def server(natter_factory, slapd):
    return start_ldap(natter_factory, slapd)


async def expect_refused(net, server, user, password, condition,
                         domain=LDAP_DOMAIN):
    outcome, got, elapsed = await plain_attempt(net, server, user, password,
                                                domain)
    assert (outcome, got) == ("failure", condition), (
        "login of %r: expected <%s/>, got %s %s\n%s"
        % (user, condition, outcome, got, server.log[-3000:]))
    return elapsed


async def roster_of(client):
    _, items = await roster_get(client)
    return items


async def roster_with(client, jids, timeout=15.0):
    """The roster, once it holds every JID in jids: the directory's groups
    may be applied just after natterd starts, so this polls (deadline)."""
    async def check():
        items = await roster_of(client)
        return items if set(jids) <= set(items) else None
    return await poll(check, "roster of %s with %s" % (client.boundjid.bare,
                                                       sorted(jids)),
                      timeout)


def assert_item(items, jid, group, name=None):
    assert jid in items, "no %s in roster: %s" % (jid, items)
    item = items[jid]
    assert item["subscription"] == "both", item
    assert item["ask"] is None, item
    assert item["groups"] == [group], item
    if name is not None:
        assert item["name"] == name, item


# ------------------------------------------------------------- logins ----

async def test_ldap_host_offers_plain_only(server, net):
    _, features = await net.raw_tls(server, LDAP_DOMAIN)
    mechs = mechanisms(features)
    assert mechs == ["PLAIN"], (
        "an LDAP host can only check passwords it is given: %s" % mechs)
    # The internal host beside it is unchanged.
    _, features = await net.raw_tls(server, "localhost")
    assert any(m.startswith("SCRAM-") for m in mechanisms(features))


async def test_login_with_directory_password(server, net):
    alice = await ldap_connect(net, server, "alice")
    assert alice.boundjid.bare == ALICE
    reply = await alice.ping()
    assert reply["type"] == "result"


async def test_login_with_plain_text_directory_password(server, net):
    # erin's userPassword is stored in clear, alice's and bob's as {SSHA}.
    erin = await ldap_connect(net, server, "erin")
    assert erin.boundjid.bare == ERIN


@pytest.mark.parametrize("user, password", [
    ("alice", "wrong-password"),
    ("nosuch", "whatever"),
    ("dave", LDAP_PASSWORDS["dave"]),     # locked: employeeType=disabled
    ("alice", ""),                        # an empty bind is anonymous
], ids=["wrong-password", "unknown-user", "locked", "empty-password"])
async def test_login_refused(server, net, user, password):
    await expect_refused(net, server, user, password, "not-authorized")
    # The refusal was a refusal, not a broken directory connection.
    await ldap_connect(net, server, "bob")


@pytest.mark.parametrize("user", [
    "*)(uid=*",
    "*",
    "alice)(|(uid=*",
    "alice)(uid=bob",
    "*)(objectClass=*))(|(uid=*",
    "al*",
    "alice\\2a",
])
async def test_filter_injection_is_refused(server, net, user):
    for password in (LDAP_PASSWORDS["alice"], "x"):
        await expect_refused(net, server, user, password, "not-authorized")
    assert server.alive()
    alice = await ldap_connect(net, server, "alice")
    await alice.ping()


async def test_login_over_ldaps(natter_factory, slapd, net):
    server = start_ldap(natter_factory, slapd, uri=slapd.ldaps_uri,
                        starttls=False)
    await ldap_connect(net, server, "alice")


async def test_login_with_bind_password_file(natter_factory, slapd, net,
                                             tmp_path):
    secret = tmp_path / "ldap-password"
    secret.write_text(slapd.service_password + "\n")
    server = start_ldap(natter_factory, slapd, bind_password=None,
                        bind_password_file=str(secret))
    await ldap_connect(net, server, "alice")


@pytest.mark.parametrize("tls", ["starttls", "ldaps"])
async def test_untrusted_directory_certificate(natter_factory, slapd, net,
                                               tls):
    # ca_file holds a CA that did not sign slapd's certificate.
    uri = slapd.uri if tls == "starttls" else slapd.ldaps_uri
    server = start_ldap(natter_factory, slapd, uri=uri,
                        starttls=tls == "starttls",
                        ca_file=slapd.other_ca_file)
    await expect_refused(net, server, "alice", LDAP_PASSWORDS["alice"],
                         "temporary-auth-failure")


async def test_failover_to_second_uri(natter_factory, slapd, net):
    uri = "ldap://127.0.0.1:%d %s" % (dead_port(), slapd.uri)
    server = start_ldap(natter_factory, slapd, uri=uri)
    alice = await ldap_connect(net, server, "alice")
    assert alice.boundjid.bare == ALICE
    await expect_refused(net, server, "alice", "wrong", "not-authorized")


# ------------------------------------------------------------ routing ----

async def test_message_to_unknown_directory_user(server, net):
    alice = await ldap_connect(net, server, "alice")
    alice.send_raw("<message to='nosuch@%s' id='m1' type='chat'>"
                   "<body>hello?</body></message>" % LDAP_DOMAIN)
    reply = await alice.inbox.get(msg(id="m1", type="error"),
                                  "error reply to m1")
    assert error_condition(reply) == "service-unavailable"


async def test_message_to_offline_directory_user_is_stored(server, net):
    alice = await ldap_connect(net, server, "alice")
    alice.send_raw("<message to='%s' id='m1' type='chat'><body>for bob"
                   "</body></message>" % BOB)
    await alice.barrier()
    assert not alice.inbox.find(msg(type="error")), alice.inbox.describe()

    bob = await ldap_connect(net, server, "bob")
    await send_available(bob)
    got = await bob.inbox.get(msg(id="m1", frm_bare=ALICE),
                              "alice's offline message")
    assert got["body"] == "for bob"


async def test_directory_and_internal_hosts_talk(server, net):
    accounts(server, "zed")
    zed = await connect(net, server, "zed")
    alice = await ldap_connect(net, server, "alice")
    zed.send_raw("<message to='%s' id='z1' type='chat'><body>hi</body>"
                 "</message>" % alice.boundjid.full)
    got = await alice.inbox.get(msg(id="z1"), "zed's message")
    assert got["from"].bare == "zed@localhost"


# --------------------------------------------------------- auto-buddy ----

async def test_group_members_are_in_each_others_rosters(server, net):
    alice = await ldap_connect(net, server, "alice")
    items = await roster_with(alice, {BOB, CAROL})
    assert set(items) == {BOB, CAROL}, items
    assert_item(items, BOB, "Staff", "Bob Builder")
    assert_item(items, CAROL, "Staff", "Carol Danvers")   # via cn=devs

    erin = await ldap_connect(net, server, "erin")
    items = await roster_with(erin, {BOB})
    assert set(items) == {BOB}, items
    assert_item(items, BOB, "ops")                        # name: the cn

    bob = await ldap_connect(net, server, "bob")
    items = await roster_with(bob, {ALICE, CAROL, ERIN})
    assert set(items) == {ALICE, CAROL, ERIN}, items
    assert_item(items, ALICE, "Staff", "Alice Liddell")
    assert_item(items, CAROL, "Staff")
    assert_item(items, ERIN, "ops")

    carol = await ldap_connect(net, server, "carol")
    items = await roster_with(carol, {ALICE, BOB})
    assert set(items) == {ALICE, BOB}, items


async def test_presence_flows_without_subscription_requests(server, net):
    alice = await ldap_connect(net, server, "alice")
    await roster_with(alice, {BOB})
    await send_available(alice)
    bob = await ldap_connect(net, server, "bob")
    await roster_with(bob, {ALICE})
    await send_available(bob)

    got = await alice.inbox.get(pres(frm_bare=BOB, type="available"),
                                "bob's available presence")
    assert got["from"] == bob.boundjid.full
    # bob gets alice's presence (the server probes his contacts), with
    # her avatar hash from the directory (XEP-0153).
    got = await bob.inbox.get(pres(frm_bare=ALICE, type="available"),
                              "alice's available presence")
    update = got.xml.find(q(NS_VCARD_UPDATE, "x"))
    assert update is not None, ET.tostring(got.xml, "unicode")
    assert update.findtext(q(NS_VCARD_UPDATE, "photo")) == ALICE_PHOTO_SHA1
    # No subscription traffic was needed.
    subs = [s for s in alice.inbox.seen + bob.inbox.seen
            if s.xml.tag == q("jabber:client", "presence") and
            s.xml.get("type") in ("subscribe", "subscribed")]
    assert not subs, [ET.tostring(s.xml, "unicode") for s in subs]


async def refresh(server):
    proc = await run_ctl(server, "directory", "refresh")
    assert proc.returncode == 0, (
        "natterctl directory refresh failed (%d):\n%s\n%s\n%s"
        % (proc.returncode, proc.stdout, proc.stderr, server.log[-3000:]))
    assert proc.stdout.strip(), "no summary printed"
    return proc.stdout


def roster_push_about(jid, **expected):
    def match(s):
        xml = s.xml
        if xml.tag != q("jabber:client", "iq") or xml.get("type") != "set":
            return False
        query = xml.find(q(NS_ROSTER, "query"))
        if query is None:
            return False
        for item in query.findall(q(NS_ROSTER, "item")):
            if item.get("jid") != jid:
                continue
            groups = sorted(g.text or "" for g in
                            item.findall(q(NS_ROSTER, "group")))
            state = {"subscription": item.get("subscription", "none"),
                     "groups": groups}
            return all(state[k] == v for k, v in expected.items())
        return False
    return match


async def test_refresh_removes_a_member(server, slapd, net):
    alice = await ldap_connect(net, server, "alice")
    await roster_with(alice, {BOB, CAROL})
    slapd.modify_members(STAFF_DN, "delete", "member", user_dn("bob"))
    try:
        summary = await refresh(server)
        await alice.inbox.get(roster_push_about(BOB, subscription="remove"),
                              "roster push removing bob (%s)" % summary)
        items = await roster_of(alice)
        assert BOB not in items and CAROL in items, items
    finally:
        slapd.modify_members(STAFF_DN, "add", "member", user_dn("bob"))


async def test_removed_member_goes_unavailable_once(server, slapd, net):
    """bob leaves the group: alice sees him go unavailable once, and he
    sees her go once (issue 10, item 12: each side's roster change sent
    both directions, so each got two)."""
    alice = await ldap_connect(net, server, "alice")
    await roster_with(alice, {BOB})
    await send_available(alice)
    bob = await ldap_connect(net, server, "bob")
    await roster_with(bob, {ALICE})
    await send_available(bob)
    await alice.inbox.get(pres(frm_bare=BOB, type="available"), "bob available")
    await bob.inbox.get(pres(frm_bare=ALICE, type="available"), "alice available")
    # alice's login got bob's bare-JID unavailable (he was offline then):
    # count from here.
    since = {ALICE: len(alice.inbox.seen), BOB: len(bob.inbox.seen)}
    slapd.modify_members(STAFF_DN, "delete", "member", user_dn("bob"))
    try:
        summary = await refresh(server)
        await alice.inbox.get(roster_push_about(BOB, subscription="remove"),
                              "roster push removing bob (%s)" % summary)
        await alice.inbox.get(pres(frm_bare=BOB, type="unavailable"),
                              "bob unavailable")
        await bob.inbox.get(pres(frm_bare=ALICE, type="unavailable"),
                            "alice unavailable")
        # The refresh has returned: everything it sent is on its way,
        # and a round trip each lets it arrive.
        await alice.barrier()
        await bob.barrier()
        for who, inbox, other in ((ALICE, alice.inbox, BOB),
                                  (BOB, bob.inbox, ALICE)):
            gone = [st for st in inbox.seen[since[who]:]
                    if pres(frm_bare=other, type="unavailable")(st)]
            assert len(gone) == 1, "%s got %d unavailable from %s:\n%s" % (
                who, len(gone), other, inbox.describe(gone))
    finally:
        slapd.modify_members(STAFF_DN, "add", "member", user_dn("bob"))


async def test_refresh_adds_a_member(server, slapd, net):
    alice = await ldap_connect(net, server, "alice")
    await roster_with(alice, {BOB, CAROL})
    slapd.modify_members(STAFF_DN, "add", "member", user_dn("erin"))
    try:
        await refresh(server)
        await alice.inbox.get(
            roster_push_about(ERIN, subscription="both", groups=["Staff"]),
            "roster push adding erin")
        items = await roster_of(alice)
        assert_item(items, ERIN, "Staff")
    finally:
        slapd.modify_members(STAFF_DN, "delete", "member", user_dn("erin"))


async def test_refresh_follows_posix_group(server, slapd, net):
    erin = await ldap_connect(net, server, "erin")
    await roster_with(erin, {BOB})
    slapd.modify_members(OPS_DN, "add", "memberUid", "carol")
    try:
        await refresh(server)
        await erin.inbox.get(
            roster_push_about(CAROL, subscription="both", groups=["ops"]),
            "roster push adding carol")
    finally:
        slapd.modify_members(OPS_DN, "delete", "memberUid", "carol")


async def test_directory_items_cannot_be_removed(server, net):
    alice = await ldap_connect(net, server, "alice")
    await roster_with(alice, {BOB})
    error = await iq_error(alice, None, "<query xmlns='%s'><item jid='%s' "
                           "subscription='remove'/></query>"
                           % (NS_ROSTER, BOB), "set")
    assert error_condition(error) == "not-allowed"
    items = await roster_of(alice)
    assert_item(items, BOB, "Staff")


async def test_other_roster_items_still_work(server, net):
    # Items the directory does not manage are the user's to change.
    alice = await ldap_connect(net, server, "alice")
    await roster_with(alice, {BOB})
    await roster_set(alice, "friend@example.org", name="F", groups=["Mine"])
    items = await roster_of(alice)
    assert items["friend@example.org"]["groups"] == ["Mine"]
    await roster_set(alice, "friend@example.org", remove=True)
    items = await roster_of(alice)
    assert "friend@example.org" not in items and BOB in items


# -------------------------------------------------------------- vCard ----

def vcard_of(iq):
    card = iq.xml.find(q(NS_VCARD, "vCard"))
    assert card is not None, ET.tostring(iq.xml, "unicode")
    return card


def text_at(card, *path):
    found = card.findtext("/".join(q(NS_VCARD, p) for p in path))
    return None if found is None else found.strip()


async def test_vcard_from_directory(server, net):
    bob = await ldap_connect(net, server, "bob")
    reply = await bob.iq(ALICE, "<vCard xmlns='vcard-temp'/>")
    assert reply["from"].bare == ALICE
    card = vcard_of(reply)
    assert text_at(card, "FN") == "Alice Liddell"
    assert text_at(card, "N", "GIVEN") == "Alice"
    assert text_at(card, "N", "FAMILY") == "Liddell"
    assert text_at(card, "EMAIL", "USERID") == "alice@natter.test"
    assert text_at(card, "TEL", "NUMBER") == "+1 555 0100"
    assert text_at(card, "TITLE") == "Chief Rabbit Hole Officer"
    assert text_at(card, "ORG", "ORGNAME") == "Natter Test"
    assert text_at(card, "ORG", "ORGUNIT") == "Wonderland"
    binval = text_at(card, "PHOTO", "BINVAL")
    assert binval, ET.tostring(card, "unicode")
    assert base64.b64decode(re.sub(r"\s+", "", binval)) == ALICE_PHOTO
    assert hashlib.sha1(ALICE_PHOTO).hexdigest() == ALICE_PHOTO_SHA1
    photo_type = text_at(card, "PHOTO", "TYPE")
    assert photo_type in (None, "image/jpeg"), photo_type

    # Her own vCard, asked without a 'to', is the same.
    alice = await ldap_connect(net, server, "alice")
    own = vcard_of(await alice.iq(None, "<vCard xmlns='vcard-temp'/>"))
    assert text_at(own, "FN") == "Alice Liddell"


async def test_vcard_of_user_without_photo(server, net):
    alice = await ldap_connect(net, server, "alice")
    card = vcard_of(await alice.iq(BOB, "<vCard xmlns='vcard-temp'/>"))
    assert text_at(card, "FN") == "Bob Builder"
    assert card.find(q(NS_VCARD, "PHOTO")) is None


async def test_vcard_is_read_only(server, net):
    alice = await ldap_connect(net, server, "alice")
    error = await iq_error(alice, None, "<vCard xmlns='vcard-temp'>"
                           "<FN>Mallory</FN></vCard>", "set")
    assert error_condition(error) == "not-allowed"
    card = vcard_of(await alice.iq(None, "<vCard xmlns='vcard-temp'/>"))
    assert text_at(card, "FN") == "Alice Liddell"


# ------------------------------------------------------------- outages ---

STATE_RE = re.compile(r"directory\b.*?\b(down|up)\b", re.IGNORECASE)


def directory_state_changes(log, since):
    """'down'/'up' for each log line (after since) about the ldap.test
    directory's state: lines naming the directory and the word down or up,
    e.g. "directory ldap.test: down (...)" / "directory ldap.test: up"."""
    changes = []
    for line in log[since:].splitlines():
        if LDAP_DOMAIN not in line:
            continue
        found = STATE_RE.search(line)
        if found:
            changes.append(found.group(1).lower())
    return changes


async def internal_exchange(net, server, tag):
    """Two internal-host users log in and exchange a message; returns the
    time it took.  Must not depend on the directory at all."""
    started = time.monotonic()
    u1 = await connect(net, server, "u1", tag)
    u2 = await connect(net, server, "u2", tag)
    u1.send_raw("<message to='%s' id='%s' type='chat'><body>hi</body>"
                "</message>" % (u2.boundjid.full, tag))
    await u2.inbox.get(msg(id=tag), "internal message %s" % tag)
    elapsed = time.monotonic() - started
    await u1.close()
    await u2.close()
    return elapsed


async def assert_ldap_chat(alice, bob, tag):
    alice.send_raw("<message to='%s' id='%s' type='chat'><body>still here"
                   "</body></message>" % (bob.boundjid.full, tag))
    await bob.inbox.get(msg(id=tag, frm_bare=ALICE),
                        "alice's message %s during the outage" % tag)


async def login_recovers(net, server, name="carol"):
    async def attempt():
        client = await ldap_connect(net, server, name, "after")
        await client.close()
        return True
    try:
        await poll(attempt, "LDAP login after the directory came back",
                   RECOVERY_TIMEOUT, interval=0.25)
    except AssertionError as e:
        states = [line for line in server.log.splitlines()
                  if STATE_RE.search(line)]
        raise AssertionError("%s\ndirectory state lines in natterd's log:"
                             "\n%s\nthe log ends:\n%s"
                             % (e, "\n".join(states) or "(none)",
                                server.log[-3000:])) from None


async def test_hanging_directory_stalls_nothing_else(server, slapd, net):
    accounts(server, "u1", "u2")
    alice = await ldap_connect(net, server, "alice")
    bob = await ldap_connect(net, server, "bob")
    await internal_exchange(net, server, "before")
    mark = server.log_mark()

    slapd.pause()
    try:
        # A login now waits for a directory that never answers...
        pending = asyncio.ensure_future(expect_refused(
            net, server, "carol", LDAP_PASSWORDS["carol"],
            "temporary-auth-failure"))
        # ...while everything else goes on.
        await internal_exchange(net, server, "during")
        await assert_ldap_chat(alice, bob, "during-1")
        elapsed = await pending
        assert elapsed <= LDAP_TIMEOUT + OUTAGE_SLACK, (
            "refusal took %.1fs with timeout %ds" % (elapsed, LDAP_TIMEOUT))
        # Known down now: the next one is refused (at once or after one
        # more timeout, but no later).
        elapsed = await expect_refused(net, server, "erin",
                                       LDAP_PASSWORDS["erin"],
                                       "temporary-auth-failure")
        assert elapsed <= LDAP_TIMEOUT + OUTAGE_SLACK, elapsed
        await internal_exchange(net, server, "during-2")
        await assert_ldap_chat(alice, bob, "during-2")
    finally:
        slapd.resume()

    await login_recovers(net, server)
    await assert_ldap_chat(alice, bob, "after")
    changes = directory_state_changes(server.log, mark)
    assert changes == ["down", "up"], (
        "expected the directory logged down once then up once, got %s:\n%s"
        % (changes, server.log[mark:]))


async def test_stopped_directory_then_restarted(server, slapd, net):
    accounts(server, "u1", "u2")
    alice = await ldap_connect(net, server, "alice")
    bob = await ldap_connect(net, server, "bob")
    mark = server.log_mark()

    slapd.stop()
    try:
        elapsed = await expect_refused(net, server, "carol",
                                       LDAP_PASSWORDS["carol"],
                                       "temporary-auth-failure")
        assert elapsed <= LDAP_TIMEOUT + OUTAGE_SLACK, elapsed
        # Said in words (issue 10, item 13: it read "directory says
        # directory unavailable").
        await server.await_log("login of 'carol' refused: the directory is "
                               "unavailable", since=mark)
        await internal_exchange(net, server, "stopped")
        await assert_ldap_chat(alice, bob, "stopped")
        # Routing to directory users still works from the account index.
        alice.send_raw("<message to='%s' id='off' type='chat'><body>x"
                       "</body></message>" % CAROL)
        await alice.barrier()
        bounced = alice.inbox.find(msg(id="off", type="error"))
        assert not bounced, alice.inbox.describe(bounced)
    finally:
        slapd.restart()

    await login_recovers(net, server)
    changes = directory_state_changes(server.log, mark)
    assert changes == ["down", "up"], (
        "expected the directory logged down once then up once, got %s:\n%s"
        % (changes, server.log[mark:]))


async def test_directory_down_at_start(natter_factory, slapd, net):
    # natterd starts while its directory is unreachable, serves its other
    # host, and refuses directory logins with temporary-auth-failure.
    server = start_ldap(natter_factory, slapd,
                        uri="ldap://127.0.0.1:%d" % dead_port())
    await expect_refused(net, server, "alice", LDAP_PASSWORDS["alice"],
                         "temporary-auth-failure")
    accounts(server, "u1", "u2")
    await internal_exchange(net, server, "internal")


async def test_slixmpp_reports_not_authorized(server, net):
    # The same refusal through a real client library.
    with pytest.raises(LoginFailed) as failed:
        await net.login(server, ALICE + "/r", "wrong", mechanism="PLAIN")
    assert failed.value.condition == "not-authorized"

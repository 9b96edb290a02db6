"""FAST (XEP-0484): a token from a password login, then logins with the
token (HT-SHA-256-*, no PBKDF2), rotated at every use, refused once
replayed after rotation, for another account or device, with a stale
count, expired, invalidated, revoked by natterctl, and gone when the
password changes or the account is deleted."""

import asyncio
import datetime

import pytest

from imlib import NS_REGISTER, accounts, jid_of, password_of
from sasl2lib import (answer, authenticate, bind2, connect,
                      failure_condition, fast_login, fast_mechanisms,
                      new_device, scram_login, success_parts, user_agent,
                      NS_FAST)


async def token_by_password(net, server, user, device, *,
                            mech="HT-SHA-256-NONE", tls12=False):
    """A SCRAM login that asks for a token; returns (token, expiry)."""
    stream, _ = await connect(net, server, tls12=tls12)
    success = await scram_login(
        stream, user, password_of(user),
        inline=user_agent(device) + bind2()
        + "<request-token xmlns='%s' mechanism='%s'/>" % (NS_FAST, mech))
    _, _, token = success_parts(success)
    assert token is not None, "no token in the success"
    await stream.close()
    return token.get("token"), token.get("expiry")


async def fast(net, server, user, token, device, *, tls12=False, **kw):
    stream, _ = await connect(net, server, tls12=tls12)
    elem = await fast_login(stream, user, token, ua_id=device, **kw)
    return stream, elem


def next_token(success):
    _, _, token = success_parts(success)
    assert token is not None, "a FAST login brings the next token"
    return token.get("token")


async def test_fast_is_offered(natter, net):
    _, features = await connect(net, natter)
    assert fast_mechanisms(features) == ["HT-SHA-256-EXPR", "HT-SHA-256-NONE"]
    _, features = await connect(net, natter, tls12=True)
    assert fast_mechanisms(features) == ["HT-SHA-256-EXPR", "HT-SHA-256-UNIQ",
                                         "HT-SHA-256-NONE"]


async def test_token_login_binds_in_one_round_trip_and_rotates(natter, net):
    accounts(natter, "alice", "bob")
    device = new_device()
    t1, expiry = await token_by_password(net, natter, "alice", device)
    when = datetime.datetime.fromisoformat(expiry.replace("Z", "+00:00"))
    left = when - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=13) < left <= datetime.timedelta(days=14)

    stream, success = await fast(net, natter, "alice", t1, device,
                                 inline=bind2("fast"))
    authz, bound, _ = success_parts(success)
    assert bound is not None and authz.startswith(
        jid_of("alice", natter.domain) + "/fast.")
    t2 = next_token(success)
    assert t2 != t1
    await stream.features()
    await stream.ping_server()
    await stream.close()

    # Until t2 is used, t1 still works (the client may have missed t2);
    # that use issues t3, and t2 (never used) is dropped.
    stream, success = await fast(net, natter, "alice", t1, device)
    t3 = next_token(success)
    await stream.close()
    stream, elem = await fast(net, natter, "alice", t2, device)
    assert failure_condition(elem) == "not-authorized"
    await stream.close()
    # Using t3 ends t1 for good: a replay after rotation is refused.
    stream, success = await fast(net, natter, "alice", t3, device)
    t4 = next_token(success)
    await stream.close()
    stream, elem = await fast(net, natter, "alice", t1, device)
    assert failure_condition(elem) == "not-authorized"
    stream, elem = await fast(net, natter, "alice", t4, device)
    success_parts(elem)
    await net.assert_served(natter)


async def test_token_of_another_account_or_device(natter, net):
    accounts(natter, "alice", "bob")
    device = new_device()
    token, _ = await token_by_password(net, natter, "alice", device)
    _, elem = await fast(net, natter, "bob", token, device)
    assert failure_condition(elem) == "not-authorized"
    _, elem = await fast(net, natter, "alice", token, new_device())
    assert failure_condition(elem) == "not-authorized"
    _, elem = await fast(net, natter, "alice", token[:-2] + "AA", device)
    assert failure_condition(elem) == "not-authorized"
    _, elem = await fast(net, natter, "alice", token, device)
    success_parts(elem)


async def test_count_must_grow(natter, net):
    accounts(natter, "alice")
    device = new_device()
    token, _ = await token_by_password(net, natter, "alice", device)
    _, elem = await fast(net, natter, "alice", token, device,
                         fast_attrs=" count='5'")
    success_parts(elem)
    for stale in ("5", "3"):
        _, elem = await fast(net, natter, "alice", token, device,
                             fast_attrs=" count='%s'" % stale)
        assert failure_condition(elem) == "not-authorized"
    for bad in ("0", "18446744073709551616"):  # zero, and past 2^64 - 1
        _, elem = await fast(net, natter, "alice", token, device,
                             fast_attrs=" count='%s'" % bad)
        assert failure_condition(elem) == "malformed-request"
    _, elem = await fast(net, natter, "alice", token, device,
                         fast_attrs=" count='6'")
    success_parts(elem)


async def test_token_is_bound_to_its_mechanism(natter, net):
    """A token issued for a channel-bound mechanism (-UNIQ, TLS 1.2) does
    not work with -NONE, and only over the connection it is bound to."""
    accounts(natter, "alice")
    device = new_device()
    token, _ = await token_by_password(net, natter, "alice", device,
                                       mech="HT-SHA-256-UNIQ", tls12=True)
    _, elem = await fast(net, natter, "alice", token, device, tls12=True,
                         mech="HT-SHA-256-NONE")
    assert failure_condition(elem) == "not-authorized"
    _, elem = await fast(net, natter, "alice", token, device, tls12=True,
                         mech="HT-SHA-256-UNIQ", cb_data=b"\1" * 12)
    assert failure_condition(elem) == "not-authorized"
    _, success = await fast(net, natter, "alice", token, device, tls12=True,
                            mech="HT-SHA-256-UNIQ")
    success_parts(success)
    # -UNIQ is not offered on TLS 1.3, where tls-unique is undefined.
    _, elem = await fast(net, natter, "alice", next_token(success), device,
                         mech="HT-SHA-256-UNIQ")
    assert failure_condition(elem) == "invalid-mechanism"


@pytest.mark.natter_config(limits={"fast_token_lifetime": 2})
async def test_expired_token(natter, net):
    accounts(natter, "alice")
    device = new_device()
    token, _ = await token_by_password(net, natter, "alice", device)
    await asyncio.sleep(3.1)  # the lifetime itself is what is tested
    _, elem = await fast(net, natter, "alice", token, device)
    assert failure_condition(elem) == "credentials-expired"
    # The client falls back to its password.
    stream, _ = await connect(net, natter)
    success_parts(await scram_login(stream, "alice", password_of("alice")))


async def test_invalidate(natter, net):
    accounts(natter, "alice")
    device = new_device()
    token, _ = await token_by_password(net, natter, "alice", device)
    _, success = await fast(net, natter, "alice", token, device,
                            fast_attrs=" invalidate='true'")
    _, _, new = success_parts(success)
    assert new is None, "no new token after an invalidation"
    _, elem = await fast(net, natter, "alice", token, device)
    assert failure_condition(elem) == "not-authorized"
    # With a <request-token/> beside it, the device starts afresh: the old
    # token ends, a new one is handed out.
    token, _ = await token_by_password(net, natter, "alice", device)
    _, success = await fast(
        net, natter, "alice", token, device, fast_attrs=" invalidate='true'",
        inline="<request-token xmlns='%s' mechanism='HT-SHA-256-NONE'/>"
        % NS_FAST)
    fresh = next_token(success)
    _, elem = await fast(net, natter, "alice", token, device)
    assert failure_condition(elem) == "not-authorized"
    _, elem = await fast(net, natter, "alice", fresh, device)
    success_parts(elem)


async def test_natterctl_list_and_revoke(natter, net):
    accounts(natter, "alice")
    phone, laptop = new_device(), new_device()
    t_phone, _ = await token_by_password(net, natter, "alice", phone)
    t_laptop, _ = await token_by_password(net, natter, "alice", laptop)
    alice = jid_of("alice", natter.domain)
    listed = natter.ctl("fast", "list", alice, check=True).stdout
    assert phone in listed and laptop in listed
    assert t_phone not in listed and "natter-tests" in listed
    # Tokens handed out and not used yet: nothing is "in use".
    assert listed.count("issued: HT-SHA-256-NONE") == 2, listed
    assert "in use" not in listed, listed
    natter.ctl("fast", "revoke", alice, phone, check=True)
    _, elem = await fast(net, natter, "alice", t_phone, phone)
    assert failure_condition(elem) == "not-authorized"
    _, elem = await fast(net, natter, "alice", t_laptop, laptop)
    success_parts(elem)
    assert phone not in natter.ctl("fast", "list", alice, check=True).stdout
    natter.ctl("fast", "revoke", alice, check=True)
    assert natter.ctl("fast", "list", alice, check=True).stdout == ""
    proc = natter.ctl("fast", "revoke", alice, phone)
    assert proc.returncode != 0 and "no FAST token" in proc.stderr


async def test_password_change_and_deletion_end_tokens(natter, net):
    accounts(natter, "alice", "bob")
    alice = jid_of("alice", natter.domain)
    device = new_device()
    token, _ = await token_by_password(net, natter, "alice", device)
    natter.ctl("user", "passwd", alice, input=password_of("alice") + "\n",
               check=True)
    _, elem = await fast(net, natter, "alice", token, device)
    assert failure_condition(elem) == "not-authorized"

    # In-band (XEP-0077) password change.
    token, _ = await token_by_password(net, natter, "alice", device)
    stream, _ = await connect(net, natter)
    success_parts(await scram_login(stream, "alice", password_of("alice"),
                                    inline=bind2()))
    await stream.features()
    reply = await stream.iq_roundtrip(
        "pw", "<query xmlns='%s'><username>alice</username><password>%s"
        "</password></query>" % (NS_REGISTER, password_of("alice")),
        type_="set")
    assert reply.get("type") == "result"
    _, elem = await fast(net, natter, "alice", token, device)
    assert failure_condition(elem) == "not-authorized"

    # Deletion: a new account of the same name inherits no token.
    token, _ = await token_by_password(net, natter, "bob", device)
    natter.ctl("user", "del", jid_of("bob", natter.domain), check=True)
    natter.add_user(jid_of("bob", natter.domain), password_of("bob"))
    _, elem = await fast(net, natter, "bob", token, device)
    assert failure_condition(elem) == "not-authorized"


@pytest.mark.natter_config(limits={"max_fast_tokens": 2})
async def test_devices_per_account_are_bounded(natter, net):
    accounts(natter, "alice")
    devices = [new_device() for _ in range(3)]
    tokens = []
    for d in devices:
        tokens.append((await token_by_password(net, natter, "alice", d))[0])
    # The token is stored before the success that hands it out.
    listed = natter.ctl("fast", "list", jid_of("alice", natter.domain),
                        check=True).stdout
    assert len(listed.splitlines()) == 2 and devices[0] not in listed, listed
    _, elem = await fast(net, natter, "alice", tokens[0], devices[0])
    assert failure_condition(elem) == "not-authorized"
    _, elem = await fast(net, natter, "alice", tokens[2], devices[2])
    success_parts(elem)


async def test_malformed_token_logins(natter, net):
    accounts(natter, "alice")
    device = new_device()
    for initial in ("%%%", "YWxpY2U=", ""):  # bad base64, no NUL, empty
        stream, _ = await connect(net, natter)
        await stream.send(authenticate(
            "HT-SHA-256-NONE", initial,
            user_agent(device) + "<fast xmlns='%s'/>" % NS_FAST))
        assert failure_condition(await answer(stream)) == "malformed-request"
    # Without a user-agent id there is no device to find the token by.
    token, _ = await token_by_password(net, natter, "alice", device)
    stream, _ = await connect(net, natter)
    from sasl2lib import ht_initial
    await stream.send(authenticate("HT-SHA-256-NONE",
                                   ht_initial("alice", token),
                                   "<fast xmlns='%s'/>" % NS_FAST))
    assert failure_condition(await answer(stream)) == "not-authorized"
    await net.assert_served(natter)


@pytest.mark.natter_config(limits={"fast_token_lifetime": 0})
async def test_fast_off(natter, net):
    accounts(natter, "alice")
    _, features = await connect(net, natter)
    assert fast_mechanisms(features) == []
    stream, _ = await connect(net, natter)
    success = await scram_login(
        stream, "alice", password_of("alice"),
        inline=user_agent(new_device())
        + "<request-token xmlns='%s' mechanism='HT-SHA-256-NONE'/>" % NS_FAST)
    assert success_parts(success)[2] is None


async def test_exporter_bound_token(natter, net):
    """HT-SHA-256-EXPR, the channel binding TLS 1.3 clients use: the
    token works with the connection's tls-exporter value, not with another
    one, and not with -NONE."""
    from sasl2lib import fast_login_exporter
    accounts(natter, "alice")
    device = new_device()
    token, _ = await token_by_password(net, natter, "alice", device,
                                       mech="HT-SHA-256-EXPR")
    answer_text = await asyncio.to_thread(
        fast_login_exporter, natter.c2s_port, "alice", token, device,
        cb_override=b"\0" * 32)
    assert "<not-authorized" in answer_text, answer_text
    _, elem = await fast(net, natter, "alice", token, device)
    assert failure_condition(elem) == "not-authorized"
    answer_text = await asyncio.to_thread(
        fast_login_exporter, natter.c2s_port, "alice", token, device)
    assert "<success" in answer_text and "<token" in answer_text, answer_text

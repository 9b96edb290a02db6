#!/usr/bin/python3
"""The mam scenario's archive written straight into a server's SQLite store.

  mam_archive.py prosody DB DOMAIN PREFIX USERS MESSAGES HEAVY HEAVY_EVERY
  mam_archive.py ejabberd DB DOMAIN PREFIX USERS MESSAGES HEAVY HEAVY_EVERY

Sending a million messages through Prosody or ejabberd with their archive
on SQLite runs at a few hundred a second (every archived message is its
own SQLite transaction), hours per server; this writes the same rows in
one transaction, in a minute or so. The layout is natter-load's
(bench/loadgen/mam.c, mam_pair; keep the two in step): message i goes
from user s to user r (0-based; accounts PREFIX<s+1>, PREFIX<r+1>),

    s = i mod USERS
    if i mod HEAVY_EVERY == 0:  r = (i div HEAVY_EVERY) mod HEAVY; if r == s: s = (s+1) mod USERS
    else:                       r = (s + 1 + (i div USERS) mod (USERS - 1)) mod USERS

and, as the server would, is stored twice: in the sender's archive (with
the recipient) and in the recipient's (with the sender's full JID where
the server keeps it). Messages are one millisecond apart, the newest one
second ago. The rows are the ones the server writes itself for a chat
message sent to the recipient's bare JID, field for field, as read back
from a store filled over XMPP by `natter-load mam --fill` (the body says
"mam I from S to R", as natter-load's does):

Prosody 0.12 (mod_mam, mod_storage_sql), table prosodyarchive:
    host, user (node), store 'archive', key (a UUID, the archive id),
    when (seconds), with (bare JID of the other party), type 'xml',
    value: <message from='SENDER/RES' xml:lang='en' to='RECIPIENT' id='fI'
    type='chat'><body>...</body></message>
ejabberd 23.01 (mod_mam, SQLite, the default schema), table archive:
    username (node), timestamp (microseconds; the archive id), peer (the
    other party: the recipient's bare JID in the sender's row, the sender's
    full JID in the recipient's), bare_peer, xml: <message xml:lang='en'
    to='RECIPIENT' from='SENDER/RES' type='chat' id='fI'
    xmlns='jabber:client'><body>...</body></message>, txt (the body),
    kind 'chat', nick ''.
"""

import sqlite3
import sys
import time
import uuid

RESOURCE = "bulk"


def pairs(users, messages, heavy, every):
    for i in range(messages):
        s = i % users
        if i % every == 0:
            r = (i // every) % heavy
            if r == s:
                s = (s + 1) % users
        else:
            r = (s + 1 + (i // users) % (users - 1)) % users
        yield i, s, r


def prosody_rows(domain, prefix, args, now):
    t0 = now - 1.0 - args["messages"] * 0.001
    for i, s, r in pairs(args["users"], args["messages"], args["heavy"], args["every"]):
        sn, rn = "%s%d" % (prefix, s + 1), "%s%d" % (prefix, r + 1)
        body = "mam %d from %d to %d" % (i, s, r)
        xml = ("<message from='%s@%s/%s' xml:lang='en' to='%s@%s' id='f%d' type='chat'>"
               "<body>%s</body></message>" % (sn, domain, RESOURCE, rn, domain, i, body))
        when = int(t0 + i * 0.001)
        yield (domain, sn, "archive", str(uuid.uuid4()), when, "%s@%s" % (rn, domain), "xml", xml)
        yield (domain, rn, "archive", str(uuid.uuid4()), when, "%s@%s" % (sn, domain), "xml", xml)


def columns(db, table):
    """The table's columns, once the server has made it: ejabberd opens its
    SQLite file at the first archived message (run.sh's login check sends
    one), so wait a little for it."""
    for _ in range(150):
        try:
            con = sqlite3.connect("file:%s?mode=rw" % db, uri=True, timeout=60)
            cols = [c[1] for c in con.execute('PRAGMA table_info("%s")' % table)]
            if cols:
                return con, cols
            con.close()
        except sqlite3.OperationalError:
            pass
        time.sleep(0.1)
    sys.exit("mam_archive.py: no table %s in %s (is the server's archive on?)" % (table, db))


def prosody(db, domain, prefix, args):
    con, cols = columns(db, "prosodyarchive")
    want = ["sort_id", "host", "user", "store", "key", "when", "with", "type", "value"]
    if cols != want:
        sys.exit("mam_archive.py: unexpected prosodyarchive columns %s (table made by mod_mam?)" % cols)
    with con:
        con.executemany('INSERT INTO "prosodyarchive" ("host", "user", "store", "key", "when", "with", '
                        '"type", "value") VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                        prosody_rows(domain, prefix, args, time.time()))
    con.close()


def ejabberd_rows(domain, prefix, args, now):
    t0 = int((now - 1.0) * 1e6) - args["messages"] * 1000
    for i, s, r in pairs(args["users"], args["messages"], args["heavy"], args["every"]):
        sn, rn = "%s%d" % (prefix, s + 1), "%s%d" % (prefix, r + 1)
        body = "mam %d from %d to %d" % (i, s, r)
        sender_full = "%s@%s/%s" % (sn, domain, RESOURCE)
        xml = ("<message xml:lang='en' to='%s@%s' from='%s' type='chat' id='f%d' xmlns='jabber:client'>"
               "<body>%s</body></message>" % (rn, domain, sender_full, i, body))
        ts = t0 + i * 1000
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts / 1e6))
        yield (sn, ts, "%s@%s" % (rn, domain), "%s@%s" % (rn, domain), xml, body, "chat", "", created)
        yield (rn, ts + 1, sender_full, "%s@%s" % (sn, domain), xml, body, "chat", "", created)


def ejabberd(db, domain, prefix, args):
    con, cols = columns(db, "archive")
    want = ["username", "timestamp", "peer", "bare_peer", "xml", "txt", "id", "kind", "nick", "created_at"]
    if cols != want:
        sys.exit("mam_archive.py: unexpected archive columns %s (ejabberd's lite.sql schema?)" % cols)
    with con:
        con.executemany("INSERT INTO archive (username, timestamp, peer, bare_peer, xml, txt, kind, nick, "
                        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        ejabberd_rows(domain, prefix, args, time.time()))
    con.close()


def main():
    if len(sys.argv) != 9 or sys.argv[1] not in ("prosody", "ejabberd"):
        sys.exit(__doc__.split("\n\n")[1])
    kind, db, domain, prefix = sys.argv[1:5]
    users, messages, heavy, every = (int(v) for v in sys.argv[5:9])
    if users < 2 or not 1 <= heavy <= users or every < 1:
        sys.exit("mam_archive.py: USERS >= 2, 1 <= HEAVY <= USERS, HEAVY_EVERY >= 1")
    args = {"users": users, "messages": messages, "heavy": heavy, "every": every}
    t = time.time()
    {"prosody": prosody, "ejabberd": ejabberd}[kind](db, domain, prefix, args)
    print("%d messages (%d archived copies) over %d users in %.1f s" % (messages, 2 * messages, users,
                                                                          time.time() - t))


if __name__ == "__main__":
    main()

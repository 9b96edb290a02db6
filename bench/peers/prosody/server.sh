#!/bin/bash
# Prosody 0.12 (Debian 12's prosody package) for the side-by-side benchmark.
# Subcommands and arguments: see ../common.sh. What differs from Debian's
# /etc/prosody/prosody.cfg.lua, and why, is written next to each setting in
# the config below and in ../README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|users|pids|stop DIR ..."

write_config() {
	port=$1
	mkdir -p "$dir/data" "$dir/certs"
	peer_cert "$dir"
	# Optional features (../common.sh): the message archive, PEP.
	extra_modules=""
	# Nagle's algorithm stays on (0.12's default, nagle = true: no
	# TCP_NODELAY on client sockets) unless BENCH_PROSODY_NODELAY=1; with it
	# on, a reply written in several pieces (an archive page) waits for the
	# client's delayed ACK: about 44 ms per page here.
	nagle=""
	[ "${BENCH_PROSODY_NODELAY:-0}" = 1 ] && nagle="network_settings = { nagle = false }"
	[ "$BENCH_MAM" = on ] && extra_modules="$extra_modules \"mam\";"
	[ "$BENCH_PEP" = on ] && extra_modules="$extra_modules \"pep\";"
	# Stream management: mod_smacks, in 0.12's core; hibernation (how long
	# a detached session waits for its <resume/>) at its default, 600 s.
	[ "$BENCH_SM" = on ] && extra_modules="$extra_modules \"smacks\";"
	cat >"$dir/prosody.cfg.lua" <<EOF
-- Written by bench/peers/prosody/server.sh; regenerated on every start.

-- The benchmark runs as root, and the data directory is a scratch directory
-- of root's: do not switch to the 'prosody' user (prosody itself would not;
-- prosodyctl would, and then could not read this directory).
run_as_root = true
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { { levels = { min = "warn" }, to = "file", filename = "$dir/prosody.log" } }

-- Every listener on loopback only; c2s (STARTTLS) on its own port, no direct
-- TLS, no s2s, no HTTP.
interfaces = { "127.0.0.1" }
c2s_ports = { $port }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }

-- net.server_epoll is 0.12's default backend; named so no one wonders.
network_backend = "epoll"
$nagle

-- What the load generator uses, and nothing else: TLS, SASL, roster, disco,
-- ping. presence, message, iq, offline and c2s are always loaded.
-- mod_limits (the c2s rate limiter) is not loaded, so there is no traffic
-- shaping; it is also listed as disabled in case a global default enables it.
modules_enabled = { "tls"; "saslauth"; "roster"; "disco"; "ping"; "posix";$extra_modules }
modules_disabled = { "s2s"; "s2s_auth_certs"; "limits"; "bosh"; "websocket"; "http" }

authentication = "internal_hashed"
-- Everything in the file store, except the message archive (mod_mam, when
-- BENCH_MAM=on): SQLite through mod_storage_sql (Debian's lua-dbi-sqlite3),
-- the store Prosody recommends for archives. Archive everything by default
-- (default_archive_policy), keep it forever (the default expiry is a week,
-- which would drop a bulk-loaded archive dated in the past).
default_storage = "internal"
storage = { archive = "sql" }
sql = { driver = "SQLite3", database = "$dir/data/prosody.sqlite" }
default_archive_policy = true
archive_expires_after = "never"
allow_registration = false
c2s_require_encryption = true
default_iteration_count = $BENCH_SCRAM_ITERATIONS

certificates = "$dir/certs"
ssl = { certificate = "$dir/cert.pem"; key = "$dir/key.pem" }

VirtualHost "$BENCH_DOMAIN"
	ssl = { certificate = "$dir/cert.pem"; key = "$dir/key.pem" }

-- Chat rooms (mod_muc), for the muc scenario. 0.12's mod_muc has no
-- per-occupant rate limit and no occupant cap (mod_muc_limits is a community
-- module, not installed); rooms cache 100 live rooms by default, raised so
-- no benchmark room is ever evicted. New rooms stay locked until their
-- owner configures them (0.12's default, XEP-0045 10.1.2): natter-load's
-- first joiner submits the instant-room form.
Component "conference.$BENCH_DOMAIN" "muc"
	muc_room_cache_size = 100000
	ssl = { certificate = "$dir/cert.pem"; key = "$dir/key.pem" }
EOF
}

start() {
	port=${1:?PORT}
	write_config "$port"
	: >"$dir/prosody.log"
	peer_raise_fds
	# -F: stay in the foreground (as a child of this script, in the
	# background of the shell), so $! is the server's PID.
	prosody --config "$dir/prosody.cfg.lua" -F >"$dir/prosody.out" 2>&1 &
	echo $! >"$dir/server.pid"
	if ! peer_wait_port "$port" 60 "$(cat "$dir/server.pid")"; then
		cat "$dir/prosody.out" "$dir/prosody.log" >&2
		die "prosody did not start on port $port"
	fi
}

# Accounts are written straight into Prosody's file store: one
# data/localhost/accounts/<user>.dat per user, in the format
# mod_auth_internal_hashed keeps (SCRAM-SHA-1 stored and server keys in hex,
# salt, iteration count). prosodyctl adduser takes a second or so per user;
# this takes a few seconds for 100,000. All accounts share one salt (the keys
# are derived once): the server's work per login does not depend on the salt.
users() {
	prefix=${1:?PREFIX}
	count=${2:?COUNT}
	password=${3:?PASSWORD}
	/usr/bin/python3 - "$dir/data/$BENCH_DOMAIN/accounts" "$prefix" "$count" "$password" \
		"$BENCH_SCRAM_ITERATIONS" <<'EOF'
import hashlib, hmac, os, sys, uuid
path, prefix, count, password, iterations = sys.argv[1:]
count, iterations = int(count), int(iterations)
salt = str(uuid.uuid4())
salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), iterations)
client_key = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
stored_key = hashlib.sha1(client_key).hexdigest()
server_key = hmac.new(salted, b"Server Key", hashlib.sha1).hexdigest()
body = ('return {\n\t["iteration_count"] = %d;\n\t["salt"] = "%s";\n'
        '\t["server_key"] = "%s";\n\t["stored_key"] = "%s";\n};\n'
        % (iterations, salt, server_key, stored_key)).encode()
os.makedirs(path, exist_ok=True)
for i in range(1, count + 1):
    # Prosody percent-encodes every non-alphanumeric byte of a file name.
    name = "".join(c if c.isalnum() else "%%%02x" % ord(c) for c in "%s%d" % (prefix, i))
    with open(os.path.join(path, name + ".dat"), "wb") as f:
        f.write(body)
EOF
}

# rosters PREFIX USERS CONTACTS [star]: the presence scenario's rosters, written
# straight into the file store (data/localhost/roster/<user>.dat): user i
# (0-based; account PREFIX<i+1>) has the CONTACTS/2 users on either side of
# it on a ring of USERS as contacts, subscription both, as natter-load's
# presence --setup-rosters leaves them (CONTACTS rounded up to even and kept
# below USERS, as natter-load does). star: the pep scenario's instead, user
# 0 (the publisher) and each of users 1..USERS-1, subscription both.
rosters() {
	prefix=${1:?PREFIX}
	users=${2:?USERS}
	contacts=${3:?CONTACTS}
	layout=${4:-ring}
	/usr/bin/python3 - "$dir/data/$BENCH_DOMAIN/roster" "$prefix" "$users" "$contacts" \
		"$BENCH_DOMAIN" "$layout" <<'EOF'
import os, sys
path, prefix, n, r, domain = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
star = sys.argv[6] == "star"
r += r & 1
if r > n - 1:
    r = (n - 1) & ~1
os.makedirs(path, exist_ok=True)
enc = lambda s: "".join(c if c.isalnum() else "%%%02x" % ord(c) for c in s)
def neighbours(u):
    if star:
        # The pep scenario: user 0 and each of users 1..n-1.
        return range(1, n) if u == 0 else [0]
    return [v for d in range(1, r // 2 + 1) for v in ((u + d) % n, (u - d) % n)]
for u in range(n):
    items = ['\t[false] = {\n\t\t["version"] = 1;\n\t\t["pending"] = {};\n\t};\n']
    for v in neighbours(u):
        items.append('\t["%s%d@%s"] = {\n\t\t["subscription"] = "both";\n'
                     '\t\t["groups"] = {};\n\t};\n' % (prefix, v + 1, domain))
    with open(os.path.join(path, enc("%s%d" % (prefix, u + 1)) + ".dat"), "w") as f:
        f.write("return {\n" + "".join(items) + "};\n")
EOF
}

# archive PREFIX USERS MESSAGES HEAVY HEAVY_EVERY: the mam scenario's
# archive written into the archive's SQLite tables (made by the server at
# start with BENCH_MAM=on) in one transaction, row for row what the server
# writes for the same messages (../mam_archive.py says which fields).
archive() {
	/usr/bin/python3 "$here/../mam_archive.py" prosody "$dir/data/prosody.sqlite" "$BENCH_DOMAIN" "$@"
}

pids() { peer_pidfile_pids; }

stop() { peer_pidfile_stop; }

shift 2
peer_dispatch "$@"

#!/bin/bash
# jabberd2 2.7 (Debian 12's jabberd2 package) for the side-by-side benchmark:
# natter's predecessor (Apple's iChat Server was jabberd2). Optional: run.sh
# runs it when SERVERS names it. Subcommands and arguments: see ../common.sh.
#
# jabberd2 is several daemons joined by XML over TCP: the router (here on
# PORT+25, loopback), the session manager (sm) and the client daemon (c2s) on
# PORT; no s2s. All three are started by hand with configs in DIR, in the
# foreground of this script's background, so their PIDs are known.
# Differences from Debian's /etc/jabberd2/*.xml, each for a reason:
#   - c2s <io><limits>: stanzas 0 (Debian: 1000 per second per connection),
#     bytes 0, connects 0: no throttling; max_fds raised to the open-file
#     limit (Debian: 1024, which caps the number of clients).
#   - require-starttls and the benchmark certificate on the host; SASL
#     PLAIN and SCRAM-SHA-1 offered only once TLS is up.
#   - storage (sm.db) and auth (auth.db) in two SQLite files in DIR (Debian:
#     one /var/lib/jabberd2/sqlite.db): with one file, sm's writes at session
#     start lock out c2s's password reads and concurrent logins fail with
#     internal-server-error. synchronous=NORMAL as Debian sets it.
#   - sm modules: Debian's chains, less the ones that need LDAP or that the
#     load generator never touches (vacation, announce, amp, help, echo,
#     roster-publish, template-roster).
# jabberd2 stores passwords in plain text (its SQLite authreg supports no
# stored SCRAM keys), so for SCRAM it derives the salted password on every
# login, and a client cannot reuse a cached one across logins.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|users|pids|stop DIR ..."

LIB=/usr/lib/x86_64-linux-gnu/jabberd2
SCHEMA=/usr/share/doc/jabberd2/db-setup.sqlite.gz

write_config() {
	port=$1
	rport=$((port + 25))
	mkdir -p "$dir/log"
	peer_cert "$dir"
	cat "$dir/cert.pem" "$dir/key.pem" >"$dir/server.pem"
	chmod 600 "$dir/server.pem"
	[ -s "$dir/secret" ] || od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$dir/secret"
	secret=$(cat "$dir/secret")
	fds=$(ulimit -n)
	[ "$fds" = unlimited ] && fds=1048576
	router="<router><ip>127.0.0.1</ip><port>$rport</port><user>jabberd</user><pass>$secret</pass>
    <retry><init>30</init><lost>3</lost><sleep>1</sleep></retry></router>"

	cat >"$dir/router-users.xml" <<EOF
<users><user><name>jabberd</name><secret>$secret</secret></user></users>
EOF
	cat >"$dir/router.xml" <<EOF
<!-- Written by bench/peers/jabberd2/server.sh; regenerated on every start. -->
<router>
  <id>router</id>
  <log type='file'><ident>jabberd/router</ident><file>$dir/log/router.log</file></log>
  <local>
    <ip>127.0.0.1</ip>
    <port>$rport</port>
    <users>$dir/router-users.xml</users>
    <secret>$secret</secret>
  </local>
  <check><interval>60</interval><keepalive>0</keepalive></check>
  <io>
    <max_fds>1024</max_fds>
    <limits><bytes>0</bytes><connects>0</connects></limits>
    <access><order>allow,deny</order></access>
  </io>
  <aliases/>
  <aci><acl type='all'><user>jabberd</user></acl></aci>
</router>
EOF
	cat >"$dir/sm.xml" <<EOF
<!-- Written by bench/peers/jabberd2/server.sh; regenerated on every start. -->
<sm>
  <id>sm</id>
  $router
  <log type='file'><ident>jabberd/sm</ident><file>$dir/log/sm.log</file></log>
  <local><id>$BENCH_DOMAIN</id></local>
  <storage>
    <path>$LIB</path>
    <driver>sqlite</driver>
    <sqlite>
      <dbname>$dir/sm.db</dbname>
      <sql>PRAGMA synchronous = NORMAL;</sql>
      <busy-timeout>2000</busy-timeout>
    </sqlite>
  </storage>
  <aci/>
  <modules>
    <path>$LIB</path>
    <chain id='sess-start'><module>status</module></chain>
    <chain id='sess-end'><module>status</module><module>iq-last</module></chain>
    <chain id='in-sess'>
      <module>validate</module><module>status</module><module>privacy</module>
      <module>roster</module><module>iq-vcard</module><module>iq-ping</module>
      <module>iq-private</module><module>disco</module><module>offline</module>
      <module>presence</module><module>deliver</module>
    </chain>
    <chain id='out-sess'/>
    <chain id='in-router'>
      <module>session</module><module>validate</module><module>presence</module>
      <module>privacy</module>
    </chain>
    <chain id='out-router'><module>privacy</module></chain>
    <chain id='pkt-sm'>
      <module>iq-last</module><module>iq-ping</module><module>iq-time</module>
      <module>iq-version</module><module>disco</module><module>status</module>
      <module>presence</module>
    </chain>
    <chain id='pkt-user'>
      <module>roster</module><module>presence</module><module>disco</module>
      <module>iq-vcard</module><module>deliver</module><module>offline</module>
      <module>iq-last</module>
    </chain>
    <chain id='pkt-router'><module>session</module><module>disco</module></chain>
    <chain id='user-load'><module>active</module><module>roster</module><module>privacy</module></chain>
    <chain id='user-unload'/>
    <chain id='user-create'><module>active</module></chain>
    <chain id='user-delete'>
      <module>active</module><module>offline</module><module>privacy</module>
      <module>roster</module><module>status</module><module>iq-last</module>
      <module>iq-private</module><module>iq-vcard</module>
    </chain>
    <chain id='disco-extend'><module>iq-version</module></chain>
  </modules>
  <discovery>
    <identity><category>server</category><type>im</type><name>jabberd2</name></identity>
  </discovery>
  <user><template/></user>
</sm>
EOF
	cat >"$dir/c2s.xml" <<EOF
<!-- Written by bench/peers/jabberd2/server.sh; regenerated on every start. -->
<c2s>
  <id>c2s</id>
  $router
  <log type='file'><ident>jabberd/c2s</ident><file>$dir/log/c2s.log</file></log>
  <local>
    <id pemfile='$dir/server.pem' require-starttls='mu'>$BENCH_DOMAIN</id>
    <ip>127.0.0.1</ip>
    <port>$port</port>
  </local>
  <io>
    <max_fds>$fds</max_fds>
    <limits>
      <bytes>0</bytes>
      <stanzas>0</stanzas>
      <connects>0</connects>
      <stanzasize>262144</stanzasize>
    </limits>
    <access><order>allow,deny</order></access>
    <check><interval>0</interval><idle>0</idle><keepalive>0</keepalive></check>
  </io>
  <authreg>
    <path>$LIB</path>
    <module>sqlite</module>
    <mechanisms><sasl/></mechanisms>
    <ssl-mechanisms>
      <sasl><plain/><scram-sha-1/></sasl>
    </ssl-mechanisms>
    <sqlite>
      <dbname>$dir/auth.db</dbname>
      <sql>PRAGMA synchronous = NORMAL;</sql>
      <busy-timeout>2000</busy-timeout>
      <password_type><plaintext/></password_type>
    </sqlite>
  </authreg>
</c2s>
EOF
	for db in sm auth; do
		[ -s "$dir/$db.db" ] && continue
		[ -r "$SCHEMA" ] || die "no $SCHEMA (is jabberd2 installed with its documentation?)"
		zcat "$SCHEMA" | /usr/bin/python3 -c '
import sqlite3, sys
sqlite3.connect(sys.argv[1]).executescript(sys.stdin.read())' "$dir/$db.db"
	done
}

start() {
	port=${1:?PORT}
	write_config "$port"
	peer_raise_fds
	/usr/sbin/jabberd2-router -c "$dir/router.xml" >"$dir/log/router.out" 2>&1 &
	echo $! >"$dir/router.pid"
	peer_wait_port $((port + 25)) 30 "$(cat "$dir/router.pid")" || die "jabberd2 router did not start"
	/usr/sbin/jabberd2-sm -c "$dir/sm.xml" >"$dir/log/sm.out" 2>&1 &
	echo $! >"$dir/sm.pid"
	/usr/sbin/jabberd2-c2s -c "$dir/c2s.xml" >"$dir/log/c2s.out" 2>&1 &
	echo $! >"$dir/c2s.pid"
	if ! peer_wait_port "$port" 60 "$(cat "$dir/c2s.pid")"; then
		cat "$dir"/log/*.log "$dir"/log/*.out >&2 2>/dev/null || true
		die "jabberd2 did not start on port $port"
	fi
	# sm registers with the router after c2s may already listen.
	i=0
	while ! grep -q "ready for sessions\|online" "$dir/log/sm.log" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
}

# Accounts: rows in c2s's authreg table (plain-text passwords, as jabberd2
# keeps them) and in sm's active table (else sm refuses the session), one
# SQLite transaction each.
users() {
	prefix=${1:?PREFIX}
	count=${2:?COUNT}
	password=${3:?PASSWORD}
	/usr/bin/python3 - "$dir" "$prefix" "$count" "$password" "$BENCH_DOMAIN" <<'EOF'
import sqlite3, sys, time
d, prefix, count, password, domain = sys.argv[1:]
names = ["%s%d" % (prefix, i) for i in range(1, int(count) + 1)]
with sqlite3.connect(d + "/auth.db", timeout=30) as c:
    c.executemany('INSERT INTO "authreg" ("username", "realm", "password") VALUES (?, ?, ?)',
                  ((n, domain, password) for n in names))
with sqlite3.connect(d + "/sm.db", timeout=30) as c:
    c.executemany('INSERT INTO "active" ("collection-owner", "time") VALUES (?, ?)',
                  (("%s@%s" % (n, domain), int(time.time())) for n in names))
EOF
}

pids() {
	for p in router sm c2s; do
		[ -s "$dir/$p.pid" ] || continue
		pid=$(cat "$dir/$p.pid")
		kill -0 "$pid" 2>/dev/null && peer_descendants "$pid"
	done
	return 0
}

stop() {
	for p in c2s sm router; do
		[ -s "$dir/$p.pid" ] || continue
		pid=$(cat "$dir/$p.pid")
		kill -TERM "$pid" 2>/dev/null || true
		peer_wait_gone "$pid" 20
		rm -f "$dir/$p.pid"
	done
}

shift 2
case "$cmd" in
start) start "$@" ;;
users) users "$@" ;;
rosters) exit 3 ;; # natter-load makes them over XMPP
pids) pids ;;
stop) stop ;;
*) die "unknown subcommand $cmd" ;;
esac

#!/bin/bash
# ejabberd 23.01 (Debian 12's ejabberd package) for the side-by-side benchmark.
# Subcommands and arguments: see ../common.sh. What differs from Debian's
# /etc/ejabberd/ejabberd.yml and ejabberdctl, and why, is written next to
# each setting below and in ../README.md.
#
# The node is started with erl directly, not with ejabberdctl: ejabberdctl
# switches from root to the 'ejabberd' user (which cannot read this scratch
# directory and has its own cookie) and fixes the node name, spool and log
# paths. The command line below is what ejabberdctl would run, with our own
# node name, cookie, spool, logs and limits. No epmd is used: the node
# listens for distribution on a fixed loopback port (PORT+1) and the control
# commands connect to it there (-erl_epmd_port, -start_epmd false), so a
# benchmark run starts no daemon that outlives it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|users|pids|stop DIR ..."

EJABBERD_LIB=/usr/lib/x86_64-linux-gnu
NODE=natterbench@localhost
# Every Erlang VM started here (the node, ctl, the escripts) writes a crash
# dump, if it crashes, into the scratch directory, never the working one.
export ERL_CRASH_DUMP="$dir/erl_crash.dump" ERL_CRASH_DUMP_BYTES=0

write_config() {
	port=$1
	mkdir -p "$dir/spool" "$dir/log"
	peer_cert "$dir"
	[ -s "$dir/cookie" ] || od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/cookie"
	chmod 600 "$dir/cookie"
	echo $((port + 1)) >"$dir/dist_port"
	# Optional features (../common.sh), appended to the module list below.
	features=""
	if [ "$BENCH_MAM" = on ]; then
		# The message archive in SQLite (Debian's erlang-p1-sqlite3; the
		# node creates the file and the schema, sql/lite.sql, itself), as
		# Prosody's: ejabberd's own advice is SQL, not mnesia, for
		# archives. default: always archives every message of every user.
		features="$features
  mod_mam:
    db_type: sql
    default: always"
	fi
	if [ "$BENCH_PEP" = on ]; then
		# PEP: mod_pubsub with the pep plugin; mod_caps turns the +notify
		# features of clients' capabilities into subscriptions.
		features="$features
  mod_caps: {}
  mod_pubsub:
    plugins:
      - flat
      - pep"
	fi
	if [ "$BENCH_SM" = on ]; then
		# Stream management with resumption (resume_timeout 300 s, the
		# default): Debian's config loads it; this minimal one only here.
		features="$features
  mod_stream_mgmt: {}"
	fi
	sql=""
	[ "$BENCH_MAM" = on ] && sql="sql_type: sqlite
sql_database: \"$dir/ejabberd.sqlite\""
	cat >"$dir/ejabberd.yml" <<EOF
# Written by bench/peers/ejabberd/server.sh; regenerated on every start.
loglevel: warning
log_rotate_count: 0
hosts:
  - $BENCH_DOMAIN
certfiles:
  - "$dir/cert.pem"
  - "$dir/key.pem"

# Debian's TLS settings, unchanged.
define_macro:
  'TLS_CIPHERS': "HIGH:!aNULL:!eNULL:!3DES:@STRENGTH"
  'TLS_OPTIONS':
    - "no_sslv3"
    - "no_tlsv1"
    - "no_tlsv1_1"
    - "cipher_server_preference"
    - "no_compression"
c2s_ciphers: 'TLS_CIPHERS'
c2s_protocol_options: 'TLS_OPTIONS'

# One listener: c2s with STARTTLS required, on loopback, on its own port.
# No direct TLS, s2s, HTTP, STUN or MQTT listeners.
# shaper: none  - Debian's c2s_shaper limits each client to 3000 B/s.
# max_stanza_size - as Debian's and natter's default, 256 KiB.
# backlog - the default of 128 drops SYNs when thousands connect at once;
#   natter and Prosody listen with larger backlogs.
listen:
  -
    port: $port
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: none
    access: c2s
    starttls_required: true
    protocol_options: 'TLS_OPTIONS'
    backlog: 4096

auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
default_db: mnesia
$sql
disable_sasl_mechanisms:
  - "digest-md5"
  - "X-OAUTH2"

acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all

# Shaping off: no per-connection traffic shaper, no per-user session cap
# beyond Debian's, no fail2ban (it bans an address after failed logins).
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 100
  c2s_shaper: none

# Only what the load generator uses: disco, roster, ping, offline storage,
# and the admin commands.
modules:
  mod_admin_extra: {}
  mod_disco: {}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {}
  mod_roster:
    versioning: false
  # Chat rooms on conference.$BENCH_DOMAIN, for the muc scenario. The limits
  # that would measure policy rather than throughput are lifted: rooms of
  # up to 200 occupants (max_users, and the rooms' own default) and no
  # presence broadcast above 1000 occupants (max_users_presence) become
  # 100000. min_message_interval (0), room_shaper, user_message_shaper
  # (none) are ejabberd's defaults: no rate limit. New rooms are usable at
  # once (not locked); natter-load's first joiner still submits the
  # instant-room form on status 201, as it does everywhere.
  mod_muc:
    host: "conference.$BENCH_DOMAIN"
    access_create: all
    max_users: 100000
    max_users_presence: 100000
    min_message_interval: 0
    room_shaper: none
    user_message_shaper: none
    default_room_options:
      max_users: 100000$features
EOF
}

# erl_common: the arguments every erl we run here shares.
erl_common() {
	echo "-setcookie $(cat "$dir/cookie") -erl_epmd_port $(cat "$dir/dist_port") -start_epmd false"
}

start() {
	port=${1:?PORT}
	write_config "$port"
	peer_raise_fds
	# The open-file limit raised above is inherited by beam.smp; without it
	# ejabberd started by hand keeps a soft limit of 1024, accept() fails
	# with EMFILE at ~1000 clients and the listener (then the node) stops.
	# ERL_MAX_PORTS: one Erlang port per socket; ejabberdctl sets 32000, we
	# allow as many as descriptors. +P 250000 processes (two or three per
	# client), as ejabberdctl sets it.
	# +K true: kernel poll (epoll), as ejabberdctl does.
	fds=$(ulimit -n)
	[ "$fds" = unlimited ] && fds=1048576
	# shellcheck disable=SC2046
	env HOME="$dir" \
		EJABBERD_CONFIG_PATH="$dir/ejabberd.yml" \
		EJABBERD_LOG_PATH="$dir/log/ejabberd.log" \
		ERL_CRASH_DUMP="$dir/log/erl_crash.dump" \
		ERL_INETRC=/etc/ejabberd/inetrc \
		ERL_LIBS="$EJABBERD_LIB" \
		ERL_MAX_PORTS="$fds" ERL_MAX_ETS_TABLES=1400 \
		CONTRIB_MODULES_PATH="$dir/contrib" \
		erl -sname "$NODE" $(erl_common) \
		-kernel inet_dist_use_interface '{127,0,0,1}' \
		+K true +P 250000 \
		-mnesia dir "\"$dir/spool\"" -s ejabberd -noinput \
		>"$dir/log/erl.out" 2>&1 &
	echo $! >"$dir/server.pid"
	if ! peer_wait_port "$port" 120 "$(cat "$dir/server.pid")"; then
		cat "$dir/log/erl.out" "$dir/log/ejabberd.log" >&2 2>/dev/null || true
		die "ejabberd did not start on port $port"
	fi
	ctl status >/dev/null 2>&1 || sleep 1
}

# ctl COMMAND ARGS...: an ejabberdctl command against our node.
ctl() {
	# shellcheck disable=SC2046
	env HOME="$dir" ERL_LIBS="$EJABBERD_LIB" \
		erl -sname "ctl$$-$RANDOM@localhost" $(erl_common) -dist_listen false \
		-hidden -noinput -s ejabberd_ctl -extra "$NODE" "$@"
}

# Accounts: ejabberdctl register takes ~0.5 s per call (a fresh Erlang VM
# each time), so one account is registered that way, its stored SCRAM record
# is read back from mnesia and written again under every other name in one
# call (bulk_users.escript). All accounts thus share one salt; the server's
# work per login does not depend on the salt.
users() {
	prefix=${1:?PREFIX}
	count=${2:?COUNT}
	password=${3:?PASSWORD}
	ctl register "${prefix}1" "$BENCH_DOMAIN" "$password" >/dev/null
	env HOME="$dir" ERL_FLAGS="$(erl_common) -dist_listen false -hidden" \
		escript "$here/bulk_users.escript" "$NODE" "$(cat "$dir/cookie")" \
		"$(cat "$dir/dist_port")" "$BENCH_DOMAIN" "$prefix" "$count"
}

# rosters PREFIX USERS CONTACTS [star]: the presence scenario's rosters (ring
# of USERS, CONTACTS/2 on either side, subscription both; star: the pep
# scenario's, user 1 and each of the others), written into
# mod_roster's mnesia table in a few remote calls (bulk_rosters.escript).
rosters() {
	prefix=${1:?PREFIX}
	users=${2:?USERS}
	contacts=${3:?CONTACTS}
	env HOME="$dir" ERL_FLAGS="$(erl_common) -dist_listen false -hidden" \
		escript "$here/bulk_rosters.escript" "$NODE" "$(cat "$dir/cookie")" \
		"$BENCH_DOMAIN" "$prefix" "$users" "$contacts" "${4:-ring}"
}

# archive PREFIX USERS MESSAGES HEAVY HEAVY_EVERY: the mam scenario's
# archive written into the archive's SQLite tables (made by the server at
# start with BENCH_MAM=on) in one transaction, row for row what the server
# writes for the same messages (../mam_archive.py says which fields).
archive() {
	/usr/bin/python3 "$here/../mam_archive.py" ejabberd "$dir/ejabberd.sqlite" "$BENCH_DOMAIN" "$@"
}

pids() { peer_pidfile_pids; }

stop() {
	[ -s "$dir/server.pid" ] || return 0
	pid=$(cat "$dir/server.pid")
	if kill -0 "$pid" 2>/dev/null; then
		ctl stop >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
		peer_wait_gone "$pid" 30
	fi
	rm -f "$dir/server.pid"
}

shift 2
case "$cmd" in
start) start "$@" ;;
users) users "$@" ;;
rosters) rosters "$@" ;;
archive) archive "$@" ;;
ctl) ctl "$@" ;;
pids) pids ;;
stop) stop ;;
*) die "unknown subcommand $cmd" ;;
esac

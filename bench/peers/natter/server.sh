#!/bin/bash
# natterd (this repository's build) for the side-by-side benchmark, set up
# the way the peers are: domain localhost, c2s with STARTTLS on its own
# loopback port, the shared benchmark certificate, data in the scratch
# directory. Subcommands and arguments: see ../common.sh.
# NATTER_BUILD names the build directory (default: build/ of this repository).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|users|pids|stop DIR ..."

repo=$(cd "$here/../../.." && pwd)
build=${NATTER_BUILD:-$repo/build}
[ -x "$build/natterd" ] && [ -x "$build/natterctl" ] || die "no natterd/natterctl in $build (make build)"

# The host keys that switch natter's message archive (XEP-0313) and PEP
# (XEP-0163) on for BENCH_MAM=on / BENCH_PEP=on (../common.sh), indented as
# keys of the host entry. MAM: the lead's design (archive everything by
# default); PEP: nothing, on the assumption that it is on by default like
# chat rooms. Adjust here once the features land. A build whose config
# check rejects the keys runs without them (and says so, in
# $dir/features, which run.sh records with the result).
NATTER_MAM_CONFIG='    mam:
      enabled: true
      default: always'
NATTER_PEP_CONFIG=''
# Stream management (XEP-0198) for BENCH_SM=on: nothing, natter's is on by
# default (stream_management.resume_timeout 300 s, as ejabberd's); the
# reconnect scenario finds out what is missing (natter-load exits 3).
NATTER_SM_CONFIG=''
# The archive is on by default in natter; the peers' is off by default, so
# runs without BENCH_MAM turn natter's off to compare like with like.
NATTER_NO_MAM_CONFIG='    mam:
      enabled: false'

write_config() {
	port=$1
	features=${2-}
	mkdir -p "$dir/data"
	peer_cert "$dir"
	# workers: one event loop per core, as natter's default (0) also does;
	# written out so the table shows what ran.
	cat >"$dir/natter.yaml" <<EOF
# Written by bench/peers/natter/server.sh; regenerated on every start.
log_level: warn
data_dir: $dir/data
storage: sqlite
workers: $(nproc)
allow_plain: true
scram_iterations: $BENCH_SCRAM_ITERATIONS
allow_registration: false
hosts:
  - domain: $BENCH_DOMAIN
    tls_cert: $dir/cert.pem
    tls_key: $dir/key.pem
    # Chat rooms on conference.$BENCH_DOMAIN (on by default). The muc
    # scenario measures throughput, not policy: the per-occupant message
    # limit (default 2/s, bursts of 10) and the room size (default 200) go
    # to their maxima, as the peers' limits are lifted.
    muc:
      max_occupants: 100000
      message_rate: 100000
      message_burst: 100000
$features
listeners:
  - type: c2s
    address: 127.0.0.1
    port: $port
EOF
}

start() {
	port=${1:?PORT}
	features=""
	note=""
	if [ "$BENCH_MAM" = on ]; then
		features="$features$NATTER_MAM_CONFIG
"
		note="$note mam"
	else
		features="$features$NATTER_NO_MAM_CONFIG
"
	fi
	[ "$BENCH_PEP" = on ] && [ -n "$NATTER_PEP_CONFIG" ] && features="$features$NATTER_PEP_CONFIG
"
	[ "$BENCH_PEP" = on ] && note="$note pep"
	[ "$BENCH_SM" = on ] && [ -n "$NATTER_SM_CONFIG" ] && features="$features$NATTER_SM_CONFIG
"
	write_config "$port" "$features"
	if [ -n "$features" ] && ! "$build/natterd" -c "$dir/natter.yaml" --check-config >"$dir/check.log" 2>&1; then
		echo "natter/server.sh: this natterd rejects the feature keys ($(head -n 1 "$dir/check.log")); running without them" >&2
		write_config "$port" ""
		note="$note (config keys rejected: off)"
	fi
	echo "${note# }" >"$dir/features"
	"$build/natterd" -c "$dir/natter.yaml" --check-config >/dev/null ||
		die "natterd rejects $dir/natter.yaml"
	peer_raise_fds
	"$build/natterd" -c "$dir/natter.yaml" >"$dir/natterd.log" 2>&1 &
	echo $! >"$dir/server.pid"
	if ! peer_wait_port "$port" 60 "$(cat "$dir/server.pid")"; then
		cat "$dir/natterd.log" >&2
		die "natterd did not start on port $port"
	fi
}

# natterctl user add-bulk derives the SCRAM keys once and stores them for
# every account, straight into the store (one salt for all, as for the
# peers; the server's work per login does not depend on the salt).
users() {
	prefix=${1:?PREFIX}
	count=${2:?COUNT}
	password=${3:?PASSWORD}
	printf '%s\n' "$password" >"$dir/password"
	"$build/natterctl" -c "$dir/natter.yaml" user add-bulk "$prefix" "$count" "$BENCH_DOMAIN" \
		--password-file "$dir/password"
}

# rosters PREFIX USERS CONTACTS: the presence scenario's rosters, through
# natterctl when it has "roster add-bulk PREFIX USERS CONTACTS DOMAIN" (ring
# of USERS, CONTACTS/2 on either side, subscription both); exit status 3
# when it has not, and natter-load makes them over XMPP instead.
rosters() {
	prefix=${1:?PREFIX}
	users=${2:?USERS}
	contacts=${3:?CONTACTS}
	if [ "${4:-ring}" != ring ] || ! "$build/natterctl" --help 2>&1 | grep -q 'roster add-bulk'; then
		exit 3
	fi
	"$build/natterctl" -c "$dir/natter.yaml" roster add-bulk "$prefix" "$users" "$contacts" \
		"$BENCH_DOMAIN"
}

# archive: no bulk route into natter's store yet (exit status 3):
# natter-load mam --fill sends the archive over XMPP.
archive() { exit 3; }

pids() { peer_pidfile_pids; }

stop() { peer_pidfile_stop; }

shift 2
peer_dispatch "$@"

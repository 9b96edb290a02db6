# shellcheck shell=bash
# Helpers shared by bench/peers/*/server.sh. Sourced, not run.
#
# Every server script takes the same subcommands:
#   server.sh start DIR PORT    write a config into DIR, start the server in
#                               the background on 127.0.0.1:PORT, wait until
#                               it accepts connections
#   server.sh users DIR PREFIX COUNT PASSWORD
#                               create PREFIX1..PREFIXCOUNT@localhost, all with
#                               PASSWORD (the server is running)
#   server.sh rosters DIR PREFIX USERS CONTACTS
#                               optional: the presence scenario's rosters
#                               (ring of USERS, CONTACTS/2 on either side,
#                               subscription both) written into the store;
#                               exit status 3 where the server has no route;
#                               a 4th argument "star": the pep scenario's
#                               (user 1 and each of users 2..USERS)
#   server.sh archive DIR PREFIX USERS MESSAGES HEAVY HEAVY_EVERY
#                               optional: the mam scenario's archive (layout
#                               in bench/loadgen/mam.c, mam_pair) written
#                               into the store as the server itself writes
#                               it; exit status 3 where the server has no
#                               route (natter-load --fill sends it over XMPP)
#   server.sh pids DIR          print the PIDs of every process of the server
#                               (for RSS and CPU accounting), one per line
#   server.sh stop DIR          stop it and wait until it is gone
# DIR is a scratch directory the caller owns; nothing outside it is written.
# The domain is always "localhost". TLS uses DIR/cert.pem and DIR/key.pem,
# generated on first use unless BENCH_CERT and BENCH_KEY name an existing pair
# (run.sh makes one pair and hands it to every server, so all of them present
# the same certificate).

BENCH_DOMAIN=localhost
# Features some scenarios switch on (on|off); off leaves each server as the
# other scenarios measure it.
#   BENCH_MAM  the message archive (XEP-0313), archiving every chat message
#              of every user by default, in SQLite where the server can
#   BENCH_PEP  PEP (XEP-0163) with entity capabilities (XEP-0115), so
#              +notify features in clients' caps subscribe them
#   BENCH_SM   stream management (XEP-0198) with resumption: Prosody's
#              mod_smacks, ejabberd's mod_stream_mgmt, both at their
#              defaults; natter's when it has it (the reconnect scenario,
#              idle --sm)
BENCH_MAM=${BENCH_MAM:-off}
BENCH_PEP=${BENCH_PEP:-off}
BENCH_SM=${BENCH_SM:-off}
# SCRAM iteration count for the accounts of every server: natter's minimum and
# default, and ejabberd's default (Prosody's default is 10000).
BENCH_SCRAM_ITERATIONS=${BENCH_SCRAM_ITERATIONS:-4096}
# Kind of certificate key: ec (P-256) or rsa (2048 bits).
BENCH_CERT_TYPE=${BENCH_CERT_TYPE:-ec}

die() {
	echo "$(basename "$0"): $*" >&2
	exit 1
}

# peer_raise_fds: raise this shell's open-file limit as far as it goes, so the
# server it then starts inherits it. Every server holds one descriptor per
# client connection; the usual soft limit of 1024 (and Erlang's default port
# limit) stops a server long before memory does. The hard limit can only be
# raised with CAP_SYS_RESOURCE; where that is missing (containers) the soft
# limit goes up to the hard one and we say so.
peer_raise_fds() {
	if ! ulimit -n 1048576 2>/dev/null; then
		ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	fi
	n=$(ulimit -n)
	if [ "$n" != unlimited ] && [ "$n" -lt 100000 ] && [ -z "${BENCH_FD_NOTED:-}" ]; then
		echo "$(basename "$0"): note: open-file limit is $n (hard limit; raising it needs CAP_SYS_RESOURCE)" >&2
	fi
}

# peer_cert DIR: make sure DIR/cert.pem and DIR/key.pem exist (self-signed,
# CN and subjectAltName "localhost").
peer_cert() {
	d=$1
	if [ -n "${BENCH_CERT:-}" ] && [ -n "${BENCH_KEY:-}" ]; then
		cp "$BENCH_CERT" "$d/cert.pem"
		cp "$BENCH_KEY" "$d/key.pem"
	elif [ ! -s "$d/cert.pem" ] || [ ! -s "$d/key.pem" ]; then
		peer_make_cert "$d/cert.pem" "$d/key.pem"
	fi
	chmod 600 "$d/key.pem"
}

# peer_make_cert CERT KEY: a fresh self-signed certificate for localhost.
peer_make_cert() {
	case "$BENCH_CERT_TYPE" in
	rsa) keyopt="-newkey rsa:2048" ;;
	*) keyopt="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1" ;;
	esac
	# shellcheck disable=SC2086
	openssl req -x509 $keyopt -nodes -days 30 -subj "/CN=$BENCH_DOMAIN" \
		-addext "subjectAltName=DNS:$BENCH_DOMAIN" \
		-keyout "$2" -out "$1" >/dev/null 2>&1 || die "openssl could not make a certificate"
	chmod 600 "$2"
}

# peer_wait_port PORT SECONDS [PID]: wait until 127.0.0.1:PORT accepts TCP
# connections; fail early if PID (the server) exits meanwhile.
peer_wait_port() {
	port=$1
	limit=$(($2 * 10))
	i=0
	while [ $i -lt "$limit" ]; do
		if /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "$port" 2>/dev/null; then
			return 0
		fi
		if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then
			return 1
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# peer_wait_gone PID SECONDS: wait until PID has exited; SIGKILL after that.
peer_wait_gone() {
	pid=$1
	limit=$(($2 * 10))
	i=0
	while kill -0 "$pid" 2>/dev/null; do
		if [ $i -ge "$limit" ]; then
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
}

# peer_descendants PID: PID and every process below it, one per line.
peer_descendants() {
	echo "$1"
	for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
		peer_descendants "$child"
	done
}

# pids and stop of a server whose launcher wrote its pid to $dir/server.pid.
peer_pidfile_pids() {
	[ -s "$dir/server.pid" ] || return 0
	pid=$(cat "$dir/server.pid")
	kill -0 "$pid" 2>/dev/null || return 0
	peer_descendants "$pid"
}

peer_pidfile_stop() {
	[ -s "$dir/server.pid" ] || return 0
	pid=$(cat "$dir/server.pid")
	kill -TERM "$pid" 2>/dev/null || true
	peer_wait_gone "$pid" 30
	rm -f "$dir/server.pid"
}

# Runs the server script's subcommand $cmd with the remaining arguments.
peer_dispatch() {
	case "$cmd" in
	start) start "$@" ;;
	users) users "$@" ;;
	rosters) rosters "$@" ;;
	archive) archive "$@" ;;
	pids) pids ;;
	stop) stop ;;
	*) die "unknown subcommand $cmd" ;;
	esac
}

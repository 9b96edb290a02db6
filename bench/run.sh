#!/bin/bash
# `make bench`: natter against Prosody and ejabberd, side by side, on this
# machine, over loopback only.
#
# For every scenario of the load generator (build/natter-load: idle, login,
# chat, muc, presence; chat-mam is chat with the message archive off and on,
# mam the archive's query latency, pep avatar notifications) and every server, in alternating order, this starts the
# server fresh in a scratch directory (bench/peers/SERVER/server.sh), creates
# the same accounts on it, checks one real login (slixmpp), runs the scenario,
# measures the server from outside (RSS of all its processes, CPU from
# /proc/PID/stat), and stops it. Results go to bench/results/ (one JSON file
# per server and scenario, machine.json, summary.json, table.txt, and the
# latency-vs-offered-rate plots chat-*.png and muc-*.png); the table with natter/peer
# ratios is printed at the end.
#
# Everything is bounded: each scenario has a hard time cap (natter-load
# --duration), and every server is stopped on exit, even on error.
#
# Parameters (environment; defaults fit the 2-core, 24 GB CI-sized box and
# its open-file limit of 20000 per process):
#   SERVERS            servers to run, in order      natter prosody ejabberd
#   SCENARIOS          scenarios to run
#                      idle login chat muc presence chat-mam mam pep
#                      reconnect idle-sm
#   ROUNDS             repetitions (order alternates between rounds)   1
#   IDLE_CLIENTS       idle: authenticated clients held                10000
#   IDLE_SETTLE        idle: seconds between "ready" and measuring RSS  3
#   LOGINS             login: full logins                              10000
#   LOGIN_USERS        login: accounts they cycle through              1000
#   LOGIN_CONCURRENCY  login: connectors in flight                     100
#   LOGIN_MECH         login: scram or plain                           scram
#   CHAT_PAIRS         chat: online pairs                              1000
#   RATES              chat: offered rates, msgs/s, comma-separated
#                      1000,2000,5000,10000,20000,50000,100000,150000,200000
#   STEP_SECONDS       chat: seconds per rate step                     5
#   STOP_P99_MS        chat: stop stepping once p99 exceeds this       1000
#   MUC_ROOM_SIZES     muc: occupants per room, one run per size   100 1000
#   MUC_ROOMS          muc: rooms of each size                     1
#   MUC_SENDERS        muc: occupants of each room that send       5
#   MUC_RATES          muc: offered deliveries/s (messages/s times the room
#                      size; the message rate is this divided by the size)
#                      2000,5000,10000,20000,50000,100000,200000,500000,1000000
#   MAM_CHAT_RATES     chat-mam: offered rates, msgs/s (chat run twice per
#                      server, its message archive off and on; CHAT_PAIRS,
#                      STEP_SECONDS, STOP_P99_MS as chat)
#                      200,500,1000,2000,5000,10000,20000,25000,...,50000,
#                      60000,80000,100000 (steps of 5000 where archives bind)
#   MAM_USERS          mam: accounts the archive is spread over        1000
#   MAM_MESSAGES       mam: messages in the archive (each stored twice) 1000000
#   MAM_HEAVY          mam: measured users, each in many more messages  4
#   MAM_HEAVY_EVERY    mam: every Nth message goes to a measured user   20
#   MAM_DEEP           mam: the deep page starts this many messages back 10000
#   MAM_PAGE           mam: results per page (RSM max)                  50
#   MAM_QUERIES        mam: measured queries of each kind per user      200
#   MAM_FILL_RATE      mam: msgs/s at most where the archive is sent over
#                      XMPP (servers without a bulk loader: natter)     20000
#   MAM_TIMEOUT        mam: hard cap of that run, seconds               900
#   PEP_CONTACTS       pep: contacts of the publishing user            500
#   PEP_RATES          pep: offered avatar publishes/s
#                      1,2,5,10,20,50,100,200
#   RECONNECT_CLIENTS  reconnect: clients cut at once and reconnecting 5000
#   RECONNECT_CONCURRENCY reconnect: reconnects in flight after the cut 500
#   NATTER_RECONNECT_MODES reconnect-best: natter's modes, best first
#                      (the first one natter-load does not refuse with
#                      exit 3, "unsupported", is measured; full+tls is full
#                      offering the first connection's TLS session back)
#                                                fast resume full+tls full
#   PEER_RECONNECT_MODES   reconnect-best: the peers' modes   resume full
#                      (reconnect runs twice per server: reconnect-full, a
#                      full TLS handshake + SCRAM + bind for everyone, and
#                      reconnect-best; idle-sm is idle with stream
#                      management enabled by every client)
#   PRESENCE_USERS     presence: users                                 2000
#   CONTACTS           presence: mutual contacts per user              20
#   PRESENCE_SECONDS   presence: measured churn phase                  15
#   PRESENCE_ROSTERS   presence: how the rosters are made              server
#                      server: written into the server's store before it
#                      is measured (server.sh rosters), where the server
#                      script can; protocol: by natter-load over XMPP
#                      (--setup-rosters), as clients would
#   LOAD_THREADS       natter-load worker threads                      2
#   SCENARIO_TIMEOUT   hard cap per scenario run, seconds              300
#   NATTER_BUILD       natter's build directory                        build
#   RESULTS            output directory                    bench/results
#   BENCH_CERT_TYPE    certificate key for all servers: ec | rsa       ec
#   SMOKE=1            tiny values for all of the above (a minute or two),
#                      to check that the harness and every server still work
#
# Servers: natter, prosody, ejabberd; jabberd2 too when SERVERS names it
# (see bench/peers/README.md for what works there).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
peers=$here/peers

if [ "${SMOKE:-0}" = 1 ]; then
	: "${IDLE_CLIENTS:=20}" "${IDLE_SETTLE:=0.5}" "${LOGINS:=50}" "${LOGIN_USERS:=10}"
	: "${LOGIN_CONCURRENCY:=5}" "${CHAT_PAIRS:=5}" "${RATES:=100,200}" "${STEP_SECONDS:=1}"
	: "${MUC_ROOM_SIZES:=5 20}" "${MUC_RATES:=100,200}"
	: "${PRESENCE_USERS:=20}" "${CONTACTS:=4}" "${PRESENCE_SECONDS:=2}"
	: "${SCENARIO_TIMEOUT:=60}" "${LOAD_THREADS:=1}"
	: "${MAM_CHAT_RATES:=50,100}" "${MAM_USERS:=20}" "${MAM_MESSAGES:=2000}" "${MAM_HEAVY:=2}"
	: "${MAM_DEEP:=100}" "${MAM_PAGE:=10}" "${MAM_QUERIES:=10}" "${MAM_TIMEOUT:=120}"
	: "${PEP_CONTACTS:=10}" "${PEP_RATES:=5,10}"
	: "${RECONNECT_CLIENTS:=20}" "${RECONNECT_CONCURRENCY:=10}"
fi

SERVERS=${SERVERS:-natter prosody ejabberd}
SCENARIOS=${SCENARIOS:-idle login chat muc presence chat-mam mam pep reconnect idle-sm}
ROUNDS=${ROUNDS:-1}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
IDLE_SETTLE=${IDLE_SETTLE:-3}
LOGINS=${LOGINS:-10000}
LOGIN_USERS=${LOGIN_USERS:-1000}
LOGIN_CONCURRENCY=${LOGIN_CONCURRENCY:-100}
LOGIN_MECH=${LOGIN_MECH:-scram}
CHAT_PAIRS=${CHAT_PAIRS:-1000}
RATES=${RATES:-1000,2000,5000,10000,20000,50000,100000,150000,200000}
STEP_SECONDS=${STEP_SECONDS:-5}
STOP_P99_MS=${STOP_P99_MS:-1000}
MUC_ROOM_SIZES=${MUC_ROOM_SIZES:-100 1000}
MUC_ROOMS=${MUC_ROOMS:-1}
MUC_SENDERS=${MUC_SENDERS:-5}
MUC_RATES=${MUC_RATES:-2000,5000,10000,20000,50000,100000,200000,500000,1000000}
MAM_CHAT_RATES=${MAM_CHAT_RATES:-200,500,1000,2000,5000,10000,20000,25000,30000,35000,40000,45000,50000,60000,80000,100000}
MAM_USERS=${MAM_USERS:-1000}
MAM_MESSAGES=${MAM_MESSAGES:-1000000}
MAM_HEAVY=${MAM_HEAVY:-4}
MAM_HEAVY_EVERY=${MAM_HEAVY_EVERY:-20}
MAM_DEEP=${MAM_DEEP:-10000}
MAM_PAGE=${MAM_PAGE:-50}
MAM_QUERIES=${MAM_QUERIES:-200}
MAM_FILL_RATE=${MAM_FILL_RATE:-20000}
MAM_TIMEOUT=${MAM_TIMEOUT:-900}
PEP_CONTACTS=${PEP_CONTACTS:-500}
PEP_RATES=${PEP_RATES:-1,2,5,10,20,50,100,200}
RECONNECT_CLIENTS=${RECONNECT_CLIENTS:-5000}
RECONNECT_CONCURRENCY=${RECONNECT_CONCURRENCY:-500}
NATTER_RECONNECT_MODES=${NATTER_RECONNECT_MODES:-fast resume full+tls full}
PEER_RECONNECT_MODES=${PEER_RECONNECT_MODES:-resume full}
PRESENCE_USERS=${PRESENCE_USERS:-2000}
CONTACTS=${CONTACTS:-20}
PRESENCE_SECONDS=${PRESENCE_SECONDS:-15}
PRESENCE_ROSTERS=${PRESENCE_ROSTERS:-server}
LOAD_THREADS=${LOAD_THREADS:-2}
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-300}
NATTER_BUILD=${NATTER_BUILD:-$repo/build}
RESULTS=${RESULTS:-$repo/bench/results}
export NATTER_BUILD BENCH_CERT_TYPE=${BENCH_CERT_TYPE:-ec}

LOAD=${NATTER_LOAD:-$NATTER_BUILD/natter-load}
PREFIX=u
PASSWORD=benchpass

port_of() {
	case "$1" in
	natter) echo 15222 ;;
	prosody) echo 15322 ;;
	ejabberd) echo 15422 ;;
	jabberd2) echo 15522 ;;
	*) echo "unknown server $1" >&2; return 1 ;;
	esac
}

log() { echo "bench: $*" >&2; }

# Debian's prosody, ejabberd, gnuplot... (no-op when all are installed).
"$peers/install.sh"

[ -x "$LOAD" ] || { log "no load generator at $LOAD (make build)"; exit 1; }
for s in $SERVERS; do
	port_of "$s" >/dev/null
	[ -x "$peers/$s/server.sh" ] || { log "no $peers/$s/server.sh"; exit 1; }
done

max() { m=0; for v in "$@"; do [ "$v" -gt "$m" ] && m=$v; done; echo "$m"; }
# shellcheck disable=SC2046
USERS=$(max "$IDLE_CLIENTS" "$LOGIN_USERS" $((2 * CHAT_PAIRS)) "$PRESENCE_USERS" \
	"$MAM_USERS" $((PEP_CONTACTS + 1)) "$RECONNECT_CLIENTS" \
	$(for k in $MUC_ROOM_SIZES; do echo $((k * MUC_ROOMS)); done))

# muc_rates SIZE: MUC_RATES (deliveries/s) as messages/s for rooms of SIZE,
# at least 1, without repeats.
muc_rates() {
	echo "$MUC_RATES" | tr ',' '\n' | awk -v k="$1" '{ r = int($1 / k); if (r < 1) r = 1; if (!(r in seen)) { seen[r] = 1; print r } }' |
		paste -sd, -
}

work=$(mktemp -d /tmp/natter-bench.XXXXXX)
current=""   # server running now, stopped by cleanup
cleanup() {
	if [ -n "$current" ]; then
		"$peers/$current/server.sh" stop "$work/$current" >/dev/null 2>&1 || true
	fi
	# A load generator still running (interrupted run) is ours: stop it.
	if [ -n "${load_pid:-}" ] && kill -0 "$load_pid" 2>/dev/null; then
		kill -TERM "$load_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.json "$RESULTS"/*.dat "$RESULTS"/*.png "$RESULTS"/table.txt

# One certificate for every server, so TLS costs the same everywhere.
. "$peers/common.sh"
peer_make_cert "$work/cert.pem" "$work/key.pem"
export BENCH_CERT="$work/cert.pem" BENCH_KEY="$work/key.pem"

# The load generator opens as many sockets as the server does.
peer_raise_fds
export BENCH_FD_NOTED=1

# server_pids SERVER: comma-separated PIDs of the running server (at most
# 16, what natter-load --server-pid takes).
server_pids() {
	"$peers/$1/server.sh" pids "$work/$1" | head -n 16 | paste -sd, -
}

# rss_kib PIDS: summed VmRSS (KiB) of the comma-separated PIDs.
rss_kib() {
	t=0
	for p in ${1//,/ }; do
		v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

# cpu_ticks PIDS: summed utime+stime (clock ticks) of the PIDs.
cpu_ticks() {
	t=0
	for p in ${1//,/ }; do
		# Fields 14 and 15 after the ")" that closes the command name.
		v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

CLK_TCK=$(getconf CLK_TCK)

# start_server SERVER: fresh scratch dir, start, accounts.
start_server() {
	s=$1
	d=$work/$s
	rm -rf "$d"
	mkdir -p "$d"
	current=$s
	# (Called in a condition, so set -e is off here: every step is checked.)
	"$peers/$s/server.sh" start "$d" "$(port_of "$s")" || return 1
	t0=$(date +%s.%N)
	"$peers/$s/server.sh" users "$d" "$PREFIX" "$USERS" "$PASSWORD" >/dev/null || return 1
	log "$s: $USERS accounts in $(echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.1f') s (pids $(server_pids "$s"))"
}

# check_server SERVER: one real login (slixmpp), which also warms the server
# up before its baseline is measured.
check_server() {
	timeout 60 /usr/bin/python3 "$peers/check_login.py" "$(port_of "$1")" \
		"${PREFIX}1@localhost" "$PASSWORD" >&2
}

stop_server() {
	"$peers/$1/server.sh" stop "$work/$1"
	current=""
}

# run_scenario SERVER SCENARIO ROUND: one measured run; writes
# $RESULTS/SERVER-SCENARIO[-rROUND].json.
run_scenario() {
	s=$1 sc=$2 round=$3
	out=$RESULTS/$s-$sc.json
	[ "$ROUNDS" -gt 1 ] && out=$RESULTS/$s-$sc-r$round.json
	# The features a scenario needs (bench/peers/common.sh); everything
	# else runs with them off, as before.
	BENCH_MAM=off BENCH_PEP=off BENCH_SM=off
	case "$sc" in
	chat-mam-on | mam) BENCH_MAM=on ;;
	pep) BENCH_PEP=on ;;
	reconnect-* | idle-sm) BENCH_SM=on ;;
	esac
	export BENCH_MAM BENCH_PEP BENCH_SM
	if ! start_server "$s"; then
		stop_server "$s"
		return 1
	fi
	roster_opt=""
	if [ "$sc" = presence ]; then
		roster_opt=--setup-rosters
		if [ "$PRESENCE_ROSTERS" = server ]; then
			# Exit status 3: this server's script cannot (natter-load
			# then makes them over XMPP).
			rc=0
			"$peers/$s/server.sh" rosters "$work/$s" "$PREFIX" "$PRESENCE_USERS" "$CONTACTS" \
				>/dev/null || rc=$?
			case $rc in
			0) roster_opt="" ;;
			3) log "$s: rosters over XMPP (no bulk roster route)" ;;
			*) log "$s: writing rosters failed"; stop_server "$s"; return 1 ;;
			esac
		fi
	fi
	if [ "$sc" = pep ]; then
		# The publisher (u1) and its PEP_CONTACTS contacts, written into the
		# store where the script can; over XMPP otherwise.
		roster_opt=--setup-rosters
		rc=0
		"$peers/$s/server.sh" rosters "$work/$s" "$PREFIX" $((PEP_CONTACTS + 1)) "$PEP_CONTACTS" star \
			>/dev/null || rc=$?
		case $rc in
		0) roster_opt="" ;;
		3) log "$s: pep rosters over XMPP (no bulk roster route)" ;;
		*) log "$s: writing rosters failed"; stop_server "$s"; return 1 ;;
		esac
	fi
	# After the rosters: ejabberd would cache the empty roster of this user.
	if ! check_server "$s"; then
		log "$s: login check failed"
		stop_server "$s"
		return 1
	fi
	fill_opt=""
	archive_s=""
	if [ "$sc" = mam ]; then
		# After the login check, whose message makes ejabberd open its
		# archive. Exit status 3: no bulk route (natter-load --fill sends
		# the archive over XMPP instead).
		rc=0
		t_a=$(date +%s.%N)
		"$peers/$s/server.sh" archive "$work/$s" "$PREFIX" "$MAM_USERS" "$MAM_MESSAGES" \
			"$MAM_HEAVY" "$MAM_HEAVY_EVERY" >&2 || rc=$?
		case $rc in
		0) archive_s=$(echo "$(date +%s.%N) - $t_a" | bc) ;;
		3) fill_opt=--fill; log "$s: archive sent over XMPP (no bulk route)" ;;
		*) log "$s: writing the archive failed"; stop_server "$s"; return 1 ;;
		esac
	fi
	sleep 1
	pids=$(server_pids "$s")
	rss0=$(rss_kib "$pids")
	cpu0=$(cpu_ticks "$pids")
	t0=$(date +%s.%N)
	common=(--port "$(port_of "$s")" --domain localhost --users-prefix "$PREFIX"
		--password "$PASSWORD" --threads "$LOAD_THREADS" --duration "$SCENARIO_TIMEOUT"
		--server-pid "$pids" --quiet)
	raw=$work/load.json
	err=$work/load.err
	rss1=""
	case "$sc" in
	idle | idle-sm)
		# Hold the clients until we have measured, then close stdin.
		rm -f "$work/hold"
		mkfifo "$work/hold"
		sm_opt=""
		[ "$sc" = idle-sm ] && sm_opt=--sm
		# The loop below looks for "ready" in $err, which the previous
		# run's may still hold: the redirection truncating it comes only
		# after the fifo opens.
		rm -f "$err"
		"$LOAD" idle "${common[@]}" --clients "$IDLE_CLIENTS" $sm_opt \
			--concurrency "$LOGIN_CONCURRENCY" --hold "$SCENARIO_TIMEOUT" --stdin \
			<"$work/hold" >"$raw" 2>"$err" &
		load_pid=$!
		exec 3>"$work/hold"
		waited=0
		while ! grep -q '^ready' "$err" && kill -0 "$load_pid" 2>/dev/null &&
			[ $waited -lt $((SCENARIO_TIMEOUT * 10)) ]; do
			sleep 0.1
			waited=$((waited + 1))
		done
		sleep "$IDLE_SETTLE"
		rss1=$(rss_kib "$pids")
		exec 3>&-
		wait "$load_pid" || true
		;;
	reconnect-full | reconnect-best)
		# Best: the first mode this server does not refuse (exit 3:
		# it lacks SM, SASL2 or FAST; the failed attempt's logins
		# are not measured).
		modes=full
		if [ "$sc" = reconnect-best ]; then
			modes=$PEER_RECONNECT_MODES
			[ "$s" = natter ] && modes=$NATTER_RECONNECT_MODES
		fi
		for mode in $modes; do
			rc=0
			tls_opt=""
			[ "$mode" = full+tls ] && mode=full tls_opt=--tls-resume
			"$LOAD" reconnect "${common[@]}" --clients "$RECONNECT_CLIENTS" \
				--concurrency "$LOGIN_CONCURRENCY" \
				--reconnect-concurrency "$RECONNECT_CONCURRENCY" --mode "$mode" $tls_opt \
				>"$raw" 2>"$err" &
			load_pid=$!
			wait "$load_pid" || rc=$?
			[ "$rc" = 3 ] || break
			log "$s: reconnect mode $mode unsupported ($(grep -m1 '^first error' "$err" || true))"
		done
		;;
	login)
		"$LOAD" login "${common[@]}" --logins "$LOGINS" --users "$LOGIN_USERS" \
			--concurrency "$LOGIN_CONCURRENCY" --mech "$LOGIN_MECH" >"$raw" 2>"$err" &
		load_pid=$!
		wait "$load_pid" || true
		;;
	chat-mam-*)
		"$LOAD" chat "${common[@]}" --pairs "$CHAT_PAIRS" --rates "$MAM_CHAT_RATES" \
			--step-seconds "$STEP_SECONDS" --stop-p99-ms "$STOP_P99_MS" \
			--concurrency "$LOGIN_CONCURRENCY" >"$raw" 2>"$err" &
		load_pid=$!
		wait "$load_pid" || true
		;;
	mam)
		"$LOAD" mam "${common[@]}" --duration "$MAM_TIMEOUT" --users "$MAM_USERS" \
			--messages "$MAM_MESSAGES" --heavy "$MAM_HEAVY" --heavy-every "$MAM_HEAVY_EVERY" \
			--deep "$MAM_DEEP" --page "$MAM_PAGE" --queries "$MAM_QUERIES" \
			--fill-rate "$MAM_FILL_RATE" $fill_opt \
			--concurrency "$LOGIN_CONCURRENCY" >"$raw" 2>"$err" &
		load_pid=$!
		wait "$load_pid" || true
		;;
	pep)
		"$LOAD" pep "${common[@]}" --contacts "$PEP_CONTACTS" $roster_opt \
			--rates "$PEP_RATES" --step-seconds "$STEP_SECONDS" --stop-p99-ms "$STOP_P99_MS" \
			--concurrency "$LOGIN_CONCURRENCY" >"$raw" 2>"$err" &
		load_pid=$!
		wait "$load_pid" || true
		;;
	chat)
		"$LOAD" chat "${common[@]}" --pairs "$CHAT_PAIRS" --rates "$RATES" \
			--step-seconds "$STEP_SECONDS" --stop-p99-ms "$STOP_P99_MS" \
			--concurrency "$LOGIN_CONCURRENCY" >"$raw" 2>"$err" &
		load_pid=$!
		rss1=""
		wait "$load_pid" || true
		;;
	muc-*)
		size=${sc#muc-}
		"$LOAD" muc "${common[@]}" --rooms "$MUC_ROOMS" --room-size "$size" \
			--senders "$MUC_SENDERS" --rates "$(muc_rates "$size")" \
			--step-seconds "$STEP_SECONDS" --stop-p99-ms "$STOP_P99_MS" \
			--concurrency "$LOGIN_CONCURRENCY" >"$raw" 2>"$err" &
		load_pid=$!
		wait "$load_pid" || true
		;;
	presence)
		"$LOAD" presence "${common[@]}" --users "$PRESENCE_USERS" --contacts "$CONTACTS" \
			$roster_opt --seconds "$PRESENCE_SECONDS" \
			--concurrency "$LOGIN_CONCURRENCY" >"$raw" 2>"$err" &
		load_pid=$!
		wait "$load_pid" || true
		;;
	*)
		log "unknown scenario $sc"
		return 1
		;;
	esac
	load_pid=""
	t1=$(date +%s.%N)
	cpu1=$(cpu_ticks "$pids")
	[ -n "$rss1" ] || rss1=$(rss_kib "$pids")
	alive=1
	for p in ${pids//,/ }; do kill -0 "$p" 2>/dev/null || alive=0; done
	# What the server really ran with: natter's script notes features its
	# build rejected.
	features=""
	[ "$BENCH_MAM" = on ] && features="mam"
	[ "$BENCH_PEP" = on ] && features="$features pep"
	[ -s "$work/$s/features" ] && features=$(cat "$work/$s/features")
	stop_server "$s"
	grep -v '^ready' "$err" | sed "s/^/  $s $sc: /" >&2 || true
	/usr/bin/python3 "$peers/report.py" record --out "$out" --server "$s" --scenario "$sc" \
		--round "$round" --load-json "$raw" --rss-before "$rss0" --rss-after "$rss1" \
		--cpu-s "$(echo "($cpu1 - $cpu0) / $CLK_TCK" | bc -l)" \
		--wall-s "$(echo "$t1 - $t0" | bc -l)" --alive "$alive" --version "$(version_of "$s")" \
		--features "${features# }" --archive-load-s "$archive_s"
}

version_of() {
	case "$1" in
	natter) (cd "$repo" && git rev-parse --short HEAD 2>/dev/null) || echo unknown ;;
	*) dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown ;;
	esac
}

/usr/bin/python3 "$peers/report.py" machine --out "$RESULTS/machine.json" \
	--servers "$SERVERS" --fd-limit "$(ulimit -n)" \
	--params "MAM_CHAT_RATES=$MAM_CHAT_RATES MAM_USERS=$MAM_USERS MAM_MESSAGES=$MAM_MESSAGES MAM_HEAVY=$MAM_HEAVY MAM_HEAVY_EVERY=$MAM_HEAVY_EVERY MAM_DEEP=$MAM_DEEP MAM_PAGE=$MAM_PAGE MAM_QUERIES=$MAM_QUERIES MAM_FILL_RATE=$MAM_FILL_RATE PEP_CONTACTS=$PEP_CONTACTS PEP_RATES=$PEP_RATES MUC_ROOM_SIZES=${MUC_ROOM_SIZES// /+} MUC_ROOMS=$MUC_ROOMS MUC_SENDERS=$MUC_SENDERS MUC_RATES=$MUC_RATES PRESENCE_ROSTERS=$PRESENCE_ROSTERS IDLE_CLIENTS=$IDLE_CLIENTS LOGINS=$LOGINS LOGIN_USERS=$LOGIN_USERS LOGIN_CONCURRENCY=$LOGIN_CONCURRENCY LOGIN_MECH=$LOGIN_MECH CHAT_PAIRS=$CHAT_PAIRS RATES=$RATES STEP_SECONDS=$STEP_SECONDS PRESENCE_USERS=$PRESENCE_USERS CONTACTS=$CONTACTS PRESENCE_SECONDS=$PRESENCE_SECONDS RECONNECT_CLIENTS=$RECONNECT_CLIENTS RECONNECT_CONCURRENCY=$RECONNECT_CONCURRENCY LOAD_THREADS=$LOAD_THREADS ROUNDS=$ROUNDS BENCH_CERT_TYPE=$BENCH_CERT_TYPE"

# Alternate: each scenario runs against every server before the next
# scenario starts, and each round reverses the order of the servers, so
# neither drift of the machine nor a warm page cache favours one of them.
for round in $(seq 1 "$ROUNDS"); do
	order=$SERVERS
	if [ $((round % 2)) -eq 0 ]; then
		order=$(echo "$SERVERS" | tr ' ' '\n' | tac | paste -sd' ' -)
	fi
	# muc runs once per room size, as scenarios muc-SIZE.
	# shellcheck disable=SC2001
	scenarios=$(for sc in $SCENARIOS; do
		if [ "$sc" = reconnect ]; then
			echo reconnect-full
			echo reconnect-best
		elif [ "$sc" = muc ]; then
			for k in $MUC_ROOM_SIZES; do echo "muc-$k"; done
		elif [ "$sc" = chat-mam ]; then
			echo chat-mam-off
			echo chat-mam-on
		else
			echo "$sc"
		fi
	done)
	for sc in $scenarios; do
		for s in $order; do
			log "round $round: $sc on $s"
			run_scenario "$s" "$sc" "$round" || log "$s $sc: failed (see above)"
		done
	done
done

/usr/bin/python3 "$peers/report.py" summarize --results "$RESULTS" --servers "$SERVERS"
if command -v gnuplot >/dev/null; then
	for dat in "$RESULTS"/chat-*.dat; do
		[ -e "$dat" ] || continue
		name=$(basename "$dat" .dat)
		gnuplot -c "$here/plot.gp" "$RESULTS/$name.png" "chat latency vs offered rate: ${name#chat-}" "$dat"
	done
	all=$(ls "$RESULTS"/chat-*.dat 2>/dev/null | head -8 || true)
	if [ -n "$all" ]; then
		# shellcheck disable=SC2086
		gnuplot -c "$here/plot.gp" "$RESULTS/chat-p99.png" "chat p99 latency vs offered rate" $all
	fi
	# muc: every server and room size in one plot, against deliveries.
	all=$(ls "$RESULTS"/muc-*.dat 2>/dev/null | head -8 || true)
	if [ -n "$all" ]; then
		# shellcheck disable=SC2086
		gnuplot -e "xlab='offered deliveries/s (messages/s x occupants)'; bound=50" \
			-c "$here/plot.gp" "$RESULTS/muc-p99.png" "muc p99 latency vs offered deliveries" $all
	fi
fi
cat "$RESULTS/table.txt"

#!/bin/sh
# Smoke test of natter-load: every scenario, tiny, against a natterd of its
# own, so the harness cannot rot. Takes a few seconds.
#
#   NATTER_BUILD=build bench/loadgen/smoke.sh
#
# NATTER_BUILD is the build directory holding natterd, natterctl and
# natter-load (default: build). The server gets a temporary directory,
# free loopback ports and 20 accounts (user1..user20, password on stdin to
# natterctl); each scenario's JSON is checked for sane numbers. Prints one
# line per check and "N passed, M failed"; exits non-zero on any failure.
set -u

here=$(cd "$(dirname "$0")" && pwd)
build=${NATTER_BUILD:-$here/../../build}
build=$(cd "$build" && pwd) || exit 2
natterd=$build/natterd
natterctl=$build/natterctl
load=$build/natter-load
for bin in "$natterd" "$natterctl" "$load"; do
	if [ ! -x "$bin" ]; then
		echo "smoke: $bin is missing; build natter first (cmake --build build)" >&2
		exit 2
	fi
done
command -v python3 >/dev/null || { echo "smoke: needs python3" >&2; exit 2; }

# Short, under /tmp: natterd's control socket lives in data_dir and
# sun_path is small.
tmp=$(mktemp -d /tmp/nload.XXXXXX) || exit 2
server_pid=
stub_pid=
cleanup() {
	[ -n "$stub_pid" ] && kill -TERM "$stub_pid" 2>/dev/null
	if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
		kill -TERM "$server_pid" 2>/dev/null
		i=0
		while kill -0 "$server_pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$server_pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two distinct free ports. natterd listens with SO_REUSEPORT, so a port
# that another natterd holds would silently be shared: ask the kernel.
set -- $(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')
port=$1
tls_port=$2
password=smoke-pw

mkdir "$tmp/data"
# The message archive, with the keys bench/peers/natter/server.sh uses
# (NATTER_MAM_CONFIG there): where this build rejects them, the mam check
# only asks that the archive queries are refused cleanly.
mam_keys='    mam:
      enabled: true
      default: always'
write_config() {
cat >"$tmp/natter.yaml" <<EOF
log_level: info
data_dir: $tmp/data
workers: 2
hosts:
  - domain: localhost
    # The muc check sends faster than an occupant may by default (2/s).
    muc:
      message_rate: 1000
      message_burst: 1000
$1
listeners:
  - type: c2s
    address: 127.0.0.1
    port: $port
  - type: c2s_tls
    address: 127.0.0.1
    port: $tls_port
EOF
}
mam_on=1
write_config "$mam_keys"
if ! "$natterd" -c "$tmp/natter.yaml" --check-config >/dev/null 2>&1; then
	mam_on=0
	write_config ""
fi

i=1
while [ $i -le 20 ]; do
	if ! printf '%s\n' "$password" |
		"$natterctl" -c "$tmp/natter.yaml" user add "user$i@localhost" >"$tmp/ctl.log" 2>&1; then
		echo "smoke: natterctl user add user$i failed:" >&2
		cat "$tmp/ctl.log" >&2
		exit 2
	fi
	i=$((i + 1))
done

"$natterd" -c "$tmp/natter.yaml" >"$tmp/natterd.log" 2>&1 </dev/null &
server_pid=$!
i=0
until grep -q "natterd ready" "$tmp/natterd.log"; do
	if ! kill -0 "$server_pid" 2>/dev/null || [ $i -ge 300 ]; then
		echo "smoke: natterd did not start:" >&2
		cat "$tmp/natterd.log" >&2
		exit 2
	fi
	sleep 0.1
	i=$((i + 1))
done

passed=0
failed=0
common_rest="--domain localhost --password $password --smoke --quiet --duration 60"

# check NAME PYTHON-CONDITION -- natter-load ARGS...: runs natter-load and
# evaluates the condition with the JSON result bound to d.
check() {
	name=$1
	cond=$2
	shift 3
	# allow3=1: exit status 3 (the server lacks what the run needs) is an
	# answer too; the condition says which answer is right.
	rc=0
	# check_port / check_pid: another server than natterd (the stub).
	timeout 90 "$load" "$@" --port "${check_port:-$port}" --server-pid "${check_pid:-$server_pid}" \
		$common_rest >"$tmp/$name.json" 2>"$tmp/$name.err" || rc=$?
	[ "${allow3:-0}" = 1 ] && [ "$rc" = 3 ] && rc=0
	if [ "$rc" = 0 ] &&
		python3 - "$tmp/$name.json" "$cond" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2], {"d": d}) else 1)
EOF
	then
		passed=$((passed + 1))
		echo "ok   $name: $(tail -n 2 "$tmp/$name.err" | head -n 1)"
	else
		failed=$((failed + 1))
		echo "FAIL $name (want $cond)"
		sed 's/^/    /' "$tmp/$name.err"
		sed 's/^/    /' "$tmp/$name.json"
	fi
}

check idle 'd["logged_in"] == 10 and d["online_at_end"] == 10 and d["connections"]["failed"] == 0' \
	-- idle --clients 10 --hold 1
check login 'd["logins"] == 20 and d["login_failed"] == 0 and d["logins_per_s"] > 0 and d["p99_ms"] > 0' \
	-- login --logins 20 --users 10 --concurrency 4
check login-plain 'd["logins"] == 10 and d["login_failed"] == 0 and d["params"]["mech"] == "PLAIN"' \
	-- login --logins 10 --users 10 --mech plain --threads 2
check chat 'd["online"] == 10 and len(d["steps"]) == 2 and all(s["delivered"] > 0 and s["lost"] == 0 and s["latency_ms"]["p50"] > 0 for s in d["steps"]) and d["max_rate_p99_under_100ms"] > 0' \
	-- chat --pairs 5 --rates 50,100 --step-seconds 1
check muc 'd["rooms_ready"] == 1 and d["joined"] == 5 and d["join_failed"] == 0 and len(d["steps"]) == 2 and all(s["delivered"] == s["deliveries_expected"] == 5 * s["sent"] > 0 and s["lost"] == 0 and s["errors"] == 0 and s["latency_ms"]["p50"] > 0 for s in d["steps"]) and d["delivered_per_s_p99_under_50ms"] > 0 and d["server_cpu_us_per_delivery_p99_under_50ms"] >= 0' \
	-- muc --room-size 5 --senders 2 --rates 10,20 --step-seconds 1
check presence 'd["setup"]["users_complete"] == 10 and d["online"] == 10 and d["roster_both_avg"] == 4 and d["cycles"] > 0 and d["presence_received"] > 0' \
	-- presence --users 10 --first-user 11 --contacts 4 --setup-rosters --seconds 2

# The archive: 400 messages among user1..user20 sent over XMPP, then
# user1 and user2 page back 20 messages and query the newest page and the
# one 20 back. Without an archive in this build, every query must be
# refused as unsupported.
# Reconnects (issue 13): full, with natter's TLS session tickets offered
# back (--tls-resume), and the SM/FAST modes, which natter must either run
# completely or refuse cleanly as unsupported (exit 3), never half-do.
check reconnect 'd["supported"] and d["logged_in"] == 10 and d["reconnects"] == 10 and d["reconnect_failed"] == 0 and d["reconnects_per_s"] > 0 and d["p99_ms"] > 0 and d["tls_resumed"] == 0 and d["server_cpu_us_per_reconnect"] >= 0' \
	-- reconnect --clients 10 --mode full
check reconnect-tls 'd["reconnects"] == 10 and d["reconnect_failed"] == 0 and d["tls_resumed"] == 10' \
	-- reconnect --clients 10 --mode full --tls-resume
resumed_or_refused='(d["supported"] and d["reconnects"] == 10 and d["reconnect_failed"] == 0 and d["sm_resumed"] == 10 and d["tls_resumed"] == 10) or (not d["supported"] and d["errors"]["unsupported"] > 0 and d["reconnects"] == 0)'
allow3=1 check reconnect-resume "$resumed_or_refused" -- reconnect --clients 10 --mode resume
# fast: with SM inline in SASL2 every reconnect resumes its session;
# without (natter's SASL2 so far) each is FAST + Bind 2, a new session.
fast_or_refused='(d["supported"] and d["reconnects"] == 10 and d["reconnect_failed"] == 0 and d["tls_resumed"] == 10 and d["fast_used"] == 10 and d["sm_resumed"] in (0, 10) and d["sm_rebound"] == 0) or (not d["supported"] and d["errors"]["unsupported"] > 0 and d["reconnects"] == 0)'
allow3=1 check reconnect-fast "$fast_or_refused" -- reconnect --clients 10 --mode fast
allow3=1 check idle-sm '(d["supported"] and d["logged_in"] == 10 and d["online_at_end"] == 10) or (not d["supported"] and d["errors"]["unsupported"] == 10)' \
	-- idle --clients 10 --hold 1 --sm

# fast mode against fast_stub.py, a stand-in server with SASL2, FAST,
# Bind 2 and SM written from the XEPs, which checks the client strictly
# (until natterd has them): resumed, and with every resume refused, rebound.
for variant in resume refuse nosm; do
	refuse=0 nosm=0
	[ "$variant" = refuse ] && refuse=1
	[ "$variant" = nosm ] && nosm=1
	STUB_REFUSE_RESUME=$refuse STUB_NO_SM=$nosm python3 "$here/fast_stub.py" \
		"$tmp/data/certs/localhost.crt" "$tmp/data/certs/localhost.key" "$password" \
		>"$tmp/stub-$variant.out" 2>&1 &
	stub_pid=$!
	i=0
	while ! grep -q '^port' "$tmp/stub-$variant.out" && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	stub_port=$(awk '/^port/ { print $2 }' "$tmp/stub-$variant.out")
	case $variant in
	resume) cond='d["sm_resumed"] == 10 and d["sm_rebound"] == 0' ;;
	refuse) cond='d["sm_resumed"] == 0 and d["sm_rebound"] == 10' ;;
	nosm) cond='d["sm_resumed"] == 0 and d["sm_rebound"] == 0' ;;
	esac
	check_port=$stub_port check_pid=$stub_pid check "reconnect-fast-stub-$variant" \
		"d[\"supported\"] and d[\"reconnects\"] == 10 and d[\"reconnect_failed\"] == 0 and d[\"tls_resumed\"] == 10 and d[\"fast_used\"] == 10 and $cond" \
		-- reconnect --clients 10 --mode fast
	kill -TERM "$stub_pid" 2>/dev/null
	wait "$stub_pid" 2>/dev/null
	stub_pid=
done

if [ "$mam_on" = 1 ]; then
	mam_cond='d["archive"]["fill_received"] == 400 and d["supported"] and d["walk"]["clients_reached_deep"] == 2 and d["latest_results_avg"] == 10 and d["deep_results_avg"] == 10 and d["short_pages"] == 0 and d["query_errors"] == 0'
else
	mam_cond='d["archive"]["fill_received"] == 400 and not d["supported"] and d["unsupported"] == 2'
fi
check mam "$mam_cond" \
	-- mam --users 20 --messages 400 --heavy 2 --deep 20 --page 10 --queries 3 --fill
# PEP: user11 with 5 contacts (rosters over XMPP, after the presence check,
# whose rings they extend) publishes avatar metadata; every contact must
# hear of every publish, or, in a build without PEP, the publish must be
# refused as unsupported.
check pep '(d["supported"] and d["setup"]["contacts_both"] == 5 and d["first_publish_notified"] == 5 and len(d["steps"]) == 2 and all(s["publishes_incomplete"] == 0 and s["notifications"] == 5 * s["published"] > 0 for s in d["steps"])) or (not d["supported"] and d["publish_errors"] > 0 and d["unsupported"] > 0)' \
	-- pep --first-user 11 --contacts 5 --setup-rosters --rates 5,10 --step-seconds 1

# The server must have survived all of it and stop cleanly, without a
# sanitizer report (when built with them).
if ! kill -0 "$server_pid" 2>/dev/null; then
	failed=$((failed + 1))
	echo "FAIL natterd exited during the smoke run:"
	tail -n 20 "$tmp/natterd.log" | sed 's/^/    /'
else
	kill -TERM "$server_pid"
	wait "$server_pid"
	status=$?
	server_pid=
	if [ "$status" -ne 0 ] && [ "$status" -ne 143 ]; then
		failed=$((failed + 1))
		echo "FAIL natterd exited with status $status after SIGTERM"
		tail -n 20 "$tmp/natterd.log" | sed 's/^/    /'
	fi
fi
if grep -l -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$tmp"/*.err "$tmp/natterd.log" >"$tmp/san" 2>/dev/null; then
	failed=$((failed + 1))
	echo "FAIL sanitizer report in: $(cat "$tmp/san" | xargs -n1 basename | tr '\n' ' ')"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

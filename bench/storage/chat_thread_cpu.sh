#!/bin/bash
# The CPU natterd's threads spend per chat message, archive on or off:
# natter alone, one step of `natter-load chat` (1,000 pairs) at a fixed
# rate; each thread's CPU time (from /proc) is read 4 s into the step and
# again at its end, and printed per thread in seconds and in us per
# message, with the bytes natterd wrote to its files in that time. The
# storage thread is natter-store, the event loops natter-loopN.
#
#   bench/storage/chat_thread_cpu.sh [RATE [SECONDS [on|off]]]
#
# Defaults: 20000 msgs/s, 12 s, archive on. NATTER_BUILD names the build
# directory of natterd and natterctl (default build/); natter-load comes
# from build/ unless NATTER_LOAD names it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rate=${1:-20000}
secs=${2:-12}
mam=${3:-on}
[ "$secs" -gt 6 ] || { echo "SECONDS must be more than 6" >&2; exit 2; }
export NATTER_BUILD=${NATTER_BUILD:-$repo/build} BENCH_MAM=$mam
load=${NATTER_LOAD:-$repo/build/natter-load}
dir=$(mktemp -d /tmp/natter-cpu.XXXXXX)
trap 'bash "$repo/bench/peers/natter/server.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bash "$repo/bench/peers/natter/server.sh" start "$dir" "$port" >/dev/null 2>&1
bash "$repo/bench/peers/natter/server.sh" users "$dir" user 2000 pw >/dev/null
pid=$(cat "$dir/server.pid")
"$load" chat --port "$port" --domain localhost --users-prefix user --password pw \
	--server-pid "$pid" --quiet --pairs 1000 --rates "$rate" --step-seconds "$secs" \
	--concurrency 100 >"$dir/load.json" 2>"$dir/load.txt" &
load_pid=$!
# CPU ticks per thread name, summed (one line per name).
snap() {
	for t in /proc/"$pid"/task/*; do
		echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
	done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
# The window is a span of the step, not an event: the logins take about
# 3 s on this kind of machine, so it starts 4 s in and ends with the step.
# Bytes natterd had written to its files (the store, its WAL, the log).
written() { awk '$1 == "write_bytes:" {print $2}' /proc/"$pid"/io; }
sleep 4
snap >"$dir/a"
w0=$(written)
sleep $((secs - 4))
snap >"$dir/b"
w1=$(written)
wait "$load_pid" || true
hz=$(getconf CLK_TCK)
join "$dir/a" "$dir/b" | awk -v r="$rate" -v s=$((secs - 4)) -v hz="$hz" \
	'$3 > $2 {d = ($3 - $2) / hz; printf "%-16s %6.2f s = %5.1f us/msg\n", $1, d, d * 1e6 / (r * s)}'
awk -v a="$w0" -v b="$w1" -v r="$rate" -v s=$((secs - 4)) \
	'BEGIN {printf "%-16s %6.1f MB = %5.0f bytes/msg\n", "written", (b - a) / 1e6, (b - a) / (r * s)}'
head -n 1 "$dir/load.txt"

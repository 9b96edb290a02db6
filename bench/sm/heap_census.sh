#!/bin/bash
# Live heap and RSS per idle client, with and without stream management
# (issue 13: "idle memory per client must not grow by more than 1 KiB with
# SM enabled"). RSS alone cannot tell what a session holds from what
# the allocator keeps between live objects; its own statistics can.
#
# Starts natterd the way bench/run.sh does (bench/peers/natter/server.sh,
# NATTER_BUILD, default build/), logs in CLIENTS clients with
# `natter-load idle` (SCRAM, bind, roster, presence; with sm, stream
# management with resumption enabled before the roster), waits SETTLE
# seconds after they are all in (natterd frees idle parsers and buffers
# after 2 s, and asks an ack after 2 s of silence), then reads natterd's
# RSS from /proc, and the heap in use and held from `natterctl memory`
# (the allocator's statistics: jemalloc's, or glibc's mallinfo2). Prints
# one line per mode; the figures are (after - before the logins) / CLIENTS.
#
#   bench/sm/heap_census.sh [CLIENTS [SETTLE]]      # default 5000 10
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
clients=${1:-5000}
settle=${2:-10}
build=${NATTER_BUILD:-$repo/build}
port=${BENCH_PORT:-15222}
work=$(mktemp -d /tmp/natter-heap.XXXXXX)
cleanup() {
	[ -f "$work/srv/server.pid" ] && "$repo/bench/peers/natter/server.sh" stop "$work/srv" >/dev/null 2>&1
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
export NATTER_BUILD=$build BENCH_MAM=off BENCH_PEP=off BENCH_SM=on

heap() { # "ALLOCATOR IN_USE HELD", one snapshot of the running natterd
	"$build/natterctl" -c "$work/srv/natter.yaml" memory |
		awk '{v[$1] = $2} END {print v["allocator"], v["heap_in_use"], v["heap_held"]}'
}
rss() { awk '/^VmRSS/{print $2 * 1024}' "/proc/$1/status"; }

for mode in nosm sm; do
	rm -rf "$work/srv"
	mkdir -p "$work/srv"
	"$repo/bench/peers/natter/server.sh" start "$work/srv" "$port" >/dev/null
	"$repo/bench/peers/natter/server.sh" users "$work/srv" u "$clients" benchpass >/dev/null
	pid=$(cat "$work/srv/server.pid")
	read -r allocator h0 held0 <<<"$(heap)"
	r0=$(rss "$pid")
	mkfifo "$work/hold"
	opt=""
	[ "$mode" = sm ] && opt=--sm
	"$build/natter-load" idle --port "$port" --domain localhost --users-prefix u \
		--password benchpass --threads 2 --duration 300 --server-pid "$pid" --quiet \
		--clients "$clients" $opt --concurrency 100 --hold 300 --stdin \
		<"$work/hold" >"$work/load.json" 2>"$work/load.err" &
	load=$!
	exec 3>"$work/hold"
	until grep -q '^ready' "$work/load.err"; do
		kill -0 "$load" 2>/dev/null || { cat "$work/load.err" >&2; exit 1; }
		sleep 0.2
	done
	sleep "$settle"
	read -r allocator h1 held1 <<<"$(heap)"
	r1=$(rss "$pid")
	exec 3>&-
	wait "$load" || true
	rm -f "$work/hold"
	"$repo/bench/peers/natter/server.sh" stop "$work/srv" >/dev/null
	printf '%-4s %d clients (%s): heap in use %d B, heap held %d B, RSS %d B per client\n' \
		"$mode" "$clients" "$allocator" $(((h1 - h0) / clients)) $(((held1 - held0) / clients)) \
		$(((r1 - r0) / clients))
done

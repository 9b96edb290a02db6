#!/bin/sh
# Runs a libFuzzer binary for a while on the XML seed corpus.
#
#   scripts/run-fuzz.sh BINARY SECONDS [extra libFuzzer options...]
#
# The seeds in fuzz/corpus/xml are copied into a temporary working corpus,
# so the repository is never written to; the working corpus is removed at
# the end. Crash inputs and the fuzzer's log are kept in a directory under
# ${TMPDIR:-/tmp} that is named in the summary. Prints one summary line;
# exits 0 when the run ended without a crash, non-zero otherwise.
set -eu

usage() {
	echo "usage: $0 BINARY SECONDS [libFuzzer options...]" >&2
	exit 2
}

[ $# -ge 2 ] || usage
bin=$1
secs=$2
shift 2
case $secs in
'' | *[!0-9]*) usage ;;
esac
[ -x "$bin" ] || { echo "$0: $bin is not an executable" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
seeds=$root/fuzz/corpus/xml
[ -d "$seeds" ] || { echo "$0: no seed corpus at $seeds" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/natter-fuzz.XXXXXX")
keep=$(mktemp -d "${TMPDIR:-/tmp}/natter-fuzz-out.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
cp "$seeds"/* "$work/corpus/"
n_seeds=$(ls "$work/corpus" | wc -l)
log=$keep/fuzz.log
name=$(basename "$bin")

# XML tokens the mutator would take long to guess byte by byte.
cat >"$work/xml.dict" <<'EOF'
"<?xml version='1.0'?>"
"encoding='UTF-8'"
"<stream:stream"
"</stream:stream>"
"xmlns='jabber:client'"
"xmlns:stream='http://etherx.jabber.org/streams'"
"xmlns=''"
"xmlns:"
"xml:lang="
"<restart/>"
"<starttls/>"
"<stop/>"
"<![CDATA["
"]]>"
"<!--"
"-->"
"<?"
"?>"
"<!DOCTYPE"
"<!ENTITY"
"&amp;"
"&lt;"
"&gt;"
"&apos;"
"&quot;"
"&#9;"
"&#10;"
"&#13;"
"&#x"
"/>"
"</"
"\xef\xbb\xbf"
"\xff\xfe"
"\xc3\xa9"
"\xf0\x9f\x98\x80"
EOF

# libFuzzer writes crash-*, leak-*, timeout-* and oom-* files at the
# artifact prefix; by default that is the current directory.
status=0
"$bin" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
	-dict="$work/xml.dict" -artifact_prefix="$keep/" "$@" "$work/corpus" >"$log" 2>&1 || status=$?

stat() {
	sed -n "s/^stat::$1:[[:space:]]*//p" "$log" | tail -n 1
}
runs=$(stat number_of_executed_units)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
corp=$(ls "$work/corpus" | wc -l)
artifacts=$(ls "$keep" | grep -v '^fuzz\.log$' || true)

if [ "$status" -eq 0 ] && [ -z "$artifacts" ]; then
	rm -rf "$keep"
	echo "$name: ok: ${runs:-?} runs in ${secs}s, cov ${cov:-?}, ft ${ft:-?}, corpus $n_seeds -> $corp"
	exit 0
fi
[ "$status" -ne 0 ] || status=1
echo "$name: FAILED (exit $status) after ${runs:-?} runs: $(echo $artifacts | tr '\n' ' ')in $keep (log: $log)"
exit "$status"

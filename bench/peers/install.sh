#!/bin/sh
# Installs the Debian packages of bench/peers/packages.txt that are missing.
# Debian's prosody and ejabberd packages start their system-wide services on
# 5222/5269/5280 when installed on a machine with an init system; the
# benchmark runs its own instances on its own ports, so service starts are
# denied for the duration of the install (policy-rc.d, exit code 101),
# unless the machine already has a policy-rc.d of its own.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
missing=""
for pkg in $(grep -v '^#' "$here/packages.txt"); do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $pkg"
	fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing packages:$missing (run as root, or install them with apt-get)" >&2
	exit 1
fi
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing

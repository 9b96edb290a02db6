#!/bin/sh
# Installs the Debian packages named in the list files given as arguments,
# skipping the apt run entirely when every package is already installed.
set -eu
here=$(dirname "$0")
missing=""
for list in "$@"; do
	for pkg in $(grep -v '^#' "$here/$list"); do
		if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
			missing="$missing $pkg"
		fi
	done
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing packages:$missing (run as root, or install them with apt-get)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Servers the tests start themselves (slapd, krb5kdc, Prosody, ejabberd)
# must not also start as system services: those would take ports such as
# 5269 on every address. policy-rc.d (exit 101) tells the packages' scripts
# not to start anything while they install.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"
	chmod 755 "$policy"
	made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing

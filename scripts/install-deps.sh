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
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing

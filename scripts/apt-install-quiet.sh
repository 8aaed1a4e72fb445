#!/usr/bin/env bash
# apt-install-quiet.sh PACKAGE...: apt-get install (no recommends, no
# prompts) that neither starts a service on this host nor leaves one
# enabled. Run as root; the root is $ROOT (default /: tests give a chroot's).
#
# Starting: a policy-rc.d answering 101 ("action forbidden") is in place for
# the install, as invoke-rc.d and deb-systemd-invoke consult it
# (invoke-rc.d(8), /usr/share/doc/init-system-helpers/README.policy-rc.d);
# a policy-rc.d already there is left as it is.
# Enabling: deb-systemd-helper enables a package's units on first install
# whatever policy-rc.d says (it only creates symlinks, see
# deb-systemd-helper(1)), so the unit files enabled after the install but
# not before are disabled again (systemctl --root, offline; no daemon asked).
# deb-systemd-helper then sees them as disabled by the admin and keeps them
# so on upgrades ("was-enabled").
set -euo pipefail
root=${ROOT:-/}
policy=$root/usr/sbin/policy-rc.d

# Without systemctl (no systemd on the host) nothing can be enabled.
enabled() {
	command -v systemctl >/dev/null || return 0
	systemctl --root="$root" list-unit-files --state=enabled --no-legend | awk '{print $1}' | sort
}

before=$(enabled)
ours=
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\n# scripts/apt-install-quiet.sh: no service starts during the install\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	ours=1
fi
cleanup() { [[ -z $ours ]] || rm -f "$policy"; }
trap cleanup EXIT

aptroot=()
[[ $root == / ]] || aptroot=(chroot "$root")
DEBIAN_FRONTEND=noninteractive "${aptroot[@]}" apt-get install -y -q --no-install-recommends "$@"

new=$(comm -13 <(echo "$before") <(enabled) | grep -v '^$' || true)
if [[ -n $new ]]; then
	echo "apt-install-quiet: disabling what the install enabled: $(tr '\n' ' ' <<<"$new")" >&2
	# shellcheck disable=SC2086 # one unit a word
	systemctl --root="$root" disable $new >&2
fi

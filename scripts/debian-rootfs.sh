#!/usr/bin/env bash
# Prints the path of a cached Debian 12 (bookworm) root tree as a tarball,
# making it with debootstrap the first time. Shared by the example, the
# tests and the benchmarks, and by several checkouts on one machine: the
# cache lives outside the clone ($IMAGEFACTORY_CACHE, default
# /var/cache/imagefactory) and concurrent callers wait on a lock.
#
#   scripts/debian-rootfs.sh            # -> /var/cache/imagefactory/debian-12-rootfs.tar.zst
#   REBUILD=1 scripts/debian-rootfs.sh  # debootstrap again
#
# The tree is a small but real system: systemd as init, udev, sshd, apt;
# no host keys (a unit makes them at first boot), an empty machine-id, DHCP
# through systemd-networkd, root filesystem by the label cloudimg-rootfs.
# Extra packages: DEBIAN_INCLUDE_EXTRA=pkg1,pkg2 makes a separate tarball.
# Needs root. Progress goes to stderr; only the path goes to stdout.
set -euo pipefail

suite=bookworm
include=systemd-sysv,udev,openssh-server,netbase,iproute2,ca-certificates
[[ -n ${DEBIAN_INCLUDE_EXTRA:-} ]] && include=$include,$DEBIAN_INCLUDE_EXTRA
label=cloudimg-rootfs
# Bump when the configuration below changes: the cached tarball is redone.
tree_version=2
cache=${IMAGEFACTORY_CACHE:-/var/cache/imagefactory}

log() { printf '==> debian-rootfs: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

((EUID == 0)) || die "run as root (debootstrap makes device nodes and owners)"
for tool in debootstrap zstd tar flock; do
	command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs it)"
done
mkdir -p "$cache"

want_params="suite=$suite variant=minbase include=$include tree=$tree_version"
key=$(printf '%s' "$want_params" | sha256sum | cut -c1-12)
name=debian-12-rootfs
[[ -n ${DEBIAN_INCLUDE_EXTRA:-} ]] && name=$name-$key
tarball=$cache/$name.tar.zst
params=$cache/$name.params

exec 9>"$cache/.$name.lock"
flock 9

[[ ${REBUILD:-} == 1 ]] && rm -f "$tarball" "$params"
if [[ -f $tarball && -f $params && "$(cat "$params")" == "$want_params" ]]; then
	echo "$tarball"
	exit 0
fi
rm -f "$tarball" "$params"

work=$(mktemp -d "$cache/.work.XXXXXX")
cleanup() {
	# debootstrap mounts /proc and /sys in the tree; a failed run must leave
	# none of them behind before the tree is removed.
	if [[ -d $work ]]; then
		{ findmnt -rn -o TARGET | grep -F "$work/" | sort -r || true; } | while read -r m; do umount -l "$m" || true; done
		rm -rf "$work"
	fi
	return 0
}
trap cleanup EXIT

tree=$work/tree
log "debootstrap $suite ($include), from debootstrap's default mirror"
# debootstrap does not resolve virtual packages: cloud-init's
# python3-cryptography needs python3-cffi-backend-api-*, provided by
# python3-cffi-backend, which must be named (else dpkg leaves cloud-init
# unconfigured and debootstrap fails). Not part of the cache key.
bootstrap_include=$include
[[ ,$include, == *,cloud-init,* ]] && bootstrap_include=$bootstrap_include,python3-cffi-backend
# No mirror argument: debootstrap's built-in default.
debootstrap --variant=minbase --include="$bootstrap_include" "$suite" "$tree" >&2

log "configuring the tree"
# apt sources as Debian's cloud images have them: the release, its updates
# and the security archive, on the mirror debootstrap used.
mirror=$(awk '$1 == "deb" { print $2; exit }' "$tree/etc/apt/sources.list")
[[ -n $mirror ]] || die "no mirror in $tree/etc/apt/sources.list"
cat >"$tree/etc/apt/sources.list.d/debian.sources" <<-EOF
	Types: deb
	URIs: $mirror
	Suites: $suite $suite-updates
	Components: main
	Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

	Types: deb
	URIs: ${mirror%/}-security
	Suites: $suite-security
	Components: main
	Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm "$tree/etc/apt/sources.list"
# Root filesystem by label, as cloud images do; the builder finds it by this
# label too.
printf 'LABEL=%s\t/\text4\tdefaults,discard,errors=remount-ro\t0\t1\n' "$label" >"$tree/etc/fstab"
echo debian >"$tree/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$tree/etc/hosts"
# debootstrap copied the host's resolv.conf in; an image carries none of the host.
: >"$tree/etc/resolv.conf"
# Each instance makes its own machine id on first boot.
: >"$tree/etc/machine-id"
rm -f "$tree/var/lib/dbus/machine-id"
# DHCP on any wired interface through systemd-networkd (part of systemd).
cat >"$tree/etc/systemd/network/50-dhcp.network" <<-'EOF'
	[Match]
	Name=en* eth*

	[Network]
	DHCP=yes
EOF
chroot "$tree" systemctl enable systemd-networkd.service >&2
# No host keys in an image: every instance makes its own before sshd starts.
rm -f "$tree"/etc/ssh/ssh_host_*
cat >"$tree/etc/systemd/system/ssh-host-keys.service" <<-'EOF'
	[Unit]
	Description=Generate missing SSH host keys
	Before=ssh.service
	ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

	[Service]
	Type=oneshot
	ExecStart=/usr/bin/ssh-keygen -A

	[Install]
	WantedBy=multi-user.target
EOF
chroot "$tree" systemctl enable ssh-host-keys.service >&2
# Small: no package caches or indexes (apt-get update brings them back).
chroot "$tree" apt-get clean
rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/log/*.log "$tree"/var/cache/debconf/*-old

log "caching the tree as $tarball"
tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' --acls --zstd -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
echo "$want_params" >"$params"
echo "$tarball"

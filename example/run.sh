#!/usr/bin/env bash
# The example end to end (`make example`, as root, from the repository root):
#
#   1. install the freshly built plugin into a private plugin directory
#   2. make the Debian 12 base image (example/make-base-image.sh; cached)
#   3. packer build -force example/build.pkr.hcl
#   4. check the image: format and size, the page and nginx in its root
#      filesystem (read with debugfs, no mount), nothing left on the host
#
# `make example` builds ./packer-plugin-imagefactory and bin/packer first.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
example=$root/example
cache=$example/cache
packer=${PACKER:-$root/bin/packer}
plugin=$root/packer-plugin-imagefactory
output_dir=$example/output-debian-web
artifact=$output_dir/debian-12-web.qcow2
build_name=debian-web

log() { printf '\n==> example: %s\n' "$*"; }
die() {
	printf '\n==> example: FAILED: %s\n' "$*" >&2
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

((EUID == 0)) || die "run as root (loop devices, mounts, chroot, debootstrap)"
[[ -x $packer ]] || die "$packer not found (make tools builds it)"
[[ -x $plugin ]] || die "$plugin not found (make build builds it)"
for tool in qemu-img sfdisk debugfs dumpe2fs e2fsck losetup findmnt; do
	command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done
t_start=$(now)
mkdir -p "$cache"

# A private plugin directory and Packer cache, so the example touches
# nothing of the user's Packer setup. No checkpoint calls to HashiCorp.
export PACKER_PLUGIN_PATH=$cache/packer-plugins
export PACKER_CACHE_DIR=$cache/packer_cache
export CHECKPOINT_DISABLE=1

log "installing the plugin into $PACKER_PLUGIN_PATH"
# `packer init` would need GitHub; installing the local binary works offline.
rm -rf "$PACKER_PLUGIN_PATH"
"$packer" plugins install --path "$plugin" github.com/imagefactory/imagefactory
"$packer" plugins installed

log "making the base image"
t0=$(now)
"$example/make-base-image.sh"
t_base=$(since "$t0")

# What the host holds before the build, to tell what the build left.
snapshot() { { losetup -l -n -O NAME,BACK-FILE 2>/dev/null || true; } | sort; }
loops_before=$(snapshot)
mounts_before=$(findmnt -rn -o TARGET | sort)

log "packer build"
build_log=$cache/last-build.log
t0=$(now)
if ! "$packer" build -force "$example/build.pkr.hcl" 2>&1 | tee "$build_log"; then
	die "packer build failed (log: $build_log)"
fi
t_build=$(since "$t0")

log "checking $artifact"
t0=$(now)
failures=0
check() { # check DESCRIPTION COMMAND...: runs the command, reports ok/FAIL
	local what=$1
	shift
	if "$@"; then
		printf '  ok    %s\n' "$what"
	else
		printf '  FAIL  %s\n' "$what"
		failures=$((failures + 1))
	fi
}

[[ -f $artifact ]] || die "no artifact at $artifact"
info=$(qemu-img info "$artifact")
echo "$info"
format=$(sed -n 's/^file format: //p' <<<"$info")
vsize=$(sed -n 's/^virtual size: .*(\([0-9]*\) bytes)$/\1/p' <<<"$info")
check "format is qcow2 (got $format)" test "$format" = qcow2
check "virtual size is 3 GiB (got $vsize)" test "$vsize" = $((3 * 1024 * 1024 * 1024))
check "no working disk left in $output_dir" test -z "$(find "$output_dir" -name '*.work.raw*')"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
raw=$tmp/img.raw
qemu-img convert -O raw "$artifact" "$raw"
sfdisk -d "$raw"
# The root partition's byte offset, from the table (not assumed).
start=$(sfdisk -d "$raw" | sed -n 's/^.*1 : start= *\([0-9]*\),.*$/\1/p')
size=$(sfdisk -d "$raw" | sed -n 's/^.*1 : start=.*size= *\([0-9]*\),.*$/\1/p')
[[ -n $start ]] || die "no partition 1 in $artifact"
fs="$raw?offset=$((start * 512))" # e2fsprogs' io option: no loop device needed
check "partition 1 grew to the end of the disk" test $(((start + size) * 512)) = "$vsize"
check "the filesystem is clean (e2fsck -fn)" e2fsck -fn "$fs"

# debugfs -R prints to stdout; its banner goes to stderr.
in_image() { debugfs -R "$1" "$fs" 2>/dev/null; }
blocks=$(dumpe2fs -h "$fs" 2>/dev/null | sed -n 's/^Block count: *//p')
bsize=$(dumpe2fs -h "$fs" 2>/dev/null | sed -n 's/^Block size: *//p')
check "the ext4 filesystem fills the partition ($((blocks * bsize)) bytes)" test $((blocks * bsize)) = $((size * 512))
check "/var/www/html/index.html is example/files/index.html" \
	cmp -s <(in_image 'cat /var/www/html/index.html') "$example/files/index.html"
info_txt=$(in_image 'cat /var/www/html/build-info.txt')
check "/var/www/html/build-info.txt written by the shell provisioner: $info_txt" test -n "$info_txt"
check "nginx is installed (/usr/sbin/nginx)" grep -q 'Type: regular' <(in_image 'stat /usr/sbin/nginx')
check "nginx is enabled (multi-user.target.wants/nginx.service)" \
	grep -q 'nginx.service' <(in_image 'ls /etc/systemd/system/multi-user.target.wants')
check "the elements provisioner ran web-info: $(in_image 'cat /var/www/html/elements.txt')" \
	grep -q '^elements: web-info runtime-ssh-host-keys ' <(in_image 'cat /var/www/html/elements.txt')
check "runtime-ssh-host-keys enabled ssh-keygen.service" \
	grep -q 'ssh-keygen.service' <(in_image 'ls /etc/systemd/system/multi-user.target.wants')
check "/tmp/in_target.d is not left in the image" grep -q 'File not found' <(debugfs -R 'stat /tmp/in_target.d' "$fs" 2>&1)
check "the builder's policy-rc.d is gone" grep -q 'File not found' <(debugfs -R 'stat /usr/sbin/policy-rc.d' "$fs" 2>&1)
check "resolv.conf is the base image's (empty)" test -z "$(in_image 'cat /etc/resolv.conf')"
check "still Debian 12 ($(in_image 'cat /etc/debian_version'))" grep -q '^12\.' <(in_image 'cat /etc/debian_version')

# Nothing of the build on the host: no loop device on its working disk, no
# mount of its root or chroot. (Other builds may run on this host, so the
# check looks at what is new and belongs to this build.)
new_loops=$(comm -13 <(echo "$loops_before") <(snapshot) | grep -F "$output_dir" || true)
new_mounts=$(comm -13 <(echo "$mounts_before") <(findmnt -rn -o TARGET | sort) | grep -F "/$build_name-" || true)
check "no loop device left (losetup -a)${new_loops:+: $new_loops}" test -z "$new_loops"
check "no mount left (findmnt)${new_mounts:+: $new_mounts}" test -z "$new_mounts"
t_check=$(since "$t0")

read_timing() { sed -n "s/^$1 //p" "$cache/base-image.timings" 2>/dev/null || true; }
secs() { [[ $1 == cached || -z $1 ]] && echo "${1:-?}" || echo "${1}s"; }
apparent=$(stat -c %s "$artifact")
allocated=$(($(stat -c %b "$artifact") * $(stat -c %B "$artifact")))
cat <<EOF

==> example: summary
  base image    $cache/debian-12-base.qcow2
    debootstrap   $(secs "$(read_timing debootstrap)")
    disk          $(secs "$(read_timing disk)")
    total         ${t_base}s
  packer build  ${t_build}s  (log: $build_log)
  checks        ${t_check}s, $failures failed
  artifact      $artifact
    qcow2 file    $((apparent / 1024 / 1024)) MiB ($((allocated / 1024 / 1024)) MiB allocated), virtual $((vsize / 1024 / 1024 / 1024)) GiB
  total         $(since "$t_start")s
EOF
((failures == 0)) || die "$failures check(s) failed"
echo "==> example: OK"

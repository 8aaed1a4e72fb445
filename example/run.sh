#!/usr/bin/env bash
# The example factory end to end (`make example`, as root, from the
# repository root):
#
#   1. install the freshly built plugin into a private plugin directory
#   2. packer build -force example/build.pkr.hcl: debootstrap (cached) ->
#      bootable GPT disk -> chroot provisioning (elements, nginx) -> scrub ->
#      sparsify (shrink, zstd qcow2) -> imagefactory-boottest: the image
#      booted under QEMU on a throwaway overlay and checked from outside
#      (nginx answers, the SSH host keys are new, machine-id made at boot)
#   3. check the image offline: format, compression, table, a clean
#      filesystem, nginx installed and enabled, nothing of the factory left
#      (read with debugfs and sfdisk: no mount), nothing left on the host
#
# The terminal gets one line per stage (time since the start, and sizes
# where the stage makes a file), the failed checks and the summary; the
# whole output of every tool (Packer, debootstrap, apt in the image) goes
# to example/cache/example.log, kept until the next run.
#
# `make example` builds ./packer-plugin-imagefactory and bin/packer first.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
example=$root/example
cache=$example/cache
packer=${PACKER:-$root/bin/packer}
plugin=${PLUGIN:-$root/packer-plugin-imagefactory} # the acceptance test passes the one it built
output_dir=$example/output-debian-web
artifact=$output_dir/debian-12-web.qcow2
build_name=debian-web

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
t_start=$(now)
mkdir -p "$cache"
full_log=$cache/example.log
# fd 3: the terminal; stdout and stderr: the full log.
exec 3>&1 4>&2 >"$full_log" 2>&1
# both copies its input to the log and to the terminal, through fd 3 itself
# (tee /dev/fd/3 would reopen it: with O_TRUNC, emptying a file the
# terminal is redirected to; with O_APPEND, at another offset than fd 3's).
both() {
	local l
	while IFS= read -r l; do
		printf '%s\n' "$l"
		printf '%s\n' "$l" >&3
	done
}
# log MESSAGE: one stage line, on the terminal and in the log.
log() {
	local line
	line=$(printf '%7ss  %s' "$(since "$t_start")" "$*")
	printf '\n==> example: %s\n' "$line"
	printf '%s\n' "$line" >&3
}
die() {
	printf '\n==> example: FAILED: %s\n' "$*"
	printf '==> example: FAILED: %s\n    full log: %s\n' "$*" "$full_log" >&4
	exit 1
}
printf '==> example: the full log is %s\n' "$full_log" >&3

((EUID == 0)) || die "run as root (debootstrap, loop devices, mounts, chroot)"
[[ -x $packer ]] || die "$packer not found (make tools builds it)"
[[ -x $plugin ]] || die "$plugin not found (make build builds it)"
for tool in qemu-img sfdisk sgdisk debugfs e2fsck losetup findmnt sha256sum qemu-system-x86_64 debootstrap; do
	command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done

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

# What the host holds before the build, to tell what the build left.
snapshot() { { losetup -l -n -O NAME,BACK-FILE 2>/dev/null || true; } | sort; }
loops_before=$(snapshot)
mounts_before=$(findmnt -rn -o TARGET | sort)

log "packer build"
build_log=$cache/last-build.log
t0=$(now)
# Packer's lines that start or end a stage go to the terminal too.
stages() {
	local l
	while IFS= read -r l; do
		printf '%s\n' "$l"
		# Packer's "Running post-processor:  (type X)" has an empty name.
		l=$(sed 's/\x1b\[[0-9;]*m//g; s/^==> [^:]*: //; s/^Running post-processor: *(type \(.*\))$/Running post-processor \1/' <<<"$l")
		case $l in
		*"Root tree made by debootstrap"* | *"Root tree found in the cache"* | "Working disk made in "* | "Provisioning with "* | \
			"Provisioning done in "* | "Wrote the SBOM "* | "Image /"* | \
			"Running post-processor"* | *"Every change is listed in"* | "Trimmed the free space in "* | "  partition "*": trimmed "* | *"Shrank the root filesystem"* | "Wrote "*" ("*") in "* | \
			"The kernel started "* | "Still booting, "* | "Login prompt on the serial console "* | "SSH as "*": met "* | \
			*"Boot test passed"* | *"Boot test failed"* | *"Build '"*"' errored"* | "Some builds didn't complete"*)
			log "$l"
			;;
		esac
	done
}
if ! "$packer" build -color=false -force "$example/build.pkr.hcl" 2>&1 | tee "$build_log" | stages; then
	die "packer build failed (log: $build_log)"
fi
t_build=$(since "$t0")
# The builder says how long debootstrap took, or that the tree was cached.
t_debootstrap=$(sed -n 's/.*Root tree made by debootstrap in \([0-9hms.]*\).*/\1/p' "$build_log" | tail -1)
grep -q 'Root tree found in the cache' "$build_log" && t_debootstrap=cached

log "checking $artifact offline"
t0=$(now)
# shellcheck source=example/checks.sh
source "$example/checks.sh"

[[ -f $artifact ]] || die "no artifact at $artifact"
info=$(qemu-img info "$artifact")
echo "$info"
format=$(sed -n 's/^file format: //p' <<<"$info")
compression=$(sed -n 's/^ *compression type: //p' <<<"$info")
vsize=$(sed -n 's/^virtual size: .*(\([0-9]*\) bytes)$/\1/p' <<<"$info")
check "format is qcow2 (got $format)" test "$format" = qcow2
check "compressed with zstd (got ${compression:-none})" test "$compression" = zstd
shrank=$(grep -o 'Shrank the root filesystem.*' "$build_log" | sed 's/\x1b\[[0-9;]*m//g' || true)
check "shrunk by sparsify to $((vsize >> 20)) MiB${shrank:+: $shrank}" test -n "$shrank"
check "the checksum file beside it matches" sh -c "cd '$output_dir' && sha256sum --quiet -c '$(basename "$artifact").sha256'"
check "no raw working disk or half-written file left in $output_dir" \
	test -z "$(find "$output_dir" -name '*.raw*' -o -name '.*' -type f)"
check "the scrub report is there ($(basename "$artifact" .qcow2).scrub.json)" test -s "$output_dir/debian-12-web.scrub.json"
check "the SBOM beside it lists nginx ($(basename "$artifact").spdx.json)" grep -q '"name": "nginx"' "$artifact.spdx.json"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
raw=$tmp/img.raw
qemu-img convert -O raw "$artifact" "$raw"
sfdisk -d "$raw"
check "the GPT is valid (sgdisk -v)" sh -c "sgdisk -v '$raw' | grep -q 'No problems found'"
check "partition 1 is a BIOS boot partition" sh -c "sfdisk -d '$raw' | grep -q '1 : .*type=21686148-6449-6E6F-744E-656564454649'"
check "partition 2 is an EFI system partition" sh -c "sfdisk -d '$raw' | grep -q '2 : .*type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B'"
# The root is the last partition: its byte offset from the table.
offset=$(root_offset "$raw") || die "no partition in $artifact"
fs="$raw?offset=$offset" # e2fsprogs' io option: no loop device needed
check "the root filesystem is clean (e2fsck -fn)" e2fsck -fn "$fs"

# debugfs -R prints to stdout; its banner goes to stderr.
in_image() { debugfs -R "$1" "$fs" 2>/dev/null; }
absent() { grep -q 'File not found' <(debugfs -R "stat $1" "$fs" 2>&1); }
check "the root is labelled cloudimg-rootfs" test "$(blkid -p -O $offset -s LABEL -o value "$raw")" = cloudimg-rootfs
check "GRUB's config boots the image's kernel with a serial console" \
	grep -q 'console=ttyS0' <(in_image 'cat /boot/grub/grub.cfg')
check "/etc/fstab mounts / by label" grep -q '^LABEL=cloudimg-rootfs' <(in_image 'cat /etc/fstab')
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
check "no SSH host key of the factory left" test -z "$(in_image 'ls -p /etc/ssh' | tr -s ' \t' '\n\n' | grep '^ssh_host_')"
check "/etc/machine-id is \"uninitialized\" (systemd makes one at first boot)" test "$(in_image 'cat /etc/machine-id')" = uninitialized
check "/tmp/in_target.d is not left in the image" absent /tmp/in_target.d
check "the builder's policy-rc.d is gone" absent /usr/sbin/policy-rc.d
check "resolv.conf is the tree's (empty)" test -z "$(in_image 'cat /etc/resolv.conf')"
check "still Debian 12 ($(in_image 'cat /etc/debian_version'))" grep -q '^12\.' <(in_image 'cat /etc/debian_version')
rm -f "$raw"

# Nothing of the build on the host: no loop device on its working disk, no
# mount of its root or chroot. (Other builds may run on this host, so the
# check looks at what is new and belongs to this build.)
new_loops=$(comm -13 <(echo "$loops_before") <(snapshot) | grep -F "$output_dir" || true)
new_mounts=$(comm -13 <(echo "$mounts_before") <(findmnt -rn -o TARGET | sort) | grep -F "/$build_name-" || true)
check "no loop device left (losetup -a)${new_loops:+: $new_loops}" test -z "$new_loops"
check "no mount left (findmnt)${new_mounts:+: $new_mounts}" test -z "$new_mounts"
t_check=$(since "$t0")

# The boot test ran in the build (imagefactory-boottest): it says how long
# it took and under which accelerator, and keeps the serial console.
boot=$(sed 's/\x1b\[[0-9;]*m//g' "$build_log" | sed -n 's/.*Boot test passed in \([0-9hms.]*\) (\([a-z]*\); waits met \([0-9hms.]*\) after power-on).*/\1 under \2, waits met \3 after power-on/p' | tail -1)
check "the boot test passes in the build (imagefactory-boottest${boot:+: $boot}; log: $build_log)" test -n "$boot"
console=$output_dir/debian-12-web.console.log
check "the boot test's serial console is kept ($(basename "$console"))" grep -q 'login:' "$console"
check "the console shows systemd's first boot (machine-id \"uninitialized\")" grep -q 'Detected first boot' "$console"

log "checks: $(grep -c '^  ok    ' "$full_log") ok, $failures failed"
apparent=$(stat -c %s "$artifact")
allocated=$(($(stat -c %b "$artifact") * $(stat -c %B "$artifact")))
{
	cat <<SUMMARY

==> example: summary
  packer build     ${t_build}s  (log: $build_log)
    debootstrap    ${t_debootstrap:-?}
  offline checks   ${t_check}s
  boot test        ${boot:-did not pass} (in the packer build)
  artifact         $artifact
    qcow2 file     $((apparent >> 20)) MiB ($((allocated >> 20)) MiB allocated), virtual $((vsize >> 20)) MiB
  total            $(since "$t_start")s, $failures failed check(s)
SUMMARY
} | both
grep '^  FAIL  ' "$full_log" >&3 || true
((failures == 0)) || die "$failures check(s) failed"
echo "==> example: OK" | both

#!/usr/bin/env bash
# The example's boot test: starts the factory's image under QEMU, as a
# cloud would, and checks it from outside.
#
#   example/boot-test.sh IMAGE FACTORY_KEYS_DIR
#
# - the image boots (SeaBIOS, its own GRUB, its own kernel) on a throwaway
#   qcow2 overlay, so IMAGE itself is never written;
# - nginx answers on port 80 (QEMU user networking, a loopback port
#   forwarded to the guest) with the page the build uploaded;
# - the SSH host keys sshd offers (ssh-keyscan) are none of the factory's
#   (FACTORY_KEYS_DIR/*.pub, recorded by the build);
# - /etc/machine-id was "uninitialized" in IMAGE and holds a new ID after
#   the first boot (read from the overlay after a clean shutdown, with
#   debugfs: no mount, no loop device).
#
# The accelerator is the builder's decision (`go run ./cmd/hostcap
# accelerator`: KVM only where a test guest runs under it at hardware
# speed, else TCG, a minute or two); ACCEL=tcg|kvm|auto asks for one
# (run.sh passes the one it chose; kvm where KVM cannot run a guest is
# refused). Prints one "ok"/"FAIL" line per check and exits 1 if any
# failed. Nothing is left running: QEMU is killed on any exit.
set -euo pipefail

image=${1:?usage: boot-test.sh IMAGE FACTORY_KEYS_DIR}
factory_keys=${2:?usage: boot-test.sh IMAGE FACTORY_KEYS_DIR}
here=$(cd "$(dirname "$0")" && pwd)
boot_timeout=${BOOT_TIMEOUT:-600} # seconds until nginx must answer (TCG on a loaded host is slow)

log() { printf '==> boot-test: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 2
}
# shellcheck source=example/checks.sh
source "$here/checks.sh"

for tool in go qemu-system-x86_64 qemu-img curl ssh-keyscan ssh-keygen debugfs sfdisk; do
	command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done
[[ -f $image ]] || die "no image at $image"
keys=("$factory_keys"/*.pub)
[[ -f ${keys[0]} ]] || die "no factory host keys recorded in $factory_keys"

tmp=$(mktemp -d)
qemu_pid=
cleanup() {
	if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
		kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# A free loopback port (bash's /dev/tcp: a refused connect means free).
free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free loopback port"
}

# root_fs IMAGE_RAW: debugfs's "file?offset=" of the last partition (the
# root filesystem of a disk made from a tree), from the table.
root_fs() {
	local offset
	offset=$(root_offset "$1") || die "no partition table in $1"
	echo "$1?offset=$offset"
}
read_file() { debugfs -R "cat $2" "$1" 2>/dev/null; }

# What the image holds before its first boot.
raw=$tmp/before.raw
qemu-img convert -O raw "$image" "$raw"
id_before=$(read_file "$(root_fs "$raw")" /etc/machine-id)
rm -f "$raw"
check "/etc/machine-id in the image is \"uninitialized\" (got \"$id_before\")" test "$id_before" = uninitialized

overlay=$tmp/boot.qcow2
qemu-img create -q -f qcow2 -b "$(realpath "$image")" -F qcow2 "$overlay"

accel=$(cd "$here/.." && go run ./cmd/hostcap accelerator "${ACCEL:-auto}" 2>"$tmp/accel") ||
	die "$(cat "$tmp/accel")"
accel_reason=$(sed 's/^accelerator [a-z]*: //' "$tmp/accel")
# As the builder's qemu strategy would boot this Debian image (glibc built
# for the x86-64 baseline; internal/hostcap.CPUModel): qemu64 under TCG.
cpu=qemu64
if [[ $accel == kvm ]]; then cpu=host; fi
http_port=$(free_port)
ssh_port=$(free_port)
qmp_port=$(free_port)
console=$tmp/console.log
log "booting $(basename "$image") under QEMU, accelerator $accel ($accel_reason); nginx on 127.0.0.1:$http_port, sshd on 127.0.0.1:$ssh_port"
t0=$(date +%s)
# -no-reboot: the ctrl-alt-delete below reboots the guest, and QEMU exits.
qemu-system-x86_64 -machine q35,accel="$accel" -cpu "$cpu" -smp 2 -m 1024 \
	-display none -no-reboot \
	-serial "file:$console" \
	-qmp "tcp:127.0.0.1:$qmp_port,server=on,wait=off" \
	-drive "file=$overlay,format=qcow2,if=virtio,discard=unmap" \
	-netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$http_port-:80,hostfwd=tcp:127.0.0.1:$ssh_port-:22" \
	-device virtio-net-pci,netdev=net0 \
	-device virtio-rng-pci &
qemu_pid=$!

page=$tmp/page.html
until curl -fsS -m 5 -o "$page" "http://127.0.0.1:$http_port/" 2>/dev/null; do
	if ! kill -0 "$qemu_pid" 2>/dev/null; then
		tail -n 40 "$console" >&2
		die "QEMU exited before nginx answered"
	fi
	if (($(date +%s) - t0 > boot_timeout)); then
		tail -n 40 "$console" >&2
		die "nginx did not answer within ${boot_timeout}s"
	fi
	sleep 2
done
log "nginx answered $(($(date +%s) - t0))s after power-on"
check "nginx answers with example/files/index.html" cmp -s "$page" "$here/files/index.html"
build_info=$(curl -fsS -m 5 "http://127.0.0.1:$http_port/build-info.txt" || true)
check "nginx serves build-info.txt: $build_info" test -n "$build_info"

# The host keys sshd offers now, as fingerprints; sshd may start a moment
# after nginx.
fingerprints() { ssh-keygen -l -f "$1" | awk '{print $2}' | sort -u; }
for _ in $(seq 30); do
	ssh-keyscan -p "$ssh_port" -T 10 127.0.0.1 >"$tmp/scanned" 2>/dev/null || true
	[[ -s $tmp/scanned ]] && break
	sleep 2
done
check "sshd offers host keys ($(wc -l <"$tmp/scanned") seen)" test -s "$tmp/scanned"
booted=$(fingerprints "$tmp/scanned")
cat "${keys[@]}" >"$tmp/factory.pub"
factory=$(fingerprints "$tmp/factory.pub")
shared=$(comm -12 <(echo "$factory") <(echo "$booted"))
check "none of its $(echo "$booted" | wc -l) host keys is one of the factory's $(echo "$factory" | wc -l)${shared:+: $shared}" test -z "$shared"

# A clean shutdown, so what the first boot wrote is on the disk: ctrl-alt-
# delete (systemd's ctrl-alt-del.target) needs neither ACPI handling nor
# logind in the guest; -no-reboot turns the reboot into QEMU's exit.
log "shutting the guest down (ctrl-alt-delete over QMP)"
{
	exec 3<>"/dev/tcp/127.0.0.1/$qmp_port"
	echo '{"execute":"qmp_capabilities"}' >&3
	echo '{"execute":"send-key","arguments":{"keys":[{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}]}}' >&3
	sleep 1
	exec 3>&-
} || die "QMP on 127.0.0.1:$qmp_port refused"
for _ in $(seq 120); do
	kill -0 "$qemu_pid" 2>/dev/null || break
	sleep 1
done
if kill -0 "$qemu_pid" 2>/dev/null; then
	tail -n 20 "$console" >&2
	die "the guest did not shut down within 120s"
fi
wait "$qemu_pid" || true
qemu_pid=
log "the guest shut down; $(($(date +%s) - t0))s in all"

raw=$tmp/after.raw
qemu-img convert -O raw "$overlay" "$raw"
id_after=$(read_file "$(root_fs "$raw")" /etc/machine-id)
check "/etc/machine-id after the first boot is a new ID ($id_after)" grep -Eqx '[0-9a-f]{32}' <<<"$id_after"
check "the console shows systemd's first boot" grep -q 'Detected first boot' "$console"
fsck_quiet() { e2fsck -fn "$1" >/dev/null 2>&1; }
check "e2fsck finds the root filesystem clean after the shutdown" fsck_quiet "$(root_fs "$raw")"

((failures == 0)) || {
	log "$failures check(s) failed; console: last lines"
	tail -n 30 "$console" >&2
	exit 1
}

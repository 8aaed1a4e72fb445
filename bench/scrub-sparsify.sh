#!/usr/bin/env bash
# Scrub + sparsify to a zstd qcow2, ours against libguestfs's virt-sysprep +
# virt-sparsify --convert qcow2, on the same Debian 12 disk, in one run.
# Called by bench/run.sh (make bench); runs alone too. See bench/README.md.
#
# The fixture: a 4 GiB raw disk, MBR, one ext4 partition labelled
# cloudimg-rootfs holding a debootstrap'd Debian 12 (scripts/debian-rootfs.sh)
# with the per-machine state a used image carries (SSH host keys, a
# machine-id, logs, a shell history, a DHCP lease), and 1 GiB of random
# data written and then deleted. Built once, cached in bench/cache/.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
OUT=$BENCH_DIR/out
WORK=$CACHE/pp-work
PPB=$OUT/ppbench
export IMAGEFACTORY_STATE_DIR=/run/imagefactory-bench-pp
FIXTURE_VERSION=v1-debian12-4GiB-1GiB-deleted
FIXTURE=$CACHE/pp-fixture-$FIXTURE_VERSION.raw
DISK_SIZE=$((4 << 30))
PART_START=$((1 << 20))
N=${BENCH_PP_RUNS:-1} # virt-sysprep + virt-sparsify take over a minute under TCG

log() { printf '%s bench-pp: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $N =~ ^[1-9][0-9]*$ ]] || die "BENCH_PP_RUNS must be a whole number >= 1"
((EUID == 0)) || die "needs root (loop devices, mounts)"
if ! command -v virt-sysprep >/dev/null || ! command -v virt-sparsify >/dev/null; then
	log "installing libguestfs-tools (the peer we compare with)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=900 libguestfs-tools >&2
fi
for t in go sfdisk mkfs.ext4 e2fsck losetup findmnt qemu-img zstd tar ssh-keygen virt-sysprep virt-sparsify; do
	command -v "$t" >/dev/null || die "$t not found"
done
mkdir -p "$CACHE" "$OUT"
exec 8>"$CACHE/.pp.lock"
flock -n 8 || die "another bench/scrub-sparsify.sh holds $CACHE/.pp.lock"

CHILD=
cleanup() {
	local - t dev
	set +e
	if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
		kill -TERM "$CHILD" 2>/dev/null
		wait "$CHILD" 2>/dev/null
	fi
	CHILD=
	findmnt -rn -o TARGET | tac | awk -v p="$CACHE/" 'index($0, p) == 1' | while read -r t; do
		umount "$t" 2>/dev/null || umount -l "$t"
	done
	losetup -l -n -O NAME,BACK-FILE | awk -v p="$CACHE/" 'index($2, p) == 1 {print $1}' | while read -r dev; do
		losetup -d "$dev"
	done
	rm -rf "$WORK"
	return 0
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM
cleanup
mkdir -p "$WORK"

# run waits for "$@" in the background, so a signal is acted on at once.
run() {
	"$@" &
	CHILD=$!
	local rc=0
	wait "$CHILD" || rc=$?
	CHILD=
	return "$rc"
}
T=
timeit() {
	local t0=$EPOCHREALTIME
	run "$@"
	T=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.3f", b - a}')
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
allocated() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }
mib() { awk -v b="$1" 'BEGIN {printf "%.0f MiB", b / 1048576}'; }

make_fixture() {
	local tarball tree=$WORK/tree img=$WORK/fixture.tmp mnt=$WORK/mnt dev
	tarball=$("$ROOT/scripts/debian-rootfs.sh")
	log "building the fixture from $tarball (cached for later runs)"
	mkdir -p "$tree" "$mnt"
	tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' --acls --zstd -xpf "$tarball"
	truncate -s "$DISK_SIZE" "$img"
	sfdisk -q --label dos "$img" <<<"start=$((PART_START / 512)), type=83, bootable"
	mkfs.ext4 -q -F -L cloudimg-rootfs -E "offset=$PART_START,nodiscard" -d "$tree" "$img" "$(((DISK_SIZE - PART_START) / 1024))k"
	rm -rf "$tree"
	dev=$(losetup -o "$PART_START" -f --show "$img")
	mount -t ext4 "$dev" "$mnt"
	# What a used machine leaves: its identity, logs, history, a lease.
	ssh-keygen -q -A -f "$mnt"
	head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$mnt/etc/machine-id"
	echo >>"$mnt/etc/machine-id"
	mkdir -p "$mnt/var/lib/dhcp" "$mnt/var/log/journal"
	printf 'lease {\n  interface "eth0";\n  fixed-address 10.0.2.15;\n}\n' >"$mnt/var/lib/dhcp/dhclient.eth0.leases"
	printf 'apt-get install nginx\nvi /etc/nginx/nginx.conf\n' >"$mnt/root/.bash_history"
	head -c 4M /dev/urandom | base64 >"$mnt/var/log/syslog"
	# 1 GiB written, then deleted: its blocks stay allocated in the image.
	run dd if=/dev/urandom of="$mnt/junk" bs=4M count=256 status=none
	sync -f "$mnt"
	rm "$mnt/junk"
	sync -f "$mnt"
	umount "$mnt"
	losetup -d "$dev"
	rm -f "$CACHE"/pp-fixture-*.raw
	mv "$img" "$FIXTURE"
}

BENCH_START=$EPOCHREALTIME
log "building the Go helper"
run go -C "$ROOT" build -o "$PPB" ./bench/ppbench
[[ -f $FIXTURE ]] && log "reusing the cached fixture $FIXTURE" || make_fixture
FIXTURE_ALLOC=$(allocated "$FIXTURE")

# check_output converts a qcow2 back to raw and checks its root filesystem.
check_output() {
	local raw=$WORK/check.raw
	run qemu-img convert -O raw "$1" "$raw"
	run e2fsck -fn "$raw?offset=$PART_START" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log" >&2; die "$1: e2fsck -fn is not clean"; }
	rm -f "$raw"
}

declare -a ours_t ours_s virt_t virt_s
# libguestfs's appliance takes KVM whenever /dev/kvm opens (accel=kvm:tcg);
# where KVM cannot run a guest it would crawl for an hour. The builder's
# decision (internal/hostcap) picks for it too: force_tcg under TCG.
accel=$(go -C "$ROOT" run ./cmd/hostcap accelerator 2>/dev/null) || die "go run ./cmd/hostcap accelerator failed"
lg_settings=
[[ $accel == tcg ]] && lg_settings=force_tcg

for ((r = 1; r <= N; r++)); do
	# Ours: scrub in place, then sparsify to a zstd qcow2.
	disk=$WORK/ours.raw
	cp --sparse=always "$FIXTURE" "$disk"
	drop_caches
	log "round $r: ours (imagefactory-scrub + imagefactory-sparsify, qcow2 zstd)"
	timeit "$PPB" -disk "$disk" -out "$WORK/ours.qcow2"
	ours_t+=("$T")
	ours_s+=("$(stat -c %s "$WORK/ours.qcow2")")
	check_output "$WORK/ours.qcow2"
	rm -f "$disk" "$WORK/ours.qcow2" "$WORK"/ours.scrub.json

	# libguestfs: the same two jobs, as Packer users run them from shell-local.
	disk=$WORK/virt.raw
	cp --sparse=always "$FIXTURE" "$disk"
	drop_caches
	log "round $r: virt-sysprep -a + virt-sparsify --convert qcow2 (LIBGUESTFS_BACKEND=direct, $accel)"
	t0=$EPOCHREALTIME
	LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=$lg_settings run virt-sysprep -q -a "$disk" >&2
	LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=$lg_settings run virt-sparsify -q --convert qcow2 "$disk" "$WORK/virt.qcow2" >&2
	virt_t+=("$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.3f", b - a}')")
	virt_s+=("$(stat -c %s "$WORK/virt.qcow2")")
	check_output "$WORK/virt.qcow2"
	rm -f "$disk" "$WORK/virt.qcow2"
	log "round $r: ours ${ours_t[-1]} s, $(mib "${ours_s[-1]}"); libguestfs ${virt_t[-1]} s, $(mib "${virt_s[-1]}")"
done

med() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ot=$(med "${ours_t[@]}") vt=$(med "${virt_t[@]}") os=$(med "${ours_s[@]}") vs=$(med "${virt_s[@]}")
{
	echo "scrub + sparsify, $(date -u +%FT%TZ), $(uname -r), $(nproc) cores, $N round(s), caches dropped before each"
	echo "fixture: $FIXTURE (4 GiB raw, Debian 12 debootstrap, 1 GiB deleted; $(mib "$FIXTURE_ALLOC") allocated)"
	echo
	{
		echo "measure|ours|libguestfs|ratio|target|result"
		awk -v o="$ot" -v v="$vt" 'BEGIN {r = v / o; printf "wall time, scrub + sparsify to qcow2|%.2f s|%.2f s|%.1fx faster|>= 10x|%s\n", o, v, r, (r >= 10 ? "PASS" : "MISS")}'
		awk -v o="$os" -v v="$vs" 'BEGIN {printf "output size|%.0f MiB (zstd)|%.0f MiB|%.2fx|no larger|%s\n", o / 1048576, v / 1048576, o / v, (o <= v ? "PASS" : "MISS")}'
	} | column -t -s '|' -o ' | '
	echo
	echo "samples: ours ${ours_t[*]} s / ${ours_s[*]} bytes; libguestfs ${virt_t[*]} s / ${virt_s[*]} bytes"
	echo "ours: bench/ppbench runs the two post-processors in-process as Packer calls them; both outputs pass e2fsck -fn"
} >"$OUT/scrub-sparsify.txt"
cleanup
trap - EXIT
[[ -z $(losetup -l -n -O BACK-FILE | grep -F "$CACHE/") ]] || die "a loop device on $CACHE is still attached (a bug)"
echo
cat "$OUT/scrub-sparsify.txt"

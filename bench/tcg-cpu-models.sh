#!/usr/bin/env bash
# Why the qemu strategy boots a baseline image with -cpu qemu64 under TCG
# (internal/hostcap.CPUModel): one guest workload (dpkg --verify, gzip and
# gunzip of /usr/lib, find|sort, python3 json, 300 execs) run under TCG
# with each CPU model, interleaved over BENCH_CPU_ROUNDS rounds (default 2)
# so that a change of the host's load hits every model alike; prints each
# model's median and its ratio to max's.
#
# The guest is the bootable Debian 12 tree of scripts/debian-rootfs.sh
# (cached), in an ext4 image, booted directly (its kernel and initrd) with
# init= the workload, which prints its times on the serial console and
# powers off. Needs root (mkfs.ext4 -d keeps owners). BENCH_CPU_MODELS
# overrides the list.
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
WORK=$BENCH_DIR/cache/tcg-cpu
ROUNDS=${BENCH_CPU_ROUNDS:-2}
read -r -a MODELS <<<"${BENCH_CPU_MODELS:-qemu64 Nehalem max}"

log() { printf '%s bench-cpu: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
((EUID == 0)) || die "needs root"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CPU_ROUNDS must be a whole number >= 1"
for t in qemu-system-x86_64 mkfs.ext4 zstd tar; do
	command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh)"
done

trap 'rm -rf "$WORK/tree" "$WORK/fs.img" "$WORK"/con-*.log' EXIT
rm -rf "$WORK" && mkdir -p "$WORK/tree"
tarball=$(DEBIAN_INCLUDE_EXTRA=linux-image-amd64,cloud-init "$ROOT/scripts/debian-rootfs.sh")
log "guest tree from $tarball"
zstd -dc "$tarball" | tar -x -C "$WORK/tree" --numeric-owner
kernel=$(ls "$WORK"/tree/boot/vmlinuz-* | tail -1)
initrd=$(ls "$WORK"/tree/boot/initrd.img-* | tail -1)
cat >"$WORK/tree/bench.sh" <<-'EOF'
	#!/bin/sh
	mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /tmp
	s0=$(date +%s.%N)
	dpkg --verify >/dev/null 2>&1
	tar -cf - /usr/lib/x86_64-linux-gnu 2>/dev/null | gzip -1 >/tmp/a.gz
	gzip -dc /tmp/a.gz | sha256sum >/dev/null
	find / -xdev | sort >/tmp/list; sort -r /tmp/list | uniq -c >/dev/null
	python3 -c 'import json; d=[{"k%d"%i: str(i)*10} for i in range(200000)]; json.loads(json.dumps(d))'
	for i in $(seq 300); do /bin/true; done
	echo "BENCH $(awk -v a=$s0 -v b=$(date +%s.%N) 'BEGIN{print b-a}')"
	echo o >/proc/sysrq-trigger
	sleep 60
EOF
chmod 755 "$WORK/tree/bench.sh"
truncate -s 3G "$WORK/fs.img"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/fs.img"

declare -A times
for ((r = 1; r <= ROUNDS; r++)); do
	for m in "${MODELS[@]}"; do
		con=$WORK/con-$r-${m//[^A-Za-z0-9]/_}.log
		timeout 1200 qemu-system-x86_64 -machine q35,accel=tcg -cpu "$m" -m 1024 -smp 1 \
			-display none -monitor none -nic none -no-reboot -serial "file:$con" \
			-kernel "$kernel" -initrd "$initrd" \
			-append "root=/dev/vda rw console=ttyS0 quiet panic=-1 init=/bench.sh" \
			-drive "file=$WORK/fs.img,format=raw,if=virtio,snapshot=on" 2>/dev/null || true
		t=$(sed -n 's/.*BENCH \([0-9.]*\).*/\1/p' "$con" | tr -d '\r')
		[[ -n $t ]] || die "no time from -cpu $m (console: $con)"
		log "round $r: -cpu $m: $t s (load $(cut -d' ' -f1 /proc/loadavg))"
		times[$m]+="$t "
	done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
max=$(median <<<"${times[max]:-}")
printf '%-10s %10s %10s   %s\n' model median_s vs_max samples
for m in "${MODELS[@]}"; do
	med=$(median <<<"${times[$m]}")
	ratio=-
	[[ -n $max ]] && ratio=$(awk -v a="$max" -v b="$med" 'BEGIN{printf "%.2fx", a/b}')
	printf '%-10s %10s %10s   %s\n' "$m" "$med" "$ratio" "${times[$m]}"
done

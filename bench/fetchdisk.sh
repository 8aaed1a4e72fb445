#!/usr/bin/env bash
# fetchdisk: time for OpenStack Glance (Debian's glance-api on loopback) to
# import a 4 GiB sparse raw disk with web-download, served by
# imagefactory-fetchdisk's built-in server (internal/serve) beside the same
# import served by `python3 -m http.server`; and the bytes each server read
# from disk (/proc/PID/io read_bytes, page cache dropped before each import)
# beside the file's allocated size. Targets: no slower than http.server;
# bytes read <= allocated + 1 %.
#
# Usage: bench/fetchdisk.sh [IMAGE]   (bench/run.sh passes its 4 GiB fixture;
# without one, a 4 GiB raw with 1 GiB of random data is made and cached).
# Needs root (drop_caches) and glance-api. Glance is stopped on exit.
set -euo pipefail
export LC_ALL=C
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
OUT=$BENCH_DIR/out
WORK=$CACHE/fetchdisk-work
N=${BENCH_FETCH_RUNS:-1}

log() { printf '%s fetchdisk bench: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
((EUID == 0)) || die "needs root (drop_caches)"
[[ -x /usr/bin/glance-api ]] || die "glance-api not installed (make deps)"
[[ $N =~ ^[1-9][0-9]*$ ]] || die "BENCH_FETCH_RUNS must be a whole number >= 1"
mkdir -p "$CACHE" "$OUT"

IMAGE=${1:-}
if [[ -z $IMAGE ]]; then
	IMAGE=$CACHE/fetchdisk-4GiB-1GiB-random.raw
	if [[ ! -f $IMAGE ]]; then
		log "making $IMAGE: 4 GiB, 1 GiB of random data in 16 extents"
		truncate -s 4G "$IMAGE.tmp"
		for i in $(seq 0 15); do
			dd if=/dev/urandom of="$IMAGE.tmp" bs=1M count=64 seek=$((i * 256)) conv=notrunc status=none
		done
		mv "$IMAGE.tmp" "$IMAGE"
	fi
fi
# http.server serves a directory: give it one holding only the image.
SERVE_DIR=$WORK/serve
rm -rf "$WORK"
mkdir -p "$WORK/glance" "$SERVE_DIR"
trap 'rm -rf "$WORK"' EXIT
ln "$IMAGE" "$SERVE_DIR/disk.raw" 2>/dev/null || cp --sparse=always "$IMAGE" "$SERVE_DIR/disk.raw"

HELPER=$OUT/fetchdiskbench
go -C "$ROOT" build -o "$HELPER" ./bench/fetchdiskbench
SIZE=$(stat -c %s "$SERVE_DIR/disk.raw")
ALLOC=$(($(stat -c %b "$SERVE_DIR/disk.raw") * $(stat -c %B "$SERVE_DIR/disk.raw")))
log "$N import(s) per server of $SERVE_DIR/disk.raw ($((SIZE >> 20)) MiB, $((ALLOC >> 20)) MiB allocated); Glance writes the whole image twice per import"
"$HELPER" -file "$SERVE_DIR/disk.raw" -work "$WORK/glance" -n "$N" | tee "$WORK/samples" >&2

awk -v size="$SIZE" -v alloc="$ALLOC" '
	function med(a, n,   i, j, t) {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	$1 == "ours" { ot[++no] = $2; orb[no] = $3; oc[no] = $4 }
	$1 == "http.server" { pt[++np] = $2; prb[np] = $3 }
	END {
		o = med(ot, no); p = med(pt, np); rb = med(orb, no); c = med(oc, no); pr = med(prb, np)
		printf "fetchdisk: Glance web-download of a %d MiB raw (%d MiB allocated), median of %d\n", size / 1048576, alloc / 1048576, no
		printf "  import time   ours %.2f s | python3 -m http.server %.2f s | ratio (anchor/ours) %.2fx | target >= 1.00x: %s\n", o, p, p / o, (p / o >= 1) ? "PASS" : "MISS"
		printf "  read from disk (/proc/PID/io read_bytes)  ours %d MiB | http.server %d MiB | allocated %d MiB\n", rb / 1048576, pr / 1048576, alloc / 1048576
		printf "  ours / allocated %.4f (server counter: %.4f) | target <= 1.01: %s\n", rb / alloc, c / alloc, (rb <= alloc * 1.01) ? "PASS" : "MISS"
	}' "$WORK/samples" | tee "$OUT/fetchdisk.txt"

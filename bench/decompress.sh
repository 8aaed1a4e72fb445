#!/usr/bin/env bash
# decompress: a compressed raw base image made into a working disk.
# diskimage.Decompress (what the builder does with a gzip, xz or zstd base
# image; bench/sessionbench decompress) beside `xz -dc | cp --sparse=always`
# and `zstd -dc | cp --sparse=always`: wall time (page cache dropped before
# each run) and bytes allocated by the result. Targets: allocated <= the raw
# input's allocated bytes + 1 %; no slower than the anchor.
#
# Usage: bench/decompress.sh   (bench/run.sh runs it). Its fixture, a 4 GiB
# raw with 256 MiB of random data in 4 extents and its .xz and .zst, is
# made once (about 1.5 min, xz on random data) and cached in bench/cache.
# Needs root (drop_caches).
set -euo pipefail
export LC_ALL=C
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
OUT=$BENCH_DIR/out
WORK=$CACHE/decompress-work
N=${BENCH_DECOMPRESS_RUNS:-3}
KINDS=${BENCH_DECOMPRESS_KINDS:-xz zst}

log() { printf '%s decompress bench: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
((EUID == 0)) || die "needs root (drop_caches)"
[[ $N =~ ^[1-9][0-9]*$ ]] || die "BENCH_DECOMPRESS_RUNS must be a whole number >= 1"
for t in xz zstd cp go; do command -v "$t" >/dev/null || die "$t not found"; done
mkdir -p "$CACHE" "$OUT"

RAW=$CACHE/decompress-v1-4GiB-256MiB-random.raw
if [[ ! -f $RAW.zst ]]; then
	log "making $RAW and its .xz and .zst"
	truncate -s 4G "$RAW.tmp"
	for i in 0 1 2 3; do
		dd if=/dev/urandom of="$RAW.tmp" bs=1M count=64 seek=$((i * 1024 + 100)) conv=notrunc status=none
	done
	xz -0 -T2 -c "$RAW.tmp" >"$RAW.xz.tmp"
	zstd -q -1 -c "$RAW.tmp" >"$RAW.zst.tmp"
	mv "$RAW.tmp" "$RAW"
	mv "$RAW.xz.tmp" "$RAW.xz"
	mv "$RAW.zst.tmp" "$RAW.zst"
fi
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
HELPER=$OUT/sessionbench
go -C "$ROOT" build -o "$HELPER" ./bench/sessionbench
DATA=$(($(stat -c %b "$RAW") * $(stat -c %B "$RAW")))

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.6f\n", b - a}'; }
alloc() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }

: >"$WORK/samples"
for ((r = 0; r < N; r++)); do
	for kind in $KINDS; do
		tool=xz
		[[ $kind == zst ]] && tool=zstd
		drop
		t=$("$HELPER" decompress -src "$RAW.$kind" -dst "$WORK/ours.raw")
		cmp "$RAW" "$WORK/ours.raw" || die "Decompress of $RAW.$kind differs from $RAW"
		echo "$kind ours $t $(alloc "$WORK/ours.raw")" >>"$WORK/samples"
		rm -f "$WORK/ours.raw"
		drop
		a=$EPOCHREALTIME
		"$tool" -dc "$RAW.$kind" | cp --sparse=always /dev/stdin "$WORK/cp.raw"
		b=$EPOCHREALTIME
		echo "$kind cp $(secs "$a" "$b") $(alloc "$WORK/cp.raw")" >>"$WORK/samples"
		rm -f "$WORK/cp.raw"
		sync
	done
	log "round $((r + 1)): $(tail -$((2 * $(wc -w <<<"$KINDS"))) "$WORK/samples" | awk '{printf "%s %s %.2f s; ", $1, $2, $3}')"
done

{
	echo "decompress bench, $(date -u +%FT%TZ): $RAW (4 GiB raw, $((DATA >> 20)) MiB allocated), median of $N, page cache dropped before each run"
	awk -v data="$DATA" -v kinds="$KINDS" '
		function med(a, n,   i, j, t) {
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		{ k = $1 "-" $2; n[k]++; t[k, n[k]] = $3; al[k] = $4 }
		END {
			print "measure|ours|anchor|ratio (anchor/ours)|allocated, ours (raw input: " int(data / 1048576) " MiB)|target|result"
			nk = split(kinds, ks, " ")
			for (i = 1; i <= nk; i++) {
				K = ks[i]; o = K "-ours"; c = K "-cp"
				for (j = 1; j <= n[o]; j++) to[j] = t[o, j]
				for (j = 1; j <= n[c]; j++) tc[j] = t[c, j]
				mo = med(to, n[o]); mc = med(tc, n[c])
				ok = (al[o] <= data * 1.01 && mc / mo >= 1) ? "PASS" : "MISS"
				tool = K == "xz" ? "xz" : "zstd"
				printf "decompress %s base image to a working disk|%.2f s|%s -dc piped to cp --sparse=always: %.2f s|%.2fx|%d MiB (anchor %d MiB)|allocated <= input + 1 %%, no slower|%s\n", K, mo, tool, mc, mc / mo, al[o] / 1048576, al[c] / 1048576, ok
			}
		}' "$WORK/samples" | column -t -s '|' -o ' | '
	echo "samples (kind, who, seconds, allocated bytes):"
	sed 's/^/  /' "$WORK/samples"
} | tee "$OUT/decompress.txt"

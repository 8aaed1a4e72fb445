# Sourced by the benches that run whole `packer build`s (qemu-vs-chroot.sh,
# arm64.sh): each build in the background, stopped and released on exit or
# signal; what a build must not leave; Packer's environment in $WORK with
# our plugin installed. Needs WORK, CACHE, PACKER, PLUGIN and log().

# Each build runs in the background so that a signal is acted on at once;
# cleanup sends the running packer SIGTERM, and Packer stops its QEMU and
# releases what the build holds, as on Ctrl-C.
CHILD=
cleanup() {
	set +e
	if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
		kill -TERM "$CHILD"
		wait "$CHILD"
	fi
	CHILD=
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted; cleaning up"; exit 130' INT
trap 'log "terminated; cleaning up"; exit 143' TERM

# leaks lists what this script's builds should have released: QEMU or other
# processes naming the work directory, mounts under it, loop devices backed
# by files under bench/cache.
leaks() {
	pgrep -a -f -- "$WORK/" | sed 's/^/process: /' || true
	findmnt -rn -o TARGET | awk -v p="$WORK/" 'index($0, p) == 1 {print "mount: " $0}'
	losetup -l -n -O NAME,BACK-FILE | awk -v p="$CACHE/" 'index($2, p) == 1 {print "loop: " $0}'
}

export PACKER_PLUGIN_PATH=$WORK/plugins PACKER_CACHE_DIR=$WORK/packer_cache CHECKPOINT_DISABLE=1
export IMAGEFACTORY_STATE_DIR=$WORK/state
"$PACKER" plugins install --path "$PLUGIN" github.com/imagefactory/imagefactory >/dev/null

# run_packer LOG ARGS... runs packer in the background and waits.
run_packer() {
	local logf=$1 rc=0
	shift
	"$PACKER" "$@" >"$logf" 2>&1 &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=
	((rc == 0)) || tail -30 "$logf" >&2
	return "$rc"
}

# median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# Sourced by example/run.sh: one "ok"/"FAIL" line
# per check with the count of failures in $failures, and where the root
# filesystem of the example's disk is. A check is named by what it expects
# ("nginx is installed"); a failed one prints "FAIL  expected: <name>", so
# the line reads right in both outcomes.
failures=0
check() { # check DESCRIPTION COMMAND...: runs the command, reports ok/FAIL
	local what=$1
	shift
	if "$@"; then
		printf '  ok    %s\n' "$what"
	else
		printf '  FAIL  expected: %s\n' "$what"
		failures=$((failures + 1))
	fi
}

# root_offset RAW: the byte offset of the last partition of a raw disk (the
# root of a disk made from a tree), from its table; fails if it has none.
root_offset() {
	local start
	start=$(sfdisk -d "$1" | sed -n 's/^.* : start= *\([0-9]*\),.*$/\1/p' | tail -1)
	[[ -n $start ]] && echo $((start * 512))
}

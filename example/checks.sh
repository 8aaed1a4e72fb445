# Sourced by example/run.sh and example/boot-test.sh: one "ok"/"FAIL" line
# per check, and the count of failures in $failures.
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

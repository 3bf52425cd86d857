#!/bin/sh
# Builds the DATA parser fuzzer (tests/fuzz/data_fuzz.c) with clang and runs
# it for SECONDS (default 60) on a copy of tests/fuzz/corpus, which runs never
# modify. Exits non-zero on a crash or a disagreement, leaving the work
# directory (with the crashing input) in place and printing its path.
# CLANG overrides the compiler; FUZZ_JOBS=n runs n workers (default: one, in
# process).
set -eu

secs=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/data_fuzz.XXXXXX")
cd "$root"

${CLANG:-clang} -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-std=gnu11 -D_GNU_SOURCE -I. core/smtp_data.c tests/fuzz/data_fuzz.c \
	-o "$work/data_fuzz"
mkdir "$work/corpus"
cp tests/fuzz/corpus/* "$work/corpus/"

# From the work directory: libFuzzer writes its fuzz-N.log files there.
cd "$work"
jobs=
if [ -n "${FUZZ_JOBS:-}" ]; then
	jobs="-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS"
fi
rc=0
# shellcheck disable=SC2086
./data_fuzz -max_total_time="$secs" -max_len=4096 -print_final_stats=1 $jobs \
	-artifact_prefix="$work/" corpus >log 2>&1 || rc=$?
tail -n 8 "$work/log"
if [ "$rc" -ne 0 ]; then
	echo "data_fuzz: FAILED (exit $rc); input and log in $work" >&2
	exit "$rc"
fi
cd "$root"
rm -rf "$work"

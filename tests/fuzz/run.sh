#!/bin/sh
# Builds the fuzzers with clang and runs them for SECONDS in all (default
# 60), split between them: the DATA parser (tests/fuzz/data_fuzz.c, on a
# copy of tests/fuzz/corpus) gets the larger part, the recipient table
# parser (tests/fuzz/recipients_fuzz.c, on a copy of
# tests/fuzz/corpus-recipients), the PROXY header parser
# (tests/fuzz/proxy_fuzz.c, tests/fuzz/corpus-proxy), the milter client
# (tests/fuzz/milter_fuzz.c, tests/fuzz/corpus-milter) and the
# configuration file (tests/fuzz/conf_fuzz.c, tests/fuzz/corpus-conf) and
# the DNS answers (tests/fuzz/dns_fuzz.c, tests/fuzz/corpus-dns) a seventh
# each; runs never modify the corpora.
# Exits non-zero on a crash or a disagreement, leaving that fuzzer's work
# directory (with the crashing input) in place and printing its path.
# CLANG overrides the compiler; FUZZ_JOBS=n runs n workers (default: one, in
# process).
set -eu

secs=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

# Each fuzzer gets at least a second: -max_total_time=0 would run forever.
rsecs=$((secs / 7))
[ "$rsecs" -ge 1 ] || rsecs=1
psecs=$rsecs
msecs=$rsecs
csecs=$rsecs
nsecs=$rsecs
dsecs=$((secs - rsecs - psecs - msecs - csecs - nsecs))
[ "$dsecs" -ge 1 ] || dsecs=1

# fuzz NAME CORPUS SECONDS MAX_LEN CFLAGS SOURCES... (libraries in $libs)
libs=""
fuzz() {
	name=$1 corpus=$2 fsecs=$3 maxlen=$4 cflags=$5
	shift 5
	work=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
	# shellcheck disable=SC2086
	${CLANG:-clang} -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-std=gnu11 -D_GNU_SOURCE $cflags -I. "$@" $libs -o "$work/$name"
	mkdir "$work/corpus"
	cp "$corpus"/* "$work/corpus/"

	# From the work directory: libFuzzer writes its fuzz-N.log files there.
	cd "$work"
	jobs=
	if [ -n "${FUZZ_JOBS:-}" ]; then
		jobs="-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS"
	fi
	rc=0
	# shellcheck disable=SC2086
	"./$name" -max_total_time="$fsecs" -max_len="$maxlen" -print_final_stats=1 $jobs \
		-artifact_prefix="$work/" corpus >log 2>&1 || rc=$?
	tail -n 8 "$work/log"
	if [ "$rc" -ne 0 ]; then
		echo "$name: FAILED (exit $rc); input and log in $work" >&2
		exit "$rc"
	fi
	cd "$root"
	rm -rf "$work"
}

fuzz data_fuzz tests/fuzz/corpus "$dsecs" 4096 "" core/smtp_data.c tests/fuzz/data_fuzz.c
# A small read buffer, so that a table's lines straddle reads.
echo "recipients_fuzz (${rsecs}s):"
fuzz recipients_fuzz tests/fuzz/corpus-recipients "$rsecs" 8192 -DRCPT_READ_CHUNK=1100 \
	core/recipients.c core/policy.c tests/fuzz/recipients_fuzz.c
echo "proxy_fuzz (${psecs}s):"
fuzz proxy_fuzz tests/fuzz/corpus-proxy "$psecs" 8192 "" core/proxy.c tests/fuzz/proxy_fuzz.c
echo "milter_fuzz (${msecs}s):"
fuzz milter_fuzz tests/fuzz/corpus-milter "$msecs" 16384 "" core/milter.c core/buf.c \
	tests/fuzz/milter_fuzz.c
echo "conf_fuzz (${csecs}s):"
fuzz conf_fuzz tests/fuzz/corpus-conf "$csecs" 4096 "" core/conf.c core/conf_print.c core/policy.c \
	core/dnsbl.c core/anvil.c core/log.c core/utc.c tests/fuzz/conf_fuzz.c
echo "dns_fuzz (${nsecs}s):"
libs="-lcares"
fuzz dns_fuzz tests/fuzz/corpus-dns "$nsecs" 4096 "" io/dns_parse.c core/dns_cache.c core/dnsbl.c \
	tests/fuzz/dns_fuzz.c
libs=""

#!/bin/sh
# bench/slowloris.sh: does one address holding 15,000 idle sessions slow a
# second address's mail? The gateway listens on 127.0.0.1 and [::1] (two
# clients to its per-client limits); ringmx-bench holds IDLE sessions from
# 127.0.0.1 while another ringmx-bench sends from [::1] (50 sessions, 1 KB,
# durable, SECONDS each run). Two modes: the default limits
# (--client-max-sessions 50: the attacker gets 50, the rest 421 at once)
# and --client-max-sessions 20000 (all 15,000 held). For each mode it prints
# the sender's messages/s without and with the idle crowd, RUNS times
# alternating, and the median ratio.
#
# usage: bench/slowloris.sh [RINGMX] [BENCH]   (env: IDLE=15000 SECONDS=6 RUNS=3)
# Needs an open-file limit above IDLE + 100 for both processes (ulimit -n).
set -eu
RINGMX=${1:-build-rel/ringmx}
BENCH=${2:-build-rel/bench/ringmx-bench}
IDLE=${IDLE:-15000}
SECONDS_=${SECONDS:-6}
RUNS=${RUNS:-3}
TMP=$(mktemp -d /tmp/slowloris.XXXXXX)
P=$((30000 + $$ % 20000))
trap 'kill $RMX 2>/dev/null || true; kill $IDLEPID 2>/dev/null || true; rm -rf "$TMP"' EXIT
ulimit -n 20000 2>/dev/null || true

rate() { # messages/s of one sending run from [::1]
	"$BENCH" --server "[::1]:$P" --sessions 50 --size 1024 --duration "$SECONDS_" \
		--json - --no-progress 2>/dev/null |
		python3 -c 'import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index("\n{")+1:])["messages_per_s"])'
}

for mode in default raised; do
	extra=""
	[ "$mode" = raised ] && extra="--client-max-sessions 20000"
	rm -rf "$TMP/spool"
	# shellcheck disable=SC2086
	"$RINGMX" --listen 127.0.0.1:$P --listen "[::1]:$P" --spool "$TMP/spool" \
		--domains example.com --max-sessions 20000 --log-level warn $extra \
		2>"$TMP/ringmx.log" &
	RMX=$!
	sleep 1
	ratios=""
	for r in $(seq "$RUNS"); do
		base=$(rate)
		"$BENCH" --server "127.0.0.1:$P" --idle --sessions "$IDLE" \
			--duration $((SECONDS_ + 30)) --no-progress >"$TMP/idle.out" 2>&1 &
		IDLEPID=$!
		sleep 10 # the crowd connects (or is refused)
		under=$(rate)
		kill "$IDLEPID" 2>/dev/null || true
		wait "$IDLEPID" 2>/dev/null || true
		sleep 2
		ratio=$(python3 -c "print(round($under / $base, 3))")
		echo "$mode run $r: ${base} msgs/s alone, ${under} msgs/s beside $IDLE idle: $ratio"
		ratios="$ratios $ratio"
	done
	echo "$mode: median ratio $(python3 -c "import statistics; print(statistics.median([$(echo $ratios | tr ' ' ',')]))")"
	kill $RMX
	wait $RMX 2>/dev/null || true
done

#!/bin/sh
# End-to-end relay throughput: smtp-source -> gateway -> smtp-sink, for
# 1 KB messages at 100 concurrent sessions (-d), ringmx (--relay-to the
# sink) next to Postfix relaying to the same sink (bench/postfix_peer.sh
# with POSTFIX_RELAY), measured in the same run, alternating. The figure is
# MESSAGES / (time from the first message in until the gateway's queue is
# empty again: everything delivered to the sink). Medians of RUNS.
#
# usage: bench/relay_compare.sh [RUNS] [MESSAGES]   (repository root, after
#        `ninja -C build`; as root)
set -eu
RUNS=${1:-3}
MSGS=${2:-10000}
HERE=$(cd "$(dirname "$0")" && pwd)
RINGMX=${RINGMX:-./build/ringmx}
TMP=$(mktemp -d /tmp/ringmx-relaybench.XXXXXX)
SINK=2690
RMX=2691
trap 'kill $SINKPID $RMXPID 2>/dev/null; "$HERE/postfix_peer.sh" stop >/dev/null 2>&1; wait 2>/dev/null; rm -rf "$TMP"' EXIT INT TERM

/usr/sbin/smtp-sink -u nobody 127.0.0.1:$SINK 1024 &
SINKPID=$!
$RINGMX --listen 127.0.0.1:$RMX --spool "$TMP/spool" --domains example.com \
	--relay-to 127.0.0.1:$SINK --client-max-sessions 0 --log-level warn 2>"$TMP/ringmx.log" &
RMXPID=$!
POSTFIX_RELAY=127.0.0.1:$SINK "$HERE/postfix_peer.sh" start >/dev/null 2>&1
PFDIR=$(sed -n 1p /tmp/ringmx-postfix.current)
sleep 1

now() { date +%s.%N; }
pf_queue_empty() {
	[ -z "$(find "$PFDIR/spool/incoming" "$PFDIR/spool/active" "$PFDIR/spool/deferred" \
		"$PFDIR/spool/maildrop" -type f 2>/dev/null | head -1)" ]
}
rate() { # port, "rmx"|"pf"
	t0=$(now)
	/usr/sbin/smtp-source -d -s 100 -m "$MSGS" -l 1024 -f src@source.test \
		-t dst@example.com 127.0.0.1:"$1" >/dev/null
	k=0 # (not i: the caller's loop counter)
	while [ $k -lt 1200 ]; do
		if [ "$2" = rmx ]; then
			[ "$($RINGMX queue --spool "$TMP/spool" --count)" = 0 ] && break
		else
			pf_queue_empty && break
		fi
		sleep 0.05
		k=$((k + 1))
	done
	echo "$MSGS $t0 $(now)" | awk '{ printf "%.0f\n", $1 / ($3 - $2) }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

: >"$TMP/rmx"; : >"$TMP/pf"
i=0
while [ $i -lt "$RUNS" ]; do
	rate $RMX rmx >>"$TMP/rmx"
	rate 2627 pf >>"$TMP/pf"
	i=$((i + 1))
done
r=$(median <"$TMP/rmx")
p=$(median <"$TMP/pf")
echo "machine: $(nproc) cores, kernel $(uname -r)"
echo "ringmx  -> smtp-sink runs: $(tr '\n' ' ' <"$TMP/rmx") median $r msg/s"
echo "postfix -> smtp-sink runs: $(tr '\n' ' ' <"$TMP/pf") median $p msg/s"
echo "$r $p" | awk '{ printf "ratio ringmx/postfix: %.1f\n", $1 / $2 }'
echo "ringmx spool after all runs: $($RINGMX queue --spool "$TMP/spool" --count) pending, $($RINGMX queue --spool "$TMP/spool" --all --count) in all"

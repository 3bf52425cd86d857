#!/bin/sh
# Accepted messages per second for `smtp-source -d -s 100 -m 10000 -l 1024`
# (100 concurrent sessions reusing connections, 10,000 messages of 1 KB)
# against ringmx (durable: fdatasync before every 250) and, in the same run,
# two reference peers: Postfix's smtp-sink (stores nothing) and, unless
# NO_POSTFIX=1, a private Postfix smtpd whose cleanup fsyncs a real queue
# file before its 250 (bench/postfix_peer.sh), the durable like-for-like peer.
# Each target is measured RUNS times, alternating; medians are printed.
#
# usage: bench/peer_compare.sh [RUNS] [MESSAGES]   (from the repository root,
#        after `ninja -C build`; needs postfix's smtp-source/smtp-sink)
set -eu
RUNS=${1:-5}
MSGS=${2:-10000}
RINGMX=${RINGMX:-./build/ringmx}
SRC=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink
TMP=$(mktemp -d /tmp/ringmx-bench.XXXXXX)
SINK_PORT=${SINK_PORT:-2625}
RMX_PORT=${RMX_PORT:-2626}
HERE=$(cd "$(dirname "$0")" && pwd)
PF=""
cleanup() {
	kill $SINKPID $RMXPID 2>/dev/null
	[ -n "$PF" ] && "$HERE/postfix_peer.sh" stop >/dev/null 2>&1
	wait 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

$SINK -u nobody 127.0.0.1:$SINK_PORT 1024 &
SINKPID=$!
$RINGMX --listen 127.0.0.1:$RMX_PORT --spool "$TMP/spool" --log-level warn \
	--domains example.com --client-max-sessions 0 2>"$TMP/ringmx.log" &
RMXPID=$!
if [ "${NO_POSTFIX:-0}" != 1 ]; then
	PF=$("$HERE/postfix_peer.sh" start 2>/dev/null)
fi
sleep 1

rate() { # port -> messages/s
	t0=$(date +%s.%N)
	$SRC -d -s 100 -m "$MSGS" -l 1024 -f src@source.test -t dst@example.com \
		127.0.0.1:"$1" >/dev/null
	t1=$(date +%s.%N)
	echo "$MSGS $t0 $t1" | awk '{ printf "%.0f\n", $1 / ($3 - $2) }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

: >"$TMP/sink" ; : >"$TMP/rmx" ; : >"$TMP/pf"
i=0
while [ $i -lt "$RUNS" ]; do
	rate $SINK_PORT >>"$TMP/sink"
	rate $RMX_PORT >>"$TMP/rmx"
	if [ -n "$PF" ]; then
		"$HERE/postfix_peer.sh" rate "$MSGS" | sed -n 's/.*= \([0-9]*\) msg\/s/\1/p' >>"$TMP/pf"
	fi
	i=$((i + 1))
done
queued=$($RINGMX queue --spool "$TMP/spool" --count)
s=$(median <"$TMP/sink")
r=$(median <"$TMP/rmx")
echo "machine: $(nproc) cores, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "smtp-sink  runs: $(tr '\n' ' ' <"$TMP/sink") median $s msg/s"
echo "ringmx     runs: $(tr '\n' ' ' <"$TMP/rmx") median $r msg/s (spooled: $queued of $((RUNS * MSGS)))"
echo "$r $s" | awk '{ printf "ratio ringmx/smtp-sink: %.2f\n", $1 / $2 }'
if [ -n "$PF" ]; then
	p=$(median <"$TMP/pf")
	echo "postfix    runs: $(tr '\n' ' ' <"$TMP/pf") median $p msg/s (smtpd + cleanup, fsync'd queue)"
	echo "$r $p" | awk '{ printf "ratio ringmx/postfix smtpd: %.1f\n", $1 / $2 }'
fi

#!/bin/sh
# TLS figures for docs/benchmarks.md, all in one run on this machine:
# handshakes per second (STARTTLS, implicit, resumed) and 1 KB messages per
# second over STARTTLS at 100 concurrent sessions (-d: connections reused),
# for ringmx next to the same load in plain text and next to Postfix smtpd
# with TLS on the same certificate (bench/postfix_peer.sh). Medians of RUNS.
#
# usage: bench/tls_compare.sh [RUNS] [MESSAGES] [HANDSHAKES]   (repository
#        root, after `ninja -C build`; as root, for the Postfix peer)
set -eu
RUNS=${1:-3}
MSGS=${2:-10000}
HS=${3:-3000}
HERE=$(cd "$(dirname "$0")" && pwd)
LOAD=${LOAD:-./build/bench/smtp_load}
RINGMX=${RINGMX:-./build/ringmx}
TMP=$(mktemp -d /tmp/ringmx-tlsbench.XXXXXX)
P=2680
trap 'kill $RMXPID 2>/dev/null; "$HERE/postfix_peer.sh" stop >/dev/null 2>&1; wait 2>/dev/null; rm -rf "$TMP"' EXIT INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mx.test \
	-days 2 -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
$RINGMX --listen 127.0.0.1:$P --listen-tls 127.0.0.1:$((P + 1)) --spool "$TMP/spool" \
	--tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" --domains example.com \
	--client-max-sessions 0 --log-level warn 2>"$TMP/ringmx.log" &
RMXPID=$!
POSTFIX_TLS_CERT="$TMP/cert.pem" POSTFIX_TLS_KEY="$TMP/key.pem" POSTFIX_TLS_PORT=2628 \
	"$HERE/postfix_peer.sh" start >/dev/null 2>&1
sleep 1

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
run() { # name, then smtp_load arguments; appends the figure to $TMP/name
	name=$1
	shift
	key=msgs_per_s
	case "$*" in *--handshakes*) key=hs_per_s ;; esac
	$LOAD "$@" 2>>"$TMP/errors" | field $key >>"$TMP/$name"
}
i=0
while [ $i -lt "$RUNS" ]; do
	for who in rmx pf; do
		if [ $who = rmx ]; then plain=$P; tls=$((P + 1)); else plain=2627; tls=2628; fi
		run $who.hs_plain --handshakes "$HS" -s 100 127.0.0.1:$plain
		run $who.hs_starttls --handshakes "$HS" -s 100 --tls starttls 127.0.0.1:$plain
		run $who.hs_implicit --handshakes "$HS" -s 100 --tls implicit 127.0.0.1:$tls
		run $who.hs_resumed --handshakes "$HS" -s 100 --tls starttls --resume 127.0.0.1:$plain
		run $who.msg_plain -d -s 100 -m "$MSGS" 127.0.0.1:$plain
		run $who.msg_starttls -d -s 100 -m "$MSGS" --tls starttls 127.0.0.1:$plain
		run $who.msg_implicit -d -s 100 -m "$MSGS" --tls implicit 127.0.0.1:$tls
	done
	i=$((i + 1))
done
echo "machine: $(nproc) cores, kernel $(uname -r); $RUNS runs, medians (all runs in parentheses)"
printf '%-22s %-28s %-28s\n' "figure" "ringmx" "postfix smtpd"
for f in hs_plain hs_starttls hs_implicit hs_resumed msg_plain msg_starttls msg_implicit; do
	printf '%-22s %-28s %-28s\n' "$f" \
		"$(median <"$TMP/rmx.$f") ($(tr '\n' ' ' <"$TMP/rmx.$f"| sed 's/ $//'))" \
		"$(median <"$TMP/pf.$f") ($(tr '\n' ' ' <"$TMP/pf.$f" | sed 's/ $//'))"
done
[ -s "$TMP/errors" ] && { echo "errors:"; sort "$TMP/errors" | uniq -c | head; }
exit 0

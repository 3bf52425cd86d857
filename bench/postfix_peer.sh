#!/bin/sh
# A private, throw-away Postfix instance used as a *durable* benchmark peer:
# the real smtpd(8) + cleanup(8) path, which writes and fsyncs a queue file
# before answering 250 to DATA, as ringmx does with its spool.  After that the
# queue manager hands every message to discard(8), so nothing is relayed and
# the queue stays small.  (smtp-sink, used by peer_compare.sh, stores nothing.)
#
# Everything lives under one temp directory; /etc/postfix and the system's
# default instance are never read, written or started:
#   $DIR/etc      config_directory (main.cf, master.cf written here)
#   $DIR/spool    queue_directory  (owned by root, subdirs made by postfix)
#   $DIR/data     data_directory
#   $DIR/maillog  maillog_file, written by postlogd(8)
# The path of $DIR is kept in $STATE so that `stop` finds the instance again.
#
# usage (as root, from the repository root):
#   bench/postfix_peer.sh start          create + start, wait for 220, print port
#   bench/postfix_peer.sh rate [MSGS]    smtp-source -d -s 100 -m MSGS -l 1024
#                                        (default 10000), prints messages/s
#   bench/postfix_peer.sh idle-mem [N] [--ehlo]
#                                        memory per idle SMTP session (N=300),
#                                        see bench/postfix_idle_memory.py
#   bench/postfix_peer.sh stop           stop and remove everything
# env: POSTFIX_PORT (default 2627, listens on 127.0.0.1 only); POSTFIX_RELAY=host:port
#      relays every message there over SMTP instead of discarding it
#      POSTFIX_TLS_CERT, POSTFIX_TLS_KEY: PEM certificate and key; when both
#      are set at start, smtpd offers STARTTLS on POSTFIX_PORT
#      (smtpd_tls_security_level=may) and also speaks TLS from the first
#      byte (465 style, wrapper mode) on 127.0.0.1:POSTFIX_TLS_PORT (default
#      2628).  The files are copied into the instance directory.  For
#      bench/smtp_load --tls starttls|implicit [--resume]; a test certificate:
#        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
#          -subj /CN=mx.test -days 2 -keyout key.pem -out cert.pem
set -eu

PORT=${POSTFIX_PORT:-2627}
TLS_CERT=${POSTFIX_TLS_CERT:-}
TLS_KEY=${POSTFIX_TLS_KEY:-}
TLS_PORT=${POSTFIX_TLS_PORT:-2628}
STATE=/tmp/ringmx-postfix.current
SRC=/usr/sbin/smtp-source
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "postfix_peer: $*" >&2; exit 1; }

# Loads DIR/PORT of the running instance; fails if there is none.
load() {
	[ -f "$STATE" ] || die "no instance (no $STATE); run start first"
	DIR=$(sed -n 1p "$STATE")
	PORT=$(sed -n 2p "$STATE")
	check_dir
	[ -d "$DIR/etc" ] || die "$DIR from $STATE is gone"
}

# Refuses a $DIR that is not one of ours (it gets rm -rf'ed).
check_dir() {
	case $DIR in
	/tmp/ringmx-postfix.?*) ;;
	*) die "unexpected directory '$DIR' in $STATE" ;;
	esac
}

# Prints the master's pid if the instance's master is alive.
master_pid() {
	p=$(tr -d ' ' <"$DIR/spool/pid/master.pid" 2>/dev/null) || return 1
	[ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

# Waits until 127.0.0.1:$PORT sends a 220 greeting (up to ~10 s).
wait_220() {
	python3 - "$PORT" <<'EOF'
import socket, sys, time
for _ in range(100):
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2) as s:
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}

start() {
	if [ -f "$STATE" ]; then
		DIR=$(sed -n 1p "$STATE")
		check_dir
		if [ -d "$DIR" ] && master_pid >/dev/null; then
			die "already running in $DIR (run stop first)"
		fi
		rm -rf "$DIR" "$STATE"   # leftover of a crashed run
	fi
	DIR=$(mktemp -d /tmp/ringmx-postfix.XXXXXX)
	# mktemp makes it 0700; daemons running as user postfix must be able to
	# traverse it to reach data_directory and the queue.
	chmod 755 "$DIR"
	mkdir -p "$DIR/etc" "$DIR/spool" "$DIR/data"
	chown postfix:postfix "$DIR/data"
	printf '%s\n%s\n' "$DIR" "$PORT" >"$STATE"

	# master.cf: only the services this setup uses, none chrooted (a chroot
	# would need copies of /etc/hosts, resolv.conf, ... in the spool).  No
	# pickup (no local submission), no smtp/relay/local client.
	cat >"$DIR/etc/master.cf" <<EOF
# service          type  private unpriv chroot wakeup maxproc command
127.0.0.1:$PORT    inet  n       -      n      -      -       smtpd
cleanup            unix  n       -      n      -      0       cleanup
qmgr               unix  n       -      n      300    1       qmgr
rewrite            unix  -       -      n      -      -       trivial-rewrite
bounce             unix  -       -      n      -      0       bounce
defer              unix  -       -      n      -      0       bounce
trace              unix  -       -      n      -      0       bounce
verify             unix  -       -      n      -      1       verify
flush              unix  n       -      n      1000?  0       flush
proxymap           unix  -       -      n      -      -       proxymap
showq              unix  n       -      n      -      -       showq
error              unix  -       -      n      -      -       error
retry              unix  -       -      n      -      -       error
discard            unix  -       -      n      -      -       discard
anvil              unix  -       -      n      -      1       anvil
scache             unix  -       -      n      -      1       scache
postlog            unix-dgram n  -      n      -      1       postlogd
EOF

	# main.cf.  The directories and identity first: with `-c DIR` every
	# command and daemon reads this file only (MAIL_CONFIG).  maillog_file
	# must lie under maillog_file_prefixes (default /var, /dev/stdout) or
	# every Postfix command dies, silently when there is no syslog.
	: >"$DIR/etc/main.cf"
	postconf -c "$DIR/etc" -e \
		"compatibility_level = 3.7" \
		"config_directory = $DIR/etc" \
		"queue_directory = $DIR/spool" \
		"data_directory = $DIR/data" \
		"command_directory = /usr/sbin" \
		"daemon_directory = /usr/lib/postfix/sbin" \
		"mail_owner = postfix" \
		"setgid_group = postdrop" \
		"syslog_name = ringmx-postfix" \
		"maillog_file_prefixes = $DIR" \
		"maillog_file = $DIR/maillog" \
		"myhostname = postfix-peer.test" \
		"mydomain = test" \
		"inet_interfaces = 127.0.0.1" \
		"inet_protocols = ipv4" \
		"mynetworks = 127.0.0.0/8" \
		"smtpd_banner = \$myhostname ESMTP" \
		"biff = no"
	# Mail routing: nothing is local; example.com is accepted for relay and
	# every queued message is then thrown away by discard(8).
	postconf -c "$DIR/etc" -e \
		"mydestination =" \
		"local_recipient_maps =" \
		"alias_maps =" \
		"alias_database =" \
		"relay_domains = example.com" \
		"relay_transport = discard" \
		"default_transport = discard" \
		"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination"
	# POSTFIX_RELAY=host:port: relay every message there over SMTP instead
	# (the relay benchmark: Postfix as a gateway in front of smtp-sink).
	if [ -n "${POSTFIX_RELAY:-}" ]; then
		postconf -c "$DIR/etc" -e \
			"relay_transport = smtp" \
			"default_transport = smtp" \
			"relayhost = [${POSTFIX_RELAY%:*}]:${POSTFIX_RELAY##*:}"
		cat >>"$DIR/etc/master.cf" <<EOF2
smtp               unix  -       -      n      -      -       smtp
EOF2
	fi
	# No DNS anywhere (the bench machine may have none): no reverse lookup of
	# the client (smtpd_peername_lookup, Postfix >= 3.7), no DNS for clients.
	postconf -c "$DIR/etc" -e \
		"smtpd_peername_lookup = no" \
		"smtp_dns_support_level = disabled" \
		"lmtp_dns_support_level = disabled" \
		"smtp_host_lookup = native"
	# Concurrency: 100 sessions from one IP, plus N idle ones for idle-mem
	# (each session is one smtpd process).  in_flow_delay=0: otherwise
	# cleanup sleeps up to 1 s per message when mail arrives faster than
	# qmgr takes it, i.e. Postfix deliberately throttles the sender.  The
	# anvil limits are off (127.0.0.1 is also exempt through mynetworks).
	postconf -c "$DIR/etc" -e \
		"default_process_limit = 1000" \
		"in_flow_delay = 0" \
		"smtpd_client_connection_count_limit = 0" \
		"smtpd_client_connection_rate_limit = 0" \
		"smtpd_client_message_rate_limit = 0" \
		"smtpd_client_recipient_rate_limit = 0" \
		"smtpd_client_event_limit_exceptions = 127.0.0.0/8"

	[ -z "$TLS_CERT$TLS_KEY" ] || tls_setup

	# `postfix check` creates the queue subdirectories (post-install
	# create-missing, with ownerships from /etc/postfix/postfix-files).
	# Until postlogd runs, Postfix commands log to syslog (often absent) and
	# to stderr only when it is a terminal: on failure, rerun under script(1)
	# to show the reason (e.g. a maillog_file outside maillog_file_prefixes).
	if ! postfix -c "$DIR/etc" check; then
		script -qc "postfix -c $DIR/etc check" /dev/null >&2 || true
		die "postfix check failed (see above), config in $DIR/etc"
	fi
	postfix -c "$DIR/etc" start
	wait_220 || die "no 220 on 127.0.0.1:$PORT; see $DIR/maillog"
	echo "postfix peer: 127.0.0.1:$PORT (dir $DIR, master pid $(master_pid))" >&2
	if [ -n "$TLS_CERT" ]; then
		wait_tls || die "no TLS 220 on 127.0.0.1:$TLS_PORT; see $DIR/maillog"
		echo "postfix peer: STARTTLS on $PORT, implicit TLS on 127.0.0.1:$TLS_PORT" >&2
	fi
	echo "$PORT"
}

# TLS, when POSTFIX_TLS_CERT/KEY are set (called by start once master.cf and
# main.cf are written): the certificate and key go into the instance, smtpd
# offers STARTTLS, a second smtpd service speaks TLS from the first byte, and
# tlsmgr(8) runs: it hands every smtpd process the same session ticket keys
# (and the PRNG seed), so that a session resumes whichever smtpd process
# takes the next connection (smtp_load --resume).  Tickets
# (tls_session_ticket_cipher, on by default) need no session cache database.
tls_setup() {
	[ -n "$TLS_CERT" ] && [ -n "$TLS_KEY" ] ||
		die "POSTFIX_TLS_CERT and POSTFIX_TLS_KEY go together"
	[ -r "$TLS_CERT" ] || die "cannot read POSTFIX_TLS_CERT '$TLS_CERT'"
	[ -r "$TLS_KEY" ] || die "cannot read POSTFIX_TLS_KEY '$TLS_KEY'"
	[ "$TLS_PORT" != "$PORT" ] || die "POSTFIX_TLS_PORT must differ from POSTFIX_PORT"
	# smtpd reads them as root, before it drops privileges.
	install -m 644 "$TLS_CERT" "$DIR/etc/cert.pem"
	install -m 600 "$TLS_KEY" "$DIR/etc/key.pem"
	cat >>"$DIR/etc/master.cf" <<EOF
127.0.0.1:$TLS_PORT    inet  n       -      n      -      -       smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
tlsmgr             unix  -       -      n      1000?  1       tlsmgr
EOF
	# TLS 1.2 and 1.3 only, as smtp_load offers; no TLS details in the
	# Received: header, so that plain and TLS messages are the same size.
	postconf -c "$DIR/etc" -e \
		"smtpd_tls_cert_file = $DIR/etc/cert.pem" \
		"smtpd_tls_key_file = $DIR/etc/key.pem" \
		"smtpd_tls_security_level = may" \
		"smtpd_tls_protocols = >=TLSv1.2" \
		"smtpd_tls_mandatory_protocols = >=TLSv1.2" \
		"smtpd_tls_loglevel = 0" \
		"smtpd_tls_received_header = no" \
		"tls_random_source = dev:/dev/urandom"
}

# Waits until 127.0.0.1:$TLS_PORT completes a TLS handshake and sends 220.
wait_tls() {
	python3 - "$TLS_PORT" <<'EOF'
import socket, ssl, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for _ in range(100):
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2) as raw:
            with ctx.wrap_socket(raw) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    sys.exit(0)
    except OSError:  # ssl.SSLError is an OSError
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}

stop() {
	load
	if pid=$(master_pid); then
		postfix -c "$DIR/etc" stop || true
		# `postfix stop` only signals the master, which then kills its
		# process group; wait until it is really gone before deleting.
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1; i=$((i + 1))
		done
		kill -0 "$pid" 2>/dev/null && { postfix -c "$DIR/etc" abort || true; sleep 1; }
	fi
	rm -rf "$DIR" "$STATE"
	echo "postfix peer stopped, $DIR removed"
}

# Counts lines matching $1 in the instance's log.
logcount() { grep -c -- "$1" "$DIR/maillog" 2>/dev/null || true; }

rate() {
	load
	MSGS=${1:-10000}
	master_pid >/dev/null || die "instance in $DIR is not running"
	q0=$(logcount 'queue active'); d0=$(logcount 'status=sent')
	t0=$(date +%s.%N)
	$SRC -d -s 100 -m "$MSGS" -l 1024 -f src@source.test -t dst@example.com \
		127.0.0.1:"$PORT" >/dev/null
	t1=$(date +%s.%N)
	echo "$MSGS $t0 $t1" | awk '{ printf "postfix: %d messages in %.2f s = %.0f msg/s\n", $1, $3 - $2, $1 / ($3 - $2) }'
	# Not part of the rate: give qmgr/discard a moment (max 30 s) to empty
	# the queue, then count from the log what qmgr picked up and discard
	# "delivered" during this run.
	i=0
	while [ $i -lt 300 ] && [ -n "$(find "$DIR/spool/incoming" "$DIR/spool/active" "$DIR/spool/deferred" -type f 2>/dev/null | head -1)" ]; do
		sleep 0.1; i=$((i + 1))
	done
	sleep 0.5   # postlogd writes asynchronously
	left=$(find "$DIR/spool/incoming" "$DIR/spool/active" "$DIR/spool/deferred" -type f | wc -l)
	echo "queued: $(($(logcount 'queue active') - q0))  discarded: $(($(logcount 'status=sent') - d0))  still in queue: $left"
}

idle_mem() { # [N] [--ehlo]
	load
	N=${1:-300}
	[ $# -gt 0 ] && shift
	pid=$(master_pid) || die "instance in $DIR is not running"
	# Make idle smtpd processes left over from earlier sessions exit
	# (a reload retires the current generation of children) so that the
	# measurement starts from zero smtpd processes.
	postfix -c "$DIR/etc" reload 2>/dev/null
	sleep 1
	python3 "$HERE/postfix_idle_memory.py" "$pid" "$PORT" "$N" "$@"
}

case ${1:-} in
start) start ;;
stop) stop ;;
rate) rate "${2:-}" ;;
idle-mem) shift; idle_mem "$@" ;;
*) echo "usage: $0 start|stop|rate [MSGS]|idle-mem [N]" >&2; exit 2 ;;
esac

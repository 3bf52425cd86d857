/* conf: the command line. Every limit is a named long option whose default
 * lives in conf.h (CONF_DEF_*) and is printed by conf_usage(), as Postfix
 * documents each main.cf parameter with its default. Parsing is strict:
 * a number is all digits and in range, an enumeration is one of its words,
 * and any mistake ends startup with one line naming the option. Called once
 * by main() before the workers start (and repeatedly by the unit tests).
 * libc only. See conf.h. */
#include "core/conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifndef RINGMX_VERSION
#define RINGMX_VERSION "0.1.0"
#endif

#define CONF_SHOW_MAX 100 /* characters of a bad value quoted in <err> */

#define CONF_STR_(x)        #x
#define CONF_STR(x)         CONF_STR_(x)
#define CONF_MAX_LISTEN_STR CONF_STR(CONF_MAX_LISTEN)

enum conf_opt {
	OPT_HELP = 'h',
	OPT_VERSION = 'V',
	OPT_LISTEN = 256, /* long-only options: values past any char */
	OPT_THREADS,
	OPT_SPOOL,
	OPT_HOSTNAME,
	OPT_DOMAINS,
	OPT_DOMAINS_FILE,
	OPT_RELAY_NETWORKS,
	OPT_ALLOW_UNTRUSTED_ROUTING,
	OPT_RECIPIENTS_FILE,
	OPT_RECIPIENT_DELIMITER,
	OPT_RECIPIENTS_EXACT_CASE,
	OPT_MAX_UNKNOWN_RCPTS,
	OPT_UNKNOWN_RCPT_DELAY,
	OPT_MAX_MESSAGE_SIZE,
	OPT_MAX_RECIPIENTS,
	OPT_MAX_SESSIONS,
	OPT_IDLE_TIMEOUT,
	OPT_MAX_ERRORS,
	OPT_ERROR_DELAY,
	OPT_GRACE,
	OPT_GREET_DELAY,
	OPT_MAX_LINE_LENGTH,
	OPT_BARE_LF,
	OPT_NUL,
	OPT_LONG_LINES,
	OPT_LOG_LEVEL,
	OPT_CHECK,
	OPT_SEGMENT_SIZE,
	OPT_DATA_BUFFER,
	OPT_DATA_MEMORY,
	OPT_DONE_LOG_SIZE,
	OPT_COMMIT_WINDOW,
	OPT_DURABILITY,
	OPT_QUEUE_CAPACITY,
	OPT_MIN_FREE,
	OPT_LISTEN_TLS,
	OPT_LISTEN_PROXY,
	OPT_LISTEN_TLS_PROXY,
	OPT_PROXY_NETWORKS,
	OPT_PROXY_TIMEOUT,
	OPT_CLIENT_PREFIX4,
	OPT_CLIENT_PREFIX6,
	OPT_CLIENT_MAX_SESSIONS,
	OPT_CLIENT_CONN_RATE,
	OPT_CLIENT_MSG_RATE,
	OPT_CLIENT_RCPT_RATE,
	OPT_CLIENT_TABLE_SIZE,
	OPT_LIMITS_EXEMPT,
	OPT_LIMITS_REDIS,
	OPT_LIMITS_REDIS_TIMEOUT,
	OPT_OVERLOAD_THRESHOLD,
	OPT_OVERLOAD_IDLE,
	OPT_OVERLOAD_MAX_ERRORS,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_CIPHERS,
	OPT_TLS_HANDSHAKE_TIMEOUT,
	OPT_RELAY_TO,
	OPT_ROUTE,
	OPT_RELAY_POOL,
	OPT_RETRY_MIN,
	OPT_RETRY_MAX,
	OPT_SPOOL_COMPACT_AGE,
	OPT_MAX_QUEUE_LIFETIME,
	OPT_RELAY_TIMEOUT,
	OPT_RELAY_TLS,
	OPT_USER,
	OPT_METRICS_LISTEN,
};

static const struct option conf_longopts[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"spool", required_argument, NULL, OPT_SPOOL},
    {"hostname", required_argument, NULL, OPT_HOSTNAME},
    {"domains", required_argument, NULL, OPT_DOMAINS},
    {"domains-file", required_argument, NULL, OPT_DOMAINS_FILE},
    {"relay-networks", required_argument, NULL, OPT_RELAY_NETWORKS},
    {"allow-untrusted-routing", no_argument, NULL, OPT_ALLOW_UNTRUSTED_ROUTING},
    {"recipients-file", required_argument, NULL, OPT_RECIPIENTS_FILE},
    {"recipient-delimiter", required_argument, NULL, OPT_RECIPIENT_DELIMITER},
    {"recipients-exact-case", no_argument, NULL, OPT_RECIPIENTS_EXACT_CASE},
    {"max-unknown-recipients", required_argument, NULL, OPT_MAX_UNKNOWN_RCPTS},
    {"unknown-recipient-delay", required_argument, NULL, OPT_UNKNOWN_RCPT_DELAY},
    {"max-message-size", required_argument, NULL, OPT_MAX_MESSAGE_SIZE},
    {"max-recipients", required_argument, NULL, OPT_MAX_RECIPIENTS},
    {"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
    {"max-errors", required_argument, NULL, OPT_MAX_ERRORS},
    {"error-delay", required_argument, NULL, OPT_ERROR_DELAY},
    {"grace", required_argument, NULL, OPT_GRACE},
    {"greet-delay", required_argument, NULL, OPT_GREET_DELAY},
    {"max-line-length", required_argument, NULL, OPT_MAX_LINE_LENGTH},
    {"bare-lf", required_argument, NULL, OPT_BARE_LF},
    {"nul", required_argument, NULL, OPT_NUL},
    {"long-lines", required_argument, NULL, OPT_LONG_LINES},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"check", no_argument, NULL, OPT_CHECK},
    {"segment-size", required_argument, NULL, OPT_SEGMENT_SIZE},
    {"data-buffer", required_argument, NULL, OPT_DATA_BUFFER},
    {"data-memory", required_argument, NULL, OPT_DATA_MEMORY},
    {"done-log-size", required_argument, NULL, OPT_DONE_LOG_SIZE},
    {"commit-window", required_argument, NULL, OPT_COMMIT_WINDOW},
    {"durability", required_argument, NULL, OPT_DURABILITY},
    {"queue-capacity", required_argument, NULL, OPT_QUEUE_CAPACITY},
    {"spool-min-free", required_argument, NULL, OPT_MIN_FREE},
    {"listen-tls", required_argument, NULL, OPT_LISTEN_TLS},
    {"listen-proxy", required_argument, NULL, OPT_LISTEN_PROXY},
    {"listen-tls-proxy", required_argument, NULL, OPT_LISTEN_TLS_PROXY},
    {"proxy-networks", required_argument, NULL, OPT_PROXY_NETWORKS},
    {"proxy-timeout", required_argument, NULL, OPT_PROXY_TIMEOUT},
    {"client-prefix4", required_argument, NULL, OPT_CLIENT_PREFIX4},
    {"client-prefix6", required_argument, NULL, OPT_CLIENT_PREFIX6},
    {"client-max-sessions", required_argument, NULL, OPT_CLIENT_MAX_SESSIONS},
    {"client-connection-rate", required_argument, NULL, OPT_CLIENT_CONN_RATE},
    {"client-message-rate", required_argument, NULL, OPT_CLIENT_MSG_RATE},
    {"client-recipient-rate", required_argument, NULL, OPT_CLIENT_RCPT_RATE},
    {"client-table-size", required_argument, NULL, OPT_CLIENT_TABLE_SIZE},
    {"limits-exempt", required_argument, NULL, OPT_LIMITS_EXEMPT},
    {"limits-redis", required_argument, NULL, OPT_LIMITS_REDIS},
    {"limits-redis-timeout", required_argument, NULL, OPT_LIMITS_REDIS_TIMEOUT},
    {"overload-threshold", required_argument, NULL, OPT_OVERLOAD_THRESHOLD},
    {"overload-idle-timeout", required_argument, NULL, OPT_OVERLOAD_IDLE},
    {"overload-max-errors", required_argument, NULL, OPT_OVERLOAD_MAX_ERRORS},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-ciphers", required_argument, NULL, OPT_TLS_CIPHERS},
    {"tls-handshake-timeout", required_argument, NULL, OPT_TLS_HANDSHAKE_TIMEOUT},
    {"relay-to", required_argument, NULL, OPT_RELAY_TO},
    {"route", required_argument, NULL, OPT_ROUTE},
    {"relay-pool", required_argument, NULL, OPT_RELAY_POOL},
    {"retry-min", required_argument, NULL, OPT_RETRY_MIN},
    {"retry-max", required_argument, NULL, OPT_RETRY_MAX},
    {"spool-compact-age", required_argument, NULL, OPT_SPOOL_COMPACT_AGE},
    {"max-queue-lifetime", required_argument, NULL, OPT_MAX_QUEUE_LIFETIME},
    {"relay-timeout", required_argument, NULL, OPT_RELAY_TIMEOUT},
    {"relay-tls", required_argument, NULL, OPT_RELAY_TLS},
    {"user", required_argument, NULL, OPT_USER},
    {"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* Unsigned options: where each lands and the range it must lie in. The
 * upper bounds keep later arithmetic (milliseconds, pool sizes) in range. */
static const struct conf_num {
	int opt;
	size_t off; /* offsetof(struct conf, field), an unsigned */
	unsigned min, max;
} conf_nums[] = {
    {OPT_THREADS, offsetof(struct conf, threads), 0, 256},
    {OPT_MAX_RECIPIENTS, offsetof(struct conf, max_recipients), 1, 1000000},
    {OPT_MAX_SESSIONS, offsetof(struct conf, max_sessions), 1, 1000000},
    {OPT_IDLE_TIMEOUT, offsetof(struct conf, idle_timeout), 1, 86400},
    {OPT_MAX_ERRORS, offsetof(struct conf, max_errors), 0, 1000000},
    {OPT_ERROR_DELAY, offsetof(struct conf, error_delay_ms), 0, 60000},
    {OPT_GRACE, offsetof(struct conf, grace), 0, 86400},
    {OPT_GREET_DELAY, offsetof(struct conf, greet_delay_ms), 0, 60000},
    {OPT_MAX_UNKNOWN_RCPTS, offsetof(struct conf, max_unknown_recipients), 0, 1000000},
    {OPT_UNKNOWN_RCPT_DELAY, offsetof(struct conf, unknown_recipient_delay_ms), 0, 60000},
    /* 3: the shortest line is "." CRLF. */
    {OPT_MAX_LINE_LENGTH, offsetof(struct conf, max_line_length), 3, 1000000},
    {OPT_COMMIT_WINDOW, offsetof(struct conf, commit_window_us), 0, 1000000},
    {OPT_QUEUE_CAPACITY, offsetof(struct conf, queue_capacity), 16, 1u << 24},
    {OPT_TLS_HANDSHAKE_TIMEOUT, offsetof(struct conf, tls_handshake_timeout), 1, 3600},
    {OPT_PROXY_TIMEOUT, offsetof(struct conf, proxy_timeout), 1, 3600},
    {OPT_CLIENT_PREFIX4, offsetof(struct conf, client_prefix4), 8, 32},
    {OPT_CLIENT_PREFIX6, offsetof(struct conf, client_prefix6), 16, 128},
    {OPT_CLIENT_MAX_SESSIONS, offsetof(struct conf, client_max_sessions), 0, 1000000},
    {OPT_CLIENT_TABLE_SIZE, offsetof(struct conf, client_table_size), 1000, 100000000},
    {OPT_LIMITS_REDIS_TIMEOUT, offsetof(struct conf, limits_redis_timeout_ms), 1, 10000},
    {OPT_OVERLOAD_THRESHOLD, offsetof(struct conf, overload_threshold), 0, 100},
    {OPT_OVERLOAD_IDLE, offsetof(struct conf, overload_idle_timeout), 1, 86400},
    {OPT_OVERLOAD_MAX_ERRORS, offsetof(struct conf, overload_max_errors), 1, 1000000},
    {OPT_RELAY_POOL, offsetof(struct conf, relay_pool), 1, 1000},
    {OPT_RETRY_MIN, offsetof(struct conf, retry_min), 1, 86400},
    {OPT_RETRY_MAX, offsetof(struct conf, retry_max), 1, 86400 * 7},
    {OPT_SPOOL_COMPACT_AGE, offsetof(struct conf, spool_compact_age), 0, 86400 * 365},
    {OPT_MAX_QUEUE_LIFETIME, offsetof(struct conf, max_queue_lifetime), 1, 86400 * 365},
    {OPT_RELAY_TIMEOUT, offsetof(struct conf, relay_timeout), 1, 3600},
};

static void conf_defaults(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	policy_init(&c->policy);
	policy_init(&c->proxy_nets);
	policy_init(&c->limits_exempt);
	c->threads = 0;
	c->spool = CONF_DEF_SPOOL;
	c->hostname = NULL;
	c->max_message_size = CONF_DEF_MAX_MESSAGE_SIZE;
	c->max_recipients = CONF_DEF_MAX_RECIPIENTS;
	c->max_sessions = CONF_DEF_MAX_SESSIONS;
	c->idle_timeout = CONF_DEF_IDLE_TIMEOUT;
	c->max_errors = CONF_DEF_MAX_ERRORS;
	c->error_delay_ms = CONF_DEF_ERROR_DELAY_MS;
	c->grace = CONF_DEF_GRACE;
	c->greet_delay_ms = CONF_DEF_GREET_DELAY_MS;
	c->recipient_delimiter = CONF_DEF_RECIPIENT_DELIMITER;
	c->max_unknown_recipients = CONF_DEF_MAX_UNKNOWN_RCPTS;
	c->unknown_recipient_delay_ms = CONF_DEF_UNKNOWN_RCPT_DELAY_MS;
	c->max_line_length = CONF_DEF_MAX_LINE_LENGTH;
	c->bare_policy = SMTP_DATA_BARE_REJECT;
	c->long_line_policy = SMTP_DATA_LONG_ACCEPT;
	c->log_level = LOG_INFO;
	c->check = false;
	c->segment_size = CONF_DEF_SEGMENT_SIZE;
	c->data_buffer = CONF_DEF_DATA_BUFFER;
	c->data_memory = CONF_DEF_DATA_MEMORY;
	c->done_log_size = CONF_DEF_DONE_LOG_SIZE;
	c->commit_window_us = CONF_DEF_COMMIT_WINDOW_US;
	c->queue_capacity = CONF_DEF_QUEUE_CAPACITY;
	c->spool_min_free = CONF_DEF_SPOOL_MIN_FREE;
	c->durability_none = false;
	c->ntls_certs = 0;
	c->ntls_keys = 0;
	c->tls_ciphers = NULL;
	c->tls_handshake_timeout = CONF_DEF_TLS_HANDSHAKE_TIMEOUT;
	c->proxy_timeout = CONF_DEF_PROXY_TIMEOUT;
	c->client_prefix4 = 32;
	c->client_prefix6 = 64;
	c->client_max_sessions = CONF_DEF_CLIENT_MAX_SESSIONS;
	c->client_table_size = CONF_DEF_CLIENT_TABLE;
	c->limits_redis = NULL;
	c->limits_redis_timeout_ms = CONF_DEF_REDIS_TIMEOUT_MS;
	c->overload_threshold = CONF_DEF_OVERLOAD_THRESHOLD;
	c->overload_idle_timeout = CONF_DEF_OVERLOAD_IDLE;
	c->overload_max_errors = CONF_DEF_OVERLOAD_MAX_ERRORS;
	c->relay_pool = CONF_DEF_RELAY_POOL;
	c->retry_min = CONF_DEF_RETRY_MIN;
	c->retry_max = CONF_DEF_RETRY_MAX;
	c->spool_compact_age = CONF_DEF_SPOOL_COMPACT_AGE;
	c->max_queue_lifetime = CONF_DEF_MAX_QUEUE_LIFETIME;
	c->relay_timeout = CONF_DEF_RELAY_TIMEOUT;
	c->relay_tls = CONF_RELAY_TLS_MAY;
}

/* Option column 2-29, text from column 30, at most 100 columns in all. A
 * second line under an option adds detail; the default stays on the first. */
void conf_usage(FILE *out)
{
#define OPT(arg, text)      fprintf(out, "  %-26s  %s\n", arg, text)
#define MORE(text)          fprintf(out, "  %-26s  %s\n", "", text)
#define NUM(arg, text, def) fprintf(out, "  %-26s  %s (default: %u)\n", arg, text, def)
	fprintf(out, "Usage: ringmx [OPTIONS]\n"
	             "       ringmx queue --spool DIR [--count] [--all]\n"
	             "       ringmx reload --spool DIR\n"
	             "\n"
	             "An SMTP inbound gateway: accepts mail for its domains, and for any domain\n"
	             "from relay networks, stores it in the spool and relays it to the next hops.\n"
	             "\n"
	             "Options:\n");
	OPT("--listen ADDR:PORT", "address to listen on (default: " CONF_DEF_LISTEN ")");
	MORE("1.2.3.4:25, [::1]:25 or *:25 (all IPv4); repeatable, up to " CONF_MAX_LISTEN_STR);
	OPT("--threads N", "worker threads, 0-256, 0 = one per core, at most 256 (default: 0)");
	OPT("--spool DIR", "spool directory (default: " CONF_DEF_SPOOL ")");
	OPT("--hostname NAME", "name in the greeting and Received: (default: the host name)");
	OPT("--domains LIST",
	    "accepted domains, comma/space separated (default: " CONF_DEF_DOMAINS ")");
	OPT("--domains-file FILE", "accepted domains, one per line, '#' comments (default: none)");
	MORE("both repeatable; the first one replaces the default");
	OPT("--relay-networks CIDRS", "clients that may relay to any domain (default: none)");
	MORE("as 10.0.0.0/8, 192.0.2.1, [2001:db8::]/32; repeatable");
	OPT("--allow-untrusted-routing",
	    "let other clients name routes (user%host@, host!user@, \"a@b\"@, @a:b@c)");
	MORE("to accepted domains; default: refused 554 5.7.1, as Postfix does");
	OPT("--recipients-file FILE", "the users of a domain, one address a line, @domain for any");
	MORE("(default: none); repeatable; other users of a domain listed: 550 5.1.1");
	OPT("--recipient-delimiter CHARS", "address extensions: user+ext@ looked up as user@ "
	                                   "(default: " CONF_DEF_RECIPIENT_DELIMITER ")");
	OPT("--recipients-exact-case",
	    "local parts compared as written (default: ASCII case folded)");
	NUM("--max-unknown-recipients N", "unknown users in a session, then 421 (0: no limit)",
	    CONF_DEF_MAX_UNKNOWN_RCPTS);
	NUM("--unknown-recipient-delay MS", "wait before each 550 5.1.1, 0-60000",
	    CONF_DEF_UNKNOWN_RCPT_DELAY_MS);
	NUM("--max-message-size BYTES", "largest message, k/m/g = x1024, 0 = no limit",
	    CONF_DEF_MAX_MESSAGE_SIZE);
	NUM("--max-recipients N", "recipients per message, 1-1000000", CONF_DEF_MAX_RECIPIENTS);
	NUM("--max-sessions N", "concurrent sessions, 1-1000000", CONF_DEF_MAX_SESSIONS);
	NUM("--idle-timeout SECONDS", "close a silent session, 1-86400", CONF_DEF_IDLE_TIMEOUT);
	NUM("--max-errors N", "errors before closing a session, 0 = no limit", CONF_DEF_MAX_ERRORS);
	NUM("--error-delay MS", "wait before each error reply after the third, 0-60000",
	    CONF_DEF_ERROR_DELAY_MS);
	NUM("--grace SECONDS", "time left to open transactions at shutdown", CONF_DEF_GRACE);
	NUM("--greet-delay MS", "pause before the greeting, 0-60000", CONF_DEF_GREET_DELAY_MS);
	NUM("--max-line-length N", "longest message line, CRLF included, 3-1000000",
	    CONF_DEF_MAX_LINE_LENGTH);
	OPT("--bare-lf reject|normalize",
	    "bare CR or LF in a message: refuse, or store as CRLF (default: reject)");
	OPT("--nul reject|strip",
	    "NUL octets in a message: refuse, or drop them (default: reject)");
	OPT("--long-lines accept|reject", "message lines over --max-line-length (default: accept)");
	OPT("--segment-size BYTES",
	    "start a new spool segment past this, k/m/g (default: " CONF_DEF_SEGMENT_SIZE_STR ")");
	OPT("--data-buffer BYTES", "content a session holds before it streams to the spool "
	                           "(default: " CONF_DEF_DATA_BUFFER_STR ")");
	OPT("--data-memory BYTES", "content in memory, all sessions; past it input waits "
	                           "(default: " CONF_DEF_DATA_MEMORY_STR ")");
	OPT("--done-log-size BYTES",
	    "start a new done (and defer) log past this, k/m/g (default: " CONF_DEF_DONE_LOG_STR
	    ")");
	NUM("--commit-window USEC", "a group commit may wait this long for company (0: none)",
	    CONF_DEF_COMMIT_WINDOW_US);
	OPT("--durability fsync|none",
	    "fdatasync before 250; none is for benchmarks only (default: fsync)");
	NUM("--queue-capacity N", "descriptors per worker-to-worker queue ring",
	    CONF_DEF_QUEUE_CAPACITY);
	OPT("--spool-min-free BYTES",
	    "MAIL gets 452 below this free space, k/m/g (default: 2x max size)");
	OPT("--listen-tls ADDR:PORT", "implicit TLS listener, as on port 465 (default: none)");
	MORE("repeatable; needs --tls-cert; alone, no cleartext default listener");
	OPT("--listen-proxy ADDR:PORT", "listener behind a TCP balancer: a PROXY v1/v2 header");
	MORE("first, naming the client; repeatable (default: none)");
	OPT("--listen-tls-proxy ADDR:PORT", "the same with implicit TLS after the header");
	OPT("--proxy-networks CIDRS", "balancers whose PROXY header is believed; others are");
	MORE("closed without a greeting (needed with --listen-proxy)");
	NUM("--proxy-timeout SECONDS", "time the PROXY header may take, 1-3600",
	    CONF_DEF_PROXY_TIMEOUT);
	NUM("--client-max-sessions N", "sessions open per client address, then 421 (0: none)",
	    CONF_DEF_CLIENT_MAX_SESSIONS);
	OPT("--client-connection-rate N/PERIOD",
	    "per client, as 60/1m; beyond: 421 (default: off)");
	OPT("--client-message-rate N/PERIOD", "per client; beyond: MAIL gets 452 (default: off)");
	OPT("--client-recipient-rate N/PERIOD", "per client; beyond: RCPT gets 452 (default: off)");
	NUM("--client-prefix4 BITS", "a client is its IPv4 address cut to this, 8-32", 32);
	NUM("--client-prefix6 BITS", "and its IPv6 address to this, 16-128", 64);
	NUM("--client-table-size N", "clients tracked at once", CONF_DEF_CLIENT_TABLE);
	OPT("--limits-exempt CIDRS", "clients no per-client limit applies to (default: none,");
	MORE("loopback and --relay-networks included)");
	OPT("--limits-redis HOST:PORT", "count the connection, message and recipient rates");
	MORE("in this Redis, shared by the gateways naming it (default: none)");
	NUM("--limits-redis-timeout MS", "wait for Redis's count, 1-10000; then the local",
	    CONF_DEF_REDIS_TIMEOUT_MS);
	MORE("table decides, as while Redis is unreachable");
	NUM("--overload-threshold PERCENT", "sessions over this share of --max-sessions: overload",
	    CONF_DEF_OVERLOAD_THRESHOLD);
	MORE("mode, where these apply instead (0: never)");
	NUM("--overload-idle-timeout SECONDS", "idle timeout in overload mode",
	    CONF_DEF_OVERLOAD_IDLE);
	NUM("--overload-max-errors N", "errors before closing in overload mode",
	    CONF_DEF_OVERLOAD_MAX_ERRORS);
	OPT("--tls-cert FILE",
	    "PEM certificate (and chain): STARTTLS and --listen-tls (default: none)");
	OPT("--tls-key FILE",
	    "PEM private key of the --tls-cert in the same place (default: none)");
	MORE("repeatable, in pairs; SNI picks the certificate, else the first one");
	OPT("--tls-ciphers LIST",
	    "TLS 1.2 ciphers, OpenSSL syntax (default: ECDHE + AES-GCM/ChaCha20)");
	fprintf(out, "  --tls-handshake-timeout SECONDS\n");
	fprintf(out, "  %-26s  time a TLS handshake may take, 1-3600 (default: %u)\n", "",
	        CONF_DEF_TLS_HANDSHAKE_TIMEOUT);
	OPT("--relay-to HOSTS",
	    "next hops: host:port or lmtp:host:port, comma-separated, in order");
	MORE("of failover (default: none: accepted mail stays in the spool)");
	OPT("--route DOMAIN=HOSTS",
	    "next hops for one recipient domain; repeatable (default: none)");
	NUM("--relay-pool N", "connections per next hop and worker, 1-1000", CONF_DEF_RELAY_POOL);
	NUM("--retry-min SECONDS", "first retry of a deferred message", CONF_DEF_RETRY_MIN);
	NUM("--retry-max SECONDS", "longest wait between retries", CONF_DEF_RETRY_MAX);
	NUM("--spool-compact-age SECONDS", "deferred this long: moved out of a dying segment",
	    CONF_DEF_SPOOL_COMPACT_AGE);
	MORE("(docs/spool.md); 0 = never");
	NUM("--max-queue-lifetime SECONDS", "then a deferred message bounces",
	    CONF_DEF_MAX_QUEUE_LIFETIME);
	NUM("--relay-timeout SECONDS", "connect and reply timeout to a next hop",
	    CONF_DEF_RELAY_TIMEOUT);
	OPT("--relay-tls none|may|encrypt",
	    "STARTTLS to next hops: never, when offered, required (default: may)");
	OPT("--user NAME", "after binding, run as this user; owns the spool (default: none)");
	OPT("--metrics-listen ADDR:PORT",
	    "serve Prometheus metrics at GET /metrics there (default: none)");
	OPT("--log-level LEVEL", "error, warn, info or debug (default: info)");
	OPT("--check", "check the options and the domains files, then exit");
	OPT("-h, --help", "print this help and exit");
	OPT("-V, --version", "print the version and exit");
	fprintf(out, "\n"
	             "Queue:\n");
	OPT("ringmx queue --spool DIR",
	    "list the spooled messages: id, size, sender, recipients, age");
	OPT("             --count", "print only the number of messages");
	OPT("             --all", "also the done ones, with their state");
	OPT("ringmx queue --flush", "the running gateway retries deferred messages now");
	OPT("ringmx queue --delete ID", "marks one message deleted");
#undef NUM
#undef MORE
#undef OPT
}

/* Formats one line into <err>, prefixed "ringmx: ". Control characters
 * from argv become '?' so the message stays on one line. */
static int __attribute__((format(printf, 3, 4)))
conf_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!err || errlen == 0)
		return CONF_ERR;
	n = snprintf(err, errlen, "ringmx: ");
	if (n > 0 && (size_t)n < errlen) {
		va_start(ap, fmt);
		vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	for (char *q = err; *q; q++) {
		if ((unsigned char)*q < 0x20 || *q == 0x7f)
			*q = '?';
	}
	return CONF_ERR;
}

/* The long name of option value <opt>, or NULL when no option has it. */
static const char *opt_name(int opt)
{
	for (const struct option *o = conf_longopts; o->name; o++) {
		if (o->val == opt)
			return o->name;
	}
	return NULL;
}

/* Strict decimal: digits only (no sign, space or base prefix, which
 * strtoull() would take), no overflow, and the whole string unless <end> is
 * given to receive where the digits stop. Returns 0, -EINVAL (not a
 * number) or -ERANGE. */
static int parse_u64(const char *s, uint64_t *out, const char **end)
{
	unsigned long long v;
	char *e;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &e, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (end)
		*end = e;
	else if (*e != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

static int set_num(struct conf *c, const struct conf_num *n, const char *arg, char *err,
                   size_t errlen)
{
	uint64_t v;
	int rc = parse_u64(arg, &v, NULL);

	if (rc == -EINVAL)
		return conf_err(err, errlen, "--%s: '%.*s' is not a number", opt_name(n->opt),
		                CONF_SHOW_MAX, arg);
	if (rc < 0 || v < n->min || v > n->max)
		return conf_err(err, errlen, "--%s: '%.*s' is out of range (%u-%u)",
		                opt_name(n->opt), CONF_SHOW_MAX, arg, n->min, n->max);
	*(unsigned *)(void *)((char *)c + n->off) = (unsigned)v;
	return CONF_OK;
}

/* BYTES with an optional k, m or g suffix (powers of 1024, as Postfix
 * users expect from "10m"). */
/* Parses a size with an optional k/m/g suffix (x1024) for option <name>
 * into *<out>; <min> and <max> bound it (0 stays allowed where <zero_ok>). */
static int set_size(const char *name, uint64_t *out, uint64_t min, uint64_t max, bool zero_ok,
                    const char *arg, char *err, size_t errlen)
{
	const char *end;
	uint64_t v, mult = 1;
	int rc = parse_u64(arg, &v, &end);

	if (rc == 0 && *end != '\0') {
		switch (*end) {
		case 'k':
		case 'K':
			mult = 1ull << 10;
			break;
		case 'm':
		case 'M':
			mult = 1ull << 20;
			break;
		case 'g':
		case 'G':
			mult = 1ull << 30;
			break;
		default:
			rc = -EINVAL;
			break;
		}
		if (end[1] != '\0')
			rc = -EINVAL;
	}
	if (rc == -EINVAL)
		return conf_err(err, errlen,
		                "%s: '%.*s' is not a size (BYTES, or a number with k, m or g)",
		                name, CONF_SHOW_MAX, arg);
	if (rc < 0 || v > UINT64_MAX / mult || v * mult > max)
		return conf_err(err, errlen, "%s: '%.*s' is too large", name, CONF_SHOW_MAX, arg);
	if (v * mult < min && !(zero_ok && v == 0))
		return conf_err(err, errlen, "%s: '%.*s' is too small (at least %llu)", name,
		                CONF_SHOW_MAX, arg, (unsigned long long)min);
	*out = v * mult;
	return CONF_OK;
}

int conf_parse_listen(struct conf_listen *l, const char *s)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *h;
	size_t hlen, slen = strlen(s);
	uint64_t port;

	memset(l, 0, sizeof(*l));
	if (slen >= sizeof(l->text))
		return -EINVAL;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		h = s;
		hlen = (size_t)(colon - s);
	}
	if (parse_u64(colon + 1, &port, NULL) < 0 || port < 1 || port > 65535)
		return -EINVAL;
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (s[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&l->addr;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -EINVAL;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		l->addrlen = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&l->addr;

		/* "*" is every IPv4 address; "[::]:PORT" is every IPv6 one. */
		if (strcmp(host, "*") == 0)
			sin->sin_addr.s_addr = htonl(INADDR_ANY);
		else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -EINVAL;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		l->addrlen = sizeof(*sin);
	}
	memcpy(l->text, s, slen + 1);
	return 0;
}

int conf_split_hostport(const char *s, char *host, size_t hostlen, unsigned *port)
{
	const char *colon = strrchr(s, ':'), *h = s;
	size_t hl;
	char *end;
	unsigned long p;

	if (!colon || !colon[1] || colon[1] < '0' || colon[1] > '9')
		return -EINVAL;
	p = strtoul(colon + 1, &end, 10);
	if (*end || p == 0 || p > 65535)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (s[0] == '[') {
		/* "[ADDR6]:PORT": the brackets go. */
		if (hl < 3 || s[hl - 1] != ']')
			return -EINVAL;
		h = s + 1;
		hl -= 2;
	} else if (memchr(s, ':', hl)) {
		return -EINVAL; /* an IPv6 address needs its brackets */
	}
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	for (size_t i = 0; i < hl; i++)
		if ((unsigned char)h[i] <= ' ' || h[i] == '[' || h[i] == ']' || h[i] == '/')
			return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (unsigned)p;
	return 0;
}

/* --listen and --listen-tls (<tls>) share one array and one limit; an
 * address may appear only once across both. */
static int add_listen(struct conf *c, const char *arg, bool tls, bool proxy, char *err,
                      size_t errlen)
{
	const char *opt = proxy ? (tls ? "--listen-tls-proxy" : "--listen-proxy")
	                        : (tls ? "--listen-tls" : "--listen");
	struct conf_listen *l;

	if (c->nlisten == CONF_MAX_LISTEN)
		return conf_err(err, errlen, "%s: at most %d addresses", opt, CONF_MAX_LISTEN);
	l = &c->listen[c->nlisten];
	if (conf_parse_listen(l, arg) < 0)
		return conf_err(err, errlen,
		                "%s: '%.*s' is not ADDR:PORT (1.2.3.4:25, [::1]:25 or "
		                "*:25; port 1-65535)",
		                opt, CONF_SHOW_MAX, arg);
	l->tls = tls;
	l->proxy = proxy;
	for (unsigned i = 0; i < c->nlisten; i++) {
		if (c->listen[i].addrlen == l->addrlen &&
		    memcmp(&c->listen[i].addr, &l->addr, l->addrlen) == 0)
			return conf_err(err, errlen, "%s: '%s' is given twice", opt, l->text);
	}
	c->nlisten++;
	return CONF_OK;
}

/* --tls-cert and --tls-key fill the pairs in order, each with its own
 * count; conf_parse() checks at the end that the counts agree. */
static int add_tls_file(struct conf *c, bool key, const char *arg, char *err, size_t errlen)
{
	const char *opt = key ? "--tls-key" : "--tls-cert";
	unsigned *n = key ? &c->ntls_keys : &c->ntls_certs;

	if (arg[0] == '\0')
		return conf_err(err, errlen, "%s: the file name is empty", opt);
	if (*n == CONF_MAX_TLS_CERTS)
		return conf_err(err, errlen, "%s: at most %d", opt, CONF_MAX_TLS_CERTS);
	if (key)
		c->tls_certs[(*n)++].key = arg;
	else
		c->tls_certs[(*n)++].cert = arg;
	return CONF_OK;
}

/* getopt_long() was told to stay quiet (':' first in optstring); this says
 * what went wrong in one line. <rc> is its '?' or ':' return. */
static int opt_error(int rc, char **argv, char *err, size_t errlen)
{
	const char *arg = argv[optind - 1];
	size_t len;
	int matches = 0;

	if (rc == ':') {
		if (optopt >= 256)
			return conf_err(err, errlen, "option '--%s' needs an argument",
			                opt_name(optopt));
		return conf_err(err, errlen, "option '-%c' needs an argument", optopt);
	}
	/* A known value here is a long option given "=value" it does not take
	 * (that includes --help=x, whose value is 'h'); -h and -V themselves
	 * never fail, so any other letter is an unknown short option. */
	if (optopt != 0 && opt_name(optopt))
		return conf_err(err, errlen, "option '--%s' takes no argument", opt_name(optopt));
	if (optopt != 0)
		return conf_err(err, errlen, "unknown option '-%c'", optopt);
	/* Unknown or ambiguous long option: argv[optind - 1] is "--name[=value]". */
	if (strncmp(arg, "--", 2) != 0)
		return conf_err(err, errlen, "unknown option '%.*s'", CONF_SHOW_MAX, arg);
	arg += 2;
	len = strcspn(arg, "=");
	for (const struct option *o = conf_longopts; o->name; o++) {
		if (strncmp(o->name, arg, len) == 0)
			matches++;
	}
	if (matches > 1)
		return conf_err(err, errlen, "option '--%.*s' is ambiguous", (int)len, arg);
	return conf_err(err, errlen, "unknown option '--%.*s'",
	                (int)(len > CONF_SHOW_MAX ? CONF_SHOW_MAX : len), arg);
}

static int set_domains(struct conf *c, bool file, const char *arg, char *err, size_t errlen)
{
	char why[512];
	int rc;

	if (c->ndomain_srcs == CONF_MAX_DOMAIN_SRCS)
		return conf_err(err, errlen, "--%s: more than %u --domains and --domains-file",
		                file ? "domains-file" : "domains", CONF_MAX_DOMAIN_SRCS);
	c->domain_srcs[c->ndomain_srcs++] = (struct conf_domain_src){arg, file};
	if (file)
		rc = policy_load_domains_file(&c->policy, arg, why, sizeof(why));
	else
		rc = policy_add_domains(&c->policy, arg, why, sizeof(why));
	if (rc < 0)
		return conf_err(err, errlen, "--%s: %s", file ? "domains-file" : "domains", why);
	return CONF_OK;
}

static int set_option(struct conf *c, int opt, const char *arg, FILE *out, char *err, size_t errlen)
{
	char why[256];
	const char *bad;

	for (size_t i = 0; i < sizeof(conf_nums) / sizeof(conf_nums[0]); i++) {
		if (conf_nums[i].opt == opt)
			return set_num(c, &conf_nums[i], arg, err, errlen);
	}
	switch (opt) {
	case OPT_HELP:
		conf_usage(out);
		return CONF_EXIT;
	case OPT_VERSION:
		fprintf(out, "ringmx %s\n", RINGMX_VERSION);
		return CONF_EXIT;
	case OPT_LISTEN:
	case OPT_LISTEN_TLS:
	case OPT_LISTEN_PROXY:
	case OPT_LISTEN_TLS_PROXY:
		return add_listen(c, arg, opt == OPT_LISTEN_TLS || opt == OPT_LISTEN_TLS_PROXY,
		                  opt == OPT_LISTEN_PROXY || opt == OPT_LISTEN_TLS_PROXY, err,
		                  errlen);
	case OPT_CLIENT_CONN_RATE:
	case OPT_CLIENT_MSG_RATE:
	case OPT_CLIENT_RCPT_RATE: {
		struct anvil_rate *r = opt == OPT_CLIENT_CONN_RATE  ? &c->client_conn_rate
		                       : opt == OPT_CLIENT_MSG_RATE ? &c->client_msg_rate
		                                                    : &c->client_rcpt_rate;
		const char *name = opt == OPT_CLIENT_CONN_RATE  ? "--client-connection-rate"
		                   : opt == OPT_CLIENT_MSG_RATE ? "--client-message-rate"
		                                                : "--client-recipient-rate";

		if (!strcmp(arg, "off")) {
			*r = (struct anvil_rate){0};
			return CONF_OK;
		}
		if (anvil_rate_parse(arg, r) < 0)
			return conf_err(
			    err, errlen,
			    "%s: '%.*s' is not N/PERIOD (60/1m, 1000/1h; s m h d, a week at "
			    "most) or off",
			    name, CONF_SHOW_MAX, arg);
		return CONF_OK;
	}
	case OPT_LIMITS_EXEMPT:
		if (policy_add_networks(&c->limits_exempt, arg, why, sizeof(why)) < 0)
			return conf_err(err, errlen, "--limits-exempt: %s", why);
		return CONF_OK;
	case OPT_LIMITS_REDIS: {
		char host[256];
		unsigned port;

		if (conf_split_hostport(arg, host, sizeof(host), &port) < 0)
			return conf_err(
			    err, errlen,
			    "--limits-redis: '%.*s' is not HOST:PORT (redis.example:6379, "
			    "10.0.0.5:6379, [2001:db8::5]:6379; port 1-65535)",
			    CONF_SHOW_MAX, arg);
		c->limits_redis = arg;
		return CONF_OK;
	}
	case OPT_PROXY_NETWORKS:
		if (policy_add_networks(&c->proxy_nets, arg, why, sizeof(why)) < 0)
			return conf_err(err, errlen, "--proxy-networks: %s", why);
		return CONF_OK;
	case OPT_TLS_CERT:
	case OPT_TLS_KEY:
		return add_tls_file(c, opt == OPT_TLS_KEY, arg, err, errlen);
	case OPT_TLS_CIPHERS:
		/* Checked by OpenSSL when main() builds the TLS context. */
		if (arg[0] == '\0')
			return conf_err(err, errlen, "--tls-ciphers: the list is empty");
		c->tls_ciphers = arg;
		return CONF_OK;
	case OPT_SPOOL:
		if (arg[0] == '\0')
			return conf_err(err, errlen, "--spool: the directory name is empty");
		c->spool = arg;
		return CONF_OK;
	case OPT_HOSTNAME:
		bad = policy_domain_invalid(sv_cstr(arg));
		/* It goes into the banner and Received: lines: ASCII (A-labels). */
		for (const char *q = arg; !bad && *q; q++) {
			if ((unsigned char)*q >= 0x80)
				bad = "not ASCII (write an IDN as xn--)";
		}
		if (bad)
			return conf_err(err, errlen, "--hostname: '%.*s': %s", CONF_SHOW_MAX, arg,
			                bad);
		c->hostname = arg;
		return CONF_OK;
	case OPT_DOMAINS:
	case OPT_DOMAINS_FILE:
		return set_domains(c, opt == OPT_DOMAINS_FILE, arg, err, errlen);
	case OPT_RELAY_NETWORKS:
		if (policy_add_networks(&c->policy, arg, why, sizeof(why)) < 0)
			return conf_err(err, errlen, "--relay-networks: %s", why);
		return CONF_OK;
	case OPT_MAX_MESSAGE_SIZE:
		return set_size("--max-message-size", &c->max_message_size, 0, UINT64_MAX, true,
		                arg, err, errlen);
	case OPT_SEGMENT_SIZE:
		return set_size("--segment-size", &c->segment_size, 64u << 10, 1ull << 40, false,
		                arg, err, errlen);
	case OPT_DATA_BUFFER:
		return set_size("--data-buffer", &c->data_buffer, 16u << 10, 1ull << 30, false, arg,
		                err, errlen);
	case OPT_DATA_MEMORY:
		return set_size("--data-memory", &c->data_memory, 1u << 20, 1ull << 50, false, arg,
		                err, errlen);
	case OPT_DONE_LOG_SIZE:
		return set_size("--done-log-size", &c->done_log_size, 4u << 10, 1ull << 40, false,
		                arg, err, errlen);
	case OPT_MIN_FREE:
		return set_size("--spool-min-free", &c->spool_min_free, 0, UINT64_MAX, true, arg,
		                err, errlen);
	case OPT_DURABILITY:
		if (strcmp(arg, "fsync") == 0)
			c->durability_none = false;
		else if (strcmp(arg, "none") == 0)
			c->durability_none = true;
		else
			return conf_err(err, errlen, "--durability: '%.*s' is not fsync or none",
			                CONF_SHOW_MAX, arg);
		return CONF_OK;
	case OPT_BARE_LF:
		if (strcmp(arg, "reject") == 0)
			c->bare_policy = SMTP_DATA_BARE_REJECT;
		else if (strcmp(arg, "normalize") == 0)
			c->bare_policy = SMTP_DATA_BARE_NORMALIZE;
		else
			return conf_err(err, errlen, "--bare-lf: '%.*s' is not reject or normalize",
			                CONF_SHOW_MAX, arg);
		return CONF_OK;
	case OPT_NUL:
		if (strcmp(arg, "reject") == 0)
			c->nul_strip = false;
		else if (strcmp(arg, "strip") == 0)
			c->nul_strip = true;
		else
			return conf_err(err, errlen, "--nul: '%.*s' is not reject or strip",
			                CONF_SHOW_MAX, arg);
		return CONF_OK;
	case OPT_LONG_LINES:
		if (strcmp(arg, "accept") == 0)
			c->long_line_policy = SMTP_DATA_LONG_ACCEPT;
		else if (strcmp(arg, "reject") == 0)
			c->long_line_policy = SMTP_DATA_LONG_REJECT;
		else
			return conf_err(err, errlen, "--long-lines: '%.*s' is not accept or reject",
			                CONF_SHOW_MAX, arg);
		return CONF_OK;
	case OPT_LOG_LEVEL:
		if (log_level_parse(arg, &c->log_level) < 0)
			return conf_err(err, errlen,
			                "--log-level: '%.*s' is not error, warn, info or debug",
			                CONF_SHOW_MAX, arg);
		return CONF_OK;
	case OPT_METRICS_LISTEN:
		if (conf_parse_listen(&c->metrics_listen, arg) < 0) {
			c->metrics_listen.addrlen = 0;
			return conf_err(
			    err, errlen,
			    "--metrics-listen: '%.*s' is not ADDR:PORT (127.0.0.1:9425, "
			    "[::1]:9425 or *:9425; port 1-65535)",
			    CONF_SHOW_MAX, arg);
		}
		return CONF_OK;
	case OPT_USER:
		if (!*arg)
			return conf_err(err, errlen, "--user: empty name");
		c->user = arg;
		return CONF_OK;
	case OPT_RELAY_TLS:
		if (strcmp(arg, "none") == 0)
			c->relay_tls = CONF_RELAY_TLS_NONE;
		else if (strcmp(arg, "may") == 0)
			c->relay_tls = CONF_RELAY_TLS_MAY;
		else if (strcmp(arg, "encrypt") == 0)
			c->relay_tls = CONF_RELAY_TLS_ENCRYPT;
		else
			return conf_err(err, errlen,
			                "--relay-tls: '%.*s' is not none, may or encrypt",
			                CONF_SHOW_MAX, arg);
		return CONF_OK;
	case OPT_RELAY_TO:
		if (!*arg)
			return conf_err(err, errlen, "--relay-to: empty list");
		c->relay_to = arg;
		return CONF_OK;
	case OPT_ROUTE: {
		const char *eq = strchr(arg, '=');

		if (!eq || eq == arg || !eq[1])
			return conf_err(err, errlen, "--route: '%.*s' is not DOMAIN=HOSTS",
			                CONF_SHOW_MAX, arg);
		if (c->nroutes == CONF_MAX_ROUTES)
			return conf_err(err, errlen, "--route: more than %u routes",
			                CONF_MAX_ROUTES);
		c->routes[c->nroutes++] = arg;
		return CONF_OK;
	}
	case OPT_CHECK:
		c->check = true;
		return CONF_OK;
	case OPT_ALLOW_UNTRUSTED_ROUTING:
		c->allow_untrusted_routing = true;
		return CONF_OK;
	case OPT_RECIPIENTS_FILE:
		if (!arg[0])
			return conf_err(err, errlen, "--recipients-file: the file name is empty");
		if (c->nrecipients_files == CONF_MAX_RECIPIENTS_FILES)
			return conf_err(err, errlen, "--recipients-file: more than %u files",
			                CONF_MAX_RECIPIENTS_FILES);
		c->recipients_files[c->nrecipients_files++] = arg;
		return CONF_OK;
	case OPT_RECIPIENT_DELIMITER:
		for (const char *p = arg; *p; p++)
			if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '@')
				return conf_err(err, errlen,
				                "--recipient-delimiter: '%.*s': printable ASCII "
				                "other than '@' only",
				                CONF_SHOW_MAX, arg);
		c->recipient_delimiter = arg;
		return CONF_OK;
	case OPT_RECIPIENTS_EXACT_CASE:
		c->recipients_exact_case = true;
		return CONF_OK;
	}
	return conf_err(err, errlen, "internal error: option %d has no handler", opt);
}

int conf_parse(struct conf *c, int argc, char **argv, FILE *out, char *err, size_t errlen)
{
	bool domains_set = false;
	int opt, rc = CONF_OK;

	conf_defaults(c);
	if (err && errlen)
		err[0] = '\0';
	/* '+': stop at the first non-option instead of permuting argv, so a
	 * stray word is reported rather than skipped. ':': report missing
	 * arguments as ':' and print nothing; opt_error() words the message. */
	opterr = 0;
	optind = 0; /* glibc: 0 re-initializes, so conf_parse() can run again */
	while ((opt = getopt_long(argc, argv, "+:hV", conf_longopts, NULL)) != -1) {
		if (opt == '?' || opt == ':')
			rc = opt_error(opt, argv, err, errlen);
		else
			rc = set_option(c, opt, optarg, out, err, errlen);
		if (rc != CONF_OK)
			goto fail;
		if (opt == OPT_DOMAINS || opt == OPT_DOMAINS_FILE)
			domains_set = true;
	}
	if (optind < argc) {
		rc = conf_err(err, errlen, "unexpected argument '%.*s'", CONF_SHOW_MAX,
		              argv[optind]);
		goto fail;
	}
	if (c->ntls_certs != c->ntls_keys) {
		rc = conf_err(err, errlen, "%u --tls-cert but %u --tls-key: they go in pairs",
		              c->ntls_certs, c->ntls_keys);
		goto fail;
	}
	for (unsigned i = 0; i < c->nlisten; i++) {
		if (c->listen[i].tls && c->ntls_certs == 0) {
			rc = conf_err(err, errlen, "--listen-tls%s needs --tls-cert and --tls-key",
			              c->listen[i].proxy ? "-proxy" : "");
			goto fail;
		}
		if (c->listen[i].proxy && c->proxy_nets.nnets == 0) {
			rc = conf_err(err, errlen,
			              "--listen%s-proxy %s needs --proxy-networks (the balancers "
			              "whose header is believed)",
			              c->listen[i].tls ? "-tls" : "", c->listen[i].text);
			goto fail;
		}
	}
	/* The default only when no listener at all was given: --listen-tls
	 * alone makes a TLS-only gateway. */
	if (c->nlisten == 0 && conf_parse_listen(&c->listen[c->nlisten++], CONF_DEF_LISTEN) < 0) {
		rc = conf_err(err, errlen, "bad built-in listen address " CONF_DEF_LISTEN);
		goto fail;
	}
	for (unsigned i = 0; c->metrics_listen.addrlen && i < c->nlisten; i++) {
		if (c->listen[i].addrlen == c->metrics_listen.addrlen &&
		    memcmp(&c->listen[i].addr, &c->metrics_listen.addr, c->listen[i].addrlen) ==
		        0) {
			rc =
			    conf_err(err, errlen, "--metrics-listen: '%s' is also an SMTP listener",
			             c->metrics_listen.text);
			goto fail;
		}
	}
	if (!domains_set) {
		rc = set_domains(c, false, CONF_DEF_DOMAINS, err, errlen);
		if (rc != CONF_OK)
			goto fail;
	}
	policy_finish(&c->policy);
	return CONF_OK;
fail:
	/* Nothing is kept on CONF_EXIT or CONF_ERR; conf_fini() stays safe. */
	policy_fini(&c->policy);
	policy_fini(&c->proxy_nets);
	policy_fini(&c->limits_exempt);
	return rc;
}

void conf_fini(struct conf *c)
{
	policy_fini(&c->policy);
	policy_fini(&c->proxy_nets);
	policy_fini(&c->limits_exempt);
}

/* conf: the options, from the command line and the configuration file
 * (--config, ringmx.conf(5)). Every option is one row of the table in
 * conf.c with its type, range, default and help, like Postfix's main.cf
 * parameters; --help, `ringmx config` and a reload's comparison print
 * from that table (conf_print.c). libc only. */
#ifndef RINGMX_CORE_CONF_H
#define RINGMX_CORE_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "core/anvil.h"
#include "core/log.h"
#include "core/dnsbl.h"
#include "core/policy.h"
#include "core/smtp_data.h"

#define CONF_MAX_LISTEN    16 /* --listen and --listen-tls together */
#define CONF_MAX_TLS_CERTS 16 /* --tls-cert/--tls-key pairs (io/tls.h TLS_MAX_CERTS) */

struct conf_listen {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char text[80]; /* as given, for logs: "127.0.0.1:2525", "[::1]:25" */
	bool tls;      /* --listen-tls: implicit TLS (RFC 8314), handshake before the greeting */
	bool proxy;    /* --listen-proxy: a PROXY protocol header comes first (core/proxy) */
};

/* One --domains list or --domains-file, as given: read again at a reload. */
struct conf_domain_src {
	const char *arg;
	bool file;
};

/* One --tls-cert and the --tls-key given in the same position. The files
 * are not read here (core/ knows no OpenSSL): main() loads them, also for
 * --check. */
struct conf_tls_cert {
	const char *cert; /* PEM certificate chain; points into argv */
	const char *key;  /* PEM private key; points into argv */
};

/* The configuration file read when no --config is given, if it exists
 * (main() sets conf_default_file to it; NULL, as in the unit tests: none). */
#define CONF_DEF_CONFIG "/etc/ringmx/ringmx.conf"
extern const char *conf_default_file;

/* A list option's value as given (for `ringmx config`): conf_keys[key]. */
struct conf_given {
	unsigned key;
	const char *val;
};

/* Defaults, as the unit tests check conf.c's table against; conf_usage()
 * prints the table's. */
#define CONF_DEF_LISTEN           "127.0.0.1:2525"
#define CONF_DEF_SPOOL            "./spool"
#define CONF_DEF_DOMAINS          "localhost"
#define CONF_DEF_MAX_MESSAGE_SIZE 10240000u /* Postfix message_size_limit */
#define CONF_DEF_MAX_RECIPIENTS   1000u     /* Postfix smtpd_recipient_limit */
#define CONF_DEF_MAX_SESSIONS     10000u    /* per gateway, shared by the workers */
#define CONF_DEF_IDLE_TIMEOUT     300u      /* seconds; Postfix smtpd_timeout */
#define CONF_DEF_MAX_ERRORS       10u       /* errors, then 421 */
#define CONF_DEF_ERROR_DELAY_MS                                                                    \
	1000u /* each error reply after the third (Postfix smtpd_error_sleep_time) */
#define CONF_DEF_GRACE            30u           /* seconds a transaction may finish at shutdown */
#define CONF_DEF_GREET_DELAY_MS   0u            /* pause before 220 to catch pre-greeting talk */
#define CONF_DEF_MAX_LINE_LENGTH  1000u         /* RFC 5321 4.5.3.1.6 text line, CRLF included */
#define CONF_DEF_SEGMENT_SIZE     (64ull << 20) /* spool segment rotation */
#define CONF_DEF_SEGMENT_SIZE_STR "64m"
#define CONF_DEF_DATA_BUFFER      (256u << 10) /* content held per session before it streams */
#define CONF_DEF_DATA_BUFFER_STR  "256k"
#define CONF_DEF_DATA_MEMORY      (256ull << 20) /* content in memory, all sessions */
#define CONF_DEF_DATA_MEMORY_STR  "256m"
#define CONF_DEF_DONE_LOG_SIZE    (1ull << 20) /* done log rotation: 16384 marks */
#define CONF_DEF_DONE_LOG_STR     "1m"
#define CONF_DEF_COMMIT_WINDOW_US 0u    /* 0: a batch starts once the previous fdatasync is done */
#define CONF_DEF_QUEUE_CAPACITY   4096u /* per worker-to-worker ring */
#define CONF_DEF_SPOOL_MIN_FREE                                                                    \
	UINT64_MAX /* = 2 x max-message-size (Postfix queue_minfree spirit) */
#define CONF_DEF_TLS_HANDSHAKE_TIMEOUT 10u    /* seconds a TLS handshake may take */
#define CONF_DEF_PROXY_TIMEOUT         5u     /* seconds the PROXY header may take */
#define CONF_DEF_CLIENT_MAX_SESSIONS   50u    /* Postfix smtpd_client_connection_count_limit */
#define CONF_DEF_CLIENT_TABLE          50000u /* clients tracked at once */
#define CONF_DEF_REDIS_TIMEOUT_MS      50u    /* a rate's verdict from Redis, then local */
#define CONF_DEF_OVERLOAD_THRESHOLD    80u    /* percent of --max-sessions: overload mode */
#define CONF_DEF_OVERLOAD_IDLE         10u    /* seconds, Postfix stress mode's smtpd_timeout */
#define CONF_DEF_OVERLOAD_MAX_ERRORS   2u
#define CONF_DEF_RELAY_POOL            4u      /* connections per next hop per worker */
#define CONF_DEF_RETRY_MIN             300u    /* Postfix minimal_backoff_time */
#define CONF_DEF_RETRY_MAX             4000u   /* Postfix maximal_backoff_time */
#define CONF_DEF_SPOOL_COMPACT_AGE     3600u   /* seconds */
#define CONF_DEF_MAX_QUEUE_LIFETIME    432000u /* 5 days: Postfix maximal_queue_lifetime */
#define CONF_DEF_RELAY_TIMEOUT         300u    /* Postfix smtp_*_timeout order */
#define CONF_MAX_ROUTES                64u
#define CONF_MAX_MILTERS               8u  /* --milter, applied in order */
#define CONF_DEF_MILTER_TIMEOUT        30u /* Postfix milter_command_timeout */
#define CONF_MAX_DOMAIN_SRCS           64u /* --domains and --domains-file together */
#define CONF_MAX_RECIPIENTS_FILES      64u
#define CONF_DEF_RECIPIENT_DELIMITER   "+" /* Postfix recipient_delimiter, as commonly set */
#define CONF_DEF_MAX_UNKNOWN_RCPTS     20u /* then 421 4.7.0 and close */
#define CONF_DEF_UNKNOWN_RCPT_DELAY_MS 0u
#define CONF_MAX_DNSBL                 16u   /* --dnsbl sites */
#define CONF_MAX_RHSBL                 8u    /* --rhsbl-sender sites */
#define CONF_MAX_DNS_SERVERS           8u    /* --dns-server */
#define CONF_DEF_DNSBL_TIMEOUT_MS      2000u /* a list's answer, then "not listed" */
#define CONF_DEF_DNSBL_CACHE_TTL       3600u /* seconds a client's verdict is kept */

/* --dnsbl-action: what a client at or over --dnsbl-threshold gets */
enum conf_dnsbl_action {
	CONF_DNSBL_REJECT = 0, /* 554 5.7.1 to each command after the greeting */
	CONF_DNSBL_TEMPFAIL,   /* 450 4.7.1 likewise */
	CONF_DNSBL_LOG,        /* logged only */
};

/* --relay-tls, as Postfix's smtp_tls_security_level */
enum conf_relay_tls {
	CONF_RELAY_TLS_NONE = 0, /* never STARTTLS to a next hop */
	CONF_RELAY_TLS_MAY,      /* STARTTLS when offered, unauthenticated (the default) */
	CONF_RELAY_TLS_ENCRYPT,  /* STARTTLS required: no TLS, no delivery (4.7.0, deferred) */
};

/* --milter-default-action: what a filter that is down, times out or
 * breaks the protocol amounts to (Postfix milter_default_action). */
enum conf_milter_action {
	CONF_MILTER_TEMPFAIL = 0, /* 451 4.7.1: the client tries again (the default) */
	CONF_MILTER_ACCEPT,       /* go on without that filter (fail open) */
	CONF_MILTER_REJECT,       /* 550 5.7.1 */
};

struct conf {
	struct conf_listen listen[CONF_MAX_LISTEN];
	unsigned nlisten;
	unsigned threads;     /* 0 = one per online core, resolved by the caller */
	const char *spool;    /* points into argv or a literal */
	const char *hostname; /* NULL = gethostname(), resolved by the caller */
	struct policy policy; /* accepted domains and relay networks */
	struct conf_domain_src domain_srcs[CONF_MAX_DOMAIN_SRCS]; /* in order; the default too */
	unsigned ndomain_srcs;
	const char *recipients_files[CONF_MAX_RECIPIENTS_FILES]; /* --recipients-file, in order */
	unsigned nrecipients_files;
	const char *recipient_delimiter; /* address extension characters; "" none */
	bool recipients_exact_case;      /* --recipients-exact-case */
	/* --verify-recipients: the domains whose recipients the next hop is
	 * asked about at RCPT (io/verify); <verify_all>: every accepted one. */
	struct policy verify_domains;
	bool verify_all;
	bool verify_fail_open;           /* --verify-fail-open: a probe that cannot tell accepts */
	unsigned verify_positive_ttl;    /* seconds a 2xx is cached */
	unsigned verify_negative_ttl;    /* seconds a 5xx is cached */
	unsigned verify_cache_size;      /* entries of the shared cache */
	unsigned verify_timeout;         /* seconds: a probe's connect and each reply */
	unsigned verify_pool;            /* probe connections per next hop and worker */
	unsigned max_unknown_recipients; /* per session, then 421; 0 = no limit */
	unsigned unknown_recipient_delay_ms; /* before each 550 5.1.1 */
	uint64_t max_message_size;
	unsigned max_recipients;
	unsigned max_sessions;
	unsigned idle_timeout;                /* seconds */
	unsigned max_errors;                  /* errors in one session before 421 and close */
	unsigned error_delay_ms;              /* before each error reply after the third */
	unsigned grace;                       /* seconds, shutdown grace for transactions */
	unsigned greet_delay_ms;              /* 0 = greet at once */
	unsigned max_line_length;             /* DATA text line limit */
	enum smtp_data_bare bare_policy;      /* bare CR / LF in DATA */
	enum smtp_data_long long_line_policy; /* lines over max_line_length */
	bool nul_strip;                       /* --nul strip (default reject) */
	enum log_level log_level;
	enum log_format log_format;   /* --log-format */
	bool check;                   /* --check: validate and exit */
	bool allow_untrusted_routing; /* --allow-untrusted-routing */
	uint64_t segment_size;        /* bytes; a worker starts a new segment past it */
	uint64_t done_log_size;       /* bytes; a worker starts a new done log past it */
	uint64_t data_buffer; /* bytes of a message held before it goes to the disk as it comes */
	uint64_t data_memory; /* bytes of content in memory, all sessions together */
	unsigned commit_window_us; /* group commit: wait for more messages, microseconds */
	unsigned queue_capacity;   /* mq ring capacity (rounded up to a power of two) */
	uint64_t spool_min_free;   /* free bytes under which MAIL gets 452 4.3.1 */
	bool durability_none;      /* --durability none: no fdatasync (benchmarks only) */
	/* TLS: pairs in command-line order; [0] serves clients without SNI. */
	struct conf_tls_cert tls_certs[CONF_MAX_TLS_CERTS];
	unsigned ntls_certs;            /* 0 = no TLS: no STARTTLS, no --listen-tls */
	unsigned ntls_keys;             /* --tls-key seen; equals ntls_certs after CONF_OK */
	const char *tls_ciphers;        /* TLS 1.2 cipher list; NULL = io/tls.h's default */
	unsigned tls_handshake_timeout; /* seconds */
	struct policy proxy_nets;       /* --proxy-networks (networks only) */
	unsigned proxy_timeout;         /* seconds */
	/* Per-client limits (core/anvil). */
	unsigned client_prefix4, client_prefix6;
	unsigned client_max_sessions;                                          /* 0: no limit */
	struct anvil_rate client_conn_rate, client_msg_rate, client_rcpt_rate; /* n 0: none */
	unsigned client_table_size;
	struct policy limits_exempt;         /* --limits-exempt (networks only) */
	const char *limits_redis;            /* --limits-redis HOST:PORT as given; NULL: none */
	unsigned limits_redis_timeout_ms;    /* its verdict, then the local table decides */
	unsigned overload_threshold;         /* percent of max_sessions; 0: never */
	unsigned overload_idle_timeout;      /* seconds, in overload mode */
	unsigned overload_max_errors;        /* in overload mode */
	const char *relay_to;                /* --relay-to list as given; NULL: no delivery */
	const char *routes[CONF_MAX_ROUTES]; /* "domain=hosts" as given */
	unsigned nroutes;
	unsigned relay_pool;           /* connections per next hop per worker */
	unsigned retry_min, retry_max; /* seconds, exponential backoff between them */
	unsigned spool_compact_age;    /* seconds; 0: deferred messages never move */
	unsigned max_queue_lifetime;   /* seconds; then deferred recipients bounce */
	unsigned relay_timeout;        /* seconds: connect and each reply */
	enum conf_relay_tls relay_tls;
	const char *milters[CONF_MAX_MILTERS]; /* --milter inet:host:port / unix:/path, in order */
	unsigned nmilters;
	unsigned milter_timeout; /* seconds: connect, each reply, end of message */
	/* DNS (io/dns, io/session_dns): --dns-server (restart-only), then the
	 * checks, all live. */
	const char *dns_servers[CONF_MAX_DNS_SERVERS]; /* ADDR[:PORT] as given */
	unsigned ndns_servers;
	struct dnsbl_site dnsbl[CONF_MAX_DNSBL]; /* --dnsbl, in order */
	unsigned ndnsbl;
	unsigned dnsbl_threshold; /* a score at or over it is listed */
	enum conf_dnsbl_action dnsbl_action;
	unsigned dnsbl_timeout_ms; /* the greeting waits at most this for the answers */
	unsigned dnsbl_cache_ttl;  /* seconds a client's verdict is kept (per worker) */
	struct dnsbl_site rhsbl[CONF_MAX_RHSBL]; /* --rhsbl-sender */
	unsigned nrhsbl;
	bool peername_lookup;                /* PTR and forward-confirm each client */
	bool reject_unknown_client_hostname; /* no FCrDNS name: 450 4.7.25 */
	bool reject_unknown_sender_domain;   /* MAIL FROM domain without MX/A/AAAA: 550/450 */
	enum conf_milter_action milter_default_action;
	const char *milter_protocol; /* --milter-protocol as given ("6", "2 no_header_reply") */
	unsigned milter_version;     /* its version: 2, 3, 4 or 6 */
	bool milter_no_header_reply; /* no_header_reply: offer SMFIP_NR_HDR below version 6 */
	const char *user;            /* --user: drop root for this user after binding; NULL: stay */
	/* --metrics-listen: where GET /metrics is served (io/metrics.c);
	 * addrlen 0: no metrics server (the default). */
	struct conf_listen metrics_listen;
	/* Where the options came from: the file read (NULL: none), its text,
	 * which string fields may point into, and the list options' values as
	 * given, in order. */
	const char *config_file;
	char *file_buf;
	struct conf_given *given;
	unsigned ngiven, given_cap;
	FILE *out;          /* --help and --version go here while conf_parse() runs */
	char host_buf[256]; /* the resolved host name, where hostname points */
};

enum {
	CONF_OK = 0,   /* run */
	CONF_EXIT = 1, /* --help or --version was printed: exit 0 */
	CONF_ERR = 2,  /* bad option: <err> says why; exit 2 */
};

/* Fills <c> with the defaults, then the configuration file (--config FILE,
 * else conf_default_file if it exists), then the options in argv[1..argc),
 * which replace the file's lines of the same key. Returns CONF_OK,
 * CONF_EXIT or CONF_ERR (one line in <err>; "FILE:LINE: ..." for a bad
 * line). Prints --help and --version to <out>. On CONF_EXIT and CONF_ERR
 * nothing is left allocated; conf_fini() is needed after CONF_OK and
 * harmless after the others. String fields point into argv or the file's
 * text, which <c> owns. Uses getopt_long(): one thread at a time (startup,
 * then a reload on the main thread); may be called again after
 * conf_fini(). */
int conf_parse(struct conf *c, int argc, char **argv, FILE *out, char *err, size_t errlen);
void conf_usage(FILE *out);

/* `ringmx config`: "key = value" lines of the effective configuration in
 * the table's order (a list key one line per value), only those differing
 * from the defaults where <changed_only>, or only <keys> (<nkeys>) where
 * given. Returns 0, or -ENOENT with an unknown key's name in <err>. */
int conf_print(const struct conf *c, FILE *out, bool changed_only, const char *const *keys,
               size_t nkeys, char *err, size_t errlen);
/* An example ringmx.conf: every key, commented out, with its default and
 * its help, from the same table. */
void conf_example(FILE *out);

/* The keys whose values differ between <a> and <b>: up to <max> names into
 * <names>, with <live> (NULL: not wanted) telling whether a reload changes each one in a
 * running gateway. Returns how many differ (possibly more than <max>). */
size_t conf_changed(const struct conf *a, const struct conf *b, const char **names, bool *live,
                    size_t max);
void conf_fini(struct conf *c);

/* Splits "HOST:PORT" or "[ADDR6]:PORT" (a name or a numeric address; the
 * brackets dropped) into <host> (<hostlen> bytes) and <port> (1-65535).
 * Resolves nothing. Returns 0 or -EINVAL. */
int conf_split_hostport(const char *s, char *host, size_t hostlen, unsigned *port);
/* Parses "ADDR:PORT" or "[ADDR6]:PORT" into <l>. Returns 0 or -EINVAL. */
int conf_parse_listen(struct conf_listen *l, const char *s);

#endif

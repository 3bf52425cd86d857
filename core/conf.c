/* conf: the options, from the command line and the configuration file.
 * Every option is one row of conf_keys[] below (name, type, where it lands,
 * range, default, --help text, whether a reload changes it); the parser,
 * the file reader, --help, `ringmx config` and the reload's comparison all
 * read that table (core/conf_print.c prints from it), as Postfix's postconf
 * does with its parameter table. Parsing is strict: a number is all digits
 * and in range, an enumeration is one of its words, and any mistake ends
 * startup with one line naming the option (and the file and line). Called
 * by main() before the workers start, again by a reload on the main thread,
 * and repeatedly by the unit tests. libc only. See conf.h. */
#include "core/conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/conf-int.h"

#ifndef RINGMX_VERSION
#define RINGMX_VERSION "0.1.0"
#endif

#define CONF_SHOW_MAX 100         /* characters of a bad value quoted in <err> */
#define CONF_FILE_MAX (16u << 20) /* a configuration file larger than this is refused */
#define CONF_STR_(x)  #x
#define CONF_STR(x)   CONF_STR_(x)

const char *conf_default_file;

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
	OPT_CONFIG,
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
	OPT_MILTER,
	OPT_MILTER_TIMEOUT,
	OPT_MILTER_DEFAULT_ACTION,
	OPT_MILTER_PROTOCOL,
	OPT_LOG_FORMAT,
	OPT_LIMITS_REDIS,
	OPT_LIMITS_REDIS_TIMEOUT,
	OPT_DNS_SERVER,
	OPT_DNSBL,
	OPT_DNSBL_THRESHOLD,
	OPT_DNSBL_ACTION,
	OPT_DNSBL_TIMEOUT,
	OPT_DNSBL_CACHE_TTL,
	OPT_RHSBL_SENDER,
	OPT_PEERNAME_LOOKUP,
	OPT_REJECT_UNKNOWN_CLIENT,
	OPT_REJECT_UNKNOWN_SENDER,
	OPT_VERIFY_RECIPIENTS,
	OPT_VERIFY_FAIL_OPEN,
	OPT_VERIFY_POSITIVE_TTL,
	OPT_VERIFY_NEGATIVE_TTL,
	OPT_VERIFY_CACHE_SIZE,
	OPT_VERIFY_TIMEOUT,
	OPT_VERIFY_POOL,
};

/* Formats one line into <err>. Control characters from argv or a file
 * become '?' so the message stays on one line. */
static int __attribute__((format(printf, 3, 4)))
conf_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return CONF_ERR;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	for (char *q = err; *q; q++) {
		if ((unsigned char)*q < 0x20 || *q == 0x7f)
			*q = '?';
	}
	return CONF_ERR;
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

/* The typed setters: where the value lands is the key's <off>. */
#define FIELD(c, k, type) ((type *)(void *)((char *)(c) + (k)->off))

static int set_flag(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                    size_t errlen)
{
	static const char *const yes[] = {"yes", "true", "on", "1", NULL};
	static const char *const no[] = {"no", "false", "off", "0", NULL};

	if (!arg) { /* the command line: the option alone */
		*FIELD(c, k, bool) = true;
		return CONF_OK;
	}
	for (unsigned i = 0; yes[i]; i++) {
		if (!strcmp(arg, yes[i]) || !strcmp(arg, no[i])) {
			*FIELD(c, k, bool) = !strcmp(arg, yes[i]);
			return CONF_OK;
		}
	}
	return conf_err(err, errlen, "--%s: '%.*s' is not yes or no", k->name, CONF_SHOW_MAX, arg);
}

static int set_uint(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                    size_t errlen)
{
	uint64_t v;
	int rc = parse_u64(arg, &v, NULL);

	if (rc == -EINVAL)
		return conf_err(err, errlen, "--%s: '%.*s' is not a number", k->name, CONF_SHOW_MAX,
		                arg);
	if (rc < 0 || v < k->min || v > k->max)
		return conf_err(err, errlen, "--%s: '%.*s' is out of range (%u-%u)", k->name,
		                CONF_SHOW_MAX, arg, k->min, k->max);
	*FIELD(c, k, unsigned) = (unsigned)v;
	return CONF_OK;
}

/* BYTES with an optional k, m or g suffix (powers of 1024, as Postfix
 * users expect from "10m"); "auto" where the key's default is automatic. */
static int set_size(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                    size_t errlen)
{
	const char *end;
	uint64_t v, mult = 1;
	int rc;

	if (k->def && !strcmp(k->def, "auto") && !strcmp(arg, "auto")) {
		*FIELD(c, k, uint64_t) = UINT64_MAX;
		return CONF_OK;
	}
	rc = parse_u64(arg, &v, &end);
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
		                "--%s: '%.*s' is not a size (BYTES, or a number with k, m or g)",
		                k->name, CONF_SHOW_MAX, arg);
	if (rc < 0 || v > UINT64_MAX / mult || v * mult > k->smax)
		return conf_err(err, errlen, "--%s: '%.*s' is too large", k->name, CONF_SHOW_MAX,
		                arg);
	if (v * mult < k->smin && !(k->zero_ok && v == 0))
		return conf_err(err, errlen, "--%s: '%.*s' is too small (at least %llu)", k->name,
		                CONF_SHOW_MAX, arg, (unsigned long long)k->smin);
	*FIELD(c, k, uint64_t) = v * mult;
	return CONF_OK;
}

static int set_enum(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                    size_t errlen)
{
	char words[128];
	size_t n = 0, nw = 0;

	for (unsigned i = 0; k->words[i]; i++) {
		if (!strcmp(arg, k->words[i])) {
			if (k->boolean)
				*FIELD(c, k, bool) = i != 0;
			else
				*FIELD(c, k, int) = (int)i;
			return CONF_OK;
		}
		nw++;
	}
	/* "reject or strip", "none, may or encrypt" */
	words[0] = '\0';
	for (unsigned i = 0; i < nw && n < sizeof(words); i++)
		n += (size_t)snprintf(words + n, sizeof(words) - n, "%s%s",
		                      i == 0        ? ""
		                      : i + 1 == nw ? " or "
		                                    : ", ",
		                      k->words[i]);
	return conf_err(err, errlen, "--%s: '%.*s' is not %s", k->name, CONF_SHOW_MAX, arg, words);
}

static int set_str(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                   size_t errlen)
{
	if (!arg[0] && !(k->flags & CK_EMPTY))
		return conf_err(
		    err, errlen, "--%s: the %s is empty", k->name,
		    strstr(k->metavar, "LIST") || strstr(k->metavar, "HOSTS") ? "list" : "value");
	*FIELD(c, k, const char *) = arg;
	return CONF_OK;
}

/* The custom setters. */

/* --listen, --listen-tls, --listen-proxy, --listen-tls-proxy share one
 * array and one limit; an address may appear only once across them. */
static int set_listen(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                      size_t errlen)
{
	bool tls = k->id == OPT_LISTEN_TLS || k->id == OPT_LISTEN_TLS_PROXY;
	bool proxy = k->id == OPT_LISTEN_PROXY || k->id == OPT_LISTEN_TLS_PROXY;
	struct conf_listen *l;

	if (c->nlisten == CONF_MAX_LISTEN)
		return conf_err(err, errlen, "--%s: at most %d addresses", k->name,
		                CONF_MAX_LISTEN);
	l = &c->listen[c->nlisten];
	if (conf_parse_listen(l, arg) < 0)
		return conf_err(err, errlen,
		                "--%s: '%.*s' is not ADDR:PORT (1.2.3.4:25, [::1]:25 or "
		                "*:25; port 1-65535)",
		                k->name, CONF_SHOW_MAX, arg);
	l->tls = tls;
	l->proxy = proxy;
	for (unsigned i = 0; i < c->nlisten; i++) {
		if (c->listen[i].addrlen == l->addrlen &&
		    memcmp(&c->listen[i].addr, &l->addr, l->addrlen) == 0)
			return conf_err(err, errlen, "--%s: '%s' is given twice", k->name, l->text);
	}
	c->nlisten++;
	return CONF_OK;
}

/* --tls-cert and --tls-key fill the pairs in order, each with its own
 * count; conf_parse() checks at the end that the counts agree. */
static int set_tls_file(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                        size_t errlen)
{
	bool key = k->id == OPT_TLS_KEY;
	unsigned *n = key ? &c->ntls_keys : &c->ntls_certs;

	if (arg[0] == '\0')
		return conf_err(err, errlen, "--%s: the file name is empty", k->name);
	if (*n == CONF_MAX_TLS_CERTS)
		return conf_err(err, errlen, "--%s: at most %d", k->name, CONF_MAX_TLS_CERTS);
	if (key)
		c->tls_certs[(*n)++].key = arg;
	else
		c->tls_certs[(*n)++].cert = arg;
	return CONF_OK;
}

static int set_domains(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                       size_t errlen)
{
	bool file = k->id == OPT_DOMAINS_FILE;
	char why[512];
	int rc;

	if (c->ndomain_srcs == CONF_MAX_DOMAIN_SRCS)
		return conf_err(err, errlen, "--%s: more than %u --domains and --domains-file",
		                k->name, CONF_MAX_DOMAIN_SRCS);
	c->domain_srcs[c->ndomain_srcs++] = (struct conf_domain_src){arg, file};
	if (file)
		rc = policy_load_domains_file(&c->policy, arg, why, sizeof(why));
	else
		rc = policy_add_domains(&c->policy, arg, why, sizeof(why));
	if (rc < 0)
		return conf_err(err, errlen, "--%s: %s", k->name, why);
	return CONF_OK;
}

static int set_networks(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                        size_t errlen)
{
	struct policy *p = k->id == OPT_PROXY_NETWORKS  ? &c->proxy_nets
	                   : k->id == OPT_LIMITS_EXEMPT ? &c->limits_exempt
	                                                : &c->policy;
	char why[256];

	if (policy_add_networks(p, arg, why, sizeof(why)) < 0)
		return conf_err(err, errlen, "--%s: %s", k->name, why);
	return CONF_OK;
}

static int set_rate(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                    size_t errlen)
{
	struct anvil_rate *r = k->id == OPT_CLIENT_CONN_RATE  ? &c->client_conn_rate
	                       : k->id == OPT_CLIENT_MSG_RATE ? &c->client_msg_rate
	                                                      : &c->client_rcpt_rate;

	if (!strcmp(arg, "off")) {
		*r = (struct anvil_rate){0};
		return CONF_OK;
	}
	if (anvil_rate_parse(arg, r) < 0)
		return conf_err(err, errlen,
		                "--%s: '%.*s' is not N/PERIOD (60/1m, 1000/1h; s m h d, a week at "
		                "most) or off",
		                k->name, CONF_SHOW_MAX, arg);
	return CONF_OK;
}

static int set_hostname(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                        size_t errlen)
{
	const char *bad = policy_domain_invalid(sv_cstr(arg));

	/* It goes into the banner and Received: lines: ASCII (A-labels). */
	for (const char *q = arg; !bad && *q; q++) {
		if ((unsigned char)*q >= 0x80)
			bad = "not ASCII (write an IDN as xn--)";
	}
	if (bad)
		return conf_err(err, errlen, "--%s: '%.*s': %s", k->name, CONF_SHOW_MAX, arg, bad);
	c->hostname = arg;
	return CONF_OK;
}

static int set_metrics_listen(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                              size_t errlen)
{
	if (conf_parse_listen(&c->metrics_listen, arg) < 0) {
		c->metrics_listen.addrlen = 0;
		return conf_err(err, errlen,
		                "--%s: '%.*s' is not ADDR:PORT (127.0.0.1:9425, "
		                "[::1]:9425 or *:9425; port 1-65535)",
		                k->name, CONF_SHOW_MAX, arg);
	}
	return CONF_OK;
}

static int set_route(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                     size_t errlen)
{
	const char *eq = strchr(arg, '=');

	if (!eq || eq == arg || !eq[1])
		return conf_err(err, errlen, "--%s: '%.*s' is not DOMAIN=HOSTS", k->name,
		                CONF_SHOW_MAX, arg);
	if (c->nroutes == CONF_MAX_ROUTES)
		return conf_err(err, errlen, "--%s: more than %u routes", k->name, CONF_MAX_ROUTES);
	c->routes[c->nroutes++] = arg;
	return CONF_OK;
}

static int set_milter(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                      size_t errlen)
{
	if ((strncmp(arg, "inet:", 5) != 0 || !strrchr(arg + 5, ':') ||
	     !strrchr(arg + 5, ':')[1]) &&
	    (strncmp(arg, "unix:", 5) != 0 || arg[5] != '/'))
		return conf_err(err, errlen, "--%s: '%.*s' is not inet:HOST:PORT or unix:/PATH",
		                k->name, CONF_SHOW_MAX, arg);
	if (c->nmilters == CONF_MAX_MILTERS)
		return conf_err(err, errlen, "--%s: more than %u filters", k->name,
		                CONF_MAX_MILTERS);
	c->milters[c->nmilters++] = arg;
	return CONF_OK;
}

/* Postfix's milter_protocol: a version (2, 3, 4 or 6) and the extension
 * no_header_reply, separated by spaces or commas, in any order. */
static int set_milter_protocol(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                               size_t errlen)
{
	unsigned version = 0;
	bool nhr = false;
	const char *p = arg;

	while (*p) {
		size_t n;

		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		n = strcspn(p, " ,\t");
		if (!n)
			break;
		if (n == 1 && strchr("2346", *p) && !version)
			version = (unsigned)(*p - '0');
		else if (n == 15 && !strncmp(p, "no_header_reply", 15))
			nhr = true;
		else
			return conf_err(err, errlen,
			                "--%s: '%.*s': a version (2, 3, 4 or 6), once, and "
			                "optionally no_header_reply",
			                k->name, CONF_SHOW_MAX, arg);
		p += n;
	}
	if (!version)
		return conf_err(err, errlen, "--%s: '%.*s': no protocol version (2, 3, 4 or 6)",
		                k->name, CONF_SHOW_MAX, arg);
	c->milter_protocol = arg;
	c->milter_version = version;
	c->milter_no_header_reply = nhr;
	return CONF_OK;
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

static int set_limits_redis(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                            size_t errlen)
{
	char host[256];
	unsigned port;

	if (conf_split_hostport(arg, host, sizeof(host), &port) < 0)
		return conf_err(err, errlen,
		                "--%s: '%.*s' is not HOST:PORT (redis.example:6379, "
		                "10.0.0.5:6379, [2001:db8::5]:6379; port 1-65535)",
		                k->name, CONF_SHOW_MAX, arg);
	c->limits_redis = arg;
	return CONF_OK;
}

static int set_dns_server(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                          size_t errlen)
{
	struct in6_addr a6;
	struct in_addr a4;
	char host[64];
	unsigned port;

	/* ADDR, ADDR:PORT, [ADDR6]:PORT or a bare ADDR6: numeric only (a name
	 * would need a resolver to find the resolver). */
	if (inet_pton(AF_INET, arg, &a4) == 1 || inet_pton(AF_INET6, arg, &a6) == 1)
		goto ok;
	if (conf_split_hostport(arg, host, sizeof(host), &port) == 0 &&
	    (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1))
		goto ok;
	return conf_err(err, errlen,
	                "--%s: '%.*s' is not ADDR[:PORT] (192.0.2.53, 192.0.2.53:5353, "
	                "[2001:db8::53]:53; numeric; port 1-65535)",
	                k->name, CONF_SHOW_MAX, arg);
ok:
	if (c->ndns_servers == CONF_MAX_DNS_SERVERS)
		return conf_err(err, errlen, "--%s: more than %u servers", k->name,
		                CONF_MAX_DNS_SERVERS);
	c->dns_servers[c->ndns_servers++] = arg;
	return CONF_OK;
}

static int set_dnsbl(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                     size_t errlen)
{
	bool rhs = k->id == OPT_RHSBL_SENDER;
	struct dnsbl_site *sites = rhs ? c->rhsbl : c->dnsbl;
	unsigned *n = rhs ? &c->nrhsbl : &c->ndnsbl, max = rhs ? CONF_MAX_RHSBL : CONF_MAX_DNSBL;
	char why[200];

	if (*n == max)
		return conf_err(err, errlen, "--%s: more than %u sites", k->name, max);
	if (dnsbl_site_parse(arg, &sites[*n], why, sizeof(why)) < 0)
		return conf_err(err, errlen,
		                "--%s: %s (SITE[=FILTER][*WEIGHT], as zen.example*3 or "
		                "list.dnswl.test=127.0.[0..255].[1..3]*-2)",
		                k->name, why);
	(*n)++;
	return CONF_OK;
}

static int set_recipients_file(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                               size_t errlen)
{
	if (!arg[0])
		return conf_err(err, errlen, "--%s: the file name is empty", k->name);
	if (c->nrecipients_files == CONF_MAX_RECIPIENTS_FILES)
		return conf_err(err, errlen, "--%s: more than %u files", k->name,
		                CONF_MAX_RECIPIENTS_FILES);
	c->recipients_files[c->nrecipients_files++] = arg;
	return CONF_OK;
}

/* "all", or domains (comma/space separated) whose recipients the next
 * hop verifies. */
static int set_verify(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                      size_t errlen)
{
	const char *p = arg;
	char tok[256], why[512];
	bool any = false;

	while (*p) {
		size_t n;

		p += strspn(p, ", \t");
		n = strcspn(p, ", \t");
		if (!n)
			break;
		if (n >= sizeof(tok))
			return conf_err(err, errlen, "--%s: '%.*s...': too long", k->name,
			                CONF_SHOW_MAX, p);
		memcpy(tok, p, n);
		tok[n] = '\0';
		p += n;
		any = true;
		if (!strcasecmp(tok, "all"))
			c->verify_all = true;
		else if (policy_add_domains(&c->verify_domains, tok, why, sizeof(why)) < 0)
			return conf_err(err, errlen, "--%s: %s", k->name, why);
	}
	if (!any)
		return conf_err(err, errlen, "--%s: a domain or 'all', none given", k->name);
	return CONF_OK;
}

static int set_delimiter(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                         size_t errlen)
{
	for (const char *p = arg; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '@')
			return conf_err(err, errlen,
			                "--%s: '%.*s': printable ASCII other than '@' only",
			                k->name, CONF_SHOW_MAX, arg);
	c->recipient_delimiter = arg;
	return CONF_OK;
}

/* As an enumeration, with log_level_parse()'s spellings ("warning" too). */
static int set_log_level(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                         size_t errlen)
{
	if (log_level_parse(arg, &c->log_level) < 0)
		return conf_err(err, errlen, "--%s: '%.*s' is not error, warn, info or debug",
		                k->name, CONF_SHOW_MAX, arg);
	return CONF_OK;
}

static int set_log_format(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                          size_t errlen)
{
	if (log_format_parse(arg, &c->log_format) < 0)
		return conf_err(err, errlen, "--%s: '%.*s' is not text or json", k->name,
		                CONF_SHOW_MAX, arg);
	return CONF_OK;
}

static int set_action(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                      size_t errlen)
{
	(void)err;
	(void)errlen;
	switch (k->id) {
	case OPT_HELP:
		conf_usage(c->out ? c->out : stdout);
		return CONF_EXIT;
	case OPT_VERSION:
		fprintf(c->out ? c->out : stdout, "ringmx %s\n", RINGMX_VERSION);
		return CONF_EXIT;
	case OPT_CHECK:
		c->check = true;
		return CONF_OK;
	case OPT_CONFIG:
		c->config_file = arg;
		return CONF_OK;
	}
	return CONF_ERR;
}

/* The table. Its order is --help's order and `ringmx config`'s. */
#define OFF(f) offsetof(struct conf, f)
#define UINTK(n, i, f, lo, hi, fl, meta, d, dd, h, m)                                              \
	{                                                                                          \
		.name = n, .id = i, .type = CT_UINT, .flags = fl, .off = OFF(f), .min = lo,        \
		.max = hi, .metavar = meta, .def = d, .defdoc = dd, .help = h, .more = m           \
	}
#define SIZEK(n, i, f, lo, hi, z, fl, meta, d, dd, h, m)                                           \
	{                                                                                          \
		.name = n, .id = i, .type = CT_SIZE, .flags = fl, .off = OFF(f), .smin = lo,       \
		.smax = hi, .zero_ok = z, .metavar = meta, .def = d, .defdoc = dd, .help = h,      \
		.more = m                                                                          \
	}
#define FLAGK(n, i, f, fl, h, m)                                                                   \
	{                                                                                          \
		.name = n, .id = i, .type = CT_FLAG, .flags = fl, .off = OFF(f), .def = "no",      \
		.defdoc = "", .help = h, .more = m                                                 \
	}
#define ENUMK(n, i, f, b, w, fl, meta, d, dd, h, m)                                                \
	{                                                                                          \
		.name = n, .id = i, .type = CT_ENUM, .flags = fl, .boolean = b, .off = OFF(f),     \
		.words = w, .metavar = meta, .def = d, .defdoc = dd, .help = h, .more = m          \
	}
#define STRK(n, i, f, fn, fl, meta, d, dd, h, m)                                                   \
	{                                                                                          \
		.name = n, .id = i, .type = CT_STR, .flags = fl, .off = OFF(f), .set = fn,         \
		.metavar = meta, .def = d, .defdoc = dd, .help = h, .more = m                      \
	}
#define LISTK(n, i, fn, fl, meta, d, dd, h, m)                                                     \
	{                                                                                          \
		.name = n, .id = i, .type = CT_LIST, .flags = fl, .set = fn, .metavar = meta,      \
		.def = d, .defdoc = dd, .help = h, .more = m                                       \
	}
#define ACTK(n, i, meta, h, m)                                                                     \
	{                                                                                          \
		.name = n, .id = i, .type = CT_ACTION, .set = set_action, .metavar = meta,         \
		.defdoc = "", .help = h, .more = m                                                 \
	}

#define R  CK_REPEAT
#define RS (CK_REPEAT | CK_SPLIT)
#define L  CK_LIVE

static const char *const w_bare[] = {"reject", "normalize", NULL};
static const char *const w_nul[] = {"reject", "strip", NULL};
static const char *const w_long[] = {"reject", "accept", NULL};
static const char *const w_level[] = {"error", "warn", "info", "debug", NULL};
static const char *const w_logfmt[] = {"text", "json", NULL};
static const char *const w_dur[] = {"fsync", "none", NULL};
static const char *const w_rtls[] = {"none", "may", "encrypt", NULL};
static const char *const w_milter[] = {"tempfail", "accept", "reject", NULL};
static const char *const w_dnsbl[] = {"reject", "tempfail", "log", NULL};

const struct conf_key conf_keys[] = {
    LISTK("listen", OPT_LISTEN, set_listen, RS, "ADDR:PORT", CONF_DEF_LISTEN, NULL,
          "address to listen on",
          "1.2.3.4:25, [::1]:25 or *:25 (all IPv4); repeatable, up to " CONF_STR(CONF_MAX_LISTEN)),
    UINTK("threads", OPT_THREADS, threads, 0, 256, 0, "N", "0", NULL,
          "worker threads, 0-256, 0 = one per core", NULL),
    STRK("spool", OPT_SPOOL, spool, NULL, 0, "DIR", CONF_DEF_SPOOL, NULL,
         "spool directory, created if missing", NULL),
    STRK("hostname", OPT_HOSTNAME, hostname, set_hostname, 0, "NAME", NULL, "the host name",
         "name in the greeting and Received:", NULL),
    LISTK("domains", OPT_DOMAINS, set_domains, R | L, "LIST", CONF_DEF_DOMAINS, NULL,
          "accepted domains, comma/space separated", NULL),
    LISTK("domains-file", OPT_DOMAINS_FILE, set_domains, RS | L, "FILE", NULL, "none",
          "accepted domains, one per line, '#' comments",
          "both repeatable; the first one replaces the default"),
    LISTK("relay-networks", OPT_RELAY_NETWORKS, set_networks, R | L, "CIDRS", NULL, "none",
          "clients that may relay to any domain",
          "as 10.0.0.0/8, 192.0.2.1, [2001:db8::]/32; repeatable"),
    FLAGK("allow-untrusted-routing", OPT_ALLOW_UNTRUSTED_ROUTING, allow_untrusted_routing, L,
          "let other clients name routes (user%host@, host!user@, \"a@b\"@, @a:b@c)",
          "to accepted domains; default: refused 554 5.7.1, as Postfix does"),
    LISTK("recipients-file", OPT_RECIPIENTS_FILE, set_recipients_file, RS | L, "FILE", NULL, "",
          "the users of a domain, one address a line, @domain for any",
          "(default: none); repeatable; other users of a domain listed: 550 5.1.1"),
    STRK("recipient-delimiter", OPT_RECIPIENT_DELIMITER, recipient_delimiter, set_delimiter,
         L | CK_EMPTY, "CHARS", CONF_DEF_RECIPIENT_DELIMITER, NULL,
         "address extensions: user+ext@ looked up as user@", NULL),
    FLAGK("recipients-exact-case", OPT_RECIPIENTS_EXACT_CASE, recipients_exact_case, L,
          "local parts compared as written (default: ASCII case folded)", NULL),
    UINTK("max-unknown-recipients", OPT_MAX_UNKNOWN_RCPTS, max_unknown_recipients, 0, 1000000, L,
          "N", "20", NULL, "unknown users in a session, then 421 (0: no limit)", NULL),
    UINTK("unknown-recipient-delay", OPT_UNKNOWN_RCPT_DELAY, unknown_recipient_delay_ms, 0, 60000,
          L, "MS", "0", NULL, "wait before each 550 5.1.1, 0-60000", NULL),
    LISTK("verify-recipients", OPT_VERIFY_RECIPIENTS, set_verify, R | L, "DOMAIN|all", NULL, "",
          "ask the next hop at RCPT if users of these domains exist",
          "(all: every accepted one; default: none); repeatable; 5xx: 550 5.1.1"),
    FLAGK("verify-fail-open", OPT_VERIFY_FAIL_OPEN, verify_fail_open, L,
          "accept a recipient the next hop could not verify (default: 450 4.1.1)", NULL),
    UINTK("verify-positive-ttl", OPT_VERIFY_POSITIVE_TTL, verify_positive_ttl, 1, 86400 * 365, L,
          "SECONDS", "604800", NULL, "keep a verified recipient this long", NULL),
    UINTK("verify-negative-ttl", OPT_VERIFY_NEGATIVE_TTL, verify_negative_ttl, 1, 86400 * 365, L,
          "SECONDS", "10800", NULL, "keep a refused recipient this long", NULL),
    UINTK("verify-cache-size", OPT_VERIFY_CACHE_SIZE, verify_cache_size, 16, 100000000, 0, "N",
          "1000000", NULL, "addresses the verification cache holds", NULL),
    UINTK("verify-timeout", OPT_VERIFY_TIMEOUT, verify_timeout, 1, 600, L, "SECONDS", "10", NULL,
          "a probe's connect and each reply, then 450 4.1.1", NULL),
    UINTK("verify-pool", OPT_VERIFY_POOL, verify_pool, 1, 100, 0, "N", "2", NULL,
          "probe connections per next hop and worker, 1-100", NULL),
    SIZEK("max-message-size", OPT_MAX_MESSAGE_SIZE, max_message_size, 0, UINT64_MAX, true, L,
          "BYTES", "10240000", NULL, "largest message, k/m/g = x1024, 0 = no limit", NULL),
    UINTK("max-recipients", OPT_MAX_RECIPIENTS, max_recipients, 1, 1000000, L, "N", "1000", NULL,
          "recipients per message, 1-1000000", NULL),
    UINTK("max-sessions", OPT_MAX_SESSIONS, max_sessions, 1, 1000000, L, "N", "10000", NULL,
          "concurrent sessions, 1-1000000", NULL),
    UINTK("idle-timeout", OPT_IDLE_TIMEOUT, idle_timeout, 1, 86400, L, "SECONDS", "300", NULL,
          "close a silent session, 1-86400", NULL),
    UINTK("max-errors", OPT_MAX_ERRORS, max_errors, 0, 1000000, L, "N", "10", NULL,
          "errors before closing a session, 0 = no limit", NULL),
    UINTK("error-delay", OPT_ERROR_DELAY, error_delay_ms, 0, 60000, L, "MS", "1000", NULL,
          "wait before each error reply after the third, 0-60000", NULL),
    UINTK("grace", OPT_GRACE, grace, 0, 86400, 0, "SECONDS", "30", NULL,
          "time left to open transactions at shutdown", NULL),
    UINTK("greet-delay", OPT_GREET_DELAY, greet_delay_ms, 0, 60000, L, "MS", "0", NULL,
          "pause before the greeting, 0-60000", NULL),
    /* 3: the shortest line is "." CRLF. */
    UINTK("max-line-length", OPT_MAX_LINE_LENGTH, max_line_length, 3, 1000000, L, "N", "1000", NULL,
          "longest message line, CRLF included, 3-1000000", NULL),
    ENUMK("bare-lf", OPT_BARE_LF, bare_policy, false, w_bare, L, "reject|normalize", "reject", NULL,
          "bare CR or LF in a message: refuse, or store as CRLF", NULL),
    ENUMK("nul", OPT_NUL, nul_strip, true, w_nul, L, "reject|strip", "reject", NULL,
          "NUL octets in a message: refuse, or drop them", NULL),
    ENUMK("long-lines", OPT_LONG_LINES, long_line_policy, false, w_long, L, "accept|reject",
          "accept", NULL, "message lines over --max-line-length", NULL),
    SIZEK("segment-size", OPT_SEGMENT_SIZE, segment_size, 64u << 10, 1ull << 40, false, 0, "BYTES",
          CONF_DEF_SEGMENT_SIZE_STR, NULL, "start a new spool segment past this, k/m/g", NULL),
    SIZEK("data-buffer", OPT_DATA_BUFFER, data_buffer, 16u << 10, 1ull << 30, false, 0, "BYTES",
          CONF_DEF_DATA_BUFFER_STR, NULL, "content a session holds before it streams to disk",
          NULL),
    SIZEK("data-memory", OPT_DATA_MEMORY, data_memory, 1u << 20, 1ull << 50, false, 0, "BYTES",
          CONF_DEF_DATA_MEMORY_STR, NULL, "content in memory, all sessions; past it input waits",
          NULL),
    SIZEK("done-log-size", OPT_DONE_LOG_SIZE, done_log_size, 4u << 10, 1ull << 40, false, 0,
          "BYTES", CONF_DEF_DONE_LOG_STR, NULL, "start a new done (and defer) log past this, k/m/g",
          NULL),
    UINTK("commit-window", OPT_COMMIT_WINDOW, commit_window_us, 0, 1000000, 0, "USEC", "0", NULL,
          "a group commit may wait this long for company (0: none)", NULL),
    ENUMK("durability", OPT_DURABILITY, durability_none, true, w_dur, 0, "fsync|none", "fsync",
          NULL, "fdatasync before 250; none is for benchmarks only", NULL),
    UINTK("queue-capacity", OPT_QUEUE_CAPACITY, queue_capacity, 16, 1u << 24, 0, "N", "4096", NULL,
          "descriptors per worker-to-worker queue ring", NULL),
    SIZEK("spool-min-free", OPT_MIN_FREE, spool_min_free, 0, UINT64_MAX, true, 0, "BYTES", "auto",
          "auto = 2x max size", "MAIL gets 452 below this free space", NULL),
    LISTK("listen-tls", OPT_LISTEN_TLS, set_listen, RS, "ADDR:PORT", NULL, "none",
          "implicit TLS listener, as on port 465",
          "repeatable; needs --tls-cert; alone, no cleartext default listener"),
    LISTK("listen-proxy", OPT_LISTEN_PROXY, set_listen, RS, "ADDR:PORT", NULL, "",
          "listener behind a TCP balancer: a PROXY v1/v2 header",
          "first, naming the client; repeatable (default: none)"),
    LISTK("listen-tls-proxy", OPT_LISTEN_TLS_PROXY, set_listen, RS, "ADDR:PORT", NULL, "none",
          "the same with implicit TLS after the header", NULL),
    LISTK("proxy-networks", OPT_PROXY_NETWORKS, set_networks, R | L, "CIDRS", NULL, "",
          "balancers whose PROXY header is believed; others are",
          "closed without a greeting (needed with --listen-proxy)"),
    UINTK("proxy-timeout", OPT_PROXY_TIMEOUT, proxy_timeout, 1, 3600, L, "SECONDS", "5", NULL,
          "time the PROXY header may take, 1-3600", NULL),
    UINTK("client-max-sessions", OPT_CLIENT_MAX_SESSIONS, client_max_sessions, 0, 1000000, L, "N",
          "50", NULL, "sessions open per client address, then 421 (0: none)", NULL),
    LISTK("client-connection-rate", OPT_CLIENT_CONN_RATE, set_rate, L, "N/PERIOD", "off", NULL,
          "per client, as 60/1m; beyond: 421", NULL),
    LISTK("client-message-rate", OPT_CLIENT_MSG_RATE, set_rate, L, "N/PERIOD", "off", NULL,
          "per client; beyond: MAIL gets 452", NULL),
    LISTK("client-recipient-rate", OPT_CLIENT_RCPT_RATE, set_rate, L, "N/PERIOD", "off", NULL,
          "per client; beyond: RCPT gets 452", NULL),
    UINTK("client-prefix4", OPT_CLIENT_PREFIX4, client_prefix4, 8, 32, 0, "BITS", "32", NULL,
          "a client is its IPv4 address cut to this, 8-32", NULL),
    UINTK("client-prefix6", OPT_CLIENT_PREFIX6, client_prefix6, 16, 128, 0, "BITS", "64", NULL,
          "and its IPv6 address to this, 16-128", NULL),
    UINTK("client-table-size", OPT_CLIENT_TABLE_SIZE, client_table_size, 1000, 100000000, 0, "N",
          "50000", NULL, "clients tracked at once", NULL),
    LISTK("limits-exempt", OPT_LIMITS_EXEMPT, set_networks, R | L, "CIDRS", NULL, "",
          "clients no per-client limit applies to (default: none,",
          "loopback and --relay-networks included)"),
    STRK("limits-redis", OPT_LIMITS_REDIS, limits_redis, set_limits_redis, 0, "HOST:PORT", NULL, "",
         "count the connection, message and recipient rates",
         "in this Redis, shared by the gateways naming it (default: none)"),
    UINTK("limits-redis-timeout", OPT_LIMITS_REDIS_TIMEOUT, limits_redis_timeout_ms, 1, 10000, 0,
          "MS", "50", "", "wait for Redis's count, 1-10000; then the local (default: 50)",
          "table decides, as while Redis is unreachable"),
    UINTK("overload-threshold", OPT_OVERLOAD_THRESHOLD, overload_threshold, 0, 100, 0, "PERCENT",
          "80", NULL, "sessions over this share of --max-sessions: overload",
          "mode, where these apply instead (0: never)"),
    UINTK("overload-idle-timeout", OPT_OVERLOAD_IDLE, overload_idle_timeout, 1, 86400, L, "SECONDS",
          "10", NULL, "idle timeout in overload mode", NULL),
    UINTK("overload-max-errors", OPT_OVERLOAD_MAX_ERRORS, overload_max_errors, 1, 1000000, L, "N",
          "2", NULL, "errors before closing in overload mode", NULL),
    LISTK("tls-cert", OPT_TLS_CERT, set_tls_file, RS | L, "FILE", NULL, "none",
          "PEM certificate (and chain): STARTTLS and --listen-tls", NULL),
    LISTK("tls-key", OPT_TLS_KEY, set_tls_file, RS | L, "FILE", NULL, "none",
          "PEM private key of the --tls-cert in the same place",
          "repeatable, in pairs; SNI picks the certificate, else the first one"),
    STRK("tls-ciphers", OPT_TLS_CIPHERS, tls_ciphers, NULL, L, "LIST", NULL,
         "ECDHE + AES-GCM/ChaCha20", "TLS 1.2 ciphers, OpenSSL syntax", NULL),
    UINTK("tls-handshake-timeout", OPT_TLS_HANDSHAKE_TIMEOUT, tls_handshake_timeout, 1, 3600, L,
          "SECONDS", "10", NULL, "time a TLS handshake may take, 1-3600", NULL),
    STRK("relay-to", OPT_RELAY_TO, relay_to, NULL, L, "HOSTS", NULL, "",
         "next hops: host:port or lmtp:host:port, comma-separated, in order",
         "of failover (default: none: accepted mail stays in the spool)"),
    LISTK("route", OPT_ROUTE, set_route, R | L, "DOMAIN=HOSTS", NULL, "none",
          "next hops for one recipient domain; repeatable", NULL),
    UINTK("relay-pool", OPT_RELAY_POOL, relay_pool, 1, 1000, L, "N", "4", NULL,
          "connections per next hop and worker, 1-1000", NULL),
    UINTK("retry-min", OPT_RETRY_MIN, retry_min, 1, 86400, L, "SECONDS", "300", NULL,
          "first retry of a deferred message", NULL),
    UINTK("retry-max", OPT_RETRY_MAX, retry_max, 1, 86400 * 7, L, "SECONDS", "4000", NULL,
          "longest wait between retries", NULL),
    UINTK("spool-compact-age", OPT_SPOOL_COMPACT_AGE, spool_compact_age, 0, 86400 * 365, 0,
          "SECONDS", "3600", NULL, "deferred this long: moved out of a dying segment",
          "(docs/spool.md); 0 = never"),
    UINTK("max-queue-lifetime", OPT_MAX_QUEUE_LIFETIME, max_queue_lifetime, 1, 86400 * 365, L,
          "SECONDS", "432000", NULL, "then a deferred message bounces", NULL),
    UINTK("relay-timeout", OPT_RELAY_TIMEOUT, relay_timeout, 1, 3600, L, "SECONDS", "300", NULL,
          "connect and reply timeout to a next hop", NULL),
    ENUMK("relay-tls", OPT_RELAY_TLS, relay_tls, false, w_rtls, L, "none|may|encrypt", "may", NULL,
          "STARTTLS to next hops: never, when offered, required", NULL),
    LISTK("milter", OPT_MILTER, set_milter, RS | L, "ADDR", NULL, "",
          "content filter before the 250: inet:HOST:PORT or unix:PATH;",
          "repeatable, applied in order (default: none)"),
    UINTK("milter-timeout", OPT_MILTER_TIMEOUT, milter_timeout, 1, 3600, L, "SECONDS", "30", NULL,
          "a filter's connect, each reply, end of message", NULL),
    ENUMK("milter-default-action", OPT_MILTER_DEFAULT_ACTION, milter_default_action, false,
          w_milter, L, "A", "tempfail", "", "a filter down or broken: tempfail (451 4.7.1),",
          "accept or reject (550 5.7.1) (default: tempfail)"),
    STRK("milter-protocol", OPT_MILTER_PROTOCOL, milter_protocol, set_milter_protocol, L, "V", "6",
         NULL, "milter protocol version offered: 2, 3, 4 or 6,",
         "and no_header_reply (as Postfix's milter_protocol)"),
    LISTK("dns-server", OPT_DNS_SERVER, set_dns_server, RS, "ADDR[:PORT]", NULL, "",
          "DNS server to ask instead of /etc/resolv.conf's; repeatable",
          "numeric, port 53 unless given (default: the system's)"),
    LISTK("dnsbl", OPT_DNSBL, set_dnsbl, RS | L, "SITE[=FILTER][*W]", NULL, "",
          "DNS list scoring each client at connect, postscreen style:",
          "FILTER 127.0.0.[2..11], W<0 an allowlist; repeatable (default: none)"),
    UINTK("dnsbl-threshold", OPT_DNSBL_THRESHOLD, dnsbl_threshold, 1, 1000, L, "N", "1", NULL,
          "a client (or sender domain) scoring this much is listed", NULL),
    ENUMK("dnsbl-action", OPT_DNSBL_ACTION, dnsbl_action, false, w_dnsbl, L, "reject|tempfail|log",
          "reject", NULL, "a listed client: 554 5.7.1 or 450 4.7.1",
          "to every command after the greeting, or a log line only"),
    UINTK("dnsbl-timeout", OPT_DNSBL_TIMEOUT, dnsbl_timeout_ms, 100, 60000, L, "MS", "2000", NULL,
          "DNS answers the greeting (or MAIL) waits for; a list",
          "not answering by then: not listed"),
    UINTK("dnsbl-cache-ttl", OPT_DNSBL_CACHE_TTL, dnsbl_cache_ttl, 0, 86400 * 7, L, "SECONDS",
          "3600", NULL, "a client's verdict kept per worker, 0: not kept", NULL),
    LISTK("rhsbl-sender", OPT_RHSBL_SENDER, set_dnsbl, RS | L, "SITE[=FILTER][*W]", NULL, "",
          "domain list for MAIL FROM's domain: a score at",
          "--dnsbl-threshold gets 554 5.7.1; repeatable (default: none)"),
    FLAGK("peername-lookup", OPT_PEERNAME_LOOKUP, peername_lookup, L,
          "look up each client's name (PTR, forward-confirmed): Received:", "and the log"),
    FLAGK("reject-unknown-client-hostname", OPT_REJECT_UNKNOWN_CLIENT,
          reject_unknown_client_hostname, L, "a client without a forward-confirmed name",
          "gets 450 4.7.25 (RFC 7372) to each command"),
    FLAGK("reject-unknown-sender-domain", OPT_REJECT_UNKNOWN_SENDER, reject_unknown_sender_domain,
          L, "MAIL FROM a domain with no MX and no A/AAAA:",
          "550 5.1.8; null MX 550 5.1.8; no DNS answer 450 4.1.8"),
    STRK("user", OPT_USER, user, NULL, 0, "NAME", NULL, "none",
         "after binding, run as this user; owns the spool", NULL),
    LISTK("metrics-listen", OPT_METRICS_LISTEN, set_metrics_listen, 0, "ADDR:PORT", NULL, "none",
          "serve Prometheus metrics at GET /metrics there", NULL),
    {.name = "log-level",
     .id = OPT_LOG_LEVEL,
     .type = CT_ENUM,
     .flags = CK_LIVE,
     .off = OFF(log_level),
     .words = w_level,
     .set = set_log_level,
     .metavar = "LEVEL",
     .def = "info",
     .help = "error, warn, info or debug"},
    {.name = "log-format",
     .id = OPT_LOG_FORMAT,
     .type = CT_ENUM,
     .off = OFF(log_format),
     .words = w_logfmt,
     .set = set_log_format,
     .metavar = "text|json",
     .def = "text",
     .defdoc = "",
     .help = "syslog-shaped lines in Postfix's words (pflogsumm reads",
     .more = "them), or one JSON object a line (default: text)"},
    ACTK("config", OPT_CONFIG, "FILE", "read options from FILE (default: " CONF_DEF_CONFIG,
         "if present); the command line overrides it; see ringmx.conf(5)"),
    ACTK("check", OPT_CHECK, NULL, "check the options and the files they name, then exit", NULL),
    ACTK("help", OPT_HELP, NULL, "print this help and exit", NULL),
    ACTK("version", OPT_VERSION, NULL, "print the version and exit", NULL),
};
const size_t conf_nkeys = sizeof(conf_keys) / sizeof(conf_keys[0]);

#undef R
#undef RS
#undef L

const struct conf_key *conf_key_find(const char *name, size_t len)
{
	for (size_t i = 0; i < conf_nkeys; i++) {
		if (strlen(conf_keys[i].name) == len && !memcmp(conf_keys[i].name, name, len))
			return &conf_keys[i];
	}
	return NULL;
}

static const struct conf_key *key_by_id(int id)
{
	for (size_t i = 0; i < conf_nkeys; i++) {
		if (conf_keys[i].id == id)
			return &conf_keys[i];
	}
	return NULL;
}

/* Applies <arg> to key <k>: the typed setters, or the key's own (which
 * checks the value first). A list key's value is remembered for
 * `ringmx config`. */
static int key_apply(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                     size_t errlen)
{
	int rc;

	if (!k->set) {
		switch (k->type) {
		case CT_FLAG:
			return set_flag(c, k, arg, err, errlen);
		case CT_UINT:
			return set_uint(c, k, arg, err, errlen);
		case CT_SIZE:
			return set_size(c, k, arg, err, errlen);
		case CT_ENUM:
			return set_enum(c, k, arg, err, errlen);
		default:
			return set_str(c, k, arg, err, errlen);
		}
	}
	rc = k->set(c, k, arg, err, errlen);
	if (rc == CONF_OK && k->type == CT_LIST) {
		if (c->ngiven == c->given_cap) {
			unsigned cap = c->given_cap ? 2 * c->given_cap : 16;
			struct conf_given *g = realloc(c->given, cap * sizeof(*g));

			if (!g)
				return conf_err(err, errlen, "--%s: out of memory", k->name);
			c->given = g;
			c->given_cap = cap;
		}
		c->given[c->ngiven++] = (struct conf_given){(unsigned)(k - conf_keys), arg};
	}
	return rc;
}

void conf_defaults_into(struct conf *c)
{
	char err[256];

	memset(c, 0, sizeof(*c));
	policy_init(&c->policy);
	policy_init(&c->proxy_nets);
	policy_init(&c->limits_exempt);
	policy_init(&c->verify_domains);
	/* The table's defaults, except the lists' (listen, domains: applied
	 * at the end of conf_parse() when none was given). */
	for (size_t i = 0; i < conf_nkeys; i++) {
		const struct conf_key *k = &conf_keys[i];

		if (k->def && k->type != CT_LIST && k->type != CT_ACTION &&
		    key_apply(c, k, k->def, err, sizeof(err)) != CONF_OK)
			abort(); /* a default the table cannot parse: a build error */
	}
}

/* One option as given: on the command line (file NULL) or at a line of
 * the configuration file. */
struct conf_entry {
	const struct conf_key *k;
	const char *val;
	unsigned line;
};

/* getopt_long() was told to stay quiet (':' first in optstring); this says
 * what went wrong in one line. <rc> is its '?' or ':' return. */
static int opt_error(int rc, char **argv, char *err, size_t errlen)
{
	const char *arg = argv[optind - 1];
	const struct conf_key *k = optopt ? key_by_id(optopt) : NULL;
	size_t len;
	int matches = 0;

	if (rc == ':') {
		if (optopt >= 256 && k)
			return conf_err(err, errlen, "option '--%s' needs an argument", k->name);
		return conf_err(err, errlen, "option '-%c' needs an argument", optopt);
	}
	/* A known value here is a long option given "=value" it does not take
	 * (that includes --help=x, whose value is 'h'); -h and -V themselves
	 * never fail, so any other letter is an unknown short option. */
	if (k)
		return conf_err(err, errlen, "option '--%s' takes no argument", k->name);
	if (optopt != 0)
		return conf_err(err, errlen, "unknown option '-%c'", optopt);
	/* Unknown or ambiguous long option: argv[optind - 1] is "--name[=value]". */
	if (strncmp(arg, "--", 2) != 0)
		return conf_err(err, errlen, "unknown option '%.*s'", CONF_SHOW_MAX, arg);
	arg += 2;
	len = strcspn(arg, "=");
	for (size_t i = 0; i < conf_nkeys; i++) {
		if (strncmp(conf_keys[i].name, arg, len) == 0)
			matches++;
	}
	if (matches > 1)
		return conf_err(err, errlen, "option '--%.*s' is ambiguous", (int)len, arg);
	return conf_err(err, errlen, "unknown option '--%.*s'",
	                (int)(len > CONF_SHOW_MAX ? CONF_SHOW_MAX : len), arg);
}

/* The command line into <ents> (argc entries at most), in order. --help
 * and --version act at once (a later bad option is not reached). */
static int argv_read(struct conf *c, int argc, char **argv, struct conf_entry *ents,
                     unsigned *nents, char *err, size_t errlen)
{
	static struct option longopts[sizeof(conf_keys) / sizeof(conf_keys[0]) + 1];
	int opt, rc;

	for (size_t i = 0; i < conf_nkeys; i++) {
		const struct conf_key *k = &conf_keys[i];

		longopts[i] = (struct option){k->name, k->metavar ? required_argument : no_argument,
		                              NULL, k->id};
	}
	/* '+': stop at the first non-option instead of permuting argv, so a
	 * stray word is reported rather than skipped. ':': report missing
	 * arguments as ':' and print nothing; opt_error() words the message. */
	opterr = 0;
	optind = 0; /* glibc: 0 re-initializes, so conf_parse() can run again */
	while ((opt = getopt_long(argc, argv, "+:hV", longopts, NULL)) != -1) {
		const struct conf_key *k;

		if (opt == '?' || opt == ':')
			return opt_error(opt, argv, err, errlen);
		k = key_by_id(opt);
		if (k->id == OPT_HELP || k->id == OPT_VERSION) {
			rc = set_action(c, k, NULL, err, errlen);
			return rc;
		}
		ents[(*nents)++] = (struct conf_entry){k, optarg, 0};
	}
	if (optind < argc)
		return conf_err(err, errlen, "unexpected argument '%.*s'", CONF_SHOW_MAX,
		                argv[optind]);
	return CONF_OK;
}

static bool is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* Reads <path> whole into a NUL-terminated buffer. */
static int file_slurp(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	char *buf;
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return conf_err(err, errlen, "--config: %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CONF_FILE_MAX) {
		close(fd);
		return conf_err(err, errlen, "--config: %s: not a regular file of at most %u MB",
		                path, CONF_FILE_MAX >> 20);
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return conf_err(err, errlen, "--config: %s: out of memory", path);
	}
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return CONF_OK;
}

/* Where <err> gets the file and line of a bad entry. */
static int file_err(char *err, size_t errlen, const char *path, unsigned line, const char *why)
{
	return conf_err(err, errlen, "%s:%u: %s", path, line, why);
}

/* The configuration file <path> into <ents> (appended; *<cap> grown). Its
 * text stays in c->file_buf, which the entries' values point into:
 * logical lines ("key = value"; a line starting with white space continues
 * the one before, as in Postfix's main.cf; '#' starts a comment line),
 * a list value split into its items for CK_SPLIT keys. */
static int file_read(struct conf *c, const char *path, struct conf_entry **ents, unsigned *nents,
                     unsigned *cap, char *err, size_t errlen)
{
	char *raw = NULL, *out, *o, why[CONF_SHOW_MAX + 160];
	size_t len = 0;
	unsigned lineno = 0, first[sizeof(conf_keys) / sizeof(conf_keys[0])] = {0};
	const char *p, *end;
	int rc = file_slurp(path, &raw, &len, err, errlen);

	if (rc != CONF_OK)
		return rc;
	if (memchr(raw, '\0', len)) {
		free(raw);
		return conf_err(err, errlen, "%s: a NUL byte: not a text file", path);
	}
	out = malloc(len + 2);
	if (!out) {
		free(raw);
		return conf_err(err, errlen, "%s: out of memory", path);
	}
	c->file_buf = out;
	o = out;
	p = raw;
	end = raw + len;
	while (p < end) {
		const char *nl, *q, *key, *eq;
		unsigned line;
		size_t klen;
		char *val, *v;
		const struct conf_key *k;

		nl = memchr(p, '\n', (size_t)(end - p));
		nl = nl ? nl : end;
		lineno++;
		for (q = p; q < nl && is_space(*q); q++)
			;
		if (q == nl || *q == '#') {
			p = nl + (nl < end);
			continue;
		}
		if (q != p) {
			rc = file_err(err, errlen, path, lineno,
			              "a continuation line (it starts with white space) with no "
			              "\"key = value\" line before it");
			goto out;
		}
		/* "key = value" and its continuation lines, joined with one space. */
		line = lineno;
		key = p;
		eq = memchr(p, '=', (size_t)(nl - p));
		if (!eq) {
			snprintf(why, sizeof(why), "'%.*s' is not \"key = value\"",
			         (int)((size_t)(nl - p) > CONF_SHOW_MAX ? CONF_SHOW_MAX : nl - p),
			         p);
			rc = file_err(err, errlen, path, line, why);
			goto out;
		}
		for (q = eq; q > key && is_space(q[-1]); q--)
			;
		klen = (size_t)(q - key);
		k = conf_key_find(key, klen);
		if (!k || k->type == CT_ACTION) {
			snprintf(why, sizeof(why),
			         k ? "'%.*s' is a command-line option only" : "unknown key '%.*s'",
			         (int)(klen > CONF_SHOW_MAX ? CONF_SHOW_MAX : klen), key);
			rc = file_err(err, errlen, path, line, why);
			goto out;
		}
		if (!(k->flags & CK_REPEAT) && first[k - conf_keys]) {
			snprintf(why, sizeof(why), "'%s' is given twice (first at line %u)",
			         k->name, first[k - conf_keys]);
			rc = file_err(err, errlen, path, line, why);
			goto out;
		}
		first[k - conf_keys] = line;
		val = o;
		for (q = eq + 1;;) {
			while (q < nl && is_space(*q))
				q++;
			while (q < nl)
				*o++ = *q++;
			while (o > val && is_space(o[-1]))
				o--;
			p = nl + (nl < end);
			/* The next line continues this one when it starts with white
			 * space and is not blank (a comment line in between ends it). */
			if (p >= end || !is_space(*p))
				break;
			nl = memchr(p, '\n', (size_t)(end - p));
			nl = nl ? nl : end;
			for (q = p; q < nl && is_space(*q); q++)
				;
			if (q == nl || *q == '#')
				break;
			lineno++;
			if (o > val)
				*o++ = ' ';
		}
		*o++ = '\0';
		if (!val[0] && !(k->flags & CK_EMPTY)) {
			if (k->def && k->type != CT_LIST) {
				snprintf(why, sizeof(why), "'%s' needs a value", k->name);
				rc = file_err(err, errlen, path, line, why);
				goto out;
			}
			continue; /* "key =": stays unset, as printed by `ringmx config` */
		}
		/* The items of a list, each an entry of its own. */
		for (v = val;;) {
			char *item = v;

			if (k->flags & CK_SPLIT) {
				while (*item && (*item == ',' || is_space(*item)))
					item++;
				if (!*item)
					break;
				v = item + strcspn(item, ", \t");
				if (*v)
					*v++ = '\0';
			}
			if (*nents == *cap) {
				unsigned ncap = *cap * 2 + 16;
				struct conf_entry *e = realloc(*ents, ncap * sizeof(*e));

				if (!e) {
					rc = conf_err(err, errlen, "%s: out of memory", path);
					goto out;
				}
				*ents = e;
				*cap = ncap;
			}
			(*ents)[(*nents)++] = (struct conf_entry){k, item, line};
			if (!(k->flags & CK_SPLIT))
				break;
		}
	}
	rc = CONF_OK;
out:
	free(raw);
	return rc;
}

/* Applies <e>; a bad value gets the file and line in front ("ringmx:
 * FILE:LINE: key: reason") or just "ringmx: --key: reason". */
static int entry_apply(struct conf *c, const struct conf_entry *e, char *err, size_t errlen)
{
	char why[640];
	int rc = key_apply(c, e->k, e->val, why, sizeof(why));

	if (rc == CONF_ERR) {
		if (e->line)
			conf_err(err, errlen, "ringmx: %s:%u: %s", c->config_file, e->line,
			         why + (why[0] == '-' && why[1] == '-' ? 2 : 0));
		else
			conf_err(err, errlen, "ringmx: %s", why);
	}
	return rc;
}

/* The checks across options, once all are in. */
static int conf_finish(struct conf *c, bool domains_set, char *err, size_t errlen)
{
	if (c->ntls_certs != c->ntls_keys)
		return conf_err(err, errlen,
		                "ringmx: %u --tls-cert but %u --tls-key: they go in pairs",
		                c->ntls_certs, c->ntls_keys);
	for (unsigned i = 0; i < c->nlisten; i++) {
		if (c->listen[i].tls && c->ntls_certs == 0)
			return conf_err(err, errlen,
			                "ringmx: --listen-tls%s needs --tls-cert and --tls-key",
			                c->listen[i].proxy ? "-proxy" : "");
		if (c->listen[i].proxy && c->proxy_nets.nnets == 0)
			return conf_err(err, errlen,
			                "ringmx: --listen%s-proxy %s needs --proxy-networks (the "
			                "balancers whose header is believed)",
			                c->listen[i].tls ? "-tls" : "", c->listen[i].text);
	}
	/* The default only when no listener at all was given: --listen-tls
	 * alone makes a TLS-only gateway. */
	if (c->nlisten == 0 && conf_parse_listen(&c->listen[c->nlisten++], CONF_DEF_LISTEN) < 0)
		return conf_err(err, errlen,
		                "ringmx: bad built-in listen address " CONF_DEF_LISTEN);
	for (unsigned i = 0; c->metrics_listen.addrlen && i < c->nlisten; i++) {
		if (c->listen[i].addrlen == c->metrics_listen.addrlen &&
		    memcmp(&c->listen[i].addr, &c->metrics_listen.addr, c->listen[i].addrlen) == 0)
			return conf_err(err, errlen,
			                "ringmx: --metrics-listen: '%s' is also an SMTP listener",
			                c->metrics_listen.text);
	}
	if (!domains_set) {
		char why[512];

		if (set_domains(c, key_by_id(OPT_DOMAINS), CONF_DEF_DOMAINS, why, sizeof(why)) !=
		    CONF_OK)
			return conf_err(err, errlen, "ringmx: %s", why);
	}
	policy_finish(&c->policy);
	policy_finish(&c->verify_domains);
	if ((c->verify_all || c->verify_domains.ndomains) && !c->relay_to && !c->nroutes)
		return conf_err(
		    err, errlen,
		    "ringmx: --verify-recipients needs a next hop to ask (--relay-to or "
		    "--route)");
	return CONF_OK;
}

int conf_parse(struct conf *c, int argc, char **argv, FILE *out, char *err, size_t errlen)
{
	struct conf_entry *cli = NULL, *file = NULL;
	unsigned ncli = 0, nfile = 0, filecap = 0;
	bool domains_set = false, on_cli[sizeof(conf_keys) / sizeof(conf_keys[0])] = {0};
	int rc;

	conf_defaults_into(c);
	c->out = out;
	if (err && errlen)
		err[0] = '\0';
	cli = calloc((size_t)argc + 1, sizeof(*cli));
	if (!cli) {
		rc = conf_err(err, errlen, "ringmx: out of memory");
		goto fail;
	}
	rc = argv_read(c, argc, argv, cli, &ncli, err, errlen);
	if (rc == CONF_ERR && err && errlen) {
		char why[640];

		snprintf(why, sizeof(why), "%s", err);
		conf_err(err, errlen, "ringmx: %s", why);
	}
	if (rc != CONF_OK)
		goto fail;
	for (unsigned i = 0; i < ncli; i++) {
		on_cli[cli[i].k - conf_keys] = true;
		if (cli[i].k->id == OPT_CONFIG)
			c->config_file = cli[i].val;
	}
	/* The file: --config's, or the default one where it exists. */
	if (!c->config_file && conf_default_file && access(conf_default_file, F_OK) == 0)
		c->config_file = conf_default_file;
	if (c->config_file) {
		char why[640];

		rc = file_read(c, c->config_file, &file, &nfile, &filecap, why, sizeof(why));
		if (rc != CONF_OK) {
			conf_err(err, errlen, "ringmx: %s", why);
			goto fail;
		}
	}
	/* The file first, less what the command line gives again (an option on
	 * the command line replaces all its lines in the file), then the
	 * command line in its order. */
	for (unsigned i = 0; i < nfile; i++) {
		if (on_cli[file[i].k - conf_keys])
			continue;
		rc = entry_apply(c, &file[i], err, errlen);
		if (rc != CONF_OK)
			goto fail;
		domains_set |= file[i].k->id == OPT_DOMAINS || file[i].k->id == OPT_DOMAINS_FILE;
	}
	for (unsigned i = 0; i < ncli; i++) {
		rc = entry_apply(c, &cli[i], err, errlen);
		if (rc != CONF_OK)
			goto fail;
		domains_set |= cli[i].k->id == OPT_DOMAINS || cli[i].k->id == OPT_DOMAINS_FILE;
	}
	rc = conf_finish(c, domains_set, err, errlen);
	if (rc != CONF_OK)
		goto fail;
	free(cli);
	free(file);
	c->out = NULL;
	return CONF_OK;
fail:
	/* Nothing is kept on CONF_EXIT or CONF_ERR; conf_fini() stays safe. */
	free(cli);
	free(file);
	conf_fini(c);
	return rc;
}

void conf_fini(struct conf *c)
{
	policy_fini(&c->policy);
	policy_fini(&c->proxy_nets);
	policy_fini(&c->limits_exempt);
	policy_fini(&c->verify_domains);
	free(c->given);
	c->given = NULL;
	c->ngiven = c->given_cap = 0;
	free(c->file_buf);
	c->file_buf = NULL;
	c->out = NULL;
}

/* smtp_conf-t: the session limits (struct smtp_server_conf) alone, a
 * types-only header (HAProxy's -t.h split), so that core/tables can hold
 * them by value without including the session module, which includes
 * core/tables. libc only. */
#ifndef RINGMX_CORE_SMTP_CONF_T_H
#define RINGMX_CORE_SMTP_CONF_T_H

#include <stdbool.h>
#include <stdint.h>

#include "core/smtp_data.h"

struct anvil;
struct policy;
struct verify_cache;

/* Shared by every session of a gateway; read-only once published (at start, and in each reload's
 * snapshot, core/tables). */
struct smtp_server_conf {
	const char *hostname; /* greeting, EHLO reply, Received: */
	const struct policy *policy;
	uint64_t max_message_size; /* SIZE advertised and enforced; 0 = none */
	unsigned max_recipients;
	unsigned max_errors; /* errors before 421 and close */
	unsigned
	    error_delay_ms; /* each error reply after the third waits this long (SMTP_ACT_DELAY) */
	unsigned overload_max_errors; /* max_errors while the caller says overloaded */
	unsigned max_line;            /* DATA text line limit, CRLF included */
	enum smtp_data_bare bare_policy;
	enum smtp_data_long long_line_policy;
	bool tls_available; /* a certificate is configured: EHLO offers STARTTLS (RFC 3207) */
	/* NUL octets in content (RFC 5321 2.3.8 and RFC 6152 allow none): a
	 * next hop that drops them could see an end of data in
	 * "\r\n\0.\r\n" (smuggling). Refused with 550 5.6.0, or with
	 * <nul_strip> removed before the message is stored. */
	bool nul_strip;
	/* Per-client message and recipient rates (NULL: none): beyond them
	 * MAIL and RCPT get 452 4.7.0 (temporary: nothing is lost). */
	struct anvil *anvil;
	/* Of those rates, the ones another counter decides (--limits-redis):
	 * SMTP_RATE_* bits. While the caller sets s->rate_remote, MAIL or
	 * RCPT under such a rate stops with SMTP_ACT_RATE for its verdict. */
	unsigned rate_ask;
	/* Recipients naming a further route (a source route, or '%', '!' or
	 * '@' in the local part) are taken from any client, not only from
	 * relay networks. Off by default: a next hop that honours the percent
	 * hack would make the pair an open relay. */
	bool allow_untrusted_routing;
	unsigned max_unknown;      /* recipients refused as unknown users, then 421; 0: no limit */
	unsigned unknown_delay_ms; /* before each 550 5.1.1 is sent (SMTP_ACT_DELAY) */
	/* Content filters (milters) run: a MAIL or RCPT the session takes
	 * waits for their word (SMTP_ACT_FILTER) before its 250. */
	bool filters;
	/* MAIL FROM's domain is checked in the DNS by the caller
	 * (--reject-unknown-sender-domain, --rhsbl-sender): SMTP_ACT_DNS. */
	bool sender_dns;
	/* Next-hop recipient verification (--verify-recipients): the cache
	 * shared by every worker (core/verify_cache; NULL: none), and which
	 * domains: every accepted one (<verify_all>) or <verify_domains>. */
	struct verify_cache *vcache;
	const struct policy *verify_domains;
	bool verify_all;
	bool verify_fail_open; /* a probe that cannot tell (4xx, down) takes the recipient */
};

#endif

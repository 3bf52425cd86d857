/* dsn: delivery status notifications (bounces and delay warnings), RFC 3464.
 * Builds a complete RFC 5322 message, multipart/report;
 * report-type=delivery-status (RFC 6522), from the relay's per-recipient
 * results: a human-readable part, the message/delivery-status part and the
 * original header section (text/rfc822-headers) or the whole original
 * message (message/rfc822). Sans-I/O: libc only, no clock, no randomness;
 * the time and a uniqueness token come from the caller.
 *
 * Sending rules for the caller (RFC 5321 4.5.5, RFC 3464 2):
 *   - never bounce a message whose sender is the null sender: dsn_build()
 *     refuses it with -EDESTADDRREQ, and the message is then simply done
 *     (SPOOL_BOUNCED, "no DSN was due");
 *   - a DSN is itself sent with the null sender (MAIL FROM:<>) to the
 *     original sender, so that a DSN about a DSN can never be generated. */
#ifndef RINGMX_CORE_DSN_H
#define RINGMX_CORE_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "core/buf.h"

#define DSN_RETURN_MAX (64u * 1024) /* default cap on returned original content, octets */
#define DSN_STATUS_MAX 16u          /* "5.123.123" and its NUL fit */
#define DSN_TOKEN_MAX  64u          /* uniqueness token length, at most */
#define DSN_DIAG_MAX   4096u        /* diagnostic text kept per recipient; longer is cut */

/* dsn_build() result flags (its non-negative return value). */
#define DSN_F_8BIT      0x1u /* the returned content has 8-bit octets: send with BODY=8BITMIME */
#define DSN_F_TRUNCATED 0x2u /* the original was cut or reduced to headers to fit the cap */
#define DSN_F_DELAYED   0x4u /* a delay warning only: every recipient is "delayed" */
#define DSN_F_UTF8      0x8u /* an address has 8-bit octets: send with SMTPUTF8 */

enum dsn_action {
	DSN_FAILED = 0, /* given up: "Action: failed" */
	DSN_DELAYED,    /* still being retried: "Action: delayed" */
};

/* One recipient to report. Strings are NUL-terminated and owned by the
 * caller; NULL means "not known" wherever allowed. */
struct dsn_rcpt {
	const char *addr;  /* final recipient, without <>; required */
	const char *orcpt; /* original recipient (RFC 3461 ORCPT, decoded), NULL if none */
	enum dsn_action action;
	const char *status;      /* enhanced code "5.1.1"; NULL, "" or malformed: derived from
	                          * <diag> by dsn_status() */
	const char *remote_mta;  /* next hop's host name ("dns; <name>"), NULL if none replied */
	const char *diag;        /* the reply that decided it ("550 5.1.1 User unknown", as
	                          * smtp_client_result_text() gives it) or a local reason
	                          * ("4.4.1 connection refused"); NULL if none */
	const char *diag_type;   /* Diagnostic-Code type: NULL = "smtp" (a remote reply); e.g.
	                          * "X-Ringmx" for a local reason. [A-Za-z0-9-] only */
	const char *in_reply_to; /* for the text part: "RCPT TO", "end of DATA"...; NULL omit */
	time_t last_attempt;     /* Last-Attempt-Date; 0: omitted */
};

/* What to report. Everything is owned by the caller and only read. */
struct dsn_msg {
	const char *hostname; /* our name: Reporting-MTA, From: domain, Message-ID domain.
	                       * [A-Za-z0-9.-] only */
	const char *sender;   /* original envelope sender without <>: the DSN's To:;
	                       * "" = null sender (refused) */
	const char *qid;      /* our queue id (X-Ringmx-Queue-ID), NULL omit */
	const char *envid;    /* RFC 3461 ENVID of the original (decoded), NULL omit */
	time_t arrival;       /* Arrival-Date */
	time_t now;           /* Date: of the DSN */
	time_t retry_until;   /* Will-Retry-Until for delayed recipients; 0: omitted */
	const char *token;    /* unique per DSN: Message-ID <token@hostname> and the MIME
	                       * boundary. 1..DSN_TOKEN_MAX of [A-Za-z0-9._-], no leading,
	                       * trailing or double dot (e.g. "<qid>.<now>.<n>") */
	const struct dsn_rcpt *rcpts;
	unsigned nrcpt;      /* >= 1 */
	const char *content; /* the original message as spooled (header section, empty line,
	                      * body); NULL = nothing to return */
	size_t content_len;
	bool return_full;  /* return the whole message (message/rfc822) when it fits in
	                    * <return_max>, else (and by default) only its header section
	                    * (text/rfc822-headers) */
	size_t return_max; /* cap on returned octets; 0 = DSN_RETURN_MAX */
};

/* Appends the DSN for <m> to <out>: a complete message, CRLF line ends, no
 * line over 998 octets, header fields folded near 76 columns. Everything
 * the caller or a remote server supplied is made safe: CR, LF, TAB and runs
 * of spaces in reply texts become one space, other control and 8-bit octets
 * become '?', and the MIME boundary ("<token>/<hostname>", with a ".<n>"
 * suffix when needed) is checked against every part and changed until it
 * occurs in none. The returned original has its line ends made CRLF and
 * its lines over 998 octets broken with CRLF SP (as Postfix's
 * smtp_line_length_limit). Addresses are written as they are; 8-bit ones
 * (SMTPUTF8) raise DSN_F_UTF8 and make the text part charset=utf-8 (the
 * report stays message/delivery-status: RFC 6533's global forms are not
 * done). If any recipient failed the subject is
 * "Undelivered Mail Returned to Sender", otherwise "Delayed Mail (still
 * being retried)".
 *
 * Returns DSN_F_* flags (>= 0) or: -EDESTADDRREQ when the sender is the null
 * sender (send nothing), -EINVAL for a bad argument (no recipient, bad
 * hostname/token/diag_type, CR/LF/control octet in an address, unknown
 * action) or -ENOMEM. <out> is unchanged on error. Any thread. */
int dsn_build(struct buf *out, const struct dsn_msg *m);

/* Writes into <out> (DSN_STATUS_MAX bytes) the RFC 3463 status for a
 * recipient decided by <reply> (may be NULL): the x.y.z code at its start
 * ("550 5.1.1 ..." or a local "4.4.1 ..."), its class made that of the
 * reply code when they disagree; else "5.0.0" or "4.0.0" from the reply
 * code's class; else from <action> (failed: "5.0.0", delayed: "4.0.0"). */
void dsn_status(char *out, const char *reply, enum dsn_action action);

/* Writes <t> as an RFC 5322 date-time in UTC, "Mon, 02 Jan 2006 15:04:05
 * +0000", into <out> (at least 40 bytes). Returns 0 or -EINVAL when <t>
 * cannot be represented. */
int dsn_date(char *out, size_t len, time_t t);

#endif

/* smtp_session: the sans-I/O ESMTP server session (RFC 5321). Bytes in,
 * replies and actions out; no sockets, no clocks, no threads inside. io/
 * feeds it what a connection received, sends what it put in <out>, and
 * carries out its actions (spool a message, close). libc only. */
#ifndef RINGMX_CORE_SMTP_SESSION_H
#define RINGMX_CORE_SMTP_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "core/anvil.h"
#include "core/buf.h"
#include "core/policy.h"
#include "core/smtp_data.h"
#include "core/smtp_conf-t.h"
#include "core/sv.h"

#define SMTP_LINE_MAX 512 /* RFC 5321 4.5.3.1.4: command line, CRLF included */
#define SMTP_QID_MAX  24  /* queue id characters, NUL excluded */

/* What the connection knows about the peer; copied into the session. */
struct smtp_peer {
	char addr[64];  /* "192.0.2.1" or "2001:db8::1" (no brackets, no port) */
	bool may_relay; /* client is inside --relay-networks */
	bool limited;   /* its messages and recipients count in cf->anvil (<key>) */
	struct anvil_key key;
};

enum smtp_state {
	SMTP_S_INIT = 0, /* connected, greeting not sent yet */
	SMTP_S_GREET,    /* 220 sent, waiting for EHLO/HELO */
	SMTP_S_READY,    /* after EHLO/HELO, no transaction */
	SMTP_S_MAIL,     /* MAIL accepted, no recipient yet */
	SMTP_S_RCPT,     /* at least one recipient accepted */
	SMTP_S_DATA,     /* receiving message content */
	SMTP_S_SPOOL,    /* message complete; waiting for smtp_session_msg_result() */
	SMTP_S_CLOSED,   /* QUIT, 421 or fatal error: send <out>, then close */
};

/* Actions for io/; bits in s->act, cleared by the caller once done. */
#define SMTP_ACT_MSG_READY 0x1u /* tx holds a complete message: spool it, then msg_result() */
#define SMTP_ACT_CLOSE     0x2u /* send what is in <out>, then close the connection */
/* STARTTLS was answered 220: send <out> in clear, DISCARD every input byte
 * after the STARTTLS line, run the TLS handshake, then tell the session with
 * smtp_session_tls_started() (which clears this bit). */
#define SMTP_ACT_STARTTLS 0x4u
/* The replies so far are held back s->delay_ms (a tarpit: an unknown
 * recipient with --unknown-recipient-delay): send nothing, feed nothing
 * (keep the rest of the input) until then, then call
 * smtp_session_delay_done() (which clears this bit). */
#define SMTP_ACT_DELAY 0x8u
/* With cf->filters: a MAIL or RCPT passed the session's own checks (the
 * sender or recipient is in the transaction) and its reply waits for the
 * filters: send what is in <out>, feed nothing (keep the rest of the
 * input), then call smtp_session_filter_done() (which clears this bit).
 * s->filter_verb says which command it was. */
#define SMTP_ACT_FILTER 0x10u

/* A rate of cf->rate_ask is the caller's to decide (s->rate_kind: which):
 * the command waits, unanswered, with the input after it kept back; feed
 * nothing until smtp_session_rate_done() gives the verdict. */
#define SMTP_ACT_RATE 0x20u

/* With cf->sender_dns: MAIL FROM's domain is the caller's to check in
 * the DNS (s->dns_domain: which): the command waits, unanswered, with the
 * input after it kept back, as for SMTP_ACT_RATE; feed nothing until
 * smtp_session_dns_done() gives the verdict. */
#define SMTP_ACT_DNS 0x40u
/* With cf->vcache: a RCPT for a domain under --verify-recipients that
 * the cache cannot answer waits, unanswered, for the next hop's word:
 * send what is in <out>, feed nothing (keep the rest of the input), probe
 * smtp_session_verify_addr() (its cache key: smtp_session_verify_key()),
 * then call smtp_session_verify_done() (which clears this bit). */
#define SMTP_ACT_VERIFY 0x80u

/* The rates the caller may decide (cf->rate_ask, s->rate_kind). */
#define SMTP_RATE_MSG  0x1u /* MAIL: --client-message-rate */
#define SMTP_RATE_RCPT 0x2u /* RCPT: --client-recipient-rate */

/* Session flags (s->flags). */
#define SMTP_F_ESMTP    0x1u /* client said EHLO (not HELO) */
#define SMTP_F_PREGREET 0x2u /* client talked before the greeting */
#define SMTP_F_DISCARD  0x4u /* discarding an over-long command line up to its LF */
#define SMTP_F_TLS      0x8u /* TLS is up (STARTTLS or implicit TLS): smtp_session_tls_started() */

/* Transaction flags (s->tx.flags). */
#define SMTP_TX_BDAT  0x1u  /* content comes by BDAT (RFC 3030): DATA is refused */
#define SMTP_TX_CHUNK 0x2u  /* reading the octets of a BDAT chunk (chunk_left more) */
#define SMTP_TX_LAST  0x4u  /* that chunk is the LAST one */
#define SMTP_TX_DROP  0x8u  /* that chunk is refused: read and discard it, then reply */
#define SMTP_TX_CR    0x10u /* the last BDAT octet was a CR: its LF may open the next chunk */
#define SMTP_TX_NOMEM 0x20u /* storing the content failed: 452 4.3.1 at its end */
#define SMTP_TX_NUL   0x40u /* the content held a NUL octet (550 5.6.0 unless nul_strip) */

/* The transaction (RFC 5321 3.3): MAIL, RCPT..., DATA. Reset by RSET, a new
 * EHLO/HELO and the end of each message. Memory is kept for reuse. */
struct smtp_tx {
	struct buf from;  /* reverse-path without <>, "" for the null sender */
	struct buf rcpts; /* forward-paths without <>, each followed by a NUL */
	unsigned nrcpt;
	uint64_t size_decl;    /* SIZE= from MAIL, 0 if absent */
	bool body_8bit;        /* BODY=8BITMIME */
	bool smtputf8;         /* SMTPUTF8 */
	struct buf body;       /* message content, dot-stuffing removed (what is not taken yet) */
	uint64_t body_taken;   /* content octets moved out by smtp_session_body_take() */
	uint32_t serial;       /* bumped each time a transaction ends or is reset */
	struct smtp_data data; /* DATA parser state; for BDAT only its counters and flags */
	unsigned flags;        /* SMTP_TX_* */
	uint64_t chunk_len;    /* BDAT: octets announced for the current chunk */
	uint64_t chunk_left;   /* BDAT: octets of that chunk still to come */
};

struct tables; /* core/tables.h */

/* What the session counts for the metrics (io/metrics.c), when the caller
 * gives it a place (s->stats): the worker's own, written only by the
 * worker's thread through core/stats (relaxed, no lock), read by the
 * metrics thread. */
#define SMTP_STAT_VERBS   14 /* the verbs of the command table, then "UNKNOWN" */
#define SMTP_STAT_CLASSES 4  /* reply classes 2xx, 3xx, 4xx, 5xx */

/* Why a command or a message was refused. Each reason is either permanent
 * (5xx: "rejected") or temporary (4xx: "tempfailed"), never both:
 * smtp_refusal_name() says which. */
enum smtp_refusal {
	SMTP_RF_RELAY_DENIED = 0, /* RCPT 554 5.7.1 (routes through an accepted domain too) */
	SMTP_RF_UNKNOWN_USER,     /* RCPT 550 5.1.1 */
	SMTP_RF_SIZE,             /* MAIL SIZE= or content over --max-message-size: 552 */
	SMTP_RF_BARE_EOL,         /* content with bare CR or LF: 550 5.6.0 */
	SMTP_RF_NUL,              /* content with NUL octets: 550 5.6.0 */
	SMTP_RF_LONG_LINE,        /* content line too long (--long-lines reject): 550 5.6.0 */
	SMTP_RF_RATE_LIMIT,       /* per-client message or recipient rate: 452 4.7.0 */
	SMTP_RF_CLIENT_LIMIT,     /* per-client sessions or connection rate: 421 4.7.0 */
	SMTP_RF_MAX_SESSIONS,     /* --max-sessions: 421 4.3.2 */
	SMTP_RF_STORAGE,          /* spool short of space, or memory: 452 4.3.1 */
	SMTP_RF_SPOOL_ERROR,      /* the spool write failed: 451 4.3.0 */
	SMTP_RF_RECIPIENTS,       /* --max-recipients: 452 4.5.3 */
	SMTP_RF_UNKNOWN_LIMIT,    /* --max-unknown-recipients reached: 421 4.7.0 */
	SMTP_RF_ERRORS,           /* --max-errors reached: 421 4.7.0 */
	SMTP_RF_DNSBL,            /* a DNS list's client (--dnsbl-action reject): 554 5.7.1 */
	SMTP_RF_DNSBL_TEMP,       /* the same with --dnsbl-action tempfail: 450 4.7.1 */
	SMTP_RF_UNKNOWN_CLIENT,   /* no forward-confirmed client name: 450 4.7.25 */
	SMTP_RF_SENDER_DOMAIN,    /* MAIL: unknown sender domain or null MX: 550 5.1.8 */
	SMTP_RF_SENDER_DNS,       /* MAIL: no DNS answer for the sender domain: 450 4.1.8 */
	SMTP_RF_RHSBL,            /* MAIL: the sender domain is listed (--rhsbl-sender): 554 */
	SMTP_RF_VERIFY_REJECTED,  /* RCPT refused by the next hop's probe: 550 5.1.1 */
	SMTP_RF_VERIFY_TEMP,      /* RCPT the next hop could not verify: 450 4.1.1 */
	SMTP_RF_N,
};

struct smtp_stats {
	uint64_t replies[SMTP_STAT_VERBS][SMTP_STAT_CLASSES]; /* final reply lines per verb */
	uint64_t refused[SMTP_RF_N];
	uint64_t accepted;       /* messages answered 250 after their content */
	uint64_t accepted_bytes; /* their content octets */
};

/* The name of verb <i> (< SMTP_STAT_VERBS): "EHLO" ... "UNKNOWN". */
const char *smtp_stat_verb(unsigned i);
/* The label of <r> ("relay_denied", ...); *<temporary> true for a 4xx one. */
const char *smtp_refusal_name(enum smtp_refusal r, bool *temporary);

struct smtp_session {
	const struct smtp_server_conf *cf;
	struct smtp_peer peer;
	enum smtp_state state;
	unsigned flags;    /* SMTP_F_* */
	unsigned act;      /* SMTP_ACT_* pending for the caller */
	unsigned nerrors;  /* protocol errors so far */
	unsigned nmsgs;    /* messages accepted in this session */
	unsigned delay_ms; /* with SMTP_ACT_DELAY: how long */
	char filter_verb;  /* with SMTP_ACT_FILTER: 'M' (MAIL) or 'R' (RCPT, the last recipient) */
	int64_t now_ms;    /* set by the caller before each feed: the clock for rates */
	bool overload;     /* set by the caller: the gateway is in overload mode */
	/* Rates another counter decides (cf->rate_ask, SMTP_ACT_RATE). */
	bool rate_remote;   /* set by the caller: they are asked for now */
	unsigned rate_kind; /* with SMTP_ACT_RATE: SMTP_RATE_MSG or SMTP_RATE_RCPT */
	int rate_verdict;   /* smtp_session_rate_done()'s, while the command runs again */
	/* The sender domain's DNS check (cf->sender_dns, SMTP_ACT_DNS). */
	char *dns_domain; /* with SMTP_ACT_DNS: MAIL FROM's domain (owned) */
	int dns_verdict;  /* 1 while the command runs again after a pass */
	/* Set by the caller after the connect checks (io/session_dns): the
	 * client's forward-confirmed name, "unknown" without one (NULL: not
	 * looked up), and a reply every command but QUIT gets instead of its
	 * own (a DNS list's listing, an unknown client name). Owned. */
	char *client_name;
	char *refuse_all;
	/* What the recipients are checked against, set by the caller outside a
	 * transaction (smtp_session_in_tx() false) and held by it: the
	 * snapshot a transaction started with stays until it ends. NULL: the
	 * domains of cf->policy, no recipient tables. */
	struct tables *tables;
	struct smtp_counts {
		unsigned unknown;      /* RCPT: 550 5.1.1 user unknown */
		unsigned relay_denied; /* RCPT: 554 5.7.1 relay access denied (routing too) */
		unsigned routing;      /* of them, a route through an accepted domain */
	} counts;
	struct smtp_stats *stats; /* set by the caller; NULL: nothing counted */
	/* Final replies per verb (the disconnect log line): sent, and of
	 * them 2xx. DATA's 354 is not one: its reply after the content is. */
	uint32_t cmd_sent[SMTP_STAT_VERBS], cmd_ok[SMTP_STAT_VERBS];
	struct sv cmd_arg; /* the argument of the command being run; into rx, for logs */
	int64_t now_s;     /* set by the caller before each feed: wall clock, s (vcache) */
	/* With SMTP_ACT_VERIFY: the recipient's cache key, mailbox and path
	 * ("<path>"), each NUL-terminated, at offsets 0, <verify_mbox> and
	 * <verify_path>. Freed once answered. */
	struct buf verify;
	uint16_t verify_mbox, verify_path;
	bool storage_low;     /* set by the caller: the spool is short of space, MAIL gets 452 */
	char helo[256];       /* EHLO/HELO argument, truncated; "" before it */
	char tls_version[16]; /* "TLSv1.3" once SMTP_F_TLS, for Received:; "" before */
	char tls_cipher[64];  /* "TLS_AES_256_GCM_SHA384" likewise */
	struct buf line;      /* partial command line carried between feeds */
	struct buf out;       /* replies waiting to be sent; the caller drains it */
	struct smtp_tx tx;
};

/* Prepares <s>. <cf> must outlive it. No allocation until bytes arrive. */
void smtp_session_init(struct smtp_session *s, const struct smtp_server_conf *cf,
                       const struct smtp_peer *peer);
/* Frees what the session allocated. */
void smtp_session_fini(struct smtp_session *s);

/* Appends the greeting: 220 normally; 554 5.7.1 when the client talked
 * before it (SMTP_F_PREGREET), after which every command but QUIT gets
 * 503 5.5.1. */
void smtp_session_greet(struct smtp_session *s);

/* Feeds <len> bytes at <p>. Returns the bytes consumed: fewer than <len>
 * when the session stopped for an action (SMTP_ACT_MSG_READY: the caller
 * keeps the rest and feeds it after smtp_session_msg_result()), closed
 * (SMTP_ACT_CLOSE: the rest is dropped) or accepted STARTTLS
 * (SMTP_ACT_STARTTLS: the count ends just past the STARTTLS line; the
 * caller MUST DISCARD the rest, and anything it holds back as pending
 * input: those bytes came in clear and must not be read as if sent under
 * TLS, CVE-2011-0411). Consumes nothing while an action is pending.
 * Appends replies to s->out. Before smtp_session_greet() it only notes
 * SMTP_F_PREGREET and consumes. */
size_t smtp_session_feed(struct smtp_session *s, const char *p, size_t len);

/* The delay of SMTP_ACT_DELAY is over: the held replies may go, and the
 * input kept back is fed again. */
void smtp_session_delay_done(struct smtp_session *s);

/* The verdict for SMTP_ACT_RATE: <fits> true, the command goes on (and is
 * answered as usual); false, 452 4.7.0. Clears SMTP_ACT_RATE; the caller
 * then feeds the input it kept back. */
void smtp_session_rate_done(struct smtp_session *s, bool fits);

/* The verdict for SMTP_ACT_DNS: <reply> NULL, the command goes on (the
 * rate and the rest of its checks, then 250); else that reply instead
 * (one line, the code first), counted as refusal <why>. Clears
 * SMTP_ACT_DNS; the caller then feeds the input it kept back. */
void smtp_session_dns_done(struct smtp_session *s, const char *reply, enum smtp_refusal why);

/* The connect checks' results (before the greeting): the client's
 * verified name (NULL or "": "unknown"), and <reply> (NULL: none) for
 * every command but QUIT from now on, counted once as refusal <why>.
 * Copied. */
void smtp_session_client_name(struct smtp_session *s, const char *name);
void smtp_session_refuse_all(struct smtp_session *s, const char *reply, enum smtp_refusal why);
/* SMTP_ACT_VERIFY's address: its cache key (*<klen> octets, NUL after)
 * and the mailbox to ask the next hop about (NUL-terminated). */
const char *smtp_session_verify_key(const struct smtp_session *s, size_t *klen);
const char *smtp_session_verify_addr(const struct smtp_session *s);
/* The next hop's word on SMTP_ACT_VERIFY's recipient (enum verify_result
 * <res>, its reply <text> for REJECT and TEMP, may be NULL): OK takes the
 * recipient (250, or SMTP_ACT_FILTER with filters); REJECT is 550 5.1.1
 * quoting <text>; anything else is 450 4.1.1, or taken with
 * cf->verify_fail_open. Clears SMTP_ACT_VERIFY; the caller then feeds the
 * input it kept back. */
void smtp_session_verify_done(struct smtp_session *s, int res, const char *text);

/* The spool's answer for the message of SMTP_ACT_MSG_READY: <err> 0 = it
 * is durable as <qid> (250 2.0.0 Ok: queued as <qid>); -ENOSPC / -EDQUOT =
 * 452 4.3.1; anything else = 451 4.3.0. Resets the transaction. */
void smtp_session_msg_result(struct smtp_session *s, int err, const char *qid);

/* The filters' word on the command of SMTP_ACT_FILTER: <reply> NULL takes
 * it (250); else the reply to give instead, one or more lines with the
 * code first, CRLF between them and none at the end (a filter's text, or
 * the default "451 4.7.1 ..."): MAIL refused ends the transaction, RCPT
 * refused takes the recipient out again. */
void smtp_session_filter_done(struct smtp_session *s, const char *reply);

/* The filters' word on the message of SMTP_ACT_MSG_READY, in place of
 * smtp_session_msg_result(): <reply> as above (a 4xx or 5xx refusal, or a
 * 250 for a message they discarded). Resets the transaction. */
void smtp_session_msg_reply(struct smtp_session *s, const char *reply);

/* The TLS handshake is done (<version> "TLSv1.3", <cipher> as OpenSSL
 * names it; copied, truncated, non-printable characters dropped). Sets
 * SMTP_F_TLS and clears SMTP_ACT_STARTTLS. After STARTTLS the session
 * forgets what the client said in clear (RFC 3207 4.2): back to GREET (EHLO
 * again), helo and the transaction cleared, SMTP_F_ESMTP off; no reply (the
 * client speaks first). For implicit TLS (RFC 8314) call it before
 * smtp_session_greet(): the state stays INIT. EHLO no longer offers
 * STARTTLS, and a second STARTTLS gets 503. Ignored once closed. */
void smtp_session_tls_started(struct smtp_session *s, const char *version, const char *cipher);

/* 421 4.4.2 and close (idle timeout). */
void smtp_session_timeout(struct smtp_session *s);
/* 421 4.3.2 and close (gateway shutting down). */
void smtp_session_shutdown(struct smtp_session *s);
/* 421 4.3.2 and close: too many sessions. Use instead of the greeting. */
void smtp_session_busy(struct smtp_session *s);
/* 421 4.7.0 and close: too many sessions (<rate> false) or connections
 * (<rate> true) from the client's address (core/anvil). Instead of the
 * greeting. */
void smtp_session_limited(struct smtp_session *s, bool rate);
/* Logs the session's end: "disconnect from unknown[addr] ehlo=1 mail=1
 * ... commands=N" (core/maillog). */
void smtp_session_log_disconnect(const struct smtp_session *s);

/* True between MAIL and the end of the message's spooling. */
bool smtp_session_in_tx(const struct smtp_session *s);

/* Writes the Received: header (RFC 5321 4.4) for the current transaction
 * into <b>: from <helo> (<peer addr>) [(using <TLS version> with cipher
 * <cipher>)] by <hostname> with SMTP / ESMTP / UTF8SMTP, + "S" for EHLO
 * under TLS (RFC 3848, 6531) id <qid> for <rcpt if one>; <date> (RFC 5322
 * date of <now>, UTC). Returns 0 or -ENOMEM. */
int smtp_session_received(const struct smtp_session *s, struct buf *b, const char *qid, time_t now);

/* True while the message content is arriving: in DATA, or between and
 * inside the BDAT chunks of an accepted transaction. */
bool smtp_session_in_content(const struct smtp_session *s);

/* The content as a stream (io/ writes a large message to the disk while it
 * arrives; a content filter can be fed the same chunks): the octets the
 * transaction holds in memory are s->tx.body, in order, dot-stuffing
 * removed. This moves them into <into>, which must be empty: the two
 * buffers are swapped, so nothing is copied and the session goes on
 * storing into <into>'s old memory. The octets are counted in
 * s->tx.body_taken. The whole content of the message is then everything
 * taken, in order, followed by what s->tx.body holds at its end
 * (SMTP_ACT_MSG_READY). s->tx.serial tells the taker whether the
 * transaction it took from is still the current one. */
void smtp_session_body_take(struct smtp_session *s, struct buf *into);

/* The taker could not store the content (io/ could not create its file):
 * the rest is read and dropped, and the message gets 452 4.3.1 at its
 * end, as when memory ran out. */
void smtp_session_body_fail(struct smtp_session *s);

/* Iterates recipients: start with *<it> = 0; returns NULL at the end. */
const char *smtp_tx_rcpt_next(const struct smtp_tx *tx, size_t *it);

#endif

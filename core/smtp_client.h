/* smtp_client: the sans-I/O SMTP/LMTP client session (RFC 5321, RFC 2033),
 * the mirror of smtp_session. Bytes in, commands and actions out; no
 * sockets, no clocks, no threads inside. io/ connects to a next hop, feeds
 * the client every byte received, sends what it put in <out>, and carries
 * out its actions (send a message, stream a body, start TLS, close). libc
 * only.
 *
 * STARTTLS (RFC 3207), driven by io/ (the TLS itself is io/tls):
 *   1. After EHLO/LHLO, with conf starttls or require_tls, a next hop that
 *      offers STARTTLS gets "STARTTLS" (alone: it ends a pipelined group).
 *   2. On its 220 the client raises SMTPC_ACT_STARTTLS, enters
 *      SMTPC_S_TLS and smtp_client_feed() returns the bytes up to the end
 *      of that reply line. io/ MUST DISCARD every byte after it, in that
 *      receive and any later one still in clear: a next hop (or a man in
 *      the middle) could have put fake replies there to be read as if
 *      they came over TLS (CVE-2011-0411, client side). In SMTPC_S_TLS
 *      smtp_client_feed() consumes nothing.
 *   3. io/ runs the handshake; once established it calls
 *      smtp_client_tls_started(), which forgets the capabilities and says
 *      EHLO again (through TLS from now on). SMTPC_ACT_READY comes only
 *      after that second EHLO. A failed handshake: smtp_client_fail().
 *   A next hop that does not offer STARTTLS, or refuses it (4xx/5xx): in
 *   clear as before (READY), unless require_tls: then the client QUITs and
 *   closes with smtp_client_error() = "4.7.0 TLS required but ..."; no
 *   message was started, so io/ defers the messages meant for that
 *   connection with that text (or tries the next hop). */
#ifndef RINGMX_CORE_SMTP_CLIENT_H
#define RINGMX_CORE_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/sv.h"

#define SMTPC_LINE_MAX 4096         /* reply line, CRLF included; longer: protocol error */
#define SMTPC_TEXT_MAX 4096         /* joined reply text kept for a result, NUL excluded */
#define SMTPC_OUT_MAX  (64u * 1024) /* default body bytes in <out> before it must drain */

/* Shared by every client of a worker; read-only after startup. */
struct smtp_client_conf {
	const char *hostname; /* our name in EHLO/LHLO/HELO */
	bool lmtp;            /* RFC 2033: LHLO, one reply per recipient after the data */
	size_t out_max;       /* smtp_client_body() fills <out> up to this; 0 = SMTPC_OUT_MAX */
	bool starttls;        /* STARTTLS when the next hop offers it (Postfix's level "may") */
	bool require_tls;     /* no message in clear: STARTTLS or give up (level "encrypt");
	                         implies <starttls> */
};

enum smtp_client_state {
	SMTPC_S_GREET = 0, /* connected, waiting for the 220 */
	SMTPC_S_EHLO,      /* EHLO/LHLO sent */
	SMTPC_S_HELO,      /* HELO sent after EHLO got 5xx (SMTP only) */
	SMTPC_S_STARTTLS,  /* STARTTLS sent, its reply due */
	SMTPC_S_TLS,       /* 220 to STARTTLS: io/ runs the handshake; nothing is read */
	SMTPC_S_READY,     /* idle: smtp_client_send() or smtp_client_quit() */
	SMTPC_S_ENV,       /* MAIL/RCPT/DATA sent, their replies due */
	SMTPC_S_BODY,      /* 354 came: the caller streams the content */
	SMTPC_S_DOT,       /* end of data sent, its reply (LMTP: replies) due */
	SMTPC_S_RSET,      /* aborted transaction: RSET sent, its reply due */
	SMTPC_S_QUIT,      /* QUIT sent: waiting for the last replies */
	SMTPC_S_CLOSED,    /* done: send <out>, then close */
};

/* Actions for io/; bits in c->act, cleared by the caller once done. */
#define SMTPC_ACT_READY 0x1u /* idle: smtp_client_send() the next message or smtp_client_quit() */
#define SMTPC_ACT_BODY  0x2u /* 354: stream the content, then smtp_client_body_end() */
#define SMTPC_ACT_DONE  0x4u /* every recipient of the message has its final result */
#define SMTPC_ACT_CLOSE 0x8u /* send what is in <out>, then close the connection */
/* 220 to STARTTLS: drop every byte received after it, start TLS, then
 * smtp_client_tls_started() (see the top of this file). */
#define SMTPC_ACT_STARTTLS 0x10u

/* What the next hop offered in its EHLO/LHLO reply (c->caps). */
#define SMTPC_CAP_PIPELINING 0x1u  /* RFC 2920: MAIL, RCPTs and DATA go in one batch */
#define SMTPC_CAP_SIZE       0x2u  /* RFC 1870: SIZE= sent; c->max_size is its limit */
#define SMTPC_CAP_8BITMIME   0x4u  /* RFC 6152: BODY=8BITMIME sent for 8-bit content */
#define SMTPC_CAP_SMTPUTF8   0x8u  /* RFC 6531: SMTPUTF8 sent when the message needs it */
#define SMTPC_CAP_CHUNKING   0x10u /* RFC 3030: noted only, BDAT is not used */
#define SMTPC_CAP_STARTTLS   0x20u /* RFC 3207: used when conf starttls/require_tls */
#define SMTPC_CAP_ENHANCED   0x40u /* RFC 2034: ENHANCEDSTATUSCODES */

/* Transaction notes (c->tx_flags), reset by smtp_client_send(). */
#define SMTPC_TX_PIPELINED  0x1u /* MAIL, RCPTs and DATA went in one batch */
#define SMTPC_TX_8BIT_PLAIN 0x2u /* 8-bit sent without BODY=8BITMIME (not offered), as Postfix */
#define SMTPC_TX_SMTPUTF8   0x4u /* MAIL carried SMTPUTF8 */

/* A message to send. The caller owns it and everything it points to, which
 * must stay valid until SMTPC_ACT_DONE. */
struct smtp_client_msg {
	const char *from;         /* reverse-path without <>, "" for the null sender */
	const char *const *rcpts; /* <nrcpt> forward-paths without <> */
	unsigned nrcpt;
	uint64_t size;  /* SIZE= value (content octets) when the next hop offers SIZE */
	bool body_8bit; /* the content has 8-bit octets */
	bool smtputf8;  /* needs SMTPUTF8 (also assumed for a non-ASCII address) */
	/* A recipient check, not a message (a callout: io/verify): MAIL and
	 * the RCPTs, then RSET instead of DATA. Each recipient's result is
	 * its RCPT reply (2xx: SMTPC_OK); no content is ever sent. */
	bool probe;
};

enum smtp_client_status {
	SMTPC_PENDING = 0, /* not decided yet */
	SMTPC_OK,          /* delivered: the next hop took responsibility */
	SMTPC_TEMP,        /* 4xx or a local/connection failure: try again later */
	SMTPC_PERM,        /* 5xx or a local permanent refusal: bounce */
};

/* Where a result was decided (Postfix's "in reply to ... command"). */
enum smtp_client_stage {
	SMTPC_STAGE_CONN = 0, /* no command: local refusal before MAIL, or the connection */
	SMTPC_STAGE_MAIL,     /* reply to MAIL FROM */
	SMTPC_STAGE_RCPT,     /* reply to RCPT TO */
	SMTPC_STAGE_DATA,     /* reply to DATA */
	SMTPC_STAGE_BODY,     /* while the content was being sent */
	SMTPC_STAGE_DOT,      /* reply to the end of data */
};

/* One recipient's result, in the order of msg->rcpts. */
struct smtp_client_result {
	enum smtp_client_status status;
	enum smtp_client_stage stage;
	unsigned code; /* reply code; 0 when decided locally (text starts with a x.y.z code) */
	bool accepted; /* RCPT got 2xx */
	uint32_t text; /* private: see smtp_client_result_text() */
};

struct smtp_client {
	const struct smtp_client_conf *cf;
	char peer[64]; /* next hop, for logs */
	enum smtp_client_state state;
	unsigned act;      /* SMTPC_ACT_* pending for the caller */
	unsigned caps;     /* SMTPC_CAP_* */
	bool tls;          /* smtp_client_tls_started() was called: the session is encrypted */
	unsigned tx_flags; /* SMTPC_TX_* of the current/last message */
	uint64_t max_size; /* SIZE limit offered, 0 = none given */
	unsigned nmsgs;    /* messages that reached the end of data */
	size_t out_max;    /* see smtp_client_conf */
	struct buf out;    /* commands and content waiting to be sent; the caller drains it */
	struct buf err;    /* first connection-level failure, "" if none */

	/* Everything below is private. */
	struct buf line;  /* partial reply line carried between feeds */
	struct buf reply; /* the reply being read, lines joined with a space */
	unsigned reply_code;
	unsigned reply_lines;
	char ecode[12]; /* enhanced code of its first line, "" if none */
	unsigned npend; /* QUIT: replies still due */

	const struct smtp_client_msg *msg; /* in flight, NULL when none */
	unsigned nres;                     /* results of the current/last message */
	unsigned res_cap;
	struct smtp_client_result *res;
	struct buf text; /* decided reply texts, NUL-separated; offset 0 is "" */
	uint32_t last_text;
	unsigned next_cmd;   /* ENV: next command to send: 0 MAIL, 1..n RCPT, n+1 DATA */
	unsigned next_reply; /* ENV: the command whose reply comes next */
	unsigned naccepted;  /* RCPTs with 2xx */
	bool bol;            /* BODY: the next content octet starts a line */
	char tail[2];        /* BODY: the last two content octets */
	uint64_t body_len;   /* BODY: content octets taken */
};

/* Prepares <c> for a new connection to <peer> (a name for logs, may be
 * NULL). <cf> must outlive it. No allocation until bytes arrive. */
void smtp_client_init(struct smtp_client *c, const struct smtp_client_conf *cf, const char *peer);
/* Frees what the client allocated. */
void smtp_client_fini(struct smtp_client *c);

/* Feeds <len> bytes the next hop sent. Returns the bytes consumed: fewer
 * than <len> when the client stopped for SMTPC_ACT_READY or SMTPC_ACT_BODY
 * (act on it, then feed the rest), for SMTPC_ACT_STARTTLS (DROP the rest:
 * it came in clear) or closed (SMTPC_ACT_CLOSE: drop the rest). Consumes
 * nothing in state SMTPC_S_TLS. Appends commands to c->out. */
size_t smtp_client_feed(struct smtp_client *c, const char *p, size_t len);

/* The TLS handshake asked for by SMTPC_ACT_STARTTLS is done (state
 * SMTPC_S_TLS): clears that action, forgets the capabilities learnt in
 * clear (RFC 3207 4.2), sets c->tls and appends EHLO/LHLO to c->out, to
 * go through TLS; SMTPC_ACT_READY follows its reply. Returns 0, or -EBUSY
 * in any other state (nothing changes). */
int smtp_client_tls_started(struct smtp_client *c);

/* Starts <m> in state READY (clears SMTPC_ACT_READY and SMTPC_ACT_DONE).
 * Returns 0, -EBUSY when not READY, -EINVAL for an envelope that cannot be
 * sent (no recipient, a CR, LF, control octet or angle bracket in an
 * address) or -ENOMEM; nothing changes on error. The message may be
 * decided at once without a command (SMTPUTF8 not offered, over the SIZE
 * limit): SMTPC_ACT_DONE | SMTPC_ACT_READY on return. */
int smtp_client_send(struct smtp_client *c, const struct smtp_client_msg *m);

/* State BODY: appends the dot-stuffed form (RFC 5321 4.5.2) of a prefix of
 * the <len> content octets at <p> to c->out, which follow those of the
 * previous call. Stops when c->out holds out_max octets. Returns the octets
 * of <p> consumed: fewer than <len> means "drain c->out, then call again
 * with the rest". The body may come as any number of views. */
size_t smtp_client_body(struct smtp_client *c, const char *p, size_t len);
/* State BODY: the content is complete. Appends CRLF if it did not end with
 * one, then ".\r\n" (a few octets past out_max at most). */
void smtp_client_body_end(struct smtp_client *c);

/* Ends the connection. READY (or waiting for HELO/RSET replies): appends
 * QUIT, closes after its reply. STARTTLS sent or TLS starting: closes
 * without QUIT (nothing may follow STARTTLS in clear). Inside a transaction: undecided recipients
 * get TEMP and the client closes without QUIT (the next hop may be reading
 * content). */
void smtp_client_quit(struct smtp_client *c);

/* The connection failed or timed out (io/'s call): every undecided
 * recipient gets TEMP with <why> as its text (start it with an enhanced
 * code, e.g. "4.4.2 conversation timed out"), SMTPC_ACT_DONE if a message
 * was in flight, and the client is CLOSED. */
void smtp_client_fail(struct smtp_client *c, const char *why);

/* The result of recipient <i> of the current/last message, NULL past the
 * end. Valid until the next smtp_client_send() or smtp_client_fini(). */
const struct smtp_client_result *smtp_client_result(const struct smtp_client *c, unsigned i);
/* The reply that decided <r>, one line: "550 5.1.1 text text...", lines of
 * a multi-line reply joined with a space; "" while undecided. Same validity. */
const char *smtp_client_result_text(const struct smtp_client *c,
                                    const struct smtp_client_result *r);
/* The first connection-level failure (bad greeting, EHLO/HELO refused,
 * 421, protocol error, smtp_client_fail()), "" if none. */
static inline const char *smtp_client_error(const struct smtp_client *c)
{
	return c->err.len ? c->err.p : "";
}

const char *smtp_client_status_name(enum smtp_client_status st);
const char *smtp_client_stage_name(enum smtp_client_stage st);

#endif

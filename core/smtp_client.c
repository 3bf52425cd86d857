/* smtp_client: the client side of one SMTP or LMTP connection to a next hop
 * (RFC 5321, RFC 2033), with PIPELINING (RFC 2920), SIZE (RFC 1870),
 * 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES
 * (RFC 2034, 3463) and STARTTLS (RFC 3207). The mirror of smtp_session.
 *
 * It sits between io/ and the delivery queue: io/ connects, feeds it every
 * byte the next hop sends and sends what it appends to c->out. It reads the
 * greeting, says EHLO (LHLO; HELO when EHLO is refused), STARTTLS when
 * asked to and offered (io/ runs the handshake, then EHLO again), then carries
 * messages one after the other on the same connection: the envelope (in one
 * batch with PIPELINING), the content streamed by the caller through
 * smtp_client_body() with dot-stuffing and bounded memory, and one result
 * per recipient. Each complete reply goes to the handler of the state it
 * arrives in (smtpc_on_reply[]); every state change goes through
 * smtpc_set_state(). Sans-I/O: libc only, no sockets, clocks or threads. */
#include "core/smtp_client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* Its log lines name ringmx/smtp (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_SMTP

#define SMTPC_TEXT_KEEP 4096u /* reply text memory kept across messages */
#define SMTPC_SNIP      40u   /* octets of a bad reply quoted in a protocol error */

static const char *const smtpc_state_names[] = {
    [SMTPC_S_GREET] = "GREET",       [SMTPC_S_EHLO] = "EHLO", [SMTPC_S_HELO] = "HELO",
    [SMTPC_S_STARTTLS] = "STARTTLS", [SMTPC_S_TLS] = "TLS",   [SMTPC_S_READY] = "READY",
    [SMTPC_S_ENV] = "ENV",           [SMTPC_S_BODY] = "BODY", [SMTPC_S_DOT] = "DOT",
    [SMTPC_S_RSET] = "RSET",         [SMTPC_S_QUIT] = "QUIT", [SMTPC_S_CLOSED] = "CLOSED",
};

static void smtpc_set_state(struct smtp_client *c, enum smtp_client_state st)
{
	LOGD("smtp_client: server=[%s] state %s -> %s", c->peer, smtpc_state_names[c->state],
	     smtpc_state_names[st]);
	c->state = st;
}

static enum smtp_client_status smtpc_status_of(unsigned code)
{
	switch (code / 100) {
	case 2:
		return SMTPC_OK;
	case 4:
		return SMTPC_TEMP;
	default:
		return SMTPC_PERM;
	}
}

/* ---- Reply texts kept for results ---- */

/* Empties the text store; offset 0 stays "" for undecided results. */
static void smtpc_text_reset(struct smtp_client *c)
{
	buf_reset(&c->text, SMTPC_TEXT_KEEP);
	buf_append(&c->text, "", 1); /* on failure offset 0 reads "" anyway */
	c->last_text = 0;
}

/* Keeps <t> and returns its offset; the same text as the last one kept
 * (all of an SMTP end-of-data's recipients) is kept once. 0 ("") when
 * there is no memory: the result stands, its text is lost. */
static uint32_t smtpc_text_add(struct smtp_client *c, struct sv t)
{
	size_t off = c->text.len;

	if (c->last_text && strlen(c->text.p + c->last_text) == t.len &&
	    memcmp(c->text.p + c->last_text, t.p, t.len) == 0)
		return c->last_text;
	if (off == 0 || off > UINT32_MAX - SMTPC_TEXT_MAX - 1)
		return 0;
	if (buf_reserve(&c->text, t.len + 1))
		return 0;
	buf_append(&c->text, t.p, t.len);
	buf_append(&c->text, "", 1);
	c->last_text = (uint32_t)off;
	return c->last_text;
}

/* Decides every recipient still PENDING (accepted ones included). */
static void smtpc_decide_rest(struct smtp_client *c, enum smtp_client_status st,
                              enum smtp_client_stage stage, unsigned code, struct sv text)
{
	uint32_t off = 0;
	bool kept = false;

	for (unsigned i = 0; i < c->nres; i++) {
		struct smtp_client_result *r = &c->res[i];

		if (r->status != SMTPC_PENDING)
			continue;
		if (!kept) {
			off = smtpc_text_add(c, text);
			kept = true;
		}
		*r = (struct smtp_client_result){st, stage, code, r->accepted, off};
	}
}

static void smtpc_decide(struct smtp_client *c, unsigned i, enum smtp_client_stage stage,
                         unsigned code, struct sv text)
{
	struct smtp_client_result *r = &c->res[i];

	r->status = smtpc_status_of(code);
	r->stage = stage;
	r->code = code;
	r->text = smtpc_text_add(c, text);
}

/* ---- Ends of a transaction and of the connection ---- */

static enum smtp_client_stage smtpc_stage_now(const struct smtp_client *c)
{
	switch (c->state) {
	case SMTPC_S_ENV:
		if (c->next_reply == 0)
			return SMTPC_STAGE_MAIL;
		return c->next_reply <= c->nres ? SMTPC_STAGE_RCPT : SMTPC_STAGE_DATA;
	case SMTPC_S_BODY:
		return SMTPC_STAGE_BODY;
	case SMTPC_S_DOT:
		return SMTPC_STAGE_DOT;
	default:
		return SMTPC_STAGE_CONN;
	}
}

/* Every recipient has its result: SMTPC_ACT_DONE. The caller may free the
 * message now; the results stay until the next smtp_client_send(). */
static void smtpc_msg_done(struct smtp_client *c)
{
	c->msg = NULL;
	c->act |= SMTPC_ACT_DONE;
}

static void smtpc_set_err(struct smtp_client *c, struct sv why)
{
	if (c->err.len)
		return; /* the first cause is the one worth reporting */
	if (buf_append_sv(&c->err, why) == 0 && c->err.len == 0)
		buf_append_str(&c->err, "unknown error");
	buf_cstr(&c->err);
}

static void smtpc_close(struct smtp_client *c)
{
	smtpc_set_state(c, SMTPC_S_CLOSED);
	c->act |= SMTPC_ACT_CLOSE;
	c->act &= ~(SMTPC_ACT_READY | SMTPC_ACT_BODY | SMTPC_ACT_STARTTLS);
	buf_free(&c->line);
	buf_free(&c->reply);
	c->reply_lines = 0;
}

/* The connection is unusable (421, protocol error, timeout, no memory):
 * undecided recipients get TEMP with <why>, and close without QUIT. */
static void smtpc_drop(struct smtp_client *c, unsigned code, struct sv why)
{
	if (c->state == SMTPC_S_CLOSED)
		return;
	smtpc_set_err(c, why);
	if (c->msg) {
		smtpc_decide_rest(c, SMTPC_TEMP, smtpc_stage_now(c), code, why);
		smtpc_msg_done(c);
	}
	smtpc_close(c);
}

static void smtpc_nomem(struct smtp_client *c)
{
	LOGW("smtp_client: server=[%s] out of memory; closing", c->peer);
	smtpc_drop(c, 0, SV("4.3.0 out of memory"));
}

/* Replies that make no sense: the next hop's state is unknown, so close.
 * <bad> is quoted (a short, printable prefix) for the log and the text. */
static void smtpc_proto_error(struct smtp_client *c, const char *what, struct sv bad)
{
	char snip[SMTPC_SNIP + 1], msg[160];
	size_t n = bad.len < SMTPC_SNIP ? bad.len : SMTPC_SNIP;
	int len;

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)bad.p[i];

		snip[i] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
	}
	snip[n] = '\0';
	len = snprintf(msg, sizeof(msg), "4.5.0 protocol error: %s: \"%s\"", what, snip);
	if (len < 0)
		len = 0;
	else if ((size_t)len >= sizeof(msg))
		len = sizeof(msg) - 1;
	LOGI("smtp_client: server=[%s] %s", c->peer, msg);
	smtpc_drop(c, 0, sv_make(msg, (size_t)len));
}

/* Appends one command line (<fmt> without CRLF). Returns false, after
 * closing, when there is no memory. */
static bool smtpc_put(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool smtpc_put(struct smtp_client *c, const char *fmt, ...)
{
	size_t start = c->out.len;
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = buf_vprintf(&c->out, fmt, ap);
	va_end(ap);
	if (!err)
		err = buf_append(&c->out, "\r\n", 2);
	if (err) {
		c->out.len = start; /* no half command on the wire */
		if (c->out.p)
			c->out.p[start] = '\0';
		smtpc_nomem(c);
		return false;
	}
	return true;
}

/* The greeting, EHLO/HELO or RSET was refused: note why, QUIT, close on
 * its reply. No message is in flight in these states. */
static void smtpc_give_up(struct smtp_client *c, struct sv why)
{
	smtpc_set_err(c, why);
	if (!smtpc_put(c, "QUIT"))
		return;
	c->npend = 1;
	smtpc_set_state(c, SMTPC_S_QUIT);
}

static void smtpc_ready(struct smtp_client *c)
{
	smtpc_set_state(c, SMTPC_S_READY);
	c->act |= SMTPC_ACT_READY;
}

/* require_tls, and no TLS to be had: no message goes out in clear. The
 * same end as a refused EHLO: QUIT, close on its reply, <why> for io/. */
static void smtpc_tls_missing(struct smtp_client *c, struct sv why)
{
	LOGI("smtp_client: server=[%s] %.*s", c->peer, (int)why.len, why.p);
	smtpc_give_up(c, why);
}

/* EHLO/LHLO or HELO succeeded: STARTTLS first when wanted and offered and
 * not done yet, else READY (or give up, when TLS is required). */
static void smtpc_hello_done(struct smtp_client *c)
{
	if (c->tls || !(c->cf->starttls || c->cf->require_tls)) {
		smtpc_ready(c);
	} else if (c->caps & SMTPC_CAP_STARTTLS) {
		/* Alone: RFC 3207 4 wants it last in a group, and nothing
		 * else is queued in this state. */
		if (smtpc_put(c, "STARTTLS"))
			smtpc_set_state(c, SMTPC_S_STARTTLS);
	} else if (c->cf->require_tls) {
		smtpc_tls_missing(c, SV("4.7.0 TLS required but not offered by the next hop"));
	} else {
		LOGD("smtp_client: server=[%s] STARTTLS not offered; in clear", c->peer);
		smtpc_ready(c);
	}
}

/* The transaction ended without the content (MAIL refused, no recipient,
 * DATA refused): results are final; RSET before the next one. */
static void smtpc_tx_abort(struct smtp_client *c)
{
	smtpc_msg_done(c);
	if (smtpc_put(c, "RSET"))
		smtpc_set_state(c, SMTPC_S_RSET);
}

/* ---- Commands ---- */

static void smtpc_send_ehlo(struct smtp_client *c)
{
	c->caps = 0;
	c->max_size = 0;
	if (smtpc_put(c, "%s %s", c->cf->lmtp ? "LHLO" : "EHLO", c->cf->hostname))
		smtpc_set_state(c, SMTPC_S_EHLO);
}

/* Envelope command <k>: 0 MAIL, 1..n RCPT, n+1 DATA. */
static bool smtpc_send_cmd(struct smtp_client *c, unsigned k)
{
	const struct smtp_client_msg *m = c->msg;

	if (k > m->nrcpt)
		return smtpc_put(c, "DATA");
	if (k > 0)
		return smtpc_put(c, "RCPT TO:<%s>", m->rcpts[k - 1]);
	if ((c->caps & SMTPC_CAP_SIZE) && !m->probe) /* a probe has no size */
		return smtpc_put(c, "MAIL FROM:<%s> SIZE=%" PRIu64 "%s%s", m->from, m->size,
		                 (m->body_8bit && (c->caps & SMTPC_CAP_8BITMIME)) ? " BODY=8BITMIME"
		                                                                  : "",
		                 (c->tx_flags & SMTPC_TX_SMTPUTF8) ? " SMTPUTF8" : "");
	return smtpc_put(c, "MAIL FROM:<%s>%s%s", m->from,
	                 (m->body_8bit && (c->caps & SMTPC_CAP_8BITMIME)) ? " BODY=8BITMIME" : "",
	                 (c->tx_flags & SMTPC_TX_SMTPUTF8) ? " SMTPUTF8" : "");
}

/* ---- EHLO capabilities ---- */

static const struct {
	struct sv kw;
	unsigned cap;
} smtpc_caps[] = {
    {SV_INIT("PIPELINING"), SMTPC_CAP_PIPELINING},
    {SV_INIT("SIZE"), SMTPC_CAP_SIZE},
    {SV_INIT("8BITMIME"), SMTPC_CAP_8BITMIME},
    {SV_INIT("SMTPUTF8"), SMTPC_CAP_SMTPUTF8},
    {SV_INIT("CHUNKING"), SMTPC_CAP_CHUNKING},
    {SV_INIT("STARTTLS"), SMTPC_CAP_STARTTLS},
    {SV_INIT("ENHANCEDSTATUSCODES"), SMTPC_CAP_ENHANCED},
};

/* RFC 1870: "SIZE" alone or "SIZE 0" means no fixed limit. Digits beyond
 * a uint64_t, or junk, are taken as no limit too: the next hop says no
 * itself if it must. */
static uint64_t smtpc_parse_size(struct sv v)
{
	uint64_t n = 0;

	if (v.len == 0)
		return 0;
	for (size_t i = 0; i < v.len; i++) {
		unsigned d = (unsigned char)v.p[i] - '0';

		if (d > 9 || n > (UINT64_MAX - d) / 10)
			return 0;
		n = n * 10 + d;
	}
	return n;
}

/* One EHLO reply line after the first: "KEYWORD [params]". */
static void smtpc_cap_line(struct smtp_client *c, struct sv l)
{
	const char *sp = memchr(l.p, ' ', l.len);
	struct sv kw = sv_make(l.p, sp ? (size_t)(sp - l.p) : l.len);

	for (size_t i = 0; i < sizeof(smtpc_caps) / sizeof(smtpc_caps[0]); i++) {
		if (!sv_eq_ci(kw, smtpc_caps[i].kw))
			continue;
		c->caps |= smtpc_caps[i].cap;
		if (smtpc_caps[i].cap == SMTPC_CAP_SIZE)
			c->max_size = smtpc_parse_size(sv_trim(sv_skip(l, kw.len)));
		return;
	}
}

/* ---- Reply handlers, one per state ---- */

typedef void smtpc_reply_fn(struct smtp_client *c, unsigned code, struct sv text);

static void smtpc_on_greet(struct smtp_client *c, unsigned code, struct sv text)
{
	if (code == 220)
		smtpc_send_ehlo(c);
	else if (code >= 400)
		smtpc_give_up(c, text);
	else
		smtpc_proto_error(c, "unexpected greeting", text);
}

static void smtpc_on_ehlo(struct smtp_client *c, unsigned code, struct sv text)
{
	if (code / 100 == 2) {
		smtpc_hello_done(c);
	} else if (code / 100 == 5 && !c->cf->lmtp) {
		/* RFC 5321 3.2: an old server; LMTP has no HELO. */
		c->caps = 0;
		c->max_size = 0;
		if (smtpc_put(c, "HELO %s", c->cf->hostname))
			smtpc_set_state(c, SMTPC_S_HELO);
	} else if (code >= 400) {
		c->caps = 0;
		c->max_size = 0;
		smtpc_give_up(c, text);
	} else {
		smtpc_proto_error(c, "unexpected EHLO reply", text);
	}
}

static void smtpc_on_helo(struct smtp_client *c, unsigned code, struct sv text)
{
	if (code / 100 == 2)
		smtpc_hello_done(c); /* no capabilities: no STARTTLS */
	else if (code >= 400)
		smtpc_give_up(c, text);
	else
		smtpc_proto_error(c, "unexpected HELO reply", text);
}

/* RFC 3207 4: 220 = start TLS now; 454 (or any 4xx/5xx) = not now, the
 * session goes on in clear as it was. Anything else leaves the next hop's
 * state unknown. */
static void smtpc_on_starttls(struct smtp_client *c, unsigned code, struct sv text)
{
	char why[200];
	int n;

	if (code == 220) {
		/* smtp_client_feed() stops here: what follows came in clear. */
		smtpc_set_state(c, SMTPC_S_TLS);
		c->act |= SMTPC_ACT_STARTTLS;
		return;
	}
	if (code < 400) {
		smtpc_proto_error(c, "unexpected STARTTLS reply", text);
		return;
	}
	if (!c->cf->require_tls) {
		LOGI("smtp_client: server=[%s] STARTTLS refused, going on in clear: %.*s", c->peer,
		     (int)text.len, text.p);
		smtpc_ready(c);
		return;
	}
	n = snprintf(why, sizeof(why),
	             "4.7.0 TLS required but STARTTLS refused by the next hop: %.*s",
	             (int)(text.len < 100 ? text.len : 100), text.p);
	if (n < 0)
		n = 0;
	else if ((size_t)n >= sizeof(why))
		n = sizeof(why) - 1;
	smtpc_tls_missing(c, sv_make(why, (size_t)n));
}

/* READY or BODY: nothing was asked. */
static void smtpc_on_unexpected(struct smtp_client *c, unsigned code, struct sv text)
{
	if (c->state == SMTPC_S_BODY) {
		/* The next hop gave up on the content: its words, but TEMP:
		 * nothing says the message itself is at fault. */
		LOGI("smtp_client: server=[%s] reply during the content: %.*s", c->peer,
		     (int)text.len, text.p);
		smtpc_drop(c, code, text);
		return;
	}
	smtpc_proto_error(c, "unexpected reply", text);
}

/* The reply to MAIL, to a RCPT or to DATA, in the order they were sent. */
static void smtpc_on_env(struct smtp_client *c, unsigned code, struct sv text)
{
	unsigned k = c->next_reply++, n = c->nres, cls = code / 100;
	bool pipelined = c->tx_flags & SMTPC_TX_PIPELINED;

	if (k == 0) { /* MAIL */
		if (cls == 2) {
			if (!pipelined && smtpc_send_cmd(c, c->next_cmd))
				c->next_cmd++;
			return;
		}
		if (cls == 3) {
			smtpc_proto_error(c, "unexpected MAIL reply", text);
			return;
		}
		smtpc_decide_rest(c, smtpc_status_of(code), SMTPC_STAGE_MAIL, code, text);
		if (!pipelined)
			smtpc_tx_abort(c);
		/* Pipelined: the RCPT and DATA replies (503) come first. */
		return;
	}
	if (k <= n) { /* RCPT k-1 */
		struct smtp_client_result *r = &c->res[k - 1];

		if (r->status != SMTPC_PENDING) {
			/* Pipelined after a refused MAIL: nothing to learn. */
		} else if (cls == 2) {
			r->accepted = true;
			c->naccepted++;
			if (c->msg->probe)
				smtpc_decide(c, k - 1, SMTPC_STAGE_RCPT, code, text);
		} else if (cls == 3) {
			smtpc_proto_error(c, "unexpected RCPT reply", text);
			return;
		} else {
			smtpc_decide(c, k - 1, SMTPC_STAGE_RCPT, code, text);
		}
		if (c->msg->probe && k == n) {
			smtpc_tx_abort(c); /* a probe: every RCPT answered, never DATA */
			return;
		}
		if (pipelined)
			return;
		if (k < n || c->naccepted) {
			if (smtpc_send_cmd(c, c->next_cmd))
				c->next_cmd++;
			return;
		}
		smtpc_tx_abort(c); /* no recipient: no DATA */
		return;
	}
	/* DATA */
	if (c->naccepted == 0) {
		/* Only when pipelined: 503/554 expected. A 354 would put the
		 * next hop in content mode, where RSET is text. */
		if (cls == 3)
			smtpc_proto_error(c, "DATA accepted without recipients", text);
		else
			smtpc_tx_abort(c);
		return;
	}
	if (cls == 3) {
		c->bol = true;
		c->tail[0] = c->tail[1] = '\0';
		c->body_len = 0;
		smtpc_set_state(c, SMTPC_S_BODY);
		c->act |= SMTPC_ACT_BODY;
	} else if (cls == 2) {
		smtpc_proto_error(c, "unexpected DATA reply", text);
	} else {
		smtpc_decide_rest(c, smtpc_status_of(code), SMTPC_STAGE_DATA, code, text);
		smtpc_tx_abort(c);
	}
}

/* The end of data. SMTP: one reply for all accepted recipients. LMTP
 * (RFC 2033 4.2): one per accepted recipient, in RCPT order. */
static void smtpc_on_dot(struct smtp_client *c, unsigned code, struct sv text)
{
	if (code / 100 == 3) {
		smtpc_proto_error(c, "unexpected reply to the end of data", text);
		return;
	}
	if (!c->cf->lmtp) {
		smtpc_decide_rest(c, smtpc_status_of(code), SMTPC_STAGE_DOT, code, text);
	} else {
		for (unsigned i = 0; i < c->nres; i++) {
			if (c->res[i].status == SMTPC_PENDING) {
				smtpc_decide(c, i, SMTPC_STAGE_DOT, code, text);
				break;
			}
		}
		for (unsigned i = 0; i < c->nres; i++)
			if (c->res[i].status == SMTPC_PENDING)
				return; /* more replies due */
	}
	c->nmsgs++;
	smtpc_msg_done(c);
	smtpc_ready(c);
}

static void smtpc_on_rset(struct smtp_client *c, unsigned code, struct sv text)
{
	if (code / 100 == 2)
		smtpc_ready(c);
	else
		smtpc_give_up(c, text);
}

static void smtpc_on_quit(struct smtp_client *c, unsigned code, struct sv text)
{
	if (c->npend > 0)
		c->npend--;
	if (c->npend == 0)
		smtpc_close(c);
}

static smtpc_reply_fn *const smtpc_on_reply[] = {
    [SMTPC_S_GREET] = smtpc_on_greet,
    [SMTPC_S_EHLO] = smtpc_on_ehlo,
    [SMTPC_S_HELO] = smtpc_on_helo,
    [SMTPC_S_STARTTLS] = smtpc_on_starttls,
    [SMTPC_S_TLS] = NULL, /* nothing is read in it */
    [SMTPC_S_READY] = smtpc_on_unexpected,
    [SMTPC_S_ENV] = smtpc_on_env,
    [SMTPC_S_BODY] = smtpc_on_unexpected,
    [SMTPC_S_DOT] = smtpc_on_dot,
    [SMTPC_S_RSET] = smtpc_on_rset,
    [SMTPC_S_QUIT] = smtpc_on_quit,
    [SMTPC_S_CLOSED] = NULL,
};

/* ---- Reply lines ---- */

/* Adds <t> to the reply text, up to SMTPC_TEXT_MAX; control octets become
 * '?' so that the text is one printable line in logs and DSNs. */
static void smtpc_reply_add(struct smtp_client *c, const char *t, size_t n)
{
	size_t start = c->reply.len;

	if (start >= SMTPC_TEXT_MAX)
		return;
	if (n > SMTPC_TEXT_MAX - start)
		n = SMTPC_TEXT_MAX - start;
	if (buf_append(&c->reply, t, n))
		return; /* a shorter text; the code is what counts */
	for (size_t i = start; i < c->reply.len; i++) {
		unsigned char ch = (unsigned char)c->reply.p[i];

		if (ch < 0x20 || ch == 0x7f)
			c->reply.p[i] = '?';
	}
}

/* RFC 3463: class "." subject "." detail, 1-3 digits each, at the start
 * of <t> and followed by a space or the end. Returns its length or 0. */
static size_t smtpc_ecode_len(struct sv t)
{
	size_t i = 0;

	if (t.len < 5 || (t.p[0] != '2' && t.p[0] != '4' && t.p[0] != '5') || t.p[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;

		while (i < t.len && t.p[i] >= '0' && t.p[i] <= '9' && d < 4)
			i++, d++;
		if (d == 0 || d > 3)
			return 0;
		if (part == 0) {
			if (i >= t.len || t.p[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < t.len && t.p[i] != ' ')
		return 0;
	return i >= sizeof(((struct smtp_client *)0)->ecode) ? 0 : i;
}

/* One complete reply line, <n> octets ending with LF. */
static void smtpc_line(struct smtp_client *c, const char *p, size_t n)
{
	struct sv l = {p, n - 1}, t;
	unsigned code;
	size_t elen;
	bool more;

	if (l.len && l.p[l.len - 1] == '\r')
		l.len--;
	if (l.len < 3 || l.p[0] < '2' || l.p[0] > '5' || l.p[1] < '0' || l.p[1] > '5' ||
	    l.p[2] < '0' || l.p[2] > '9' || (l.len > 3 && l.p[3] != ' ' && l.p[3] != '-')) {
		smtpc_proto_error(c, "malformed reply", l);
		return;
	}
	code = (unsigned)(l.p[0] - '0') * 100 + (unsigned)(l.p[1] - '0') * 10 +
	       (unsigned)(l.p[2] - '0');
	more = l.len > 3 && l.p[3] == '-';
	t = sv_skip(l, 4);
	if (c->reply_lines == 0) {
		c->reply_code = code;
		buf_reset(&c->reply, SMTPC_TEXT_MAX * 2);
		smtpc_reply_add(c, l.p, 3);
		elen = smtpc_ecode_len(t);
		memcpy(c->ecode, t.p, elen);
		c->ecode[elen] = '\0';
	} else if (code != c->reply_code) {
		smtpc_proto_error(c, "inconsistent codes in a multi-line reply", l);
		return;
	} else {
		/* A repeated enhanced code says nothing new. */
		elen = strlen(c->ecode);
		if (elen && t.len >= elen && memcmp(t.p, c->ecode, elen) == 0 &&
		    (t.len == elen || t.p[elen] == ' '))
			t = sv_trim(sv_skip(t, elen));
	}
	if (t.len) {
		smtpc_reply_add(c, " ", 1);
		smtpc_reply_add(c, t.p, t.len);
	}
	if (c->state == SMTPC_S_EHLO && c->reply_lines > 0)
		smtpc_cap_line(c, t);
	c->reply_lines++;
	if (more)
		return;
	c->reply_lines = 0;
	LOGD("smtp_client: server=[%s] %s: %.*s", c->peer, smtpc_state_names[c->state],
	     (int)c->reply.len, c->reply.p);
	if (code == 421 && c->state != SMTPC_S_QUIT) {
		/* RFC 5321 3.8: the next hop is closing; any command may get it. */
		LOGI("smtp_client: server=[%s] %.*s", c->peer, (int)c->reply.len, c->reply.p);
		smtpc_drop(c, code, buf_sv(&c->reply));
		return;
	}
	smtpc_on_reply[c->state](c, code, buf_sv(&c->reply));
}

/* Takes one reply line (or the part of one that is there). A line that
 * spans feeds waits in c->line. */
static size_t smtpc_line_feed(struct smtp_client *c, const char *p, size_t len)
{
	const char *lf = memchr(p, '\n', len);
	size_t n = lf ? (size_t)(lf - p) + 1 : len;

	/* Without its LF yet, a line of SMTPC_LINE_MAX octets is already too long. */
	if (c->line.len + n > SMTPC_LINE_MAX || (!lf && c->line.len + n == SMTPC_LINE_MAX)) {
		struct sv head = c->line.len ? buf_sv(&c->line) : sv_make(p, n);

		smtpc_proto_error(c, "reply line too long", head);
		return n;
	}
	if (!lf) {
		if (buf_append(&c->line, p, n))
			smtpc_nomem(c);
		return n;
	}
	if (c->line.len == 0) {
		smtpc_line(c, p, n); /* the common case: no copy */
		return n;
	}
	if (buf_append(&c->line, p, n)) {
		smtpc_nomem(c);
		return n;
	}
	smtpc_line(c, c->line.p, c->line.len);
	buf_free(&c->line); /* idle clients hold no line memory */
	return n;
}

/* ---- Public interface ---- */

void smtp_client_init(struct smtp_client *c, const struct smtp_client_conf *cf, const char *peer)
{
	*c = (struct smtp_client){
	    .cf = cf,
	    .state = SMTPC_S_GREET,
	    .out_max = cf->out_max ? cf->out_max : SMTPC_OUT_MAX,
	};
	/* A stuffed '.' and the octet after it must fit for progress. */
	if (c->out_max < 2)
		c->out_max = 2;
	snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "");
}

void smtp_client_fini(struct smtp_client *c)
{
	buf_free(&c->out);
	buf_free(&c->err);
	buf_free(&c->line);
	buf_free(&c->reply);
	buf_free(&c->text);
	free(c->res);
	c->res = NULL;
	c->res_cap = 0;
	c->nres = 0;
	c->msg = NULL;
}

size_t smtp_client_feed(struct smtp_client *c, const char *p, size_t len)
{
	size_t off = 0, n;

	/* SMTPC_S_TLS: the caller drops what was not consumed (see the header). */
	while (off < len && c->state != SMTPC_S_CLOSED && c->state != SMTPC_S_TLS) {
		enum smtp_client_state st = c->state;

		n = smtpc_line_feed(c, p + off, len - off);
		off += n;
		/* What follows is for after the caller's move (the next
		 * message, the content, TLS): stop here. */
		if (c->state != st && (c->state == SMTPC_S_READY || c->state == SMTPC_S_BODY))
			break;
	}
	return off;
}

int smtp_client_tls_started(struct smtp_client *c)
{
	if (c->state != SMTPC_S_TLS)
		return -EBUSY;
	c->act &= ~SMTPC_ACT_STARTTLS;
	c->tls = true;
	LOGD("smtp_client: server=[%s] TLS started", c->peer);
	/* RFC 3207 4.2: forget what was learnt in clear, ask again. */
	smtpc_send_ehlo(c);
	return 0;
}

/* An address goes between <> in a command line: no line breaks, controls
 * or brackets. Notes non-ASCII octets (RFC 6531: needs SMTPUTF8). */
static bool smtpc_addr_ok(const char *a, bool *nonascii)
{
	for (const unsigned char *q = (const unsigned char *)a; *q; q++) {
		if (*q < 0x20 || *q == 0x7f || *q == '<' || *q == '>')
			return false;
		if (*q >= 0x80)
			*nonascii = true;
	}
	return true;
}

/* The message is refused before any command: every recipient gets <why>. */
static void smtpc_refuse(struct smtp_client *c, enum smtp_client_status st, const char *why)
{
	LOGI("smtp_client: server=[%s] message refused: %s", c->peer, why);
	smtpc_decide_rest(c, st, SMTPC_STAGE_CONN, 0, sv_cstr(why));
	smtpc_msg_done(c);
	c->act |= SMTPC_ACT_READY;
}

int smtp_client_send(struct smtp_client *c, const struct smtp_client_msg *m)
{
	bool nonascii = false;
	char why[160];

	if (c->state != SMTPC_S_READY)
		return -EBUSY;
	if (!m->from || !m->rcpts || m->nrcpt == 0 || m->nrcpt > UINT32_MAX / 2 ||
	    !smtpc_addr_ok(m->from, &nonascii))
		return -EINVAL;
	for (unsigned i = 0; i < m->nrcpt; i++)
		if (!m->rcpts[i] || !m->rcpts[i][0] || !smtpc_addr_ok(m->rcpts[i], &nonascii))
			return -EINVAL;
	if (m->nrcpt > c->res_cap) {
		struct smtp_client_result *r = realloc(c->res, m->nrcpt * sizeof(*r));

		if (!r)
			return -ENOMEM;
		c->res = r;
		c->res_cap = m->nrcpt;
	}
	c->act &= ~(SMTPC_ACT_READY | SMTPC_ACT_DONE);
	memset(c->res, 0, m->nrcpt * sizeof(*c->res));
	c->nres = m->nrcpt;
	smtpc_text_reset(c);
	c->msg = m;
	c->tx_flags = 0;
	c->naccepted = 0;
	c->next_reply = 0;

	if (m->smtputf8 || nonascii) {
		if (!(c->caps & SMTPC_CAP_SMTPUTF8)) {
			/* RFC 6531 3.2: no downgrade; Postfix's wording. */
			smtpc_refuse(c, SMTPC_PERM,
			             "5.6.7 SMTPUTF8 is required, but was not offered by the next "
			             "hop");
			return 0;
		}
		c->tx_flags |= SMTPC_TX_SMTPUTF8;
	}
	if ((c->caps & SMTPC_CAP_SIZE) && c->max_size && m->size > c->max_size) {
		/* RFC 1870 5: the next hop would refuse it anyway. */
		snprintf(why, sizeof(why),
		         "5.3.4 message size %" PRIu64 " exceeds the next hop's limit of %" PRIu64,
		         m->size, c->max_size);
		smtpc_refuse(c, SMTPC_PERM, why);
		return 0;
	}
	if (m->body_8bit && !(c->caps & SMTPC_CAP_8BITMIME)) {
		/* RFC 6152 says convert or bounce; sending as is works almost
		 * everywhere (Postfix's default). Noted for the log. */
		c->tx_flags |= SMTPC_TX_8BIT_PLAIN;
		LOGI("smtp_client: server=[%s] 8-bit message sent without BODY=8BITMIME "
		     "(not offered)",
		     c->peer);
	}
	smtpc_set_state(c, SMTPC_S_ENV);
	if (c->caps & SMTPC_CAP_PIPELINING) {
		/* RFC 2920 3.1: DATA may end the batch. */
		c->tx_flags |= SMTPC_TX_PIPELINED;
		unsigned last = m->probe ? m->nrcpt : m->nrcpt + 1; /* a probe: no DATA */

		for (unsigned k = 0; k <= last; k++)
			if (!smtpc_send_cmd(c, k))
				return 0; /* closed; the results say why */
		c->next_cmd = last + 1;
		return 0;
	}
	if (smtpc_send_cmd(c, 0))
		c->next_cmd = 1;
	return 0;
}

size_t smtp_client_body(struct smtp_client *c, const char *p, size_t len)
{
	size_t room, i = 0, n;
	const char *lf;
	char *o;

	if (c->state != SMTPC_S_BODY || len == 0 || c->out.len >= c->out_max)
		return 0;
	room = c->out_max - c->out.len;
	if (len <= room / 2)
		room = 2 * len; /* at most one stuffed '.' per input octet */
	if (buf_reserve(&c->out, room)) {
		smtpc_nomem(c);
		return 0;
	}
	o = c->out.p + c->out.len;
	while (i < len && room) {
		if (c->bol && p[i] == '.') {
			/* RFC 5321 4.5.2. After a bare LF too: a lenient
			 * next hop must not see "\n.\r\n" as the end. */
			if (room < 2)
				break;
			*o++ = '.';
			room--;
		}
		n = len - i < room ? len - i : room;
		lf = memchr(p + i, '\n', n);
		if (lf)
			n = (size_t)(lf - (p + i)) + 1;
		memcpy(o, p + i, n);
		o += n;
		room -= n;
		i += n;
		c->bol = p[i - 1] == '\n';
	}
	if (i >= 2) {
		c->tail[0] = p[i - 2];
		c->tail[1] = p[i - 1];
	} else if (i == 1) {
		c->tail[0] = c->tail[1];
		c->tail[1] = p[0];
	}
	c->body_len += i;
	c->out.len = (size_t)(o - c->out.p);
	c->out.p[c->out.len] = '\0';
	return i;
}

void smtp_client_body_end(struct smtp_client *c)
{
	if (c->state != SMTPC_S_BODY)
		return;
	c->act &= ~SMTPC_ACT_BODY;
	/* The terminator is CRLF "." CRLF: the content ends with a CRLF. */
	if (c->body_len && !(c->tail[0] == '\r' && c->tail[1] == '\n') && !smtpc_put(c, "%s", ""))
		return;
	if (smtpc_put(c, "."))
		smtpc_set_state(c, SMTPC_S_DOT);
}

void smtp_client_quit(struct smtp_client *c)
{
	switch (c->state) {
	case SMTPC_S_GREET:
		smtpc_close(c); /* nothing said yet */
		return;
	case SMTPC_S_STARTTLS:
	case SMTPC_S_TLS:
		/* A QUIT in clear after STARTTLS would be read as the start of
		 * a TLS handshake; nothing is in flight. */
		smtpc_close(c);
		return;
	case SMTPC_S_EHLO:
	case SMTPC_S_HELO:
	case SMTPC_S_RSET:
		/* RFC 2920 3.1: QUIT may follow them unanswered. */
		if (smtpc_put(c, "QUIT")) {
			c->npend = 2;
			smtpc_set_state(c, SMTPC_S_QUIT);
		}
		return;
	case SMTPC_S_READY:
		c->act &= ~SMTPC_ACT_READY;
		if (smtpc_put(c, "QUIT")) {
			c->npend = 1;
			smtpc_set_state(c, SMTPC_S_QUIT);
		}
		return;
	case SMTPC_S_ENV:
	case SMTPC_S_BODY:
	case SMTPC_S_DOT:
		smtpc_drop(c, 0, SV("4.3.0 transaction abandoned by the gateway"));
		return;
	case SMTPC_S_QUIT:
	case SMTPC_S_CLOSED:
		return;
	}
}

void smtp_client_fail(struct smtp_client *c, const char *why)
{
	smtpc_drop(c, 0, sv_cstr(why && why[0] ? why : "4.4.0 connection failed"));
}

const struct smtp_client_result *smtp_client_result(const struct smtp_client *c, unsigned i)
{
	return i < c->nres ? &c->res[i] : NULL;
}

const char *smtp_client_result_text(const struct smtp_client *c, const struct smtp_client_result *r)
{
	if (!r || !c->text.p || r->text >= c->text.len)
		return "";
	return c->text.p + r->text;
}

const char *smtp_client_status_name(enum smtp_client_status st)
{
	static const char *const names[] = {
	    [SMTPC_PENDING] = "pending",
	    [SMTPC_OK] = "ok",
	    [SMTPC_TEMP] = "temp",
	    [SMTPC_PERM] = "perm",
	};

	return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

const char *smtp_client_stage_name(enum smtp_client_stage st)
{
	static const char *const names[] = {
	    [SMTPC_STAGE_CONN] = "connection",   [SMTPC_STAGE_MAIL] = "MAIL FROM",
	    [SMTPC_STAGE_RCPT] = "RCPT TO",      [SMTPC_STAGE_DATA] = "DATA",
	    [SMTPC_STAGE_BODY] = "message body", [SMTPC_STAGE_DOT] = "end of data",
	};

	return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

/* smtp_session: the server side of one ESMTP connection (RFC 5321), with
 * PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8
 * (RFC 6531), ENHANCEDSTATUSCODES (RFC 2034, 3463) and CHUNKING (RFC 3030).
 *
 * It sits between io/ and the DATA parser: io/ feeds it the bytes a
 * connection received; it cuts them into command lines (or message content
 * while in DATA / inside a BDAT chunk), runs each command through one table
 * (OpenSMTPD commands[], Postfix smtpd_cmd_table) and appends the replies to
 * s->out. When a message is complete it stops and raises SMTP_ACT_MSG_READY;
 * io/ spools it and answers with smtp_session_msg_result(). STARTTLS (RFC
 * 3207) works the same way: 220, stop right after its line, raise
 * SMTP_ACT_STARTTLS; io/ runs the handshake and calls
 * smtp_session_tls_started(). Every reply goes through smtp_reply() and
 * every state change through smtp_set_state().
 * Sans-I/O: libc only, no sockets, clocks or threads. */
#include "core/smtp_session.h"
#include "core/tables.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/maillog.h"
#include "core/stats.h"
#include "core/utc.h"
#include "core/verify_cache.h"

/* Its log lines name ringmx/smtpd (core/log.h). */
#undef LOG_PROG
#define LOG_PROG LOG_P_SMTPD

#define SMTP_BODY_KEEP  (64u * 1024) /* content memory kept across transactions */
#define SMTP_ENV_KEEP   4096u        /* envelope memory kept across transactions */
#define SMTP_LOCAL_MAX  64u          /* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX 255u         /* RFC 5321 4.5.3.1.2 */
#define SMTP_PATH_MAX   256u         /* RFC 5321 4.5.3.1.3, angle brackets included */
#define SMTP_DATA_VECS  32u          /* views per smtp_data_scan() call */
#define SMTP_COUNT_MAX  20u          /* digits of a uint64_t (BDAT, SIZE=) */

/* Bit of a state in a command's "allowed in" mask. */
#define SMTP_IN(st)       (1u << SMTP_S_##st)
#define SMTP_IN_STATE(st) (1u << (st))
#define SMTP_IN_CMDS      (SMTP_IN(GREET) | SMTP_IN(READY) | SMTP_IN(MAIL) | SMTP_IN(RCPT))

/* How a reply counts (smtp_reply() <how>). */
#define SMTP_R_MORE      0x1u /* continuation line of a multi-line reply: "250-" */
#define SMTP_R_ERR       0x2u /* the client's fault: counts towards cf->max_errors */
#define SMTP_ERRORS_FREE 3u   /* errors answered at once; later ones wait cf->error_delay_ms */

/* Command flags (struct smtp_cmd_def). */
#define SMTP_C_LOG      0x1u /* log its 4xx/5xx replies ("reject: ...") */
#define SMTP_C_SELFSEQ  0x2u /* the handler checks sequence and pregreet itself (BDAT) */
#define SMTP_C_PREGREET 0x4u /* answered as usual after a pregreet (QUIT) */
#define SMTP_C_ESMTP    0x8u /* EHLO rather than HELO */

struct smtp_cmd_def;
typedef void smtp_cmd_fn(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg);

struct smtp_cmd_def {
	struct sv verb;
	smtp_cmd_fn *fn;
	unsigned allowed;  /* SMTP_IN() mask; the dispatcher answers 503 elsewhere */
	const char *early; /* 503 text in a state before the allowed ones */
	const char *late;  /* 503 text in a state after them */
	unsigned flags;    /* SMTP_C_* */
};

enum smtp_cmd_id {
	SMTP_CMD_EHLO,
	SMTP_CMD_HELO,
	SMTP_CMD_MAIL,
	SMTP_CMD_RCPT,
	SMTP_CMD_DATA,
	SMTP_CMD_BDAT,
	SMTP_CMD_RSET,
	SMTP_CMD_NOOP,
	SMTP_CMD_QUIT,
	SMTP_CMD_VRFY,
	SMTP_CMD_EXPN,
	SMTP_CMD_HELP,
	SMTP_CMD_STARTTLS,
	SMTP_CMD_NVERBS,
	/* Not a verb: names what the client sent in logs when no verb applies. */
	SMTP_CMD_UNKNOWN = SMTP_CMD_NVERBS,
	SMTP_CMD_N,
};
_Static_assert(SMTP_CMD_N == SMTP_STAT_VERBS, "struct smtp_stats counts every table entry");

/* Defined with its handlers below; smtp_reply() and the data paths name entries. */
static const struct smtp_cmd_def smtp_cmds[SMTP_CMD_N];

/* The verbs as the disconnect line names them (Postfix's words). */
static const char *const smtp_cmd_lower[SMTP_CMD_N] = {
    "ehlo", "helo", "mail", "rcpt", "data", "bdat",     "rset",
    "noop", "quit", "vrfy", "expn", "help", "starttls", "unknown",
};

static const char *const smtp_state_names[] = {
    [SMTP_S_INIT] = "INIT",   [SMTP_S_GREET] = "GREET",   [SMTP_S_READY] = "READY",
    [SMTP_S_MAIL] = "MAIL",   [SMTP_S_RCPT] = "RCPT",     [SMTP_S_DATA] = "DATA",
    [SMTP_S_SPOOL] = "SPOOL", [SMTP_S_CLOSED] = "CLOSED",
};

static void smtp_set_state(struct smtp_session *s, enum smtp_state st)
{
	LOGD("smtp: client=[%s] state %s -> %s", s->peer.addr, smtp_state_names[s->state],
	     smtp_state_names[st]);
	s->state = st;
}

static void smtp_close(struct smtp_session *s)
{
	smtp_set_state(s, SMTP_S_CLOSED);
	s->act |= SMTP_ACT_CLOSE;
	s->flags &= ~SMTP_F_DISCARD;
	buf_free(&s->line);
}

static void smtp_stat_refuse(struct smtp_session *s, enum smtp_refusal r)
{
	if (s->stats)
		stats_add_local(&s->stats->refused[r], 1);
}

/* A final reply line to command <c> whose code starts with <cls>. */
static void smtp_stat_reply(struct smtp_session *s, const struct smtp_cmd_def *c, char cls)
{
	size_t v = (size_t)(c - smtp_cmds);

	if (cls != '3') {
		s->cmd_sent[v]++;
		s->cmd_ok[v] += cls == '2';
	}
	if (s->stats && cls >= '2' && cls <= '5')
		stats_add_local(&s->stats->replies[c - smtp_cmds][cls - '2'], 1);
}

static void smtp_reply(struct smtp_session *s, const struct smtp_cmd_def *c, unsigned how,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The path inside <> of a MAIL FROM:/RCPT TO: argument; p NULL if none. */
static struct sv smtp_arg_path(struct sv arg)
{
	const char *lt = arg.p ? memchr(arg.p, '<', arg.len) : NULL, *gt;

	if (!lt)
		return (struct sv){0};
	gt = memchr(lt, '>', arg.len - (size_t)(lt - arg.p));
	if (!gt)
		return (struct sv){0};
	return sv_make(lt + 1, (size_t)(gt - lt - 1));
}

/* "NOQUEUE: reject: RCPT from unknown[addr]: <reply>; from=<> to=<>
 * proto=ESMTP helo=<>" (core/maillog), for a refusal of <c>. */
static void smtp_log_reject(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv reply)
{
	struct maillog_reject r = {
	    .verb = c->verb.p, /* a NUL-terminated literal */
	    .addr = s->peer.addr,
	    .reply = reply,
	    .proto = (s->flags & SMTP_F_ESMTP) ? "ESMTP" : "SMTP",
	    .helo = s->helo,
	};

	if (!log_enabled(LOG_INFO))
		return;
	if (c == &smtp_cmds[SMTP_CMD_MAIL])
		r.from = smtp_arg_path(s->cmd_arg);
	else if (smtp_session_in_tx(s))
		r.from = s->tx.from.len ? sv_make(s->tx.from.p, s->tx.from.len) : SV("");
	if (c == &smtp_cmds[SMTP_CMD_RCPT])
		r.to = smtp_arg_path(s->cmd_arg);
	else if (smtp_session_in_tx(s) && s->tx.nrcpt)
		r.to = sv_cstr(s->tx.rcpts.p); /* the first */
	maillog_reject(&r);
}

/* Appends one reply line (<fmt> without CRLF, its code first) to s->out.
 * Logs 4xx/5xx replies to commands marked SMTP_C_LOG, counts SMTP_R_ERR
 * replies and closes with 421 once cf->max_errors is reached. Nothing is
 * added after the session closed. */
static void smtp_reply(struct smtp_session *s, const struct smtp_cmd_def *c, unsigned how,
                       const char *fmt, ...)
{
	size_t start = s->out.len, n;
	const char *line;
	va_list ap;
	int err;

	if (s->state == SMTP_S_CLOSED)
		return;
	va_start(ap, fmt);
	err = buf_vprintf(&s->out, fmt, ap);
	va_end(ap);
	if (!err)
		err = buf_append(&s->out, "\r\n", 2);
	if (err) {
		/* No memory for a reply: the client would wait forever. */
		s->out.len = start;
		LOGW("smtp: client=[%s] out of memory for a reply; closing", s->peer.addr);
		smtp_close(s);
		return;
	}
	line = s->out.p + start;
	n = s->out.len - start - 2;
	if ((how & SMTP_R_MORE) && n > 3)
		s->out.p[start + 3] = '-';
	else if (c)
		smtp_stat_reply(s, c, line[0]);
	if (c && (c->flags & SMTP_C_LOG) && (line[0] == '4' || line[0] == '5'))
		smtp_log_reject(s, c, sv_make(line, n));
	if (!(how & SMTP_R_ERR))
		return;
	s->nerrors++;
	/* A client that keeps erring is slowed down, then shown the door
	 * (Postfix's soft and hard error limits). */
	if (s->cf->error_delay_ms && s->nerrors > SMTP_ERRORS_FREE) {
		s->act |= SMTP_ACT_DELAY;
		if (s->delay_ms < s->cf->error_delay_ms)
			s->delay_ms = s->cf->error_delay_ms;
	}
	unsigned max =
	    s->overload && s->cf->overload_max_errors &&
	            (!s->cf->max_errors || s->cf->overload_max_errors < s->cf->max_errors)
	        ? s->cf->overload_max_errors
	        : s->cf->max_errors;

	if (max && s->nerrors >= max) {
		if (!c)
			c = &smtp_cmds[SMTP_CMD_UNKNOWN];
		LOGI("too many errors after %.*s from unknown[%s]", (int)c->verb.len, c->verb.p,
		     s->peer.addr);
		smtp_reply(s, NULL, 0, "421 4.7.0 %s Error: too many errors", s->cf->hostname);
		smtp_stat_refuse(s, SMTP_RF_ERRORS);
		smtp_close(s);
	}
}

/* Empties the transaction (RSET, EHLO/HELO, end of message), keeping
 * memory of a reasonable size for the next one. */
static void smtp_tx_reset(struct smtp_session *s)
{
	struct smtp_tx *tx = &s->tx;

	buf_reset(&tx->from, SMTP_ENV_KEEP);
	buf_reset(&tx->rcpts, SMTP_ENV_KEEP);
	buf_reset(&tx->body, SMTP_BODY_KEEP);
	tx->body_taken = 0;
	tx->serial++;
	tx->nrcpt = 0;
	tx->size_decl = 0;
	tx->body_8bit = false;
	tx->smtputf8 = false;
	tx->data = (struct smtp_data){0};
	tx->flags = 0;
	tx->chunk_len = 0;
	tx->chunk_left = 0;
}

/* Back to READY after RSET or a finished/refused message. */
static void smtp_tx_end(struct smtp_session *s)
{
	smtp_tx_reset(s);
	if (s->state != SMTP_S_GREET)
		smtp_set_state(s, SMTP_S_READY);
}

/* ---- Addresses (RFC 5321 4.1.2) ---- */

enum {
	SMTP_ADDR_OK = 0,
	SMTP_ADDR_NOBRACKET, /* no "<": a command syntax error (5.5.4) */
	SMTP_ADDR_BAD,       /* an address syntax error (5.1.7 / 5.1.3) */
};

struct smtp_addr {
	struct sv path;    /* between the brackets, as written */
	struct sv mailbox; /* source route stripped; empty for "<>" */
	struct sv local;   /* before the last '@' (all of it without '@') */
	struct sv domain;  /* after it; empty without '@' */
	bool nonascii;     /* an octet >= 0x80 somewhere (needs SMTPUTF8) */
	bool routed;       /* names a further route: a source route, or '%', '!' or
	                    * '@' in the local part (quoted or escaped too) */
};

static bool smtp_is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* RFC 5322 atext, '.', and UTF-8 octets (RFC 6531 atext). Consecutive or
 * edge dots are tolerated, as Postfix does: such addresses exist. */
static bool smtp_is_local_char(unsigned char c)
{
	if (c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL && c != '\0';
}

static bool smtp_local_valid(struct sv l)
{
	bool quoted = false;

	if (l.len == 0 || l.len > SMTP_LOCAL_MAX)
		return false;
	for (size_t i = 0; i < l.len; i++) {
		unsigned char c = (unsigned char)l.p[i];

		if (quoted) {
			if (c == '\\')
				i++; /* smtp_parse_path() saw an octet follow */
			else if (c == '"')
				quoted = false;
		} else if (c == '"') {
			quoted = true;
		} else if (!smtp_is_local_char(c)) {
			return false;
		}
	}
	return !quoted;
}

/* A host name (labels of letters, digits, '-', '_' and UTF-8 octets, a
 * trailing dot allowed) or an address literal "[...]". */
static bool smtp_domain_valid(struct sv d)
{
	size_t label = 0;

	if (d.len == 0 || d.len > SMTP_DOMAIN_MAX)
		return false;
	if (d.p[0] == '[') {
		if (d.len < 3 || d.p[d.len - 1] != ']')
			return false;
		for (size_t i = 1; i < d.len - 1; i++) {
			unsigned char c = (unsigned char)d.p[i];

			if (c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '\\')
				return false;
		}
		return true;
	}
	for (size_t i = 0; i < d.len; i++) {
		unsigned char c = (unsigned char)d.p[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		           (c >= '0' && c <= '9') || c == '-' || c == '_') {
			label++;
		} else {
			return false;
		}
	}
	return true;
}

/* RFC 5321 4.1.2 A-d-l: "@one,@two:" (accepted and ignored, 3.6.1). */
static bool smtp_route_valid(struct sv r)
{
	while (r.len) {
		const char *comma = memchr(r.p, ',', r.len);
		size_t n = comma ? (size_t)(comma - r.p) : r.len;

		if (n < 2 || r.p[0] != '@' || !smtp_domain_valid(sv_make(r.p + 1, n - 1)))
			return false;
		if (comma && n + 1 == r.len)
			return false; /* trailing comma */
		r = sv_skip(r, n + 1);
	}
	return true;
}

/* Parses "<path>" at the start of <a>. On SMTP_ADDR_OK fills <ad> (views
 * into <a>) and sets <rest> to what follows the '>' (parameters). The
 * caller decides about "<>" and a missing domain. */
static int smtp_parse_path(struct sv a, struct smtp_addr *ad, struct sv *rest)
{
	struct sv in, mb;
	bool quoted = false;
	size_t i, at = SIZE_MAX;

	if (a.len == 0 || a.p[0] != '<')
		return SMTP_ADDR_NOBRACKET;
	*ad = (struct smtp_addr){0};
	for (i = 1; i < a.len; i++) {
		unsigned char c = (unsigned char)a.p[i];

		if (smtp_is_ctl(c))
			return SMTP_ADDR_BAD;
		if (c >= 0x80)
			ad->nonascii = true;
		if (quoted) {
			if (c == '\\') {
				if (++i == a.len || smtp_is_ctl((unsigned char)a.p[i]))
					return SMTP_ADDR_BAD;
				if ((unsigned char)a.p[i] >= 0x80)
					ad->nonascii = true;
			} else if (c == '"') {
				quoted = false;
			}
			continue;
		}
		if (c == '>')
			break;
		if (c == '"')
			quoted = true;
		else if (c == '<' || c == ' ' || c == '\t')
			return SMTP_ADDR_BAD;
	}
	if (i == a.len)
		return SMTP_ADDR_BAD; /* unbalanced */
	in = sv_make(a.p + 1, i - 1);
	*rest = sv_skip(a, i + 1);
	if (rest->len && rest->p[0] != ' ')
		return SMTP_ADDR_BAD; /* "<a@b>x" */
	if (in.len + 2 > SMTP_PATH_MAX)
		return SMTP_ADDR_BAD;
	if (in.len == 0)
		return SMTP_ADDR_OK; /* the null path */
	ad->path = mb = in;
	if (in.p[0] == '@') {
		const char *colon = memchr(in.p, ':', in.len);

		if (!colon || !smtp_route_valid(sv_make(in.p, (size_t)(colon - in.p))))
			return SMTP_ADDR_BAD;
		mb = sv_skip(in, (size_t)(colon - in.p) + 1);
		ad->routed = true;
	}
	/* The domain follows the last '@' outside a quoted local part. */
	quoted = false;
	for (i = 0; i < mb.len; i++) {
		if (quoted && mb.p[i] == '\\')
			i++;
		else if (mb.p[i] == '"')
			quoted = !quoted;
		else if (!quoted && mb.p[i] == '@')
			at = i;
	}
	ad->mailbox = mb;
	if (at == SIZE_MAX) {
		ad->local = mb;
	} else {
		ad->local = sv_make(mb.p, at);
		ad->domain = sv_skip(mb, at + 1);
		if (!smtp_domain_valid(ad->domain))
			return SMTP_ADDR_BAD;
	}
	if (!smtp_local_valid(ad->local))
		return SMTP_ADDR_BAD;
	for (i = 0; i < ad->local.len; i++)
		if (strchr("%!@", ad->local.p[i]) && ad->local.p[i] != '\0')
			ad->routed = true;
	return SMTP_ADDR_OK;
}

/* Takes the next space-separated word of <rest> into <tok>. */
static bool smtp_next_word(struct sv *rest, struct sv *tok)
{
	size_t n = 0;

	*rest = sv_trim(*rest);
	if (rest->len == 0)
		return false;
	while (n < rest->len && rest->p[n] != ' ' && rest->p[n] != '\t')
		n++;
	*tok = sv_make(rest->p, n);
	*rest = sv_skip(*rest, n);
	return true;
}

static bool smtp_all_digits(struct sv v)
{
	for (size_t i = 0; i < v.len; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return false;
	}
	return v.len != 0;
}

/* Decimal digits only, at most 20 of them, no overflow. */
static bool smtp_parse_count(struct sv v, uint64_t *out)
{
	uint64_t n = 0;

	if (v.len == 0 || v.len > SMTP_COUNT_MAX)
		return false;
	for (size_t i = 0; i < v.len; i++) {
		unsigned d = (unsigned)(v.p[i] - '0');

		if (d > 9 || n > (UINT64_MAX - d) / 10)
			return false;
		n = n * 10 + d;
	}
	*out = n;
	return true;
}

/* ---- Command handlers: arguments checked here, sequence by the dispatcher ---- */

static void smtp_on_helo(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	const char *host = s->cf->hostname;
	size_t n = arg.len < sizeof(s->helo) - 1 ? arg.len : sizeof(s->helo) - 1;

	if (arg.len == 0) {
		smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Syntax: %.*s hostname", (int)c->verb.len,
		           c->verb.p);
		return;
	}
	/* RFC 5321 4.1.4: EHLO/HELO in a transaction resets it. */
	smtp_tx_reset(s);
	memcpy(s->helo, arg.p, n);
	s->helo[n] = '\0';
	smtp_set_state(s, SMTP_S_READY);
	/* RFC 2034: no enhanced codes in EHLO/HELO replies. */
	if (!(c->flags & SMTP_C_ESMTP)) {
		s->flags &= ~SMTP_F_ESMTP;
		smtp_reply(s, c, 0, "250 %s", host);
		return;
	}
	s->flags |= SMTP_F_ESMTP;
	smtp_reply(s, c, SMTP_R_MORE, "250 %s", host);
	smtp_reply(s, c, SMTP_R_MORE, "250 PIPELINING");
	if (s->cf->max_message_size)
		smtp_reply(s, c, SMTP_R_MORE, "250 SIZE %" PRIu64, s->cf->max_message_size);
	else
		smtp_reply(s, c, SMTP_R_MORE, "250 SIZE");
	/* RFC 3207 4.2: not offered again once TLS is up. */
	if (s->cf->tls_available && !(s->flags & SMTP_F_TLS))
		smtp_reply(s, c, SMTP_R_MORE, "250 STARTTLS");
	smtp_reply(s, c, SMTP_R_MORE, "250 8BITMIME");
	smtp_reply(s, c, SMTP_R_MORE, "250 SMTPUTF8");
	smtp_reply(s, c, SMTP_R_MORE, "250 ENHANCEDSTATUSCODES");
	smtp_reply(s, c, 0, "250 CHUNKING");
}

/* The per-client rate of <kind> (SMTP_RATE_*) for one more: 1 it fits
 * (counted), 0 over it, -1 asked (SMTP_ACT_RATE: the caller decides, and
 * the command runs again with s->rate_verdict). Nothing before this in a
 * handler may have an effect, since the command may run twice. */
static int smtp_rate_check(struct smtp_session *s, unsigned kind)
{
	const struct smtp_server_conf *cf = s->cf;
	int v = s->rate_verdict;

	if (!cf->anvil || !s->peer.limited)
		return 1;
	if (v) {
		s->rate_verdict = 0;
		return v > 0;
	}
	if (s->rate_remote && (cf->rate_ask & kind)) {
		s->act |= SMTP_ACT_RATE;
		s->rate_kind = kind;
		return -1;
	}
	return kind == SMTP_RATE_MSG ? anvil_message(cf->anvil, &s->peer.key, s->now_ms)
	                             : anvil_recipient(cf->anvil, &s->peer.key, s->now_ms);
}

static void smtp_on_mail(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	struct smtp_addr a;
	struct sv rest, tok = {NULL, 0};
	uint64_t size = 0;
	bool b8 = false, utf8 = false;
	int rate;

	if (!sv_starts_ci(arg, SV("FROM:")))
		goto syntax;
	/* Lenient like Postfix: "MAIL FROM: <a@b>" is common. */
	switch (smtp_parse_path(sv_trim(sv_skip(arg, 5)), &a, &rest)) {
	case SMTP_ADDR_NOBRACKET:
		goto syntax;
	case SMTP_ADDR_BAD:
		goto bad_addr;
	}
	if (a.mailbox.len && !a.domain.len)
		goto bad_addr;
	while (smtp_next_word(&rest, &tok)) {
		const char *eq = memchr(tok.p, '=', tok.len);
		struct sv key = eq ? sv_make(tok.p, (size_t)(eq - tok.p)) : tok;
		struct sv val = eq ? sv_skip(tok, key.len + 1) : sv_make(NULL, 0);

		if (!(s->flags & SMTP_F_ESMTP))
			goto unsupported; /* RFC 5321 4.1.1.11: parameters need EHLO */
		if (sv_eq_ci(key, SV("SIZE")) && eq) {
			if (!smtp_parse_count(val, &size)) {
				if (!smtp_all_digits(val)) {
					smtp_reply(s, c, SMTP_R_ERR,
					           "501 5.5.4 Bad message size syntax");
					return;
				}
				size = UINT64_MAX; /* digits, just too many */
			}
		} else if (sv_eq_ci(key, SV("BODY")) && eq) {
			if (sv_eq_ci(val, SV("8BITMIME"))) {
				b8 = true;
			} else if (sv_eq_ci(val, SV("7BIT"))) {
				b8 = false;
			} else {
				smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Unsupported BODY type");
				return;
			}
		} else if (sv_eq_ci(tok, SV("SMTPUTF8"))) {
			utf8 = true;
		} else {
			goto unsupported;
		}
	}
	if (a.nonascii && !utf8) {
		smtp_reply(s, c, SMTP_R_ERR, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
		return;
	}
	if (s->cf->max_message_size && size > s->cf->max_message_size) {
		/* A limit, not a client error: not counted. */
		smtp_reply(s, c, 0, "552 5.3.4 Message size exceeds fixed limit");
		smtp_stat_refuse(s, SMTP_RF_SIZE);
		return;
	}
	if (s->storage_low) {
		/* RFC 1870 6.1: the spool is short of space for now. */
		smtp_reply(s, c, 0, "452 4.3.1 Insufficient system storage");
		smtp_stat_refuse(s, SMTP_RF_STORAGE);
		return;
	}
	/* The sender domain's DNS check, before the rate (which counts). */
	if (s->cf->sender_dns && a.domain.len && a.domain.p[0] != '[' && !s->dns_verdict) {
		free(s->dns_domain);
		s->dns_domain = strndup(a.domain.p, a.domain.len);
		if (!s->dns_domain) {
			smtp_reply(s, c, 0, "452 4.3.1 Insufficient system storage");
			smtp_stat_refuse(s, SMTP_RF_STORAGE);
			return;
		}
		s->act |= SMTP_ACT_DNS;
		return; /* asked: this command runs again with the verdict */
	}
	rate = smtp_rate_check(s, SMTP_RATE_MSG);
	if (rate < 0)
		return; /* asked: this command runs again with the verdict */
	if (!rate) {
		smtp_reply(s, c, 0,
		           "452 4.7.0 Error: too many messages from your address, try again "
		           "later");
		smtp_stat_refuse(s, SMTP_RF_RATE_LIMIT);
		return;
	}
	smtp_tx_reset(s);
	if (buf_append_sv(&s->tx.from, a.mailbox)) {
		smtp_reply(s, c, 0, "452 4.3.1 Insufficient system storage");
		smtp_stat_refuse(s, SMTP_RF_STORAGE);
		return;
	}
	s->tx.size_decl = size;
	s->tx.body_8bit = b8;
	s->tx.smtputf8 = utf8;
	smtp_set_state(s, SMTP_S_MAIL);
	if (s->cf->filters) {
		s->act |= SMTP_ACT_FILTER;
		s->filter_verb = 'M';
		return;
	}
	smtp_reply(s, c, 0, "250 2.1.0 Ok");
	return;
syntax:
	smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Syntax: MAIL FROM:<address>");
	return;
bad_addr:
	smtp_reply(s, c, SMTP_R_ERR, "501 5.1.7 Bad sender address syntax");
	return;
unsupported:
	smtp_reply(s, c, SMTP_R_ERR, "555 5.5.4 Unsupported option: %.*s", (int)tok.len, tok.p);
}

/* The recipient passed every check: it is in the transaction. */
static void smtp_rcpt_take(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv mailbox)
{
	if (buf_append_sv(&s->tx.rcpts, mailbox) || buf_append(&s->tx.rcpts, "", 1)) {
		smtp_reply(s, c, 0, "452 4.3.1 Insufficient system storage");
		smtp_stat_refuse(s, SMTP_RF_STORAGE);
		return;
	}
	s->tx.nrcpt++;
	smtp_set_state(s, SMTP_S_RCPT);
	if (s->cf->filters) {
		s->act |= SMTP_ACT_FILTER;
		s->filter_verb = 'R';
		return;
	}
	smtp_reply(s, c, 0, "250 2.1.5 Ok");
}

/* Whether the next hop is asked about <a>: a cache is there, and its
 * domain is one of --verify-recipients (or, with "all", accepted). */
static bool smtp_verify_wanted(const struct smtp_session *s, const struct smtp_addr *a,
                               const struct policy *pol)
{
	const struct smtp_server_conf *cf = s->cf;

	if (!cf->vcache || !a->domain.len || a->domain.p[0] == '[')
		return false;
	if (cf->verify_all && pol && policy_domain_accepted(pol, a->domain))
		return true;
	return cf->verify_domains && cf->verify_domains->ndomains &&
	       policy_domain_accepted(cf->verify_domains, a->domain);
}

/* 550 5.1.1 quoting the next hop (Postfix's reject_unverified_recipient
 * wording); counted and delayed as an unknown user. */
static void smtp_verify_reject(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv path,
                               const char *text)
{
	s->counts.unknown++;
	smtp_reply(s, c, 0,
	           "550 5.1.1 <%.*s>: Recipient address rejected: undeliverable address: %s",
	           (int)path.len, path.p, text && text[0] ? text : "refused by the next hop");
	smtp_stat_refuse(s, SMTP_RF_VERIFY_REJECTED);
	if (s->cf->unknown_delay_ms) {
		s->act |= SMTP_ACT_DELAY;
		s->delay_ms = s->cf->unknown_delay_ms;
	}
}

static void smtp_on_rcpt(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	const struct smtp_server_conf *cf = s->cf;
	const struct tables *t = s->tables;
	const struct policy *pol = t ? &t->domains : cf->policy;
	struct smtp_addr a;
	struct sv rest, tok;
	int rate;

	if (!sv_starts_ci(arg, SV("TO:"))) {
		smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	switch (smtp_parse_path(sv_trim(sv_skip(arg, 3)), &a, &rest)) {
	case SMTP_ADDR_NOBRACKET:
		smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	case SMTP_ADDR_BAD:
		goto bad_addr;
	}
	/* RFC 5321 4.5.1: "<postmaster>" without a domain must be accepted. */
	if (!a.mailbox.len || (!a.domain.len && !sv_eq_ci(a.mailbox, SV("postmaster"))))
		goto bad_addr;
	if (smtp_next_word(&rest, &tok)) {
		smtp_reply(s, c, SMTP_R_ERR, "555 5.5.4 Unsupported option: %.*s", (int)tok.len,
		           tok.p);
		return;
	}
	if (a.nonascii && !s->tx.smtputf8) {
		smtp_reply(s, c, SMTP_R_ERR, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
		return;
	}
	rate = smtp_rate_check(s, SMTP_RATE_RCPT);
	if (rate < 0)
		return; /* asked: this command runs again with the verdict */
	if (!rate) {
		smtp_reply(s, c, 0,
		           "452 4.7.0 Error: too many recipients from your address, try "
		           "again later");
		smtp_stat_refuse(s, SMTP_RF_RATE_LIMIT);
		return;
	}
	if (cf->max_unknown && s->counts.unknown >= cf->max_unknown) {
		char why[320];
		int k = snprintf(why, sizeof(why),
		                 "421 4.7.0 %s Error: too many unknown recipients", cf->hostname);

		smtp_log_reject(s, c, sv_make(why, k > 0 ? strlen(why) : 0));
		smtp_reply(s, NULL, 0, "%s", why);
		smtp_stat_reply(s, c, '4'); /* the 421 answers this RCPT (logged above) */
		smtp_stat_refuse(s, SMTP_RF_UNKNOWN_LIMIT);
		smtp_close(s);
		return;
	}
	if (s->cf->max_recipients && s->tx.nrcpt >= s->cf->max_recipients) {
		/* RFC 5321 4.5.3.1.10: 452, and the client sends the rest later. */
		smtp_reply(s, c, 0, "452 4.5.3 Error: too many recipients");
		smtp_stat_refuse(s, SMTP_RF_RECIPIENTS);
		return;
	}
	/* Never an open relay: only relay clients reach foreign domains and
	 * address literals, or name a route on through an accepted domain
	 * ("user%other@", "other!user@", "\"user@other\"@", "@a:user@"),
	 * which a next hop honouring the percent hack would follow (Postfix's
	 * allow_untrusted_routing = no). */
	if (a.domain.len && !s->peer.may_relay &&
	    (a.domain.p[0] == '[' || !pol || !policy_domain_accepted(pol, a.domain) ||
	     (a.routed && !cf->allow_untrusted_routing))) {
		s->counts.relay_denied++;
		if (a.routed && a.domain.p[0] != '[' && pol &&
		    policy_domain_accepted(pol, a.domain))
			s->counts.routing++;
		smtp_stat_refuse(s, SMTP_RF_RELAY_DENIED);
		smtp_reply(s, c, SMTP_R_ERR, "554 5.7.1 <%.*s>: Relay access denied",
		           (int)a.path.len, a.path.p);
		return;
	}
	/* Users that do not exist are refused here, not bounced later
	 * (backscatter): a domain with a recipient table takes only its
	 * users (Postfix relay_recipient_maps). A dictionary attack meets a
	 * delay before each refusal and, past a count, the door. */
	if (t && t->recipients && a.domain.len && a.domain.p[0] != '[' &&
	    recipients_lookup(t->recipients, a.local, a.domain) == RECIPIENTS_UNKNOWN) {
		s->counts.unknown++;
		smtp_reply(s, c, 0, "550 5.1.1 <%.*s>: Recipient address rejected: User unknown",
		           (int)a.path.len, a.path.p);
		smtp_stat_refuse(s, SMTP_RF_UNKNOWN_USER);
		if (cf->unknown_delay_ms) {
			s->act |= SMTP_ACT_DELAY;
			s->delay_ms = cf->unknown_delay_ms;
		}
		return;
	}
	/* The next hop knows its users (--verify-recipients): asked once per
	 * address and cache period, the answer shared by every worker; a
	 * miss waits for the probe (SMTP_ACT_VERIFY), unanswered. */
	if (smtp_verify_wanted(s, &a, pol)) {
		char key[VERIFY_KEY_MAX + 1], text[VERIFY_TEXT_MAX + 1];
		size_t klen = verify_key(key, sizeof(key), a.mailbox.p, a.mailbox.len);
		enum verify_result r = VERIFY_NONE;

		if (klen)
			r = verify_cache_get(cf->vcache, key, klen, s->now_s, false, text,
			                     sizeof(text));
		if (r == VERIFY_REJECT) {
			smtp_verify_reject(s, c, a.path, text);
			return;
		}
		if (r != VERIFY_OK && klen) {
			buf_reset(&s->verify, 0);
			/* key NUL mailbox NUL "<" path ">" NUL */
			if (buf_append(&s->verify, key, klen + 1) ||
			    buf_append_sv(&s->verify, a.mailbox) ||
			    buf_append(&s->verify, "\0<", 2) || buf_append_sv(&s->verify, a.path) ||
			    buf_append(&s->verify, ">", 2)) {
				buf_free(&s->verify);
				smtp_reply(s, c, 0, "452 4.3.1 Insufficient system storage");
				smtp_stat_refuse(s, SMTP_RF_STORAGE);
				return;
			}
			s->verify_mbox = (uint16_t)(klen + 1);
			s->verify_path = (uint16_t)(klen + 1 + a.mailbox.len + 1);
			s->act |= SMTP_ACT_VERIFY;
			return;
		}
	}
	smtp_rcpt_take(s, c, a.mailbox);
	return;
bad_addr:
	smtp_reply(s, c, SMTP_R_ERR, "501 5.1.3 Bad recipient address syntax");
}

static void smtp_on_data(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	const struct smtp_server_conf *cf = s->cf;

	/* RFC 3030 2: BDAT and DATA do not mix in one transaction. The
	 * reverse (BDAT after DATA) cannot happen: DATA reads up to the end
	 * of the content and the transaction is over by then. */
	if (s->tx.flags & SMTP_TX_BDAT) {
		smtp_reply(s, c, SMTP_R_ERR, "503 5.5.1 Error: DATA after BDAT");
		return;
	}
	if (s->state == SMTP_S_MAIL) {
		smtp_reply(s, c, SMTP_R_ERR, "554 5.5.1 Error: no valid recipients");
		return;
	}
	if (arg.len) {
		smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Syntax: DATA");
		return;
	}
	smtp_data_init(&s->tx.data, cf->max_message_size, cf->max_line, cf->bare_policy,
	               cf->long_line_policy);
	smtp_set_state(s, SMTP_S_DATA);
	smtp_reply(s, c, 0, "354 End data with <CR><LF>.<CR><LF>");
}

static void smtp_chunk_end(struct smtp_session *s);

/* RFC 3030: "BDAT <count> [LAST]". The count octets that follow are read
 * even when the command is refused (2: the server must stay in step), so
 * this handler checks sequence itself after the syntax. */
static void smtp_on_bdat(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	const struct smtp_server_conf *cf = s->cf;
	struct sv count, rest = arg, last = {NULL, 0};
	uint64_t n;

	if (!smtp_next_word(&rest, &count) || !smtp_parse_count(count, &n) ||
	    (smtp_next_word(&rest, &last) && !sv_eq_ci(last, SV("LAST"))) || sv_trim(rest).len) {
		if (s->flags & SMTP_F_PREGREET)
			smtp_reply(s, c, SMTP_R_ERR, "503 5.5.1 Error: talked before greeting");
		else
			smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Syntax: BDAT count [LAST]");
		return;
	}
	s->tx.chunk_len = n;
	s->tx.chunk_left = n;
	s->tx.flags |= SMTP_TX_CHUNK | (last.len ? SMTP_TX_LAST : 0);
	if ((s->flags & SMTP_F_PREGREET) || s->state != SMTP_S_RCPT) {
		s->tx.flags |= SMTP_TX_DROP;
	} else if (!(s->tx.flags & SMTP_TX_BDAT)) {
		/* First chunk: the counters and flags of a DATA parser serve. */
		smtp_data_init(&s->tx.data, cf->max_message_size, cf->max_line, cf->bare_policy,
		               cf->long_line_policy);
		s->tx.flags |= SMTP_TX_BDAT;
	}
	if (n == 0)
		smtp_chunk_end(s);
}

static void smtp_on_rset(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	if (arg.len) {
		smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Syntax: RSET");
		return;
	}
	smtp_tx_end(s);
	smtp_reply(s, c, 0, "250 2.0.0 Ok");
}

static void smtp_on_noop(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	/* RFC 5321 4.1.1.9: a parameter string is allowed and ignored. */
	smtp_reply(s, c, 0, "250 2.0.0 Ok");
}

static void smtp_on_quit(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	smtp_reply(s, c, 0, "221 2.0.0 Bye");
	smtp_close(s);
}

static void smtp_on_vrfy(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	if (arg.len == 0) {
		smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Syntax: VRFY address");
		return;
	}
	/* RFC 5321 3.5.3: no address harvesting, but no false "no". */
	smtp_reply(s, c, 0,
	           "252 2.5.2 Cannot VRFY user, but will accept message and attempt "
	           "delivery");
}

static void smtp_on_expn(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	smtp_reply(s, c, SMTP_R_ERR, "502 5.5.1 Command not implemented");
}

static void smtp_on_help(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	smtp_reply(s, c, 0,
	           "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
}

/* RFC 3207. On success the 220 goes out in clear and smtp_session_feed()
 * stops right after this line: whatever the client pipelined behind it
 * came in clear and must not be taken as sent under TLS (CVE-2011-0411),
 * so io/ discards it. */
static void smtp_on_starttls(struct smtp_session *s, const struct smtp_cmd_def *c, struct sv arg)
{
	if (arg.len) {
		smtp_reply(s, c, SMTP_R_ERR, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->flags & SMTP_F_TLS) {
		smtp_reply(s, c, SMTP_R_ERR, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (!s->cf->tls_available) {
		smtp_reply(s, c, SMTP_R_ERR, "454 4.7.0 TLS not available");
		return;
	}
	if (smtp_session_in_tx(s)) {
		smtp_reply(s, c, SMTP_R_ERR, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	smtp_reply(s, c, 0, "220 2.0.0 Ready to start TLS");
	if (s->state != SMTP_S_CLOSED)
		s->act |= SMTP_ACT_STARTTLS;
}

/* The command table (OpenSMTPD commands[], Postfix smtpd_cmd_table). Each
 * entry: verb, handler, the states it is allowed in, the 503 texts for a
 * state before / after those, flags. */
#define SEQ_HELO "Error: send HELO/EHLO first"
#define SEQ_MAIL "Error: need MAIL command"
static const struct smtp_cmd_def smtp_cmds[SMTP_CMD_N] = {
    [SMTP_CMD_EHLO] = {SV_INIT("EHLO"), smtp_on_helo, SMTP_IN_CMDS, NULL, NULL, SMTP_C_ESMTP},
    [SMTP_CMD_HELO] = {SV_INIT("HELO"), smtp_on_helo, SMTP_IN_CMDS, NULL, NULL, 0},
    [SMTP_CMD_MAIL] = {SV_INIT("MAIL"), smtp_on_mail, SMTP_IN(READY), SEQ_HELO,
                       "Error: nested MAIL command", SMTP_C_LOG},
    [SMTP_CMD_RCPT] = {SV_INIT("RCPT"), smtp_on_rcpt, SMTP_IN(MAIL) | SMTP_IN(RCPT), SEQ_MAIL, NULL,
                       SMTP_C_LOG},
    [SMTP_CMD_DATA] = {SV_INIT("DATA"), smtp_on_data, SMTP_IN(MAIL) | SMTP_IN(RCPT), SEQ_MAIL, NULL,
                       SMTP_C_LOG},
    /* Allowed anywhere: it must read its chunk before saying no. */
    [SMTP_CMD_BDAT] = {SV_INIT("BDAT"), smtp_on_bdat, SMTP_IN_CMDS, NULL, NULL,
                       SMTP_C_LOG | SMTP_C_SELFSEQ},
    [SMTP_CMD_RSET] = {SV_INIT("RSET"), smtp_on_rset, SMTP_IN_CMDS, NULL, NULL, 0},
    [SMTP_CMD_NOOP] = {SV_INIT("NOOP"), smtp_on_noop, SMTP_IN_CMDS, NULL, NULL, 0},
    [SMTP_CMD_QUIT] = {SV_INIT("QUIT"), smtp_on_quit, SMTP_IN_CMDS, NULL, NULL, SMTP_C_PREGREET},
    [SMTP_CMD_VRFY] = {SV_INIT("VRFY"), smtp_on_vrfy, SMTP_IN_CMDS, NULL, NULL, 0},
    [SMTP_CMD_EXPN] = {SV_INIT("EXPN"), smtp_on_expn, SMTP_IN_CMDS, NULL, NULL, 0},
    [SMTP_CMD_HELP] = {SV_INIT("HELP"), smtp_on_help, SMTP_IN_CMDS, NULL, NULL, 0},
    [SMTP_CMD_STARTTLS] = {SV_INIT("STARTTLS"), smtp_on_starttls, SMTP_IN_CMDS, NULL, NULL, 0},
    [SMTP_CMD_UNKNOWN] = {SV_INIT("UNKNOWN"), NULL, 0, NULL, NULL, 0},
};

/* ---- Message content: DATA (dot-stuffed, CRLF.CRLF) and BDAT chunks ---- */

/* Keeps <n> content octets already counted in tx.data.size, unless the
 * message is over the size limit (then it is scanned but not stored). */
static void smtp_body_store(struct smtp_session *s, const void *p, size_t n)
{
	struct smtp_tx *tx = &s->tx;

	if (tx->data.flags & SMTP_DATA_F_TOO_BIG) {
		if (tx->body.len)
			buf_reset(&tx->body, SMTP_BODY_KEEP);
		return;
	}
	if (n == 0 || (tx->flags & SMTP_TX_NOMEM))
		return;
	const char *z = memchr(p, '\0', n);

	if (z) {
		tx->flags |= SMTP_TX_NUL;
		if (!s->cf->nul_strip)
			return; /* refused at the end: nothing to keep */
		/* Stripped: the runs between NULs, as one would have sent them. */
		const char *q = p, *end = (const char *)p + n;

		do {
			if (z > q && buf_append(&tx->body, q, (size_t)(z - q)))
				goto nomem;
			q = z + 1;
		} while (q < end && (z = memchr(q, '\0', (size_t)(end - q))));
		if (q < end && buf_append(&tx->body, q, (size_t)(end - q)))
			goto nomem;
		return;
	}
	if (buf_append(&tx->body, p, n))
		goto nomem;
	return;
nomem:
	tx->flags |= SMTP_TX_NOMEM;
	buf_reset(&tx->body, 0);
}

/* Counts and keeps <n> octets of BDAT content. */
static void smtp_body_add(struct smtp_session *s, const char *p, size_t n)
{
	struct smtp_data *d = &s->tx.data;

	d->size += n;
	if (d->max_size && d->size > d->max_size)
		d->flags |= SMTP_DATA_F_TOO_BIG;
	smtp_body_store(s, p, n);
}

/* The end of the content of DATA or BDAT LAST: refuse it, or hand it to
 * io/ for spooling (SPOOL, SMTP_ACT_MSG_READY). Content refusals are not
 * counted as client errors. */
static void smtp_content_end(struct smtp_session *s, const struct smtp_cmd_def *c)
{
	const struct smtp_server_conf *cf = s->cf;
	uint32_t f = s->tx.data.flags;

	if (f & SMTP_DATA_F_TOO_BIG) {
		smtp_reply(s, c, 0, "552 5.3.4 Message size exceeds fixed limit");
		smtp_stat_refuse(s, SMTP_RF_SIZE);
	} else if ((f & (SMTP_DATA_F_BARE_LF | SMTP_DATA_F_BARE_CR)) &&
	           cf->bare_policy == SMTP_DATA_BARE_REJECT) {
		/* SMTP smuggling: a bare LF/CR line ending passed on could
		 * end the data early at a less careful MTA downstream. */
		smtp_reply(s, c, 0,
		           "550 5.6.0 Message contains bare CR or bare LF (RFC 5321 2.3.8)");
		smtp_stat_refuse(s, SMTP_RF_BARE_EOL);
	} else if ((s->tx.flags & SMTP_TX_NUL) && !cf->nul_strip) {
		/* SMTP smuggling too: "\r\n\0.\r\n" is an end of data to a next
		 * hop that drops NULs. */
		smtp_reply(s, c, 0, "550 5.6.0 Message contains NUL octets (RFC 5321 2.3.8)");
		smtp_stat_refuse(s, SMTP_RF_NUL);
	} else if ((f & SMTP_DATA_F_LONG_LINE) && cf->long_line_policy == SMTP_DATA_LONG_REJECT) {
		smtp_reply(s, c, 0, "550 5.6.0 Message contains a line longer than %u octets",
		           cf->max_line);
		smtp_stat_refuse(s, SMTP_RF_LONG_LINE);
	} else if (s->tx.flags & SMTP_TX_NOMEM) {
		smtp_reply(s, c, 0, "452 4.3.1 Insufficient system storage");
		smtp_stat_refuse(s, SMTP_RF_STORAGE);
	} else {
		smtp_set_state(s, SMTP_S_SPOOL);
		s->act |= SMTP_ACT_MSG_READY;
		return;
	}
	smtp_tx_end(s);
}

/* State DATA: runs the content through the DATA parser and keeps its
 * views. Returns the octets consumed, up to just past CRLF.CRLF. */
static size_t smtp_data_feed(struct smtp_session *s, const char *p, size_t len)
{
	struct smtp_data *d = &s->tx.data;
	struct iovec v[SMTP_DATA_VECS];
	size_t off = 0, n;
	unsigned nv;

	while (off < len && !smtp_data_done(d)) {
		n = smtp_data_scan(d, p + off, len - off, v, SMTP_DATA_VECS, &nv);
		for (unsigned i = 0; i < nv; i++)
			smtp_body_store(s, v[i].iov_base, v[i].iov_len);
		off += n;
		if (n == 0 && nv == 0)
			break; /* cannot happen with SMTP_DATA_VECS >= 3; no spinning */
	}
	if (smtp_data_done(d))
		smtp_content_end(s, &smtp_cmds[SMTP_CMD_DATA]);
	return off;
}

/* Counts one octet of a BDAT text line, as smtp_data does for DATA. */
static void smtp_chunk_line_char(struct smtp_data *d)
{
	if (d->linelen < UINT32_MAX)
		d->linelen++;
	if (d->max_line && d->linelen + 2ull > d->max_line)
		d->flags |= SMTP_DATA_F_LONG_LINE;
}

/* The CR before this octet (maybe the last of an earlier chunk) had no LF. */
static void smtp_chunk_bare_cr(struct smtp_session *s)
{
	struct smtp_data *d = &s->tx.data;

	s->tx.flags &= ~SMTP_TX_CR;
	d->flags |= SMTP_DATA_F_BARE_CR;
	if (d->bare == SMTP_DATA_BARE_NORMALIZE) {
		smtp_body_add(s, "\n", 1); /* CR -> CRLF */
		d->linelen = 0;
	} else {
		smtp_chunk_line_char(d);
	}
}

/* Stores BDAT octets: no dot-unstuffing and no end-of-data scan (RFC 3030),
 * but the same bare CR / bare LF and line length policy as DATA, so that
 * what leaves by DATA downstream cannot smuggle a second message. */
static void smtp_chunk_store(struct smtp_session *s, const char *p, size_t len)
{
	struct smtp_data *d = &s->tx.data;
	bool normalize = d->bare == SMTP_DATA_BARE_NORMALIZE;
	size_t run = 0; /* p[run..i) is content not yet added */

	for (size_t i = 0; i < len; i++) {
		char ch = p[i];

		if (s->tx.flags & SMTP_TX_CR) {
			if (ch == '\n') {
				s->tx.flags &= ~SMTP_TX_CR;
				d->linelen = 0;
				continue;
			}
			smtp_body_add(s, p + run, i - run);
			run = i;
			smtp_chunk_bare_cr(s);
		}
		if (ch == '\r') {
			s->tx.flags |= SMTP_TX_CR;
		} else if (ch == '\n') {
			d->flags |= SMTP_DATA_F_BARE_LF;
			if (normalize) {
				smtp_body_add(s, p + run, i - run);
				run = i;
				smtp_body_add(s, "\r", 1); /* LF -> CRLF */
			}
			d->linelen = 0;
		} else {
			smtp_chunk_line_char(d);
		}
	}
	smtp_body_add(s, p + run, len - run);
}

/* The last octet of a chunk was read (or BDAT 0): answer the chunk. */
static void smtp_chunk_end(struct smtp_session *s)
{
	const struct smtp_cmd_def *c = &smtp_cmds[SMTP_CMD_BDAT];
	unsigned f = s->tx.flags;

	s->tx.flags &= ~(SMTP_TX_CHUNK | SMTP_TX_LAST | SMTP_TX_DROP);
	if (f & SMTP_TX_DROP) {
		if (s->flags & SMTP_F_PREGREET)
			smtp_reply(s, c, SMTP_R_ERR, "503 5.5.1 Error: talked before greeting");
		else if (s->state == SMTP_S_MAIL)
			smtp_reply(s, c, SMTP_R_ERR, "554 5.5.1 Error: no valid recipients");
		else
			smtp_reply(s, c, SMTP_R_ERR, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (!(f & SMTP_TX_LAST)) {
		if (s->tx.data.flags & SMTP_DATA_F_TOO_BIG)
			smtp_reply(s, c, 0, "552 5.3.4 Message size exceeds fixed limit");
		else
			smtp_reply(s, c, 0, "250 2.0.0 %" PRIu64 " octets received",
			           s->tx.chunk_len);
		return;
	}
	if (s->tx.flags & SMTP_TX_CR)
		smtp_chunk_bare_cr(s); /* a CR was the very last octet */
	smtp_content_end(s, c);
}

/* Inside a BDAT chunk: takes up to chunk_left octets. */
static size_t smtp_chunk_feed(struct smtp_session *s, const char *p, size_t len)
{
	size_t n = len < s->tx.chunk_left ? len : (size_t)s->tx.chunk_left;

	if (!(s->tx.flags & SMTP_TX_DROP))
		smtp_chunk_store(s, p, n);
	s->tx.chunk_left -= n;
	if (s->tx.chunk_left == 0)
		smtp_chunk_end(s);
	return n;
}

/* ---- Command lines ---- */

/* One complete line, <n> octets ending with LF: finds the verb in the
 * table, checks the state and calls the handler. */
static void smtp_command(struct smtp_session *s, const char *p, size_t n)
{
	const struct smtp_cmd_def *c = NULL;
	struct sv line = {p, n - 1}, verb, arg;
	const char *sp;

	if (line.len && line.p[line.len - 1] == '\r')
		line.len--;
	/* NUL would end the text early in logs; a CR inside a line is not
	 * a line end here, nor must it become one further on. */
	if (memchr(line.p, '\0', line.len) || memchr(line.p, '\r', line.len) ||
	    sv_trim(line).len == 0) {
		smtp_reply(s, &smtp_cmds[SMTP_CMD_UNKNOWN], SMTP_R_ERR,
		           "500 5.5.2 Error: bad syntax");
		return;
	}
	sp = memchr(line.p, ' ', line.len);
	verb = sv_make(line.p, sp ? (size_t)(sp - line.p) : line.len);
	arg = sv_trim(sv_skip(line, verb.len));
	for (unsigned i = 0; i < SMTP_CMD_NVERBS; i++) {
		if (sv_eq_ci(verb, smtp_cmds[i].verb)) {
			c = &smtp_cmds[i];
			break;
		}
	}
	if ((s->flags & SMTP_F_PREGREET) &&
	    !(c && (c->flags & (SMTP_C_PREGREET | SMTP_C_SELFSEQ)))) {
		smtp_reply(s, c ? c : &smtp_cmds[SMTP_CMD_UNKNOWN], SMTP_R_ERR,
		           "503 5.5.1 Error: talked before greeting");
		return;
	}
	if (s->refuse_all && !(c && (c->flags & SMTP_C_PREGREET))) {
		/* A listed or unnamed client: every command but QUIT, counted
		 * as an error (so --max-errors closes the session). */
		smtp_reply(s, c ? c : &smtp_cmds[SMTP_CMD_UNKNOWN], SMTP_R_ERR, "%s",
		           s->refuse_all);
		return;
	}
	if (!c) {
		smtp_reply(s, &smtp_cmds[SMTP_CMD_UNKNOWN], SMTP_R_ERR,
		           "500 5.5.2 Error: command not recognized");
		return;
	}
	if (!(c->flags & SMTP_C_SELFSEQ) && !(c->allowed & SMTP_IN_STATE(s->state))) {
		/* States are ordered GREET < READY < MAIL < RCPT. */
		bool early = SMTP_IN_STATE(s->state) < (c->allowed & -c->allowed);

		smtp_reply(s, c, SMTP_R_ERR, "503 5.5.1 %s",
		           early     ? c->early
		           : c->late ? c->late
		                     : c->early);
		return;
	}
	s->cmd_arg = arg;
	c->fn(s, c, arg);
	s->cmd_arg = (struct sv){0}; /* <arg> is into the caller's buffer */
}

/* Command mode: takes one line (or the part of one that is there). A line
 * that spans feeds waits in s->line; one longer than SMTP_LINE_MAX is
 * dropped up to its LF without being kept (SMTP_F_DISCARD), then 500. */
static size_t smtp_line_feed(struct smtp_session *s, const char *p, size_t len)
{
	const char *lf = memchr(p, '\n', len);
	size_t n = lf ? (size_t)(lf - p) + 1 : len;

	if (s->flags & SMTP_F_DISCARD) {
		if (lf) {
			s->flags &= ~SMTP_F_DISCARD;
			smtp_reply(s, &smtp_cmds[SMTP_CMD_UNKNOWN], SMTP_R_ERR,
			           "500 5.5.6 Error: line too long");
		}
		return n;
	}
	/* Without its LF yet, a line of SMTP_LINE_MAX octets is already too long. */
	if (s->line.len + n > SMTP_LINE_MAX || (!lf && s->line.len + n == SMTP_LINE_MAX)) {
		buf_free(&s->line);
		if (lf)
			smtp_reply(s, &smtp_cmds[SMTP_CMD_UNKNOWN], SMTP_R_ERR,
			           "500 5.5.6 Error: line too long");
		else
			s->flags |= SMTP_F_DISCARD;
		return n;
	}
	if (!lf) {
		if (buf_append(&s->line, p, n)) {
			LOGW("smtp: client=[%s] out of memory for a command line", s->peer.addr);
			smtp_close(s);
		}
		return n;
	}
	if (s->line.len == 0) {
		smtp_command(s, p, n); /* the common case: no copy */
		/* Waiting for a rate's verdict: the line runs again then. */
		if ((s->act & (SMTP_ACT_RATE | SMTP_ACT_DNS)) && buf_append(&s->line, p, n)) {
			LOGW("smtp: client=[%s] out of memory for a command line", s->peer.addr);
			s->act &= ~(SMTP_ACT_RATE | SMTP_ACT_DNS);
			smtp_close(s);
		}
		return n;
	}
	if (buf_append(&s->line, p, n)) {
		LOGW("smtp: client=[%s] out of memory for a command line", s->peer.addr);
		smtp_close(s);
		return n;
	}
	smtp_command(s, s->line.p, s->line.len);
	/* Idle sessions hold no line memory. */
	if (!(s->act & (SMTP_ACT_RATE | SMTP_ACT_DNS)))
		buf_free(&s->line);
	return n;
}

/* ---- Public interface ---- */

void smtp_session_init(struct smtp_session *s, const struct smtp_server_conf *cf,
                       const struct smtp_peer *peer)
{
	*s = (struct smtp_session){
	    .cf = cf,
	    .state = SMTP_S_INIT,
	    .line = BUF_INIT,
	    .out = BUF_INIT,
	};
	if (peer) {
		s->peer = *peer;
		s->peer.addr[sizeof(s->peer.addr) - 1] = '\0';
	}
}

void smtp_session_fini(struct smtp_session *s)
{
	buf_free(&s->line);
	buf_free(&s->out);
	buf_free(&s->tx.from);
	buf_free(&s->tx.rcpts);
	buf_free(&s->tx.body);
	free(s->dns_domain);
	free(s->client_name);
	free(s->refuse_all);
	s->dns_domain = s->client_name = s->refuse_all = NULL;
	buf_free(&s->verify);
}

void smtp_session_greet(struct smtp_session *s)
{
	const char *host = s->cf->hostname;

	if (s->state != SMTP_S_INIT)
		return;
	smtp_set_state(s, SMTP_S_GREET);
	if (s->flags & SMTP_F_PREGREET) {
		/* Spam engines often talk first (Postfix postscreen's test). */
		LOGI("pregreet: client=[%s] talked before greeting", s->peer.addr);
		smtp_reply(s, NULL, 0, "554 5.7.1 %s Protocol error: talked before greeting", host);
		return;
	}
	smtp_reply(s, NULL, 0, "220 %s ESMTP ringmx", host);
}

size_t smtp_session_feed(struct smtp_session *s, const char *p, size_t len)
{
	size_t off = 0, n;

	if (s->state == SMTP_S_INIT) {
		/* Before the greeting: note it and drop the bytes. */
		if (len)
			s->flags |= SMTP_F_PREGREET;
		return len;
	}
	/* SMTP_ACT_STARTTLS: not one more byte, whatever comes next. */
	while (off < len && s->state != SMTP_S_CLOSED && s->state != SMTP_S_SPOOL &&
	       !(s->act & (SMTP_ACT_STARTTLS | SMTP_ACT_DELAY | SMTP_ACT_FILTER | SMTP_ACT_RATE |
	                   SMTP_ACT_DNS | SMTP_ACT_VERIFY))) {
		if (s->tx.flags & SMTP_TX_CHUNK)
			n = smtp_chunk_feed(s, p + off, len - off);
		else if (s->state == SMTP_S_DATA)
			n = smtp_data_feed(s, p + off, len - off);
		else
			n = smtp_line_feed(s, p + off, len - off);
		if (n == 0 && s->state != SMTP_S_SPOOL && s->state != SMTP_S_CLOSED &&
		    !(s->act & (SMTP_ACT_STARTTLS | SMTP_ACT_DELAY | SMTP_ACT_FILTER |
		                SMTP_ACT_RATE | SMTP_ACT_DNS | SMTP_ACT_VERIFY)))
			break; /* no progress: a broken invariant, but never spin */
		off += n;
	}
	return off;
}

void smtp_session_delay_done(struct smtp_session *s)
{
	s->act &= ~SMTP_ACT_DELAY;
	s->delay_ms = 0;
}

const char *smtp_session_verify_key(const struct smtp_session *s, size_t *klen)
{
	*klen = s->verify_mbox ? s->verify_mbox - 1u : 0;
	return s->verify.p ? s->verify.p : "";
}

const char *smtp_session_verify_addr(const struct smtp_session *s)
{
	return s->verify.p ? s->verify.p + s->verify_mbox : "";
}

void smtp_session_verify_done(struct smtp_session *s, int res, const char *text)
{
	const struct smtp_cmd_def *c = &smtp_cmds[SMTP_CMD_RCPT];
	struct sv path, mbox;

	if (!(s->act & SMTP_ACT_VERIFY))
		return;
	s->act &= ~SMTP_ACT_VERIFY;
	if (s->state != SMTP_S_CLOSED && s->verify.p) {
		path = sv_cstr(s->verify.p + s->verify_path); /* "<path>" */
		mbox = sv_cstr(s->verify.p + s->verify_mbox);
		s->cmd_arg = path; /* the log's to= */
		if (res == VERIFY_OK) {
			smtp_rcpt_take(s, c, mbox);
		} else if (res == VERIFY_REJECT) {
			smtp_verify_reject(s, c, sv_make(path.p + 1, path.len - 2), text);
		} else if (s->cf->verify_fail_open) {
			LOGI("verify: client=[%s] to=%.*s not verified (%s): accepted "
			     "(--verify-fail-open)",
			     s->peer.addr, (int)path.len, path.p,
			     text && text[0] ? text : "no answer");
			smtp_rcpt_take(s, c, mbox);
		} else {
			smtp_reply(
			    s, c, 0,
			    "450 4.1.1 <%.*s>: Recipient address rejected: unverified address: "
			    "%s",
			    (int)path.len - 2, path.p + 1,
			    text && text[0] ? text : "the next hop did not answer");
			smtp_stat_refuse(s, SMTP_RF_VERIFY_TEMP);
		}
		s->cmd_arg = (struct sv){0};
	}
	buf_free(&s->verify);
	s->verify_mbox = s->verify_path = 0;
}

void smtp_session_rate_done(struct smtp_session *s, bool fits)
{
	if (!(s->act & SMTP_ACT_RATE))
		return;
	s->act &= ~SMTP_ACT_RATE;
	if (s->state != SMTP_S_CLOSED) {
		/* The command again, from its start: its checks up to the rate
		 * had no effect, and this time the rate has its verdict. */
		s->rate_verdict = fits ? 1 : -1;
		smtp_command(s, s->line.p, s->line.len);
		s->rate_verdict = 0;
	}
	s->dns_verdict = 0; /* the sender check that passed before the rate is done */
	buf_free(&s->line);
}

void smtp_session_dns_done(struct smtp_session *s, const char *reply, enum smtp_refusal why)
{
	if (!(s->act & SMTP_ACT_DNS))
		return;
	s->act &= ~SMTP_ACT_DNS;
	free(s->dns_domain);
	s->dns_domain = NULL;
	if (s->state != SMTP_S_CLOSED) {
		if (reply) {
			smtp_reply(s, &smtp_cmds[SMTP_CMD_MAIL], 0, "%s", reply);
			smtp_stat_refuse(s, why);
		} else {
			/* The command again, from its start, past the check: its
			 * checks up to it had no effect. A rate asked now keeps
			 * the line and the pass until its own verdict. */
			s->dns_verdict = 1;
			smtp_command(s, s->line.p, s->line.len);
			if (s->act & SMTP_ACT_RATE)
				return;
			s->dns_verdict = 0;
		}
	}
	buf_free(&s->line);
}

void smtp_session_client_name(struct smtp_session *s, const char *name)
{
	free(s->client_name);
	s->client_name = strdup(name && name[0] ? name : "unknown");
}

void smtp_session_refuse_all(struct smtp_session *s, const char *reply, enum smtp_refusal why)
{
	free(s->refuse_all);
	s->refuse_all = reply ? strdup(reply) : NULL;
	if (reply)
		smtp_stat_refuse(s, why);
}

void smtp_session_msg_result(struct smtp_session *s, int err, const char *qid)
{
	const struct smtp_cmd_def *c =
	    &smtp_cmds[(s->tx.flags & SMTP_TX_BDAT) ? SMTP_CMD_BDAT : SMTP_CMD_DATA];

	if (s->state != SMTP_S_SPOOL)
		return;
	s->act &= ~SMTP_ACT_MSG_READY;
	if (err == 0) {
		s->nmsgs++;
		smtp_reply(s, c, 0, "250 2.0.0 Ok: queued as %.*s", SMTP_QID_MAX, qid ? qid : "");
		if (s->stats) {
			stats_add_local(&s->stats->accepted, 1);
			stats_add_local(&s->stats->accepted_bytes, s->tx.data.size);
		}
	} else if (err == -ENOSPC || err == -EDQUOT) {
		smtp_reply(s, c, 0, "452 4.3.1 Insufficient system storage");
		smtp_stat_refuse(s, SMTP_RF_STORAGE);
	} else {
		smtp_reply(s, c, 0, "451 4.3.0 Error: queue file write error");
		smtp_stat_refuse(s, SMTP_RF_SPOOL_ERROR);
	}
	smtp_tx_end(s);
}

/* Appends the filters' reply <reply> (lines joined by CRLF) as it is,
 * counted and logged as the command's own. */
static void smtp_filter_reply(struct smtp_session *s, const struct smtp_cmd_def *c,
                              const char *reply)
{
	const char *line = reply, *nl;

	while ((nl = strstr(line, "\r\n"))) {
		smtp_reply(s, c, SMTP_R_MORE, "%.*s", (int)(nl - line), line);
		line = nl + 2;
	}
	smtp_reply(s, c, 0, "%s", line);
}

void smtp_session_filter_done(struct smtp_session *s, const char *reply)
{
	const struct smtp_cmd_def *c =
	    &smtp_cmds[s->filter_verb == 'M' ? SMTP_CMD_MAIL : SMTP_CMD_RCPT];
	struct smtp_tx *tx = &s->tx;

	if (!(s->act & SMTP_ACT_FILTER))
		return;
	s->act &= ~SMTP_ACT_FILTER;
	if (!reply) {
		smtp_reply(s, c, 0, s->filter_verb == 'M' ? "250 2.1.0 Ok" : "250 2.1.5 Ok");
		return;
	}
	smtp_filter_reply(s, c, reply);
	if (s->filter_verb == 'M') {
		smtp_tx_end(s);
		return;
	}
	/* The last recipient out again: it ends just before the final NUL. */
	if (tx->nrcpt && tx->rcpts.len) {
		size_t at = tx->rcpts.len - 1;

		while (at && tx->rcpts.p[at - 1] != '\0')
			at--;
		tx->rcpts.len = at;
		tx->nrcpt--;
	}
	if (!tx->nrcpt && s->state == SMTP_S_RCPT)
		smtp_set_state(s, SMTP_S_MAIL);
}

void smtp_session_msg_reply(struct smtp_session *s, const char *reply)
{
	const struct smtp_cmd_def *c =
	    &smtp_cmds[(s->tx.flags & SMTP_TX_BDAT) ? SMTP_CMD_BDAT : SMTP_CMD_DATA];

	if (s->state != SMTP_S_SPOOL)
		return;
	s->act &= ~SMTP_ACT_MSG_READY;
	if (reply[0] == '2')
		s->nmsgs++; /* discarded, as the filter wished: taken all the same */
	smtp_filter_reply(s, c, reply);
	smtp_tx_end(s);
}

/* Copies <src> (NULL: "") into <dst> of <size> bytes for the Received:
 * comment: printable ASCII only, and no parentheses or backslash that
 * would end or escape the comment (RFC 5322 3.2.2). */
static void smtp_copy_token(char *dst, size_t size, const char *src)
{
	size_t n = 0;

	for (; src && *src && n + 1 < size; src++) {
		unsigned char ch = (unsigned char)*src;

		if (ch > ' ' && ch < 0x7f && ch != '(' && ch != ')' && ch != '\\')
			dst[n++] = (char)ch;
	}
	dst[n] = '\0';
}

void smtp_session_tls_started(struct smtp_session *s, const char *version, const char *cipher)
{
	if (s->state == SMTP_S_CLOSED)
		return;
	s->act &= ~SMTP_ACT_STARTTLS;
	s->flags |= SMTP_F_TLS;
	smtp_copy_token(s->tls_version, sizeof(s->tls_version), version);
	smtp_copy_token(s->tls_cipher, sizeof(s->tls_cipher), cipher);
	LOGD("smtp: client=[%s] TLS started: %s %s", s->peer.addr, s->tls_version, s->tls_cipher);
	/* Implicit TLS: before the greeting, nothing to forget. A state
	 * STARTTLS is never accepted in is left alone too. */
	if (s->state != SMTP_S_GREET && s->state != SMTP_S_READY)
		return;
	/* RFC 3207 4.2: discard all knowledge obtained from the client in
	 * clear; the client must EHLO again. */
	smtp_tx_reset(s);
	s->helo[0] = '\0';
	s->flags &= ~(SMTP_F_ESMTP | SMTP_F_DISCARD);
	buf_free(&s->line);
	smtp_set_state(s, SMTP_S_GREET);
}

/* 421 <ecode> <hostname> <why>, then close (RFC 5321 3.8). */
static void smtp_goodbye(struct smtp_session *s, const char *ecode, const char *why)
{
	if (s->state == SMTP_S_CLOSED)
		return;
	smtp_reply(s, NULL, 0, "421 %s %s %s", ecode, s->cf->hostname, why);
	smtp_close(s);
}

void smtp_session_timeout(struct smtp_session *s)
{
	smtp_goodbye(s, "4.4.2", "Error: timeout exceeded");
}

void smtp_session_shutdown(struct smtp_session *s)
{
	smtp_goodbye(s, "4.3.2", "Service shutting down");
}

void smtp_session_busy(struct smtp_session *s)
{
	smtp_stat_refuse(s, SMTP_RF_MAX_SESSIONS);
	smtp_goodbye(s, "4.3.2", "Too many connections, try again later");
}

void smtp_session_limited(struct smtp_session *s, bool rate)
{
	smtp_stat_refuse(s, SMTP_RF_CLIENT_LIMIT);
	smtp_goodbye(s, "4.7.0",
	             rate ? "Too many connections from your address, try again later"
	                  : "Too many connections from your address");
}

bool smtp_session_in_content(const struct smtp_session *s)
{
	return s->state == SMTP_S_DATA || (s->state == SMTP_S_RCPT && (s->tx.flags & SMTP_TX_BDAT));
}

void smtp_session_body_take(struct smtp_session *s, struct buf *into)
{
	struct buf t = *into;

	*into = s->tx.body;
	s->tx.body = t;
	s->tx.body.len = 0;
	s->tx.body_taken += into->len;
}

void smtp_session_body_fail(struct smtp_session *s)
{
	s->tx.flags |= SMTP_TX_NOMEM;
	buf_reset(&s->tx.body, SMTP_BODY_KEEP);
}

void smtp_session_log_disconnect(const struct smtp_session *s)
{
	const struct maillog_cmds mc = {smtp_cmd_lower, s->cmd_ok, s->cmd_sent, SMTP_CMD_N};

	maillog_disconnect(s->peer.addr, &mc);
}

bool smtp_session_in_tx(const struct smtp_session *s)
{
	switch (s->state) {
	case SMTP_S_MAIL:
	case SMTP_S_RCPT:
	case SMTP_S_DATA:
	case SMTP_S_SPOOL:
		return true;
	default:
		return (s->tx.flags & SMTP_TX_CHUNK) != 0;
	}
}

int smtp_session_received(const struct smtp_session *s, struct buf *b, const char *qid, time_t now)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	const char *proto, *rcpt = NULL;
	size_t start = b->len, it = 0;
	struct tm tm;
	int err;

	utc_tm(now, &tm);
	/* RFC 3848 and RFC 6531 3.7.3: "S" for TLS. The registry has no
	 * keyword for HELO under TLS: "SMTP" then, and the comment says TLS. */
	if (!(s->flags & SMTP_F_ESMTP))
		proto = "SMTP";
	else if (s->flags & SMTP_F_TLS)
		proto = s->tx.smtputf8 ? "UTF8SMTPS" : "ESMTPS";
	else
		proto = s->tx.smtputf8 ? "UTF8SMTP" : "ESMTP";
	if (s->tx.nrcpt == 1)
		rcpt = smtp_tx_rcpt_next(&s->tx, &it);
	/* RFC 5321 4.4; the helo text has no CR or LF (smtp_command()). */
	/* Postfix's form: "(name [addr])", the name forward-confirmed or
	 * "unknown", when the client's name was looked up. */
	err = buf_printf(b, "Received: from %s (%s%s[%s%s])\r\n", s->helo[0] ? s->helo : "unknown",
	                 s->client_name ? s->client_name : "", s->client_name ? " " : "",
	                 strchr(s->peer.addr, ':') ? "IPv6:" : "", s->peer.addr);
	/* Postfix's style: "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)". */
	if (!err && (s->flags & SMTP_F_TLS))
		err = buf_printf(b, "\t(using %s%s%s)\r\n",
		                 s->tls_version[0] ? s->tls_version : "TLS",
		                 s->tls_cipher[0] ? " with cipher " : "", s->tls_cipher);
	if (!err)
		err = buf_printf(b, "\tby %s (ringmx) with %s id %s", s->cf->hostname, proto, qid);
	if (!err && rcpt)
		err = buf_printf(b, "\r\n\tfor <%s>; ", rcpt);
	else if (!err)
		err = buf_append_str(b, ";\r\n\t");
	if (!err)
		err = buf_printf(b, "%s, %d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday],
		                 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
		                 tm.tm_min, tm.tm_sec);
	if (err) {
		b->len = start;
		if (b->p)
			b->p[start] = '\0';
		return -ENOMEM;
	}
	return 0;
}

const char *smtp_tx_rcpt_next(const struct smtp_tx *tx, size_t *it)
{
	const char *r;

	if (!tx->rcpts.p || *it >= tx->rcpts.len)
		return NULL;
	r = tx->rcpts.p + *it;
	*it += strlen(r) + 1;
	return r;
}

const char *smtp_stat_verb(unsigned i)
{
	return i < SMTP_STAT_VERBS ? smtp_cmds[i].verb.p : "UNKNOWN";
}

const char *smtp_refusal_name(enum smtp_refusal r, bool *temporary)
{
	static const struct {
		const char *name;
		bool temporary;
	} names[SMTP_RF_N] = {
	    [SMTP_RF_RELAY_DENIED] = {"relay_denied", false},
	    [SMTP_RF_UNKNOWN_USER] = {"unknown_user", false},
	    [SMTP_RF_SIZE] = {"size", false},
	    [SMTP_RF_BARE_EOL] = {"bare_eol", false},
	    [SMTP_RF_NUL] = {"nul", false},
	    [SMTP_RF_LONG_LINE] = {"long_line", false},
	    [SMTP_RF_RATE_LIMIT] = {"rate_limit", true},
	    [SMTP_RF_CLIENT_LIMIT] = {"client_limit", true},
	    [SMTP_RF_MAX_SESSIONS] = {"max_sessions", true},
	    [SMTP_RF_STORAGE] = {"storage", true},
	    [SMTP_RF_SPOOL_ERROR] = {"spool_error", true},
	    [SMTP_RF_RECIPIENTS] = {"max_recipients", true},
	    [SMTP_RF_UNKNOWN_LIMIT] = {"max_unknown_recipients", true},
	    [SMTP_RF_VERIFY_REJECTED] = {"verify_rejected", false},
	    [SMTP_RF_VERIFY_TEMP] = {"verify_tempfailed", true},
	    [SMTP_RF_ERRORS] = {"max_errors", true},
	    [SMTP_RF_DNSBL] = {"dnsbl", false},
	    [SMTP_RF_DNSBL_TEMP] = {"dnsbl_tempfail", true},
	    [SMTP_RF_UNKNOWN_CLIENT] = {"unknown_client_hostname", true},
	    [SMTP_RF_SENDER_DOMAIN] = {"unknown_sender_domain", false},
	    [SMTP_RF_SENDER_DNS] = {"sender_domain_dns", true},
	    [SMTP_RF_RHSBL] = {"rhsbl", false},
	};

	if ((unsigned)r >= SMTP_RF_N)
		return "unknown";
	if (temporary)
		*temporary = names[r].temporary;
	return names[r].name;
}

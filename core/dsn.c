/* dsn: delivery status notifications (RFC 3464) as complete RFC 5322
 * messages, multipart/report; report-type=delivery-status (RFC 6522).
 *
 * The relay hands its per-recipient results here when it gives up on
 * recipients (failed) or keeps retrying for long (delayed), and sends what
 * comes back with the null sender. The three parts are built apart first
 * (the notification text, the delivery-status fields and the returned
 * original), so that the MIME boundary can be checked against all of them
 * before the message is put together: nothing a remote server said and
 * nothing in the original can close a part early. Remote reply texts reach
 * header fields only through dsn_clean() (one line, printable ASCII) and
 * dsn_wrap() (folded, no line over 998 octets). Sans-I/O: libc only, the
 * time and the uniqueness token come from the caller. */
#include "core/dsn.h"
#include "core/utc.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define DSN_WIDTH    76u  /* fold header fields and wrap text near this column */
#define DSN_LINE_MAX 998u /* RFC 5322 2.1.1: octets per line, CRLF excluded */
#define DSN_ADDR_MAX 900u /* octets per address: a whole field line stays under 998 */
#define DSN_BND_BASE 60u  /* octets of the boundary before a ".<n>" suffix (RFC 2046: 70) */

/* ---- Checks and cleaning ---- */

static bool dsn_is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* An address we may write into a header field: no control octet, no angle
 * bracket (To: <...>), not too long. 8-bit octets (SMTPUTF8) pass. */
static bool dsn_addr_ok(const char *a)
{
	size_t i;

	for (i = 0; a[i]; i++)
		if (dsn_is_ctl((unsigned char)a[i]) || a[i] == '<' || a[i] == '>')
			return false;
	return i > 0 && i <= DSN_ADDR_MAX;
}

static bool dsn_has_8bit(const char *a)
{
	for (; *a; a++)
		if ((unsigned char)*a >= 0x80)
			return true;
	return false;
}

/* Host name: letters, digits, dots and hyphens. */
static bool dsn_host_ok(const char *h)
{
	size_t i;

	for (i = 0; h[i]; i++)
		if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
		      (h[i] >= '0' && h[i] <= '9') || h[i] == '.' || h[i] == '-'))
			return false;
	return i > 0 && i <= 253;
}

/* Token: a dot-atom of [A-Za-z0-9_-] (a Message-ID left side and boundary
 * characters, RFC 5322 3.6.4 and RFC 2046 5.1.1). */
static bool dsn_token_ok(const char *t)
{
	size_t i;

	for (i = 0; t[i]; i++) {
		if (t[i] == '.') {
			if (i == 0 || t[i + 1] == '.' || t[i + 1] == '\0')
				return false;
		} else if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
		             (t[i] >= '0' && t[i] <= '9') || t[i] == '_' || t[i] == '-')) {
			return false;
		}
	}
	return i > 0 && i <= DSN_TOKEN_MAX;
}

/* Diagnostic-Code type (RFC 3464 2.3.6: a diagnostic-type-name is an atom). */
static bool dsn_type_ok(const char *t)
{
	size_t i;

	for (i = 0; t[i]; i++)
		if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
		      (t[i] >= '0' && t[i] <= '9') || t[i] == '-'))
			return false;
	return i > 0 && i <= 32;
}

/* Appends <s> as one line of printable ASCII: runs of CR, LF, TAB and
 * spaces become one space (leading and trailing ones go), other control
 * and 8-bit octets become '?'. Text past <max> octets is cut, marked by
 * "...". A remote reply can neither end a header field nor start one. */
static int dsn_clean(struct buf *b, const char *s, size_t max)
{
	size_t start = b->len, i;
	bool sp = false;
	int err = 0;

	for (i = 0; s[i] && !err; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i == max) {
			err = buf_append_str(b, "...");
			break;
		}
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			sp = b->len > start;
			continue;
		}
		if (sp)
			err = buf_append(b, " ", 1);
		sp = false;
		if (dsn_is_ctl(c) || c >= 0x80)
			c = '?';
		if (!err)
			err = buf_append(b, &c, 1);
	}
	return err;
}

/* Appends the words of <s> (separated by spaces) to <b>, whose current line
 * already holds <col> octets. A word that would pass DSN_WIDTH starts a new
 * line, "\r\n<cont>" (" " folds a header field, RFC 5322 3.2.2). A word
 * too long for a whole line is cut at DSN_LINE_MAX (in a header field,
 * unfolding then shows a space inside it). The line is left open. */
static int dsn_wrap(struct buf *b, size_t col, const char *cont, struct sv s)
{
	size_t clen = strlen(cont), i = 0, wl, n;
	bool need_sp = false;
	int err = 0;

	while (!err && i < s.len) {
		const char *w;

		if (s.p[i] == ' ') {
			i++;
			continue;
		}
		w = s.p + i;
		for (wl = 0; i < s.len && s.p[i] != ' '; i++)
			wl++;
		if (need_sp && col + 1 + wl > DSN_WIDTH) {
			err = buf_printf(b, "\r\n%s", cont);
			col = clen;
		} else if (need_sp) {
			err = buf_append(b, " ", 1);
			col++;
		}
		while (!err && col + wl > DSN_LINE_MAX) {
			n = DSN_LINE_MAX - col;
			err = buf_append(b, w, n);
			if (!err)
				err = buf_printf(b, "\r\n%s", cont);
			w += n;
			wl -= n;
			col = clen;
		}
		if (!err)
			err = buf_append(b, w, wl);
		col += wl;
		need_sp = true;
	}
	return err;
}

/* Appends a header field "<name>: <prefix><text>" folded, CRLF-ended;
 * <text> is cleaned first when <clean> (a remote or caller string). */
static int dsn_field(struct buf *b, const char *name, const char *prefix, const char *text,
                     bool clean)
{
	struct buf t = BUF_INIT;
	size_t col;
	int err;

	err = buf_printf(b, "%s: %s", name, prefix);
	col = strlen(name) + 2 + strlen(prefix);
	if (!err && clean) {
		err = dsn_clean(&t, text, DSN_DIAG_MAX);
		if (!err)
			err = dsn_wrap(b, col, " ", buf_sv(&t));
	} else if (!err) {
		err = dsn_wrap(b, col, " ", sv_cstr(text));
	}
	if (!err)
		err = buf_append(b, "\r\n", 2);
	buf_free(&t);
	return err;
}

/* ---- Status codes and dates ---- */

/* Length of the RFC 3463 code at <p>: class "2"/"4"/"5", then "." 1*3digit
 * twice; 0 if there is none. */
static size_t dsn_ecode_len(const char *p)
{
	size_t i = 1, n, part;

	if (p[0] != '2' && p[0] != '4' && p[0] != '5')
		return 0;
	for (part = 0; part < 2; part++) {
		if (p[i++] != '.')
			return 0;
		for (n = 0; p[i] >= '0' && p[i] <= '9'; i++)
			if (++n > 3)
				return 0;
		if (n == 0)
			return 0;
	}
	return i;
}

void dsn_status(char *out, const char *reply, enum dsn_action action)
{
	const char *p = reply ? reply : "";
	char cls = action == DSN_DELAYED ? '4' : '5', rc = 0;
	size_t n;

	/* "550 5.1.1 ..." or "550-5.1.1 ..." (a reply), or a bare code. */
	if (p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
	    p[2] <= '9' && (p[3] == ' ' || p[3] == '-' || p[3] == '\0')) {
		rc = p[0];
		p += p[3] ? 4 : 3;
	}
	if (rc == '4' || rc == '5')
		cls = rc;
	n = dsn_ecode_len(p);
	if (n && (p[n] == '\0' || p[n] == ' ')) {
		/* RFC 3463 3: the class matches the reply code's (Postfix
		 * does the same); a local reason's own 4/5 class stands. */
		if (rc != '4' && rc != '5' && p[0] != '2')
			cls = p[0];
		snprintf(out, DSN_STATUS_MAX, "%c%.*s", cls, (int)(n - 1), p + 1);
	} else {
		snprintf(out, DSN_STATUS_MAX, "%c.0.0", cls);
	}
}

int dsn_date(char *out, size_t len, time_t t)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	int n;

	/* RFC 5322 3.3: a four-digit year at least; the far future is a bug. */
	if (t > (time_t)253402300799) /* after 9999-12-31T23:59:59Z */
		return -EINVAL;
	utc_tm(t, &tm);
	if (tm.tm_year < 0)
		return -EINVAL;
	n = snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
	             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
	             tm.tm_sec);
	return n < 0 || (size_t)n >= len ? -EINVAL : 0;
}

static int dsn_date_field(struct buf *b, const char *name, time_t t)
{
	char d[40];

	if (dsn_date(d, sizeof(d), t))
		return -EINVAL;
	return buf_printf(b, "%s: %s\r\n", name, d);
}

/* ---- The returned original ---- */

/* Appends the lines of <p, len> to <b>, each ended with CRLF (a bare CR or
 * LF ends a line too), lines over DSN_LINE_MAX octets broken with CRLF SP;
 * NUL octets become '?'. <headers>: stops at the empty line that ends the
 * header section. Returns 1 when the copy would pass <cap> octets (header
 * mode: <b> keeps the whole fields before the one that did not fit), else
 * 0, or -ENOMEM. Sets <*eight> when an 8-bit octet was copied. */
static int dsn_copy(struct buf *b, const char *p, size_t len, bool headers, size_t cap, bool *eight)
{
	size_t base = b->len, field = b->len, i = 0, s, e, n, k, need;
	int err;

	while (i < len) {
		for (s = i; i < len && p[i] != '\r' && p[i] != '\n'; i++)
			;
		e = i;
		if (i < len)
			i += p[i] == '\r' && i + 1 < len && p[i + 1] == '\n' ? 2 : 1;
		if (headers && e == s)
			break;
		if (p[s] != ' ' && p[s] != '\t')
			field = b->len; /* a field starts here */
		n = e - s;
		need = n + 2; /* the line and its CRLF; then 3 octets per break */
		if (n > DSN_LINE_MAX)
			need += (n - DSN_LINE_MAX + DSN_LINE_MAX - 2) / (DSN_LINE_MAX - 1) * 3;
		if (b->len - base + need > cap) {
			if (headers) {
				b->len = field;
				if (b->p)
					b->p[b->len] = '\0';
			}
			return 1;
		}
		err = buf_reserve(b, need);
		if (err)
			return err;
		/* The appends below cannot fail: the room is reserved. */
		/* Postfix's smtp_line_length_limit: CRLF SP keeps a header
		 * field one field, and the body stays readable. */
		for (k = 0; s < e; k++) {
			size_t chunk = e - s, lim = k ? DSN_LINE_MAX - 1 : DSN_LINE_MAX;

			if (chunk > lim)
				chunk = lim;
			if (k)
				buf_append(b, "\r\n ", 3);
			buf_append(b, p + s, chunk);
			s += chunk;
		}
		buf_append(b, "\r\n", 2);
	}
	for (i = base; i < b->len; i++) {
		if (b->p[i] == '\0')
			b->p[i] = '?';
		else if ((unsigned char)b->p[i] >= 0x80)
			*eight = true;
	}
	return 0;
}

/* What part 3 holds. */
enum dsn_ret {
	DSN_RET_NONE = 0, /* nothing to return */
	DSN_RET_HEADERS,  /* text/rfc822-headers */
	DSN_RET_FULL,     /* message/rfc822 */
};

static int dsn_original(struct buf *b, const struct dsn_msg *m, enum dsn_ret *ret, bool *eight,
                        bool *cut)
{
	size_t cap = m->return_max ? m->return_max : DSN_RETURN_MAX;
	int r;

	*ret = DSN_RET_NONE;
	if (!m->content || !m->content_len)
		return 0;
	if (m->return_full) {
		r = dsn_copy(b, m->content, m->content_len, false, cap, eight);
		if (r < 0)
			return r;
		if (r == 0) {
			*ret = DSN_RET_FULL;
			return 0;
		}
		/* Too large: its header section only, as Postfix does. */
		*cut = true;
		buf_reset(b, 0);
		*eight = false;
	}
	r = dsn_copy(b, m->content, m->content_len, true, cap, eight);
	if (r < 0)
		return r;
	if (r > 0)
		*cut = true;
	if (b->len)
		*ret = DSN_RET_HEADERS;
	return 0;
}

/* ---- Parts 1 and 2 ---- */

static bool dsn_all_delayed(const struct dsn_msg *m)
{
	unsigned i;

	for (i = 0; i < m->nrcpt; i++)
		if (m->rcpts[i].action != DSN_DELAYED)
			return false;
	return true;
}

/* One recipient's line of the notification text, wrapped. */
static int dsn_text_rcpt(struct buf *b, const struct dsn_rcpt *r)
{
	struct buf t = BUF_INIT;
	char st[DSN_STATUS_MAX];
	int err;

	err = buf_printf(&t, "<%s>: ", r->addr);
	if (!err && r->remote_mta) {
		err = buf_append_str(&t, "host ");
		if (!err)
			err = dsn_clean(&t, r->remote_mta, 255);
		if (!err)
			err = buf_append_str(&t, " said: ");
	}
	if (!err && r->diag && r->diag[0]) {
		err = dsn_clean(&t, r->diag, DSN_DIAG_MAX);
	} else if (!err) {
		dsn_status(st, NULL, r->action);
		err = buf_printf(&t, "%s (status %s)",
		                 r->action == DSN_DELAYED ? "not delivered yet" : "delivery failed",
		                 st);
	}
	if (!err && r->in_reply_to) {
		err = buf_append_str(&t, " (in reply to ");
		if (!err)
			err = dsn_clean(&t, r->in_reply_to, 64);
		if (!err)
			err = buf_append_str(&t, " command)");
	}
	if (!err)
		err = dsn_wrap(b, 0, "    ", buf_sv(&t));
	if (!err)
		err = buf_append(b, "\r\n\r\n", 4);
	buf_free(&t);
	return err;
}

static int dsn_text_rcpts(struct buf *b, const struct dsn_msg *m, enum dsn_action a)
{
	unsigned i;
	int err = 0;

	for (i = 0; i < m->nrcpt && !err; i++)
		if (m->rcpts[i].action == a)
			err = dsn_text_rcpt(b, &m->rcpts[i]);
	return err;
}

/* Part 1: what happened, in words (Postfix's bounce template in spirit). */
static int dsn_text(struct buf *b, const struct dsn_msg *m, enum dsn_ret ret, bool cut)
{
	size_t cap = m->return_max ? m->return_max : DSN_RETURN_MAX;
	bool delayed = dsn_all_delayed(m);
	long long age = (long long)(m->now - m->arrival);
	char until[40];
	int err;

	err = buf_printf(b, "This is the mail system at host %s.\r\n\r\n", m->hostname);
	if (!err && delayed) {
		err = buf_append_str(b, "####### THIS IS A WARNING ONLY.  YOU DO NOT NEED TO "
		                        "RESEND YOUR MESSAGE. #######\r\n\r\n");
		if (!err && age >= 3600)
			err = buf_printf(b,
			                 "Your message could not be delivered for %lld hour%s.\r\n",
			                 age / 3600, age / 3600 == 1 ? "" : "s");
		else if (!err)
			err = buf_printf(
			    b, "Your message could not be delivered for %lld minute%s.\r\n",
			    age < 0 ? 0 : age / 60, age / 60 == 1 ? "" : "s");
		if (!err && m->retry_until && !dsn_date(until, sizeof(until), m->retry_until))
			err = buf_printf(b, "It will be retried until %s.\r\n", until);
	} else if (!err) {
		err = buf_append_str(b, "Your message could not be delivered to one or more "
		                        "recipients.\r\n");
	}
	if (!err && ret == DSN_RET_FULL)
		err = buf_append_str(b, "It is attached below.\r\n");
	else if (!err && ret == DSN_RET_HEADERS && cut)
		err = buf_printf(b,
		                 "It was larger than %zu octets: only its headers are "
		                 "attached below.\r\n",
		                 cap);
	else if (!err && ret == DSN_RET_HEADERS)
		err = buf_append_str(b, "Its headers are attached below.\r\n");
	if (!err)
		err = buf_printf(b,
		                 "\r\nFor further assistance, please send mail to "
		                 "postmaster@%s.\r\nIf you do so, please include this problem "
		                 "report.\r\n\r\n                   The mail system\r\n\r\n",
		                 m->hostname);
	if (!err)
		err = dsn_text_rcpts(b, m, DSN_FAILED);
	if (!err && !delayed) {
		unsigned i;

		for (i = 0; i < m->nrcpt && m->rcpts[i].action != DSN_DELAYED; i++)
			;
		if (i < m->nrcpt)
			err =
			    buf_append_str(b, "Delivery to the following recipients is still being "
			                      "retried:\r\n\r\n");
	}
	if (!err)
		err = dsn_text_rcpts(b, m, DSN_DELAYED);
	/* The delimiter's own CRLF follows: no second empty line. */
	if (!err && b->len >= 4 && memcmp(b->p + b->len - 4, "\r\n\r\n", 4) == 0)
		b->len -= 2;
	return err;
}

/* Part 2: RFC 3464 2.2 per-message fields, then 2.3 per-recipient ones. */
static int dsn_report(struct buf *b, const struct dsn_msg *m)
{
	char st[DSN_STATUS_MAX];
	unsigned i;
	int err = 0;

	if (m->envid)
		err = dsn_field(b, "Original-Envelope-Id", "", m->envid, true);
	if (!err)
		err = buf_printf(b, "Reporting-MTA: dns; %s\r\n", m->hostname);
	if (!err && m->qid)
		err = dsn_field(b, "X-Ringmx-Queue-ID", "", m->qid, true);
	if (!err)
		err = dsn_field(b, "X-Ringmx-Sender", "rfc822; ", m->sender, false);
	if (!err)
		err = dsn_date_field(b, "Arrival-Date", m->arrival);
	for (i = 0; i < m->nrcpt && !err; i++) {
		const struct dsn_rcpt *r = &m->rcpts[i];

		if (r->status && r->status[0] && dsn_ecode_len(r->status) == strlen(r->status) &&
		    r->status[0] != '2')
			snprintf(st, sizeof(st), "%s", r->status);
		else
			dsn_status(st, r->diag, r->action);
		err = buf_append(b, "\r\n", 2);
		if (!err && r->orcpt)
			err = dsn_field(b, "Original-Recipient", "rfc822; ", r->orcpt, false);
		if (!err)
			err = dsn_field(b, "Final-Recipient", "rfc822; ", r->addr, false);
		if (!err)
			err = buf_printf(b, "Action: %s\r\nStatus: %s\r\n",
			                 r->action == DSN_DELAYED ? "delayed" : "failed", st);
		if (!err && r->remote_mta)
			err = dsn_field(b, "Remote-MTA", "dns; ", r->remote_mta, true);
		if (!err && r->diag && r->diag[0]) {
			char prefix[40];

			snprintf(prefix, sizeof(prefix), "%s; ",
			         r->diag_type ? r->diag_type : "smtp");
			err = dsn_field(b, "Diagnostic-Code", prefix, r->diag, true);
		}
		if (!err && r->last_attempt)
			err = dsn_date_field(b, "Last-Attempt-Date", r->last_attempt);
		if (!err && r->action == DSN_DELAYED && m->retry_until)
			err = dsn_date_field(b, "Will-Retry-Until", m->retry_until);
	}
	return err;
}

/* ---- Putting it together ---- */

static bool dsn_contains(const struct buf *b, const char *s, size_t n)
{
	return b->len && memmem(b->p, b->len, s, n) != NULL;
}

/* "<token>/<hostname>" cut to DSN_BND_BASE, then ".1", ".2"... until it is
 * found in no part (RFC 2046 5.1.1: it must not occur in the content).
 * The parts are finite, so some suffix is free. */
static void dsn_boundary(char *bnd, size_t len, const struct dsn_msg *m, const struct buf *parts,
                         unsigned nparts)
{
	unsigned long n = 0;
	size_t base, blen;
	unsigned i;
	bool seen;

	snprintf(bnd, len, "%s/%s", m->token, m->hostname);
	base = strlen(bnd);
	if (base > DSN_BND_BASE)
		base = DSN_BND_BASE;
	bnd[base] = '\0';
	blen = base;
	for (;;) {
		seen = false;
		for (i = 0; i < nparts && !seen; i++)
			seen = dsn_contains(&parts[i], bnd, blen);
		if (!seen)
			return;
		snprintf(bnd + base, len - base, ".%lu", ++n);
		blen = strlen(bnd);
	}
}

static int dsn_check(const struct dsn_msg *m)
{
	unsigned i;

	if (!m->sender || !m->hostname || !m->token || !m->rcpts)
		return -EINVAL;
	/* RFC 5321 4.5.5, RFC 3464 2: never a DSN about a DSN. */
	if (!m->sender[0] || strcmp(m->sender, "<>") == 0)
		return -EDESTADDRREQ;
	if (!dsn_addr_ok(m->sender) || !dsn_host_ok(m->hostname) || !dsn_token_ok(m->token) ||
	    m->nrcpt == 0)
		return -EINVAL;
	for (i = 0; i < m->nrcpt; i++) {
		const struct dsn_rcpt *r = &m->rcpts[i];

		if (!r->addr || !dsn_addr_ok(r->addr) || (r->orcpt && !dsn_addr_ok(r->orcpt)) ||
		    (r->action != DSN_FAILED && r->action != DSN_DELAYED) ||
		    (r->diag_type && !dsn_type_ok(r->diag_type)))
			return -EINVAL;
	}
	return 0;
}

/* Any address with 8-bit octets (SMTPUTF8): they appear as they are. */
static bool dsn_utf8(const struct dsn_msg *m)
{
	unsigned i;

	if (dsn_has_8bit(m->sender))
		return true;
	for (i = 0; i < m->nrcpt; i++)
		if (dsn_has_8bit(m->rcpts[i].addr) ||
		    (m->rcpts[i].orcpt && dsn_has_8bit(m->rcpts[i].orcpt)))
			return true;
	return false;
}

static int dsn_head(struct buf *b, const struct dsn_msg *m, const char *bnd, bool eight)
{
	char date[40];
	int err;

	if (dsn_date(date, sizeof(date), m->now))
		return -EINVAL;
	err = buf_printf(b, "From: MAILER-DAEMON@%s (Mail Delivery System)\r\n", m->hostname);
	if (!err)
		err = buf_printf(b, "To: <%s>\r\n", m->sender);
	if (!err)
		err = buf_printf(b, "Subject: %s\r\n",
		                 dsn_all_delayed(m) ? "Delayed Mail (still being retried)"
		                                    : "Undelivered Mail Returned to Sender");
	if (!err)
		err = buf_printf(b, "Date: %s\r\nMessage-ID: <%s@%s>\r\n", date, m->token,
		                 m->hostname);
	/* RFC 3834 5: automatic responders leave it alone. */
	if (!err)
		err = buf_append_str(b, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
		                        "Content-Type: multipart/report; "
		                        "report-type=delivery-status;\r\n");
	if (!err)
		err = buf_printf(b, "\tboundary=\"%s\"\r\nContent-Transfer-Encoding: %s\r\n\r\n",
		                 bnd, eight ? "8bit" : "7bit");
	return err;
}

int dsn_build(struct buf *out, const struct dsn_msg *m)
{
	struct buf parts[3] = {BUF_INIT, BUF_INIT, BUF_INIT}; /* text, report, original */
	enum dsn_ret ret = DSN_RET_NONE;
	bool eight = false, cut = false, utf8;
	size_t start = out->len;
	char bnd[DSN_BND_BASE + 24];
	int err, flags = 0;
	unsigned i;

	err = dsn_check(m);
	if (err)
		return err;
	utf8 = dsn_utf8(m);
	err = dsn_original(&parts[2], m, &ret, &eight, &cut);
	if (!err)
		err = dsn_text(&parts[0], m, ret, cut);
	if (!err)
		err = dsn_report(&parts[1], m);
	if (err)
		goto fail;
	dsn_boundary(bnd, sizeof(bnd), m, parts, 3);

	err = dsn_head(out, m, bnd, eight || utf8);
	if (!err)
		err = buf_printf(out,
		                 "This is a MIME-encapsulated message.\r\n\r\n--%s\r\n"
		                 "Content-Description: Notification\r\n"
		                 "Content-Type: text/plain; charset=%s\r\n",
		                 bnd, utf8 ? "utf-8" : "us-ascii");
	if (!err && utf8)
		err = buf_append_str(out, "Content-Transfer-Encoding: 8bit\r\n");
	if (!err)
		err = buf_append(out, "\r\n", 2);
	if (!err)
		err = buf_append(out, parts[0].p, parts[0].len);
	if (!err)
		err = buf_printf(out,
		                 "\r\n--%s\r\nContent-Description: Delivery report\r\n"
		                 "Content-Type: message/delivery-status\r\n%s\r\n",
		                 bnd, utf8 ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	if (!err)
		err = buf_append(out, parts[1].p, parts[1].len);
	if (!err && ret != DSN_RET_NONE)
		err = buf_printf(
		    out, "\r\n--%s\r\nContent-Description: %s\r\nContent-Type: %s\r\n%s\r\n", bnd,
		    ret == DSN_RET_FULL ? "Undelivered Message" : "Undelivered Message Headers",
		    ret == DSN_RET_FULL ? "message/rfc822" : "text/rfc822-headers",
		    eight ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	if (!err && ret != DSN_RET_NONE)
		err = buf_append(out, parts[2].p, parts[2].len);
	if (!err)
		err = buf_printf(out, "\r\n--%s--\r\n", bnd);
	if (err)
		goto fail;
	if (eight)
		flags |= DSN_F_8BIT;
	if (utf8)
		flags |= DSN_F_UTF8;
	if (cut)
		flags |= DSN_F_TRUNCATED;
	if (dsn_all_delayed(m))
		flags |= DSN_F_DELAYED;
	for (i = 0; i < 3; i++)
		buf_free(&parts[i]);
	return flags;
fail:
	out->len = start;
	if (out->p)
		out->p[start] = '\0';
	for (i = 0; i < 3; i++)
		buf_free(&parts[i]);
	return err;
}

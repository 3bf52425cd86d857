/* maillog: mail events as log lines (Postfix's words, or JSON fields).
 * See maillog.h. Each event builds one core/log line: in text the words
 * pflogsumm matches ("client=", "from=<...>, size=", "to=<...>, relay=...,
 * delay=..., status=..."), in JSON the same values under plain keys. */
#include "core/maillog.h"
#include "core/log.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* "unknown[addr]": the client's name as Postfix writes it without a
 * reverse lookup. */
static void client_name(char *out, size_t len, const char *addr)
{
	snprintf(out, len, "unknown[%s]", addr);
}

void maillog_connect(const char *addr)
{
	struct log_line ln;
	char client[80];

	if (!log_enabled(LOG_INFO))
		return;
	client_name(client, sizeof(client), addr);
	log_line_begin(&ln, LOG_P_SMTPD, LOG_INFO, NULL, "connect");
	log_line_text(&ln, "connect from %s", client);
	log_line_str(&ln, "client", client);
	log_line_end(&ln);
}

void maillog_disconnect(const char *addr, const struct maillog_cmds *c)
{
	struct log_line ln;
	char client[80], json[512];
	uint32_t ok = 0, sent = 0;
	size_t j = 0;

	if (!log_enabled(LOG_INFO))
		return;
	client_name(client, sizeof(client), addr);
	log_line_begin(&ln, LOG_P_SMTPD, LOG_INFO, NULL, "disconnect");
	log_line_text(&ln, "disconnect from %s", client);
	log_line_str(&ln, "client", client);
	json[j++] = '{';
	for (unsigned i = 0; i < c->n; i++) {
		if (!c->sent[i])
			continue;
		ok += c->ok[i];
		sent += c->sent[i];
		if (c->ok[i] == c->sent[i])
			log_line_text(&ln, " %s=%u", c->names[i], c->sent[i]);
		else
			log_line_text(&ln, " %s=%u/%u", c->names[i], c->ok[i], c->sent[i]);
		/* JSON: "verb":[ok,sent] */
		int k = snprintf(json + j, sizeof(json) - j, "%s\"%s\":[%u,%u]", j > 1 ? "," : "",
		                 c->names[i], c->ok[i], c->sent[i]);
		if (k > 0 && (size_t)k < sizeof(json) - j - 2)
			j += (size_t)k;
	}
	json[j++] = '}';
	json[j] = '\0';
	if (ok == sent)
		log_line_text(&ln, " commands=%u", sent);
	else
		log_line_text(&ln, " commands=%u/%u", ok, sent);
	log_line_raw(&ln, "commands", json);
	snprintf(json, sizeof(json), "[%u,%u]", ok, sent);
	log_line_raw(&ln, "commands_total", json);
	log_line_end(&ln);
}

void maillog_client(const char *qid, const char *addr)
{
	struct log_line ln;
	char client[80];

	if (!log_enabled(LOG_INFO))
		return;
	client_name(client, sizeof(client), addr);
	log_line_begin(&ln, LOG_P_SMTPD, LOG_INFO, qid, "client");
	log_line_text(&ln, "client=%s", client);
	log_line_str(&ln, "client", client);
	log_line_end(&ln);
}

void maillog_message_id(const char *qid, struct sv id)
{
	struct log_line ln;

	if (!log_enabled(LOG_INFO))
		return;
	log_line_begin(&ln, LOG_P_CLEANUP, LOG_INFO, qid, "message-id");
	log_line_text(&ln, "message-id=%.*s", (int)id.len, id.p);
	log_line_strn(&ln, "message_id", id.p, id.len);
	log_line_end(&ln);
}

struct sv maillog_message_id_find(const char *p, size_t n)
{
	static const char name[] = "message-id:";
	const size_t nl = sizeof(name) - 1;
	const char *end = p + n;

	while (p && p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *le = eol ? eol : end;

		if (le == p || (le == p + 1 && p[0] == '\r'))
			break; /* the empty line: the body follows */
		if ((size_t)(le - p) > nl && strncasecmp(p, name, nl) == 0) {
			const char *v = p + nl;

			while (v < le && (*v == ' ' || *v == '\t'))
				v++;
			while (le > v && (le[-1] == '\r' || le[-1] == ' ' || le[-1] == '\t'))
				le--;
			if (le > v)
				return sv_make(v, (size_t)(le - v));
		}
		if (!eol)
			break;
		p = eol + 1;
	}
	return (struct sv){0};
}

void maillog_queued(const char *qid, const char *from, uint64_t size, unsigned nrcpt)
{
	struct log_line ln;

	if (!log_enabled(LOG_INFO))
		return;
	log_line_begin(&ln, LOG_P_QMGR, LOG_INFO, qid, "queued");
	log_line_text(&ln, "from=<%s>, size=%llu, nrcpt=%u (queue active)", from,
	              (unsigned long long)size, nrcpt);
	log_line_str(&ln, "from", from);
	log_line_num(&ln, "size", size);
	log_line_num(&ln, "nrcpt", nrcpt);
	log_line_end(&ln);
}

void maillog_accepted(const char *qid, const char *addr, struct sv content, const char *from,
                      uint64_t size, unsigned nrcpt)
{
	struct sv id;

	if (!log_enabled(LOG_INFO))
		return;
	maillog_client(qid, addr);
	id = maillog_message_id_find(content.p, content.len);
	if (id.p)
		maillog_message_id(qid, id);
	maillog_queued(qid, from, size, nrcpt);
}

void maillog_dsn_of(const char *reply, const char *dflt, char *out, size_t len)
{
	const char *p = reply ? reply : "";
	size_t n = 0;

	if (isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2]) && (p[3] == ' ' || p[3] == '-'))
		p += 4;
	/* class "." subject "." detail: 1 digit, then 1-3, then 1-3 (RFC 3463) */
	if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.') {
		size_t i = 2, d1 = 0, d2 = 0;

		while (isdigit((unsigned char)p[i]) && d1 < 3)
			i++, d1++;
		if (d1 && p[i] == '.') {
			i++;
			while (isdigit((unsigned char)p[i]) && d2 < 3)
				i++, d2++;
			if (d2 && (p[i] == '\0' || p[i] == ' ' || p[i] == ';' || p[i] == ','))
				n = i;
		}
	}
	if (n && n < len) {
		memcpy(out, p, n);
		out[n] = '\0';
	} else {
		snprintf(out, len, "%s", dflt);
	}
}

/* <ms> as seconds with two decimals ("0.05"), under 10 ms as "0"
 * (Postfix's way). */
static void secs(char *out, size_t len, int64_t ms)
{
	if (ms < 10)
		snprintf(out, len, "0");
	else
		snprintf(out, len, "%lld.%02lld", (long long)(ms / 1000),
		         (long long)(ms % 1000 / 10));
}

void maillog_delivery(const struct maillog_dlv *d)
{
	struct log_line ln;
	char dl[4][24], delays[100], dsn[16];
	const char *dflt = d->status[0] == 's' ? "2.0.0" : d->status[0] == 'b' ? "5.0.0" : "4.0.0";

	if (!log_enabled(LOG_INFO))
		return;
	/* a counts from the arrival, which the spool keeps in whole seconds */
	snprintf(dl[0], sizeof(dl[0]), "%lld",
	         (long long)(d->delays_ms[0] > 0 ? d->delays_ms[0] / 1000 : 0));
	for (int i = 1; i < 4; i++)
		secs(dl[i], sizeof(dl[i]), d->delays_ms[i]);
	snprintf(delays, sizeof(delays), "%s/%s/%s/%s", dl[0], dl[1], dl[2], dl[3]);
	maillog_dsn_of(d->reply, dflt, dsn, sizeof(dsn));
	log_line_begin(&ln, LOG_P_SMTP, LOG_INFO, d->qid, "delivery");
	log_line_text(&ln, "to=<%s>, relay=%s, delay=%lld, delays=%s, dsn=%s, status=%s (%s)",
	              d->to, d->relay, d->delay_s, delays, dsn, d->status,
	              d->reply ? d->reply : "");
	log_line_str(&ln, "to", d->to);
	log_line_str(&ln, "relay", d->relay);
	log_line_num(&ln, "delay", d->delay_s > 0 ? (unsigned long long)d->delay_s : 0);
	log_line_str(&ln, "delays", delays);
	snprintf(delays, sizeof(delays), "[%lld,%lld,%lld,%lld]", (long long)d->delays_ms[0],
	         (long long)d->delays_ms[1], (long long)d->delays_ms[2],
	         (long long)d->delays_ms[3]);
	log_line_raw(&ln, "delays_ms", delays);
	log_line_str(&ln, "dsn", dsn);
	log_line_str(&ln, "status", d->status);
	log_line_str(&ln, "reply", d->reply);
	log_line_num(&ln, "attempt", d->attempt);
	log_line_end(&ln);
}

void maillog_removed(const char *qid)
{
	struct log_line ln;

	if (!log_enabled(LOG_INFO))
		return;
	log_line_begin(&ln, LOG_P_QMGR, LOG_INFO, qid, "removed");
	log_line_text(&ln, "removed");
	log_line_end(&ln);
}

void maillog_bounce(const char *qid, const char *bounce_qid)
{
	struct log_line ln;

	if (!log_enabled(LOG_INFO))
		return;
	log_line_begin(&ln, LOG_P_BOUNCE, LOG_INFO, qid, "bounce");
	log_line_text(&ln, "sender non-delivery notification: %s", bounce_qid);
	log_line_str(&ln, "bounce_qid", bounce_qid);
	log_line_end(&ln);
}

void maillog_reject(const struct maillog_reject *r)
{
	struct log_line ln;
	char client[80], dsn[16];

	if (!log_enabled(LOG_INFO))
		return;
	client_name(client, sizeof(client), r->addr);
	log_line_begin(&ln, LOG_P_SMTPD, LOG_INFO, NULL, "reject");
	log_line_text(&ln, "NOQUEUE: reject: %s from %s: %.*s;", r->verb, client, (int)r->reply.len,
	              r->reply.p);
	if (r->from.p)
		log_line_text(&ln, " from=<%.*s>", (int)r->from.len, r->from.p);
	if (r->to.p)
		log_line_text(&ln, " to=<%.*s>", (int)r->to.len, r->to.p);
	log_line_text(&ln, " proto=%s helo=<%s>", r->proto, r->helo);
	log_line_str(&ln, "verb", r->verb);
	log_line_str(&ln, "client", client);
	log_line_strn(&ln, "reply", r->reply.p, r->reply.len);
	if (r->reply.len >= 3) {
		char code[4] = {r->reply.p[0], r->reply.p[1], r->reply.p[2], 0};
		char rep[64];

		snprintf(rep, sizeof(rep), "%.*s", (int)(r->reply.len < 63 ? r->reply.len : 63),
		         r->reply.p);
		maillog_dsn_of(rep, code[0] == '5' ? "5.0.0" : "4.0.0", dsn, sizeof(dsn));
		log_line_str(&ln, "dsn", dsn);
	}
	if (r->from.p)
		log_line_strn(&ln, "from", r->from.p, r->from.len);
	if (r->to.p)
		log_line_strn(&ln, "to", r->to.p, r->to.len);
	log_line_str(&ln, "proto", r->proto);
	log_line_str(&ln, "helo", r->helo);
	log_line_end(&ln);
}

/* milter: the MTA side of the milter protocol, sans-I/O. See milter.h.
 *
 * On the wire every packet is a 4-octet length in network order (the
 * command octet and the data), the command octet, the data. Strings are
 * NUL-terminated. The MTA sends one command and waits for its reply unless
 * the filter asked for that stage to go unanswered (NR_*) or left out
 * (NO*); at end of message a filter sends its modifications, then the
 * final reply. Everything a filter sends is checked here: an unknown
 * packet, one out of its stage, a modification not negotiated or a
 * malformed one ends the conversation with MILTER_IN_ERROR, and the
 * caller gives its default action. */
#include "core/milter.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MILTER_OUT_KEEP  4096u
#define MILTER_MODS_KEEP (64u * 1024)
#define MILTER_MOD_HDR   13u         /* type, index, two lengths */
#define MILTER_MODS_MAX  (64u << 20) /* octets of modifications per message */

static uint32_t get32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void put32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

int milter_decode(const char *p, size_t len, struct milter_pkt *pkt)
{
	uint32_t n;

	if (len < 4)
		return MILTER_AGAIN;
	n = get32(p);
	if (n == 0 || n > MILTER_PKT_MAX)
		return MILTER_BAD;
	if (len - 4 < n)
		return MILTER_AGAIN;
	pkt->cmd = p[4];
	pkt->data = sv_make(p + 5, n - 1);
	return (int)(n + 4);
}

void milter_init(struct milter *m, uint32_t actions, uint32_t proto)
{
	memset(m, 0, sizeof(*m));
	m->offer_actions = actions & MILTER_A_ALL;
	m->offer_proto = proto & MILTER_P_OFFER;
	m->offer_version = MILTER_VERSION;
}

int milter_set_version(struct milter *m, uint32_t version, bool no_header_reply)
{
	uint32_t steps;

	switch (version) {
	case 2:
		steps = MILTER_P_V2;
		break;
	case 3:
		steps = MILTER_P_V3;
		break;
	case 4:
		steps = MILTER_P_V4;
		break;
	case 6:
		m->offer_version = 6;
		m->absent = 0;
		return 0;
	default:
		return -EINVAL;
	}
	if (no_header_reply)
		steps |= MILTER_P_NR_HDR;
	m->offer_version = version;
	m->offer_proto &= steps;
	m->offer_actions &= MILTER_A_V2;
	m->absent = MILTER_P_NOSENDS & ~steps;
	return 0;
}

void milter_fini(struct milter *m)
{
	buf_free(&m->out);
	buf_free(&m->in);
	buf_free(&m->mods);
	buf_free(&m->reply);
	for (unsigned i = 0; i <= MILTER_ST_EOH; i++)
		buf_free(&m->symlist[i]);
}

/* ---- encoding ---- */

/* Starts a packet of command <cmd> in m->out; returns its offset, for
 * pkt_end(), or -1 on no memory. */
static long pkt_begin(struct milter *m, char cmd)
{
	char h[5] = {0, 0, 0, 0, cmd};
	size_t at = m->out.len;

	if (buf_append(&m->out, h, 5))
		return -1;
	return (long)at;
}

static void pkt_end(struct milter *m, long at)
{
	put32(m->out.p + at, (uint32_t)(m->out.len - (size_t)at - 4));
}

static int put_str(struct milter *m, const char *s, size_t n)
{
	if (buf_append(&m->out, s, n) || buf_append(&m->out, "", 1))
		return -1;
	return 0;
}

/* A packet fails whole: m->out back to where it was. */
static int pkt_fail(struct milter *m, long at)
{
	if (at >= 0)
		m->out.len = (size_t)at;
	return -1;
}

/* After a command: a reply is awaited unless <nr> (a MILTER_P_NR_* bit)
 * was negotiated. */
static int sent(struct milter *m, enum milter_stage st, uint32_t nr)
{
	if (nr && (m->proto & nr)) {
		m->state = MILTER_S_READY;
		return 0;
	}
	m->state = MILTER_S_WAIT;
	m->await = st;
	m->verdict = MILTER_V_NONE;
	buf_reset(&m->reply, 512);
	return 1;
}

int milter_send_optneg(struct milter *m)
{
	long at = pkt_begin(m, MILTER_C_OPTNEG);
	char v[12];

	if (at < 0)
		return -1;
	put32(v, m->offer_version);
	put32(v + 4, m->offer_actions);
	put32(v + 8, m->offer_proto);
	if (buf_append(&m->out, v, sizeof(v)))
		return pkt_fail(m, at);
	pkt_end(m, at);
	return sent(m, MILTER_ST_OPTNEG, 0);
}

bool milter_wants(const struct milter *m, enum milter_stage st)
{
	static const uint32_t no[MILTER_ST_N] = {
	    [MILTER_ST_CONNECT] = MILTER_P_NOCONNECT, [MILTER_ST_HELO] = MILTER_P_NOHELO,
	    [MILTER_ST_MAIL] = MILTER_P_NOMAIL,       [MILTER_ST_RCPT] = MILTER_P_NORCPT,
	    [MILTER_ST_DATA] = MILTER_P_NODATA,       [MILTER_ST_HEADER] = MILTER_P_NOHDRS,
	    [MILTER_ST_EOH] = MILTER_P_NOEOH,         [MILTER_ST_BODY] = MILTER_P_NOBODY,
	};

	return (unsigned)st < MILTER_ST_N && !((m->proto | m->absent) & no[st]);
}

/* Whether macro <name> is in the filter's list for <stage> ("{x}" and "x"
 * are the same name). */
static bool sym_wanted(const struct milter *m, enum milter_stage stage, const char *name)
{
	struct sv want = sv_cstr(name), w;
	const char *p, *end;

	if ((unsigned)stage > MILTER_ST_EOH || !m->has_symlist[stage])
		return true;
	if (want.len > 2 && want.p[0] == '{' && want.p[want.len - 1] == '}')
		want = sv_make(want.p + 1, want.len - 2);
	p = m->symlist[stage].p;
	if (!p)
		return false; /* an empty list: none */
	end = p + m->symlist[stage].len;
	while (p < end) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));

		w = sv_make(p, sp ? (size_t)(sp - p) : (size_t)(end - p));
		p += w.len + 1;
		if (w.len > 2 && w.p[0] == '{' && w.p[w.len - 1] == '}')
			w = sv_make(w.p + 1, w.len - 2);
		if (sv_eq(w, want))
			return true;
	}
	return false;
}

static const char stage_cmd[MILTER_ST_N] = {
    [MILTER_ST_CONNECT] = MILTER_C_CONNECT, [MILTER_ST_HELO] = MILTER_C_HELO,
    [MILTER_ST_MAIL] = MILTER_C_MAIL,       [MILTER_ST_RCPT] = MILTER_C_RCPT,
    [MILTER_ST_DATA] = MILTER_C_DATA,       [MILTER_ST_EOM] = MILTER_C_BODYEOB,
    [MILTER_ST_EOH] = MILTER_C_EOH,         [MILTER_ST_HEADER] = MILTER_C_HEADER,
    [MILTER_ST_BODY] = MILTER_C_BODY,
};

int milter_send_macros(struct milter *m, enum milter_stage stage, const struct milter_macro *mv,
                       size_t n)
{
	long at;
	size_t k = 0;
	char c;

	if ((unsigned)stage >= MILTER_ST_OPTNEG || !milter_wants(m, stage))
		return 0;
	at = pkt_begin(m, MILTER_C_MACRO);
	c = stage_cmd[stage];
	if (at < 0 || buf_append(&m->out, &c, 1))
		return pkt_fail(m, at);
	for (size_t i = 0; i < n; i++) {
		if (!mv[i].value || !sym_wanted(m, stage, mv[i].name))
			continue;
		if (put_str(m, mv[i].name, strlen(mv[i].name)) ||
		    put_str(m, mv[i].value, strlen(mv[i].value)))
			return pkt_fail(m, at);
		k++;
	}
	if (!k) {
		m->out.len = (size_t)at; /* nothing to say */
		return 0;
	}
	pkt_end(m, at);
	return 0;
}

int milter_send_connect(struct milter *m, const char *host, char family, uint16_t port,
                        const char *addr)
{
	long at;
	char pb[2] = {(char)(port >> 8), (char)port};

	if (!milter_wants(m, MILTER_ST_CONNECT)) {
		m->state = MILTER_S_READY;
		return 0;
	}
	at = pkt_begin(m, MILTER_C_CONNECT);
	if (at < 0 || put_str(m, host, strlen(host)) || buf_append(&m->out, &family, 1))
		return pkt_fail(m, at);
	if (family != 'U' && (buf_append(&m->out, pb, 2) || put_str(m, addr, strlen(addr))))
		return pkt_fail(m, at);
	pkt_end(m, at);
	return sent(m, MILTER_ST_CONNECT, MILTER_P_NR_CONN);
}

/* A command whose data is one string, or nothing (<s> NULL). */
static int send_simple(struct milter *m, enum milter_stage st, uint32_t nr, const char *s, size_t n)
{
	long at;

	if (!milter_wants(m, st)) {
		m->state = MILTER_S_READY;
		return 0;
	}
	at = pkt_begin(m, stage_cmd[st]);
	if (at < 0 || (s && put_str(m, s, n)))
		return pkt_fail(m, at);
	pkt_end(m, at);
	return sent(m, st, nr);
}

int milter_send_helo(struct milter *m, const char *helo)
{
	return send_simple(m, MILTER_ST_HELO, MILTER_P_NR_HELO, helo, strlen(helo));
}

static int send_addr(struct milter *m, enum milter_stage st, uint32_t nr, const char *addr,
                     const char *const *args, size_t nargs)
{
	long at;

	if (!milter_wants(m, st)) {
		m->state = MILTER_S_READY;
		return 0;
	}
	at = pkt_begin(m, stage_cmd[st]);
	if (at < 0 || buf_append(&m->out, "<", 1) || buf_append_str(&m->out, addr) ||
	    put_str(m, ">", 1))
		return pkt_fail(m, at);
	for (size_t i = 0; i < nargs; i++)
		if (put_str(m, args[i], strlen(args[i])))
			return pkt_fail(m, at);
	pkt_end(m, at);
	return sent(m, st, nr);
}

int milter_send_mail(struct milter *m, const char *addr, const char *const *args, size_t nargs)
{
	return send_addr(m, MILTER_ST_MAIL, MILTER_P_NR_MAIL, addr, args, nargs);
}

int milter_send_rcpt(struct milter *m, const char *addr)
{
	return send_addr(m, MILTER_ST_RCPT, MILTER_P_NR_RCPT, addr, NULL, 0);
}

int milter_send_data(struct milter *m)
{
	return send_simple(m, MILTER_ST_DATA, MILTER_P_NR_DATA, NULL, 0);
}

int milter_send_header(struct milter *m, struct sv name, struct sv value)
{
	long at;

	if (!milter_wants(m, MILTER_ST_HEADER)) {
		m->state = MILTER_S_READY;
		return 0;
	}
	at = pkt_begin(m, MILTER_C_HEADER);
	if (at < 0 || put_str(m, name.p, name.len) || put_str(m, value.p, value.len))
		return pkt_fail(m, at);
	pkt_end(m, at);
	return sent(m, MILTER_ST_HEADER, MILTER_P_NR_HDR);
}

int milter_send_eoh(struct milter *m)
{
	return send_simple(m, MILTER_ST_EOH, MILTER_P_NR_EOH, NULL, 0);
}

int milter_send_body(struct milter *m, const char *p, size_t n)
{
	long at;

	if (!milter_wants(m, MILTER_ST_BODY) || n == 0) {
		m->state = MILTER_S_READY;
		return 0;
	}
	if (n > MILTER_CHUNK)
		n = MILTER_CHUNK;
	at = pkt_begin(m, MILTER_C_BODY);
	if (at < 0 || buf_append(&m->out, p, n))
		return pkt_fail(m, at);
	pkt_end(m, at);
	return sent(m, MILTER_ST_BODY, MILTER_P_NR_BODY);
}

int milter_send_eom(struct milter *m)
{
	long at = pkt_begin(m, MILTER_C_BODYEOB);

	if (at < 0)
		return -1;
	pkt_end(m, at);
	buf_reset(&m->mods, MILTER_MODS_KEEP);
	return sent(m, MILTER_ST_EOM, 0);
}

int milter_send_abort(struct milter *m)
{
	long at = pkt_begin(m, MILTER_C_ABORT);

	if (at < 0)
		return -1;
	pkt_end(m, at);
	buf_reset(&m->mods, MILTER_MODS_KEEP);
	m->state = MILTER_S_READY;
	return 0;
}

int milter_send_quit(struct milter *m)
{
	long at = pkt_begin(m, MILTER_C_QUIT);

	if (at < 0)
		return -1;
	pkt_end(m, at);
	m->state = MILTER_S_READY;
	return 0;
}

/* ---- decoding ---- */

static int fail(struct milter *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct milter *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->err, sizeof(m->err), fmt, ap);
	va_end(ap);
	m->state = MILTER_S_FAILED;
	return MILTER_IN_ERROR;
}

/* The NUL-terminated strings of <d>: <n> wanted, exactly (extra ones when
 * <more> allows). Returns false when malformed. */
static bool split_strs(struct sv d, struct sv *out, size_t n, bool more)
{
	size_t i = 0;

	while (d.len && i < n) {
		const char *z = memchr(d.p, '\0', d.len);

		if (!z)
			return false;
		out[i++] = sv_make(d.p, (size_t)(z - d.p));
		d = sv_skip(d, out[i - 1].len + 1);
	}
	return i == n && (more || d.len == 0);
}

/* OPTNEG's answer: version, actions, protocol, then SETSYMLIST lists. */
static int on_optneg(struct milter *m, struct sv d)
{
	uint32_t v, a, p;

	if (d.len < 12)
		return fail(m, "negotiation reply too short (%zu octets)", d.len);
	v = get32(d.p);
	a = get32(d.p + 4);
	p = get32(d.p + 8);
	if (v < 2 || v > m->offer_version)
		return fail(m, "filter speaks protocol version %u (2 to %u offered)", v,
		            m->offer_version);
	if (a & ~m->offer_actions)
		return fail(m, "filter wants actions 0x%x not offered (0x%x)", a, m->offer_actions);
	if (p & ~m->offer_proto)
		return fail(m, "filter wants protocol steps 0x%x not offered (0x%x)", p,
		            m->offer_proto);
	m->version = v;
	m->actions = a;
	m->proto = p;
	d = sv_skip(d, 12);
	while (d.len) {
		uint32_t st;
		const char *z;
		size_t n;

		if (d.len < 5 || !(a & MILTER_A_SETSYMLIST))
			return fail(m, "malformed macro lists in the negotiation reply");
		st = get32(d.p);
		d = sv_skip(d, 4);
		z = memchr(d.p, '\0', d.len);
		if (!z || st > MILTER_ST_EOH)
			return fail(m, "malformed macro list for stage %u", st);
		n = (size_t)(z - d.p);
		buf_reset(&m->symlist[st], 0);
		for (size_t i = 0; i < n; i++) {
			char ch = d.p[i] == ',' ? ' ' : d.p[i];

			if (buf_append(&m->symlist[st], &ch, 1))
				return fail(m, "out of memory");
		}
		m->has_symlist[st] = true;
		d = sv_skip(d, n + 1);
	}
	m->state = MILTER_S_READY;
	return MILTER_IN_DONE;
}

/* REPLYCODE: "4xx x.y.z text" or "5xx ...", several lines joined by CRLF
 * with "-" after the code on all but the last; NUL-terminated. Kept as
 * it is, once checked: the same code on every line, no other control
 * octet. */
static int on_replycode(struct milter *m, struct sv d)
{
	size_t n;
	const char *line, *end;

	if (!d.len || d.p[d.len - 1] != '\0')
		return fail(m, "reply code not NUL-terminated");
	n = d.len - 1;
	if (n < 3 || (d.p[0] != '4' && d.p[0] != '5') || d.p[1] < '0' || d.p[1] > '9' ||
	    d.p[2] < '0' || d.p[2] > '9')
		return fail(m, "reply code \"%.*s\" is not 4xx or 5xx", (int)(n < 40 ? n : 40),
		            d.p);
	line = d.p;
	end = d.p + n;
	for (;;) {
		const char *crlf = NULL;

		for (const char *q = line; q < end; q++) {
			unsigned char ch = (unsigned char)*q;

			if (ch == '\r' && q + 1 < end && q[1] == '\n') {
				crlf = q;
				break;
			}
			if (ch < ' ' && ch != '\t')
				return fail(m, "control octet in the reply text");
		}
		if ((size_t)(end - line) < 3 || memcmp(line, d.p, 3) != 0)
			return fail(m, "reply lines with different codes");
		if (crlf) {
			if (crlf - line < 4 || line[3] != '-')
				return fail(m, "continued reply line without '-'");
			line = crlf + 2;
			continue;
		}
		if (end - line > 3 && line[3] != ' ')
			return fail(m, "last reply line without ' ' after the code");
		break;
	}
	if (buf_append(&m->reply, d.p, n))
		return fail(m, "out of memory");
	m->verdict = d.p[0] == '4' ? MILTER_V_TEMPFAIL : MILTER_V_REJECT;
	return MILTER_IN_DONE;
}

static int add_mod(struct milter *m, char type, uint32_t idx, struct sv a, struct sv b)
{
	char h[MILTER_MOD_HDR];

	/* A filter that never stops modifying does not take all memory. */
	if (m->mods.len + a.len + b.len > MILTER_MODS_MAX)
		return fail(m, "modifications over %u octets", MILTER_MODS_MAX);
	h[0] = type;
	put32(h + 1, idx);
	put32(h + 5, (uint32_t)a.len);
	put32(h + 9, (uint32_t)b.len);
	if (buf_append(&m->mods, h, sizeof(h)) || buf_append(&m->mods, a.p, a.len) ||
	    buf_append(&m->mods, b.p, b.len))
		return fail(m, "out of memory for modifications");
	return MILTER_IN_WAIT;
}

/* A header name: printable ASCII but ':', at least one octet. */
static bool name_ok(struct sv n)
{
	if (!n.len)
		return false;
	for (size_t i = 0; i < n.len; i++)
		if ((unsigned char)n.p[i] <= ' ' || (unsigned char)n.p[i] >= 0x7f || n.p[i] == ':')
			return false;
	return true;
}

/* A modification at end of message, checked against what was negotiated. */
static int on_mod(struct milter *m, char cmd, struct sv d)
{
	struct sv s[3] = {{0}};
	uint32_t idx = 0, need;
	const char *what;

	switch (cmd) {
	case MILTER_R_ADDHEADER:
		need = MILTER_A_ADDHDRS, what = "add a header";
		break;
	case MILTER_R_INSHEADER:
		/* libmilter asks for ADDHDRS to insert */
		need = MILTER_A_ADDHDRS, what = "insert a header";
		break;
	case MILTER_R_CHGHEADER:
		need = MILTER_A_CHGHDRS, what = "change a header";
		break;
	case MILTER_R_CHGFROM:
		need = MILTER_A_CHGFROM, what = "change the sender";
		break;
	case MILTER_R_ADDRCPT:
		need = MILTER_A_ADDRCPT | MILTER_A_ADDRCPT_PAR, what = "add a recipient";
		break;
	case MILTER_R_ADDRCPT_PAR:
		need = MILTER_A_ADDRCPT_PAR, what = "add a recipient";
		break;
	case MILTER_R_DELRCPT:
		need = MILTER_A_DELRCPT, what = "delete a recipient";
		break;
	case MILTER_R_REPLBODY:
		need = MILTER_A_CHGBODY, what = "replace the body";
		break;
	default: /* MILTER_R_QUARANTINE */
		need = MILTER_A_QUARANTINE, what = "quarantine";
		break;
	}
	if (m->await != MILTER_ST_EOM)
		return fail(m, "filter asked to %s outside end of message", what);
	if (!(m->actions & need))
		return fail(m, "filter asked to %s without negotiating it", what);
	switch (cmd) {
	case MILTER_R_REPLBODY:
		return add_mod(m, cmd, 0, d, sv_make(NULL, 0));
	case MILTER_R_INSHEADER:
	case MILTER_R_CHGHEADER:
		if (d.len < 4)
			return fail(m, "header change too short");
		idx = get32(d.p);
		d = sv_skip(d, 4);
		/* fallthrough */
	case MILTER_R_ADDHEADER:
		if (!split_strs(d, s, 2, false) || !name_ok(s[0]))
			return fail(m, "malformed header in a modification");
		for (size_t i = 0; i < s[1].len; i++)
			if (s[1].p[i] == '\r' && (i + 1 == s[1].len || s[1].p[i + 1] != '\n'))
				return fail(m, "bare CR in a header value");
		return add_mod(m, cmd, idx, s[0], s[1]);
	case MILTER_R_CHGFROM:
	case MILTER_R_ADDRCPT_PAR:
		if (!split_strs(d, s, 1, true))
			return fail(m, "malformed address in a modification");
		if (d.len > s[0].len + 1 && !split_strs(sv_skip(d, s[0].len + 1), s + 1, 1, false))
			return fail(m, "malformed ESMTP arguments in a modification");
		break;
	default:
		if (!split_strs(d, s, 1, false))
			return fail(m, "malformed argument in a modification");
		break;
	}
	for (size_t i = 0; i < s[0].len; i++)
		if ((unsigned char)s[0].p[i] < ' ' || s[0].p[i] == 0x7f)
			return fail(m, "control octet in an address or reason");
	if (cmd != MILTER_R_QUARANTINE) {
		/* "<a@b>" and "a@b" both come from filters. */
		if (s[0].len >= 2 && s[0].p[0] == '<' && s[0].p[s[0].len - 1] == '>')
			s[0] = sv_make(s[0].p + 1, s[0].len - 2);
		if (!s[0].len && cmd != MILTER_R_CHGFROM)
			return fail(m, "empty address in a modification");
	}
	return add_mod(m, cmd, 0, s[0], s[1]);
}

/* One packet of a reply to the command awaited. */
static int on_packet(struct milter *m, const struct milter_pkt *k)
{
	if (m->await == MILTER_ST_OPTNEG) {
		if (k->cmd != MILTER_C_OPTNEG)
			return fail(m, "packet '%c' instead of the negotiation reply",
			            k->cmd >= ' ' && k->cmd < 0x7f ? k->cmd : '?');
		return on_optneg(m, k->data);
	}
	switch (k->cmd) {
	case MILTER_R_CONTINUE:
		m->verdict = MILTER_V_CONTINUE;
		return MILTER_IN_DONE;
	case MILTER_R_ACCEPT:
		m->verdict = MILTER_V_ACCEPT;
		return MILTER_IN_DONE;
	case MILTER_R_REJECT:
		m->verdict = MILTER_V_REJECT;
		return MILTER_IN_DONE;
	case MILTER_R_TEMPFAIL:
	case MILTER_R_SHUTDOWN:
	case MILTER_R_CONN_FAIL:
		m->verdict = MILTER_V_TEMPFAIL;
		return MILTER_IN_DONE;
	case MILTER_R_DISCARD:
		m->verdict = MILTER_V_DISCARD;
		return MILTER_IN_DONE;
	case MILTER_R_SKIP:
		/* libmilter does not echo SKIP in its negotiation: offered is enough. */
		if (m->await != MILTER_ST_BODY || !(m->offer_proto & MILTER_P_SKIP))
			return fail(m, "skip outside the body");
		m->verdict = MILTER_V_SKIP;
		return MILTER_IN_DONE;
	case MILTER_R_REPLYCODE:
		return on_replycode(m, k->data);
	case MILTER_R_PROGRESS:
		m->progress++;
		return MILTER_IN_WAIT;
	case MILTER_R_ADDHEADER:
	case MILTER_R_INSHEADER:
	case MILTER_R_CHGHEADER:
	case MILTER_R_CHGFROM:
	case MILTER_R_ADDRCPT:
	case MILTER_R_ADDRCPT_PAR:
	case MILTER_R_DELRCPT:
	case MILTER_R_REPLBODY:
	case MILTER_R_QUARANTINE:
		return on_mod(m, k->cmd, k->data);
	default:
		return fail(m, "unknown packet 0x%02x", (unsigned char)k->cmd);
	}
}

int milter_input(struct milter *m, const char *p, size_t n)
{
	struct milter_pkt k;
	size_t off = 0;
	int len, r = MILTER_IN_WAIT;

	if (m->state == MILTER_S_FAILED)
		return MILTER_IN_ERROR;
	if (n && buf_append(&m->in, p, n))
		return fail(m, "out of memory");
	while (m->in.p && m->state == MILTER_S_WAIT && r != MILTER_IN_DONE) {
		len = milter_decode(m->in.p + off, m->in.len - off, &k);
		if (len == MILTER_AGAIN)
			break;
		if (len == MILTER_BAD) {
			r = fail(m, "packet length %u out of bounds", get32(m->in.p + off));
			break;
		}
		off += (size_t)len;
		r = on_packet(m, &k);
		if (r == MILTER_IN_ERROR)
			break;
		if (r == MILTER_IN_DONE && m->state == MILTER_S_WAIT)
			m->state = MILTER_S_READY;
	}
	buf_consume(&m->in, off);
	if (r == MILTER_IN_ERROR)
		return r;
	if (m->state != MILTER_S_WAIT && m->in.len && r != MILTER_IN_DONE)
		return fail(m, "filter sent %zu octets while nothing was asked", m->in.len);
	if (!m->in.len)
		buf_reset(&m->in, MILTER_OUT_KEEP);
	return r;
}

bool milter_mod_next(const struct milter *m, size_t *it, struct milter_mod *mod)
{
	const char *p;
	uint32_t la, lb;

	if (*it + MILTER_MOD_HDR > m->mods.len)
		return false;
	p = m->mods.p + *it;
	mod->type = p[0];
	mod->idx = get32(p + 1);
	la = get32(p + 5);
	lb = get32(p + 9);
	mod->a = sv_make(p + MILTER_MOD_HDR, la);
	mod->b = sv_make(p + MILTER_MOD_HDR + la, lb);
	*it += MILTER_MOD_HDR + la + lb;
	return true;
}

/* ---- the message ---- */

static int fields_index(struct milter_msg *msg)
{
	const char *p = msg->hdrs.p;
	size_t n = msg->hdrs.len, at = 0;

	msg->fields.len = 0;
	while (at < n) {
		struct milter_field f = {.at = at};
		const char *colon = memchr(p + at, ':', n - at);
		size_t e = at;

		f.name_len = colon ? (size_t)(colon - (p + at)) : 0;
		while (f.name_len &&
		       (p[at + f.name_len - 1] == ' ' || p[at + f.name_len - 1] == '\t'))
			f.name_len--;
		f.value_at = colon ? (size_t)(colon - p) + 1 : at;
		/* The field ends at the CRLF not followed by white space. */
		for (;;) {
			const char *lf = memchr(p + e, '\n', n - e);

			e = lf ? (size_t)(lf - p) + 1 : n;
			if (e >= n || (p[e] != ' ' && p[e] != '\t'))
				break;
		}
		f.len = e - at;
		if (buf_append(&msg->fields, &f, sizeof(f)))
			return -ENOMEM;
		at = e;
	}
	return 0;
}

/* Whether the line at <p> (<n> octets, up to its LF) opens a header field. */
static bool is_field_start(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && (unsigned char)p[i] > ' ' && (unsigned char)p[i] < 0x7f && p[i] != ':')
		i++;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i > 0 && i < n && p[i] == ':';
}

int milter_msg_load(struct milter_msg *msg, const char *p, size_t n, struct sv from,
                    const char *rcpts, size_t rcpts_len, unsigned nrcpt)
{
	size_t at = 0, hend = 0, bstart;
	bool first = true;

	msg->has_sep = false;
	msg->quarantined = false;
	msg->body_replaced = false;
	msg->hdrs.len = msg->body.len = msg->from.len = msg->rcpts.len = msg->reason.len = 0;
	while (at < n) {
		const char *lf = memchr(p + at, '\n', n - at);
		size_t e = lf ? (size_t)(lf - p) + 1 : n;
		size_t ll = e - at;

		if ((ll == 2 && p[at] == '\r') || (ll == 1 && p[at] == '\n')) {
			msg->has_sep = true;
			hend = at;
			at = e;
			break;
		}
		if (!((!first && (p[at] == ' ' || p[at] == '\t')) || is_field_start(p + at, ll)))
			break; /* not a header: the body starts here */
		first = false;
		at = e;
		hend = at;
	}
	bstart = msg->has_sep ? at : hend;
	if (buf_append(&msg->hdrs, p, hend) || buf_append(&msg->body, p + bstart, n - bstart) ||
	    buf_append_sv(&msg->from, from) || buf_append(&msg->rcpts, rcpts, rcpts_len))
		return -ENOMEM;
	msg->nrcpt = nrcpt;
	return fields_index(msg);
}

int milter_hdr_end(const char *p, size_t n, bool final, size_t *hlen)
{
	size_t at = 0;

	while (at < n) {
		const char *lf = memchr(p + at, '\n', n - at);
		size_t e, ll;

		if (!lf)
			break; /* a line not complete yet */
		e = (size_t)(lf - p) + 1;
		ll = e - at;
		if ((ll == 2 && p[at] == '\r') || ll == 1) {
			*hlen = e; /* the empty line: the body after it */
			return 1;
		}
		/* Continuation lines are fields' (a Received: header comes first). */
		if (!(p[at] == ' ' || p[at] == '\t' || is_field_start(p + at, ll))) {
			*hlen = at;
			return 1;
		}
		at = e;
	}
	/* An incomplete line that cannot begin a field ends it too. */
	if (at < n && !(p[at] == ' ' || p[at] == '\t' || (p[at] == '\r' && at + 1 == n))) {
		size_t i = at;

		while (i < n && (unsigned char)p[i] > ' ' && (unsigned char)p[i] < 0x7f &&
		       p[i] != ':')
			i++;
		while (i < n && (p[i] == ' ' || p[i] == '\t'))
			i++;
		if (i < n && (i == at || p[i] != ':')) {
			*hlen = at;
			return 1;
		}
	}
	if (!final)
		return 0;
	*hlen = at;
	return 1;
}

void milter_msg_fini(struct milter_msg *msg)
{
	buf_free(&msg->hdrs);
	buf_free(&msg->fields);
	buf_free(&msg->body);
	buf_free(&msg->from);
	buf_free(&msg->rcpts);
	buf_free(&msg->reason);
}

size_t milter_msg_nfields(const struct milter_msg *msg)
{
	return msg->fields.len / sizeof(struct milter_field);
}

static const struct milter_field *field_at(const struct milter_msg *msg, size_t i)
{
	return (const struct milter_field *)msg->fields.p + i;
}

int milter_msg_field(const struct milter_msg *msg, size_t i, bool leadspc, struct buf *tmp,
                     struct sv *name, struct sv *value)
{
	const struct milter_field *f = field_at(msg, i);
	const char *v = msg->hdrs.p + f->value_at;
	size_t vn = f->at + f->len - f->value_at;

	*name = sv_make(msg->hdrs.p + f->at, f->name_len);
	if (vn && v[vn - 1] == '\n')
		vn--;
	if (vn && v[vn - 1] == '\r')
		vn--;
	if (!leadspc && vn && v[0] == ' ')
		v++, vn--;
	tmp->len = 0;
	for (size_t k = 0; k < vn; k++) {
		if (v[k] == '\r' && k + 1 < vn && v[k + 1] == '\n')
			continue; /* folds go as LF, as sendmail sends them */
		if (buf_append(tmp, v + k, 1))
			return -ENOMEM;
	}
	if (buf_append(tmp, "", 1))
		return -ENOMEM;
	*value = sv_make(tmp->p, tmp->len - 1);
	return 0;
}

int milter_msg_write(const struct milter_msg *msg, struct buf *out)
{
	out->len = 0;
	if (buf_append(out, msg->hdrs.p, msg->hdrs.len))
		return -ENOMEM;
	if (msg->has_sep && buf_append(out, "\r\n", 2))
		return -ENOMEM;
	if (buf_append(out, msg->body.p, msg->body.len))
		return -ENOMEM;
	return 0;
}

/* "Name: value\r\n" from a filter's name and value (folds as LF or CRLF;
 * without the leading space unless <leadspc>). */
static int field_make(struct buf *b, struct sv name, struct sv value, bool leadspc)
{
	if (buf_append_sv(b, name) || buf_append(b, leadspc ? ":" : ": ", leadspc ? 1 : 2))
		return -ENOMEM;
	for (size_t i = 0; i < value.len; i++) {
		if (value.p[i] == '\r')
			continue; /* only before LF (on_mod() checked) */
		if (value.p[i] == '\n' ? buf_append(b, "\r\n", 2) : buf_append(b, value.p + i, 1))
			return -ENOMEM;
	}
	return buf_append(b, "\r\n", 2) ? -ENOMEM : 0;
}

/* Replaces octets [at, at+len) of the header block with <with>. */
static int hdrs_splice(struct milter_msg *msg, size_t at, size_t len, struct sv with)
{
	struct buf nb = BUF_INIT;

	if (buf_append(&nb, msg->hdrs.p, at) || buf_append_sv(&nb, with) ||
	    (msg->hdrs.p && buf_append(&nb, msg->hdrs.p + at + len, msg->hdrs.len - at - len))) {
		buf_free(&nb);
		return -ENOMEM;
	}
	buf_free(&msg->hdrs);
	msg->hdrs = nb;
	return fields_index(msg);
}

static bool rcpt_eq(struct sv a, struct sv b)
{
	return sv_eq_ci(a, b);
}

static int rcpt_del(struct milter_msg *msg, struct sv who)
{
	struct buf nb = BUF_INIT;
	size_t it = 0;
	unsigned n = 0;

	while (it < msg->rcpts.len) {
		struct sv r = sv_cstr(msg->rcpts.p + it);

		it += r.len + 1;
		if (rcpt_eq(r, who))
			continue;
		if (buf_append(&nb, r.p, r.len + 1)) {
			buf_free(&nb);
			return -ENOMEM;
		}
		n++;
	}
	buf_free(&msg->rcpts);
	msg->rcpts = nb;
	msg->nrcpt = n;
	return 0;
}

static int rcpt_add(struct milter_msg *msg, struct sv who)
{
	size_t it = 0;

	while (it < msg->rcpts.len) {
		struct sv r = sv_cstr(msg->rcpts.p + it);

		if (rcpt_eq(r, who))
			return 0; /* once is enough */
		it += r.len + 1;
	}
	if (buf_append_sv(&msg->rcpts, who) || buf_append(&msg->rcpts, "", 1))
		return -ENOMEM;
	msg->nrcpt++;
	return 0;
}

/* A body from a filter: lines end in CRLF, whatever it used (a bare LF
 * or CR stored would be smuggling material at the next hop). */
static int body_add(struct buf *b, struct sv d, bool *cr)
{
	for (size_t i = 0; i < d.len; i++) {
		char ch = d.p[i];
		int err = 0;

		if (ch == '\n') {
			err = buf_append(b, "\r\n", 2);
		} else if (*cr) {
			err = buf_append(b, "\r\n", 2);
			if (!err && ch != '\r')
				err = buf_append(b, &ch, 1);
		} else if (ch != '\r') {
			err = buf_append(b, &ch, 1);
		}
		if (err)
			return -ENOMEM;
		*cr = ch == '\r';
	}
	return 0;
}

int milter_apply(const struct milter *m, struct milter_msg *msg, char *why, size_t whylen)
{
	bool leadspc = (m->proto & MILTER_P_HDR_LEADSPC) != 0;
	struct buf nbody = BUF_INIT, f = BUF_INIT;
	bool replbody = false, cr = false;
	struct milter_mod mod;
	size_t it = 0;
	int err = 0;

	while (!err && milter_mod_next(m, &it, &mod)) {
		size_t nf = milter_msg_nfields(msg);

		f.len = 0;
		switch (mod.type) {
		case MILTER_R_ADDHEADER:
			err = field_make(&f, mod.a, mod.b, leadspc);
			if (!err)
				err = hdrs_splice(msg, msg->hdrs.len, 0, buf_sv(&f));
			break;
		case MILTER_R_INSHEADER: {
			size_t at = mod.idx < nf ? field_at(msg, mod.idx)->at : msg->hdrs.len;

			err = field_make(&f, mod.a, mod.b, leadspc);
			if (!err)
				err = hdrs_splice(msg, at, 0, buf_sv(&f));
			break;
		}
		case MILTER_R_CHGHEADER: {
			/* The <idx>th field of that name (0 is taken as 1, as
			 * sendmail does); missing: added, unless it deletes. */
			uint32_t want = mod.idx ? mod.idx : 1, seen = 0;
			size_t i;

			for (i = 0; i < nf; i++) {
				const struct milter_field *fl = field_at(msg, i);

				if (sv_eq_ci(sv_make(msg->hdrs.p + fl->at, fl->name_len), mod.a) &&
				    ++seen == want)
					break;
			}
			if (mod.b.len)
				err = field_make(&f, mod.a, mod.b, leadspc);
			if (!err && i < nf)
				err = hdrs_splice(msg, field_at(msg, i)->at, field_at(msg, i)->len,
				                  buf_sv(&f));
			else if (!err && mod.b.len)
				err = hdrs_splice(msg, msg->hdrs.len, 0, buf_sv(&f));
			break;
		}
		case MILTER_R_CHGFROM:
			msg->from.len = 0;
			err = buf_append_sv(&msg->from, mod.a) ? -ENOMEM : 0;
			break;
		case MILTER_R_ADDRCPT:
		case MILTER_R_ADDRCPT_PAR:
			err = rcpt_add(msg, mod.a);
			break;
		case MILTER_R_DELRCPT:
			err = rcpt_del(msg, mod.a);
			break;
		case MILTER_R_REPLBODY:
			replbody = true;
			err = body_add(&nbody, mod.a, &cr);
			break;
		case MILTER_R_QUARANTINE:
			msg->quarantined = true;
			msg->reason.len = 0;
			err = buf_append_sv(&msg->reason, mod.a) ? -ENOMEM : 0;
			break;
		}
	}
	if (!err && replbody) {
		if (cr)
			err = buf_append(&nbody, "\r\n", 2) ? -ENOMEM : 0;
		/* A body ends with its line's CRLF. */
		if (!err && nbody.len && nbody.p[nbody.len - 1] != '\n')
			err = buf_append(&nbody, "\r\n", 2) ? -ENOMEM : 0;
		if (!err) {
			buf_free(&msg->body);
			msg->body = nbody;
			nbody = (struct buf)BUF_INIT;
			msg->has_sep = true;
			msg->body_replaced = true;
		}
	}
	if (err == -ENOMEM)
		snprintf(why, whylen, "out of memory applying modifications");
	buf_free(&nbody);
	buf_free(&f);
	return err;
}

/* smtp_data: streaming end-of-data detection and dot-unstuffing for DATA
 * (RFC 5321 4.1.1.4, 4.5.2). This is the plain byte-at-a-time automaton;
 * it returns views into the caller's buffers and never copies. See
 * smtp_data.h for the contract. */
#include "core/smtp_data.h"

enum {
	D_LINE_START = 0, /* after CRLF (or at the start of the content) */
	D_MID,            /* inside a line */
	D_CR,             /* inside a line, just after a CR (emitted) */
	D_DOT,            /* a '.' at the start of a line (held back) */
	D_DOT_CR,         /* ".\r" at the start of a line (both held back) */
};

static const char data_crlf[2] = {'\r', '\n'};

void smtp_data_init(struct smtp_data *d, uint64_t max_size, uint32_t max_line,
		    enum smtp_data_bare bare, enum smtp_data_long longp)
{
	*d = (struct smtp_data){
		.max_size = max_size,
		.max_line = max_line,
		.state = D_LINE_START,
		.bare = (uint8_t)bare,
		.longp = (uint8_t)longp,
	};
}

struct emitter {
	struct smtp_data *d;
	struct iovec *v;
	unsigned n;
};

static void emit(struct emitter *e, const char *p, size_t len)
{
	if (len == 0)
		return;
	e->v[e->n].iov_base = (void *)p;
	e->v[e->n].iov_len = len;
	e->n++;
	e->d->size += len;
	if (e->d->max_size && e->d->size > e->d->max_size)
		e->d->flags |= SMTP_DATA_F_TOO_BIG;
}

static void line_char(struct smtp_data *d)
{
	d->linelen++;
	/* RFC 5321 4.5.3.1.6: 1000 octets including the CRLF. */
	if (d->max_line && d->linelen + 2 > d->max_line)
		d->flags |= SMTP_DATA_F_LONG_LINE;
}

size_t smtp_data_scan(struct smtp_data *d, const char *p, size_t len, struct iovec *v,
		      unsigned maxv, unsigned *nv)
{
	struct emitter e = {d, v, 0};
	size_t i = 0, run = 0; /* p[run..i) is content not yet emitted */
	bool normalize = d->bare == SMTP_DATA_BARE_NORMALIZE;

	if (d->flags & SMTP_DATA_F_DONE) {
		*nv = 0;
		return 0;
	}
	while (i < len) {
		char c = p[i];

		/* Each byte emits at most two views (the run and a static). */
		if (e.n + 3 > maxv)
			break;
		switch (d->state) {
		case D_LINE_START:
			if (c == '.') {
				/* RFC 5321 4.5.2: drop the leading dot. */
				emit(&e, p + run, i - run);
				run = ++i;
				d->state = D_DOT;
				continue;
			}
			d->state = D_MID;
			continue;
		case D_MID:
			if (c == '\r') {
				d->state = D_CR;
			} else if (c == '\n') {
				/* Bare LF: never a line start (smuggling). */
				d->flags |= SMTP_DATA_F_BARE_LF;
				if (normalize) {
					emit(&e, p + run, i - run);
					emit(&e, data_crlf, 2);
					run = i + 1;
				}
				d->linelen = 0;
			} else {
				line_char(d);
			}
			i++;
			continue;
		case D_CR:
			if (c == '\n') {
				d->linelen = 0;
				d->state = D_LINE_START;
				i++;
				continue;
			}
			/* Bare CR: the CR is already in the run. */
			d->flags |= SMTP_DATA_F_BARE_CR;
			if (normalize) {
				emit(&e, p + run, i - run);
				emit(&e, data_crlf + 1, 1);
				run = i;
				d->linelen = 0;
			} else {
				line_char(d);
			}
			d->state = D_MID;
			continue; /* look at <c> again, inside the line */
		case D_DOT:
			if (c == '\r') {
				d->state = D_DOT_CR;
				run = ++i;
				continue;
			}
			line_char(d); /* the dot counts as received */
			d->state = D_MID;
			continue;
		case D_DOT_CR:
			if (c == '\n') {
				d->flags |= SMTP_DATA_F_DONE;
				i++;
				*nv = e.n;
				return i;
			}
			/* ".\r" then not LF: the held-back CR is a bare CR. */
			d->flags |= SMTP_DATA_F_BARE_CR;
			emit(&e, p + run, i - run);
			emit(&e, data_crlf, normalize ? 2 : 1);
			run = i;
			line_char(d);
			if (normalize)
				d->linelen = 0;
			else
				line_char(d);
			d->state = D_MID;
			continue;
		}
	}
	emit(&e, p + run, i - run);
	*nv = e.n;
	return i;
}

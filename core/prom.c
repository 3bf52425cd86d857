/* prom: the Prometheus text exposition format 0.0.4 writer. See prom.h.
 * Escaping follows the format's rules: in label values backslash, double
 * quote and line feed are escaped; in HELP text backslash and line feed.
 * Floats are written in the shortest form strtod() reads back exactly, as
 * Go's strconv does for the Prometheus client libraries. libc only. */
#include "core/prom.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool name_ok(const char *s, bool colon)
{
	if (!s || !*s)
		return false;
	for (const char *q = s; *q; q++) {
		char c = *q;
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
		             (colon && c == ':');

		if (!alpha && !(q > s && c >= '0' && c <= '9'))
			return false;
	}
	return true;
}

bool prom_metric_name_ok(const char *s)
{
	return name_ok(s, true);
}

bool prom_label_name_ok(const char *s)
{
	return name_ok(s, false) && strncmp(s, "__", 2) != 0;
}

static void put(struct prom *p, const char *s, size_t n)
{
	if (!p->err)
		p->err = buf_append(&p->b, s, n);
}

static void puts_(struct prom *p, const char *s)
{
	put(p, s, strlen(s));
}

/* <s> with backslash and line feed escaped, and double quote too when
 * <quote> (label values). */
static void put_escaped(struct prom *p, const char *s, bool quote)
{
	const char *run = s;

	for (; *s; s++) {
		const char *esc = NULL;

		if (*s == '\\')
			esc = "\\\\";
		else if (*s == '\n')
			esc = "\\n";
		else if (*s == '"' && quote)
			esc = "\\\"";
		if (!esc)
			continue;
		put(p, run, (size_t)(s - run));
		puts_(p, esc);
		run = s + 1;
	}
	put(p, run, (size_t)(s - run));
}

/* <v> as the format writes floats, into <tmp> (32 bytes). */
static const char *fmt_double(char *tmp, double v)
{
	if (isnan(v))
		return "NaN";
	if (isinf(v))
		return v > 0 ? "+Inf" : "-Inf";
	/* The shortest of %.15g..%.17g that reads back as <v>. */
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(tmp, 32, "%.*g", prec, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	return tmp;
}

static void put_double(struct prom *p, double v)
{
	char tmp[32];

	puts_(p, fmt_double(tmp, v));
}

static void put_u64(struct prom *p, uint64_t v)
{
	char tmp[24];

	snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
	puts_(p, tmp);
}

/* <name><suffix>{labels[,le="<le>"]} : everything of a sample but its value. */
static void put_head(struct prom *p, const char *name, const char *suffix,
                     const struct prom_label *l, unsigned nl, const char *le)
{
	if (!p->err && !prom_metric_name_ok(name))
		p->err = -EINVAL;
	puts_(p, name);
	puts_(p, suffix);
	if (nl || le) {
		puts_(p, "{");
		for (unsigned i = 0; i < nl; i++) {
			if (!p->err && !prom_label_name_ok(l[i].name))
				p->err = -EINVAL;
			if (i)
				puts_(p, ",");
			puts_(p, l[i].name);
			puts_(p, "=\"");
			put_escaped(p, l[i].value ? l[i].value : "", true);
			puts_(p, "\"");
		}
		if (le) {
			puts_(p, nl ? ",le=\"" : "le=\"");
			puts_(p, le);
			puts_(p, "\"");
		}
		puts_(p, "}");
	}
	puts_(p, " ");
}

void prom_family(struct prom *p, const char *name, const char *type, const char *help)
{
	if (!p->err && !prom_metric_name_ok(name))
		p->err = -EINVAL;
	puts_(p, "# HELP ");
	puts_(p, name);
	puts_(p, " ");
	put_escaped(p, help, false);
	puts_(p, "\n# TYPE ");
	puts_(p, name);
	puts_(p, " ");
	puts_(p, type);
	puts_(p, "\n");
}

void prom_sample_u64(struct prom *p, const char *name, const struct prom_label *l, unsigned nl,
                     uint64_t v)
{
	put_head(p, name, "", l, nl, NULL);
	put_u64(p, v);
	puts_(p, "\n");
}

void prom_sample(struct prom *p, const char *name, const struct prom_label *l, unsigned nl,
                 double v)
{
	put_head(p, name, "", l, nl, NULL);
	put_double(p, v);
	puts_(p, "\n");
}

void prom_histogram(struct prom *p, const char *name, const struct prom_label *l, unsigned nl,
                    const struct stats_bounds *bd, const struct stats_hist *h)
{
	uint64_t cum = 0;

	for (unsigned i = 0; i <= bd->n; i++) {
		char tmp[32];

		cum += h->bucket[i];
		put_head(p, name, "_bucket", l, nl,
		         i < bd->n ? fmt_double(tmp, (double)bd->le[i] / bd->div) : "+Inf");
		put_u64(p, cum);
		puts_(p, "\n");
	}
	put_head(p, name, "_sum", l, nl, NULL);
	put_double(p, (double)h->sum / bd->div);
	puts_(p, "\n");
	put_head(p, name, "_count", l, nl, NULL);
	put_u64(p, cum);
	puts_(p, "\n");
}

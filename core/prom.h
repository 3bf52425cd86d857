/* prom: the Prometheus text exposition format, version 0.0.4 (what a
 * /metrics page says): HELP and TYPE lines, samples with escaped label
 * values, histograms as cumulative _bucket lines up to le="+Inf" with _sum
 * and _count. Writes into a struct buf; knows nothing of HTTP or of where
 * the numbers come from (io/metrics.c). libc only. */
#ifndef RINGMX_CORE_PROM_H
#define RINGMX_CORE_PROM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/stats.h"

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct prom_label {
	const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*, not starting "__" */
	const char *value; /* any UTF-8; escaped on output */
};

/* The page being written. <err> is sticky: the first failure (-ENOMEM, or
 * -EINVAL for a name that is not a valid metric or label name) stays and
 * later calls write nothing more. */
struct prom {
	struct buf b;
	int err;
};

/* True if <s> is a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*). */
bool prom_metric_name_ok(const char *s);
/* True if <s> is a valid label name, not reserved ("__" prefix). */
bool prom_label_name_ok(const char *s);

/* "# HELP <name> <help>" (backslash and newline escaped) and "# TYPE <name>
 * <type>": <type> is counter, gauge, histogram or untyped. Once per family,
 * before its samples. */
void prom_family(struct prom *p, const char *name, const char *type, const char *help);

/* One sample line: <name>{<labels>} <v>. <nl> may be 0 (<l> NULL). The
 * _u64 form prints the integer exactly; the other the shortest decimal
 * that reads back as <v> (or +Inf, -Inf, NaN). */
void prom_sample_u64(struct prom *p, const char *name, const struct prom_label *l, unsigned nl,
                     uint64_t v);
void prom_sample(struct prom *p, const char *name, const struct prom_label *l, unsigned nl,
                 double v);

/* The samples of one histogram <name> (the family's name, without
 * suffix): <name>_bucket{<labels>,le="..."} for each bound of <bd>
 * (divided by its <div>) and "+Inf", cumulative, then <name>_sum (divided by its <div>) and
 * <name>_count (the +Inf bucket). */
void prom_histogram(struct prom *p, const char *name, const struct prom_label *l, unsigned nl,
                    const struct stats_bounds *bd, const struct stats_hist *h);

#endif

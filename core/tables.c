/* tables: see tables.h. */
#include "core/tables.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int tables_load(const struct conf *c, struct tables **out, char *err, size_t errlen)
{
	struct recipients_opts o = {.delimiters = c->recipient_delimiter,
	                            .exact = c->recipients_exact_case};
	struct recipients_builder b;
	struct tables *t = calloc(1, sizeof(*t));
	char why[RECIPIENTS_ERR_MAX];
	int rc = 0;

	if (!t) {
		snprintf(err, errlen, "out of memory for the tables");
		return -ENOMEM;
	}
	atomic_init(&t->refs, 1);
	policy_init(&t->domains);
	for (unsigned i = 0; i < c->ndomain_srcs && !rc; i++) {
		const struct conf_domain_src *d = &c->domain_srcs[i];

		rc = d->file ? policy_load_domains_file(&t->domains, d->arg, why, sizeof(why))
		             : policy_add_domains(&t->domains, d->arg, why, sizeof(why));
		if (rc)
			snprintf(err, errlen, "--%s: %s", d->file ? "domains-file" : "domains",
			         why);
	}
	policy_finish(&t->domains);
	if (!rc && c->nrecipients_files) {
		recipients_builder_init(&b, &o);
		for (unsigned i = 0; i < c->nrecipients_files && !rc; i++)
			rc = recipients_builder_add_file(&b, c->recipients_files[i], why,
			                                 sizeof(why));
		if (!rc) {
			t->recipients = recipients_build(&b, why, sizeof(why));
			if (!t->recipients)
				rc = -ENOMEM;
		}
		if (rc)
			snprintf(err, errlen, "--recipients-file: %s", why);
		recipients_builder_fini(&b);
	}
	if (rc) {
		tables_unref(t);
		return rc;
	}
	*out = t;
	return 0;
}

struct tables *tables_ref(struct tables *t)
{
	atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
	return t;
}

void tables_unref(struct tables *t)
{
	/* Release/acquire: whoever frees sees every reader's last use. */
	if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
		return;
	recipients_unref(t->recipients);
	policy_fini(&t->domains);
	if (t->tls && t->tls_free)
		t->tls_free(t->tls);
	free(t->milters);
	if (t->own_conf) {
		conf_fini(t->own_conf);
		free(t->own_conf);
	}
	free(t);
}

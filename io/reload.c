/* reload: see reload.h. */
#include "io/reload.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/tables.h"
#include "io/tls.h"

#define RELOAD_REPORT  "ringmx.reload"
#define RELOAD_WAIT_MS 15000

void reload_resolve(struct conf *c)
{
	if (c->threads == 0) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		c->threads = ncpu > 0 ? (unsigned)ncpu : 1;
		/* As --threads allows: the ring table and the queue id's worker
		 * byte hold 256 workers at most. */
		if (c->threads > 256) {
			LOGW("%u cores: starting 256 workers, the most there can be", c->threads);
			c->threads = 256;
		}
	}
	if (!c->hostname) {
		if (gethostname(c->host_buf, sizeof(c->host_buf)) != 0 || !c->host_buf[0])
			snprintf(c->host_buf, sizeof(c->host_buf), "localhost");
		c->host_buf[sizeof(c->host_buf) - 1] = '\0';
		c->hostname = c->host_buf;
	}
	if (c->spool_min_free == CONF_DEF_SPOOL_MIN_FREE)
		c->spool_min_free = c->max_message_size ? 2 * c->max_message_size : 64ull << 20;
}

void reload_scf(const struct gateway *g, const struct conf *c, bool tls,
                struct smtp_server_conf *out)
{
	const struct conf *g0 = g->conf;

	*out = (struct smtp_server_conf){
	    .hostname = g0->hostname,
	    .policy = &c->policy,
	    .max_message_size = c->max_message_size,
	    .max_recipients = c->max_recipients,
	    .max_errors = c->max_errors,
	    .error_delay_ms = c->error_delay_ms,
	    .overload_max_errors = c->overload_max_errors,
	    .max_line = c->max_line_length,
	    .bare_policy = c->bare_policy,
	    .long_line_policy = c->long_line_policy,
	    .nul_strip = c->nul_strip,
	    .anvil = g0->client_msg_rate.n || g0->client_rcpt_rate.n ? g->anvil : NULL,
	    .tls_available = tls,
	    .allow_untrusted_routing = c->allow_untrusted_routing,
	    .max_unknown = c->max_unknown_recipients,
	    .unknown_delay_ms = c->unknown_recipient_delay_ms,
	    .filters = g->nmilters != 0, /* the filters are the startup ones */
	    .rate_ask = g->scf.rate_ask, /* and so is --limits-redis */
	    /* The cache is the startup one (NULL: verification was off then);
	     * which domains, and failing open, are the snapshot's. */
	    .vcache = g->vcache,
	    .verify_domains = &c->verify_domains,
	    .verify_all = c->verify_all,
	    .verify_fail_open = c->verify_fail_open,
	};
}

static size_t entries_of(const struct tables *t)
{
	return t && t->recipients ? recipients_entries(t->recipients) : 0;
}

static size_t rdomains_of(const struct tables *t)
{
	return t && t->recipients ? recipients_domains(t->recipients) : 0;
}

static void tls_free_opaque(void *x)
{
	tls_ctx_free(x);
}

/* <spool>/ringmx.reload, whole or not at all (a temporary file renamed). */
static void report_write(struct gateway *g, const char *text)
{
	int fd = openat(g->spool_dirfd, RELOAD_REPORT ".tmp",
	                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t n = strlen(text);

	if (fd < 0 || write(fd, text, n) != (ssize_t)n ||
	    renameat(g->spool_dirfd, RELOAD_REPORT ".tmp", g->spool_dirfd, RELOAD_REPORT) < 0)
		LOGW("reload: cannot write %s/%s: %s", g->conf->spool, RELOAD_REPORT,
		     strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* The names of the keys that differ between <a> and <b> whose liveness is
 * <live>, comma-separated into <out>. Returns how many. */
static size_t changed_list(const struct conf *a, const struct conf *b, bool live, char *out,
                           size_t outlen)
{
	const char *names[128];
	bool lv[128];
	size_t n = conf_changed(a, b, names, lv, 128), k = 0, len = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && i < 128; i++) {
		if (lv[i] != live)
			continue;
		if (len < outlen)
			len += (size_t)snprintf(out + len, outlen - len, "%s%s", k ? ", " : "",
			                        names[i]);
		k++;
	}
	return k;
}

bool reload_run(struct gateway *g, unsigned started)
{
	struct tables *t = NULL, *old = g->tables;
	struct tls_ctx *tls = NULL;
	struct conf *nc = calloc(1, sizeof(*nc));
	char err[640], live[2048], restart[2048], report[4800];
	int rc;

	if (!nc) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	rc = conf_parse(nc, g->argc, g->argv, stderr, err, sizeof(err));
	if (rc != CONF_OK) {
		free(nc);
		nc = NULL;
		if (rc != CONF_ERR)
			snprintf(err, sizeof(err), "the command line asks for no gateway");
		else if (!strncmp(err, "ringmx: ", 8))
			memmove(err, err + 8, strlen(err + 8) + 1);
		goto fail;
	}
	reload_resolve(nc);
	if (nc->ntls_certs) {
		struct tls_cert_conf certs[CONF_MAX_TLS_CERTS];
		char why[512];

		for (unsigned i = 0; i < nc->ntls_certs; i++)
			certs[i] =
			    (struct tls_cert_conf){nc->tls_certs[i].cert, nc->tls_certs[i].key};
		if (tls_ctx_new(&tls, certs, nc->ntls_certs, nc->tls_ciphers, why, sizeof(why))) {
			snprintf(err, sizeof(err), "%s", why);
			goto fail;
		}
	}
	if (tables_load(nc, &t, err, sizeof(err)))
		goto fail;
	t->conf = nc;
	t->own_conf = nc;
	t->has_tls = true;
	t->tls = tls;
	t->tls_free = tls_free_opaque;
	reload_scf(g, nc, tls != NULL, &t->scf);
	tls = NULL;
	nc = NULL; /* the snapshot's now */

	changed_list(old && old->conf ? old->conf : g->conf, t->conf, true, live, sizeof(live));
	changed_list(g->conf, t->conf, false, restart, sizeof(restart));
	log_threshold = t->conf->log_level;
	LOGI("reload: %s%s; accepted domains %zu (were %zu), recipient tables %zu entries in %zu "
	     "domains (were %zu in %zu)",
	     live[0] ? "changed " : "no live setting changed", live, t->domains.ndomains,
	     old ? old->domains.ndomains : 0, entries_of(t), rdomains_of(t), entries_of(old),
	     rdomains_of(old));
	if (restart[0])
		LOGW("reload: changed but needs a restart (the running values stay): %s", restart);
	if (!g->vcache && (t->conf->verify_all || t->conf->verify_domains.ndomains))
		LOGW("reload: --verify-recipients was off at start: it needs a restart to begin "
		     "(its domains change live once it runs)");
	for (unsigned i = 0; i < started; i++)
		tables_unref(atomic_exchange(&g->workers[i]->tables_next, tables_ref(t)));
	g->tables = t;
	tables_unref(old);
	snprintf(report, sizeof(report), "reloaded\nchanged: %s\nneeds a restart: %s\n",
	         live[0] ? live : "nothing", restart[0] ? restart : "nothing");
	report_write(g, report);
	return true;
fail:
	LOGE("reload failed, nothing changed: %s", err);
	tls_ctx_free(tls);
	if (nc) {
		conf_fini(nc);
		free(nc);
	}
	snprintf(report, sizeof(report), "failed, nothing changed: %s\n", err);
	report_write(g, report);
	return false;
}

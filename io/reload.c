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
#include "io/relay_conf.h"
#include "io/milter.h"
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

struct anvil_conf reload_anvil_conf(const struct gateway *g, const struct conf *c)
{
	const struct conf *g0 = g->conf ? g->conf : c, *r = g0->limits_redis ? g0 : c;

	return (struct anvil_conf){
	    .prefix4 = g0->client_prefix4,
	    .prefix6 = g0->client_prefix6,
	    .max_sessions = c->client_max_sessions,
	    .conn = r->client_conn_rate,
	    .msg = r->client_msg_rate,
	    .rcpt = r->client_rcpt_rate,
	    .max_entries = g0->client_table_size,
	};
}

bool reload_limits_on(const struct anvil_conf *a)
{
	return a->max_sessions || a->conn.n || a->msg.n || a->rcpt.n;
}

void reload_scf(const struct gateway *g, const struct conf *c, bool tls,
                struct smtp_server_conf *out)
{
	const struct conf *g0 = g->conf;
	struct anvil_conf ac = reload_anvil_conf(g, c);

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
	    .anvil = ac.msg.n || ac.rcpt.n ? g->anvil : NULL,
	    .tls_available = tls,
	    .allow_untrusted_routing = c->allow_untrusted_routing,
	    .max_unknown = c->max_unknown_recipients,
	    .unknown_delay_ms = c->unknown_recipient_delay_ms,
	    .filters = c->nmilters != 0, /* (a reload's resolved into its snapshot) */
	    .rate_ask = g->scf.rate_ask, /* and so is --limits-redis */
	    .sender_dns = c->reject_unknown_sender_domain || c->nrhsbl,
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

/* Whether <a> and <b> have other next hops: --relay-to, --route or
 * --relay-tls differ (conf_changed(), the reload's own comparison). */
static bool relay_keys_differ(const struct conf *a, const struct conf *b)
{
	const char *names[128];
	size_t n = conf_changed(a, b, names, NULL, 128);

	for (size_t i = 0; i < n && i < 128; i++)
		if (!strcmp(names[i], "relay-to") || !strcmp(names[i], "route") ||
		    !strcmp(names[i], "relay-tls"))
			return true;
	return false;
}

/* Next hops built and looked up anew for options <c>, counted (one
 * reference, the caller's), or NULL with one line in <err>. Main thread. */
static struct relay_conf *relay_new(struct gateway *g, const struct conf *c, char *err,
                                    size_t errlen)
{
	struct relay_conf *rc = calloc(1, sizeof(*rc));
	int e;

	if (!rc) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	err[0] = '\0';
	e = relay_conf_build(rc, c, g->dns, err, errlen);
	if (!e)
		e = relay_conf_slots(rc, &g->hopnames, err, errlen);
	if (e) {
		if (!err[0])
			snprintf(err, errlen, "next hops: %s", strerror(-e));
		else if (!strncmp(err, "ringmx: ", 8))
			memmove(err, err + 8, strlen(err + 8) + 1);
		relay_conf_free(rc);
		free(rc);
		return NULL;
	}
	atomic_store(&rc->refs, 1);
	return rc;
}

/* Hands next hops <rc> (the caller's reference, now the gateway's) to the
 * first <started> workers; the caller wakes them. Main thread. */
static void relay_publish(struct gateway *g, struct relay_conf *rc, unsigned started)
{
	for (unsigned i = 0; i < started; i++)
		relay_conf_unref(atomic_exchange(&g->workers[i]->relay_next, relay_conf_ref(rc)));
	relay_conf_unref(g->relay_cur);
	g->relay_cur = rc;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* When the names of <rc> are to be looked up again. */
static void relay_due(struct gateway *g, const struct relay_conf *rc)
{
	g->relay_due_ms = rc->ttl ? mono_ms() + (int64_t)rc->ttl * 1000 : 0;
}

void reload_relay_start(struct gateway *g)
{
	relay_due(g, &g->relay);
}

/* The next hops of options <nc> when a reload changed them (a host name
 * that does not resolve fails the reload: *<out> NULL and -1), else *<out>
 * NULL: the running ones stay. Delivery switched on or off needs a
 * restart: then the old ones stay too. */
static int reload_relay(struct gateway *g, const struct tables *old, const struct conf *nc,
                        struct relay_conf **out, char *err, size_t errlen)
{
	const struct conf *was = old && old->conf ? old->conf : g->conf;

	*out = NULL;
	if (!relay_keys_differ(was, nc) || !g->relay.nroutes || (!nc->relay_to && !nc->nroutes))
		return 0;
	*out = relay_new(g, nc, err, errlen);
	return *out ? 0 : -1;
}

int64_t reload_relay_tick(struct gateway *g, unsigned started, bool *wake)
{
	const struct conf *c = g->tables && g->tables->conf ? g->tables->conf : g->conf;
	const struct relay_conf *cur = g->relay_cur ? g->relay_cur : &g->relay;
	struct relay_conf *rc;
	char err[640];
	int64_t now = mono_ms();

	if (!g->relay_due_ms)
		return -1;
	if (now < g->relay_due_ms)
		return g->relay_due_ms - now;
	rc = relay_new(g, c, err, sizeof(err));
	if (!rc) {
		/* The addresses that worked stay in use. */
		LOGW("next hops: %s: the current addresses stay; asking again in %us", err,
		     RELOAD_RELAY_RETRY_S);
		g->relay_due_ms = now + RELOAD_RELAY_RETRY_S * 1000;
		return RELOAD_RELAY_RETRY_S * 1000;
	}
	relay_due(g, rc);
	if (relay_conf_same(cur, rc)) {
		relay_conf_unref(rc);
	} else {
		LOGI("next hops: new addresses (%u hops); the workers move to them", rc->nhops);
		relay_conf_log(rc);
		relay_publish(g, rc, started);
		*wake = true;
		if (g->vcache)
			LOGW("next hops: --verify-recipients still probes the addresses it started "
			     "with "
			     "(a restart moves it to the new ones)");
	}
	return g->relay_due_ms ? g->relay_due_ms - mono_ms() : -1;
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
static size_t changed_list(const struct gateway *g, const struct conf *a, const struct conf *b,
                           bool live, char *out, size_t outlen)
{
	const char *names[128];
	bool lv[128];
	size_t n = conf_changed(a, b, names, lv, 128), k = 0, len = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && i < 128; i++) {
		/* Redis counts the rates with the startup ones (io/cluster). */
		if (g->conf->limits_redis && !strncmp(names[i], "client-", 7) &&
		    strstr(names[i], "-rate"))
			lv[i] = false;
		/* Delivery itself switched on or off (io/relay is set up at start). */
		if ((!strcmp(names[i], "relay-to") || !strcmp(names[i], "route")) &&
		    !g->relay.nroutes != (!b->relay_to && !b->nroutes))
			lv[i] = false;
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
	struct milter_target *milters = NULL;
	struct conf *nc = calloc(1, sizeof(*nc));
	char err[640], live[2048], restart[2048], report[4800];
	struct anvil_conf ac;
	struct relay_conf *nrelay = NULL;
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
	if (nc->nmilters && !(milters = calloc(nc->nmilters, sizeof(*milters)))) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	if (milter_targets_load(milters, nc, err, sizeof(err)))
		goto fail;
	ac = reload_anvil_conf(g, nc);
	if (!g->anvil && reload_limits_on(&ac)) {
		/* The first per-client limit: the table, from now on. */
		g->anvil = anvil_new(&ac);
		if (!g->anvil) {
			snprintf(err, sizeof(err), "out of memory for the per-client table");
			goto fail;
		}
	}
	if (tables_load(nc, &t, err, sizeof(err)))
		goto fail;
	if (reload_relay(g, old, nc, &nrelay, err, sizeof(err))) {
		tables_unref(t);
		t = NULL;
		goto fail;
	}
	if (g->anvil)
		anvil_set_limits(g->anvil, &ac); /* nothing fails after this */
	t->anvil = g->anvil;
	t->has_milters = true;
	t->milters = milters;
	t->nmilters = nc->nmilters;
	milters = NULL;
	t->conf = nc;
	t->own_conf = nc;
	t->has_tls = true;
	t->tls = tls;
	t->tls_free = tls_free_opaque;
	reload_scf(g, nc, tls != NULL, &t->scf);
	tls = NULL;
	nc = NULL; /* the snapshot's now */

	changed_list(g, old && old->conf ? old->conf : g->conf, t->conf, true, live, sizeof(live));
	changed_list(g, g->conf, t->conf, false, restart, sizeof(restart));
	atomic_store_explicit(&log_threshold, (int)t->conf->log_level, memory_order_relaxed);
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
	if (nrelay) {
		relay_due(g, nrelay);
		relay_publish(g, nrelay, started);
		if (g->vcache)
			LOGW("reload: --verify-recipients still probes the next hops it started "
			     "with "
			     "(a restart moves it to the new ones)");
	}
	g->tables = t;
	tables_unref(old);
	snprintf(report, sizeof(report), "reloaded\nchanged: %s\nneeds a restart: %s\n",
	         live[0] ? live : "nothing", restart[0] ? restart : "nothing");
	report_write(g, report);
	return true;
fail:
	LOGE("reload failed, nothing changed: %s", err);
	tls_ctx_free(tls);
	free(milters);
	if (nc) {
		conf_fini(nc);
		free(nc);
	}
	snprintf(report, sizeof(report), "failed, nothing changed: %s\n", err);
	report_write(g, report);
	return false;
}

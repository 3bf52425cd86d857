/* main: the ringmx program. Parses the command line (core/conf), answers
 * `ringmx queue` from the spool directly, or starts the gateway (io/gateway)
 * and returns its exit status. */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <jemalloc/jemalloc.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/conf.h"
#include "core/log.h"
#include "core/tables.h"
#include "core/verify_cache.h"
#include "io/tls.h"
#include "io/cluster.h"
#include "io/dns.h"
#include "io/control.h"
#include "io/gateway.h"
#include "io/relay_dns.h"
#include "io/reload.h"
#include "io/milter.h"
#include "io/queue_cli.h"
#include "queue/spool.h"

/* `ringmx reload [--spool DIR]`: SIGHUP to the gateway running there. */
static int reload_main(int argc, char **argv)
{
	const char *spool = CONF_DEF_SPOOL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--spool") && i + 1 < argc) {
			spool = argv[++i];
		} else if (!strncmp(argv[i], "--spool=", 8)) {
			spool = argv[i] + 8;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf(
			    "Usage: ringmx reload [--spool DIR]\n"
			    "Asks the gateway running on the spool DIR to read its --domains-file\n"
			    "and --recipients-file files again (SIGHUP). Sessions keep the tables\n"
			    "their transaction started with; a file that fails to load leaves\n"
			    "the old tables in place (the gateway's log says which).\n");
			return 0;
		} else {
			fprintf(stderr, "ringmx reload: unexpected argument '%s'\n", argv[i]);
			return 2;
		}
	}
	return control_request_reload(spool);
}

/* `ringmx config [OPTIONS] [-n] [KEY...] | --example`: the configuration
 * the options and the file make, as `postconf` prints main.cf. */
static int config_main(int argc, char **argv)
{
	static struct conf conf;
	char **args = calloc((size_t)argc + 1, sizeof(*args));
	const char **keys = calloc((size_t)argc + 1, sizeof(*keys));
	char err[640];
	size_t nkeys = 0;
	bool changed = false, example = false;
	int nargs = 0, rc;

	if (!args || !keys) {
		fprintf(stderr, "ringmx config: out of memory\n");
		return 2;
	}
	args[nargs++] = argv[0];
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-n")) {
			changed = true;
		} else if (!strcmp(argv[i], "--example")) {
			example = true;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf(
			    "Usage: ringmx config [OPTIONS] [-n] [KEY...]\n"
			    "       ringmx config --example\n"
			    "Prints the effective configuration as \"key = value\" lines: the\n"
			    "defaults, then the configuration file (--config FILE, else %s\n"
			    "if present), then the OPTIONS given here. -n: only the keys that\n"
			    "differ from the defaults; KEY...: only these. --example prints every\n"
			    "key commented out with its default and help (a starting "
			    "ringmx.conf).\n",
			    CONF_DEF_CONFIG);
			free(args);
			free(keys);
			return 0;
		} else if (argv[i][0] == '-') {
			args[nargs++] = argv[i];
			/* An option's separate value goes with it. */
			if (!strchr(argv[i], '=') && i + 1 < argc && argv[i + 1][0] != '-' &&
			    strcmp(argv[i], "--check") &&
			    strcmp(argv[i], "--allow-untrusted-routing") &&
			    strcmp(argv[i], "--recipients-exact-case"))
				args[nargs++] = argv[++i];
		} else {
			keys[nkeys++] = argv[i];
		}
	}
	if (example) {
		conf_example(stdout);
		free(args);
		free(keys);
		return 0;
	}
	rc = conf_parse(&conf, nargs, args, stdout, err, sizeof(err));
	if (rc == CONF_OK && conf_print(&conf, stdout, changed, keys, nkeys, err, sizeof(err))) {
		fprintf(stderr, "ringmx config: %s\n", err);
		rc = CONF_ERR;
	} else if (rc == CONF_ERR) {
		fprintf(stderr, "%s\n", err);
	}
	conf_fini(&conf);
	free(args);
	free(keys);
	return rc == CONF_ERR ? 2 : 0;
}

static const char *allocator_name(void)
{
	static char name[64];
	const char *v = NULL;
	size_t sz = sizeof(v);

	if (mallctl("version", &v, &sz, NULL, 0) == 0 && v) {
		snprintf(name, sizeof(name), "jemalloc %s", v);
		return name;
	}
	return "unknown";
}

int main(int argc, char **argv)
{
	static struct conf conf;
	static struct gateway gw;
	char err[512];
	int rc;

	if (argc > 1 && strcmp(argv[1], "queue") == 0)
		return queue_cli_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "reload") == 0)
		return reload_main(argc - 1, argv + 1);
	conf_default_file = CONF_DEF_CONFIG;
	if (argc > 1 && strcmp(argv[1], "config") == 0)
		return config_main(argc - 1, argv + 1);

	rc = conf_parse(&conf, argc, argv, stdout, err, sizeof(err));
	if (rc == CONF_EXIT)
		return 0;
	if (rc != CONF_OK) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	atomic_store_explicit(&log_threshold, (int)conf.log_level, memory_order_relaxed);
	reload_resolve(&conf);
	log_setup(conf.hostname, conf.log_format);
	if (conf.ntls_certs) {
		struct tls_cert_conf certs[CONF_MAX_TLS_CERTS];

		for (unsigned i = 0; i < conf.ntls_certs; i++)
			certs[i] =
			    (struct tls_cert_conf){conf.tls_certs[i].cert, conf.tls_certs[i].key};
		if (tls_ctx_new(&gw.tls, certs, conf.ntls_certs, conf.tls_ciphers, err,
		                sizeof(err))) {
			fprintf(stderr, "ringmx: %s\n", err);
			conf_fini(&conf);
			return 2;
		}
	}
	if (conf.user && !getpwnam(conf.user)) {
		fprintf(stderr, "ringmx: --user: no such user '%s'\n", conf.user);
		tls_ctx_free(gw.tls);
		conf_fini(&conf);
		return 2;
	}
	err[0] = '\0';
	gw.dns = relay_dns_new(&conf, err, sizeof(err));
	if (!gw.dns) {
		fprintf(stderr, "ringmx: %s\n", err);
		tls_ctx_free(gw.tls);
		conf_fini(&conf);
		return 2;
	}
	if (relay_conf_build(&gw.relay, &conf, gw.dns, err, sizeof(err)) ||
	    (gw.relay.nroutes && (relay_hop_names_init(&gw.hopnames, &gw.relay) ||
	                          relay_conf_slots(&gw.relay, &gw.hopnames, err, sizeof(err))))) {
		fprintf(stderr, "%s\n", err[0] ? err : "ringmx: out of memory");
		relay_conf_free(&gw.relay);
		relay_hop_names_fini(&gw.hopnames);
		tls_ctx_free(gw.tls);
		conf_fini(&conf);
		return 2;
	}
	if (milter_targets_resolve(&gw, &conf, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		relay_conf_free(&gw.relay);
		relay_hop_names_fini(&gw.hopnames);
		tls_ctx_free(gw.tls);
		conf_fini(&conf);
		return 2;
	}
	if (tables_load(&conf, &gw.tables, err, sizeof(err))) {
		fprintf(stderr, "ringmx: %s\n", err);
		relay_conf_free(&gw.relay);
		relay_hop_names_fini(&gw.hopnames);
		tls_ctx_free(gw.tls);
		conf_fini(&conf);
		return 2;
	}
	if (conf.check) {
		printf("ringmx: configuration OK: %u listener(s), %u thread(s), spool %s, "
		       "%zu accepted domain(s), %zu relay network(s), %zu recipient(s) in %zu "
		       "domain table(s)\n",
		       conf.nlisten, conf.threads, conf.spool, conf.policy.ndomains,
		       conf.policy.nnets,
		       gw.tables->recipients ? recipients_entries(gw.tables->recipients) : 0,
		       gw.tables->recipients ? recipients_domains(gw.tables->recipients) : 0);
		tables_unref(gw.tables);
		relay_conf_free(&gw.relay);
		relay_hop_names_fini(&gw.hopnames);
		tls_ctx_free(gw.tls);
		conf_fini(&conf);
		return 0;
	}

	/* Every session is a descriptor: take the hard limit. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)conf.max_sessions + 64)
		LOGW("open file limit %llu is below --max-sessions %u: raise it (ulimit -n)",
		     (unsigned long long)rl.rlim_cur, conf.max_sessions);

	gw.conf = &conf;
	struct anvil_conf ac = reload_anvil_conf(&gw, &conf);

	if (reload_limits_on(&ac)) {
		gw.anvil = anvil_new(&ac);
		if (!gw.anvil) {
			fprintf(stderr, "ringmx: out of memory for the per-client table\n");
			return 2;
		}
	}
	if (dns_library_init() < 0) {
		fprintf(stderr, "ringmx: c-ares: initialisation failed\n");
		anvil_free(gw.anvil);
		return 1;
	}
	struct cluster_conf ccf = {0};
	if (conf.limits_redis) {
		char why[512];

		if (cluster_conf_init(&ccf, &conf, why, sizeof(why)) < 0) {
			fprintf(stderr, "ringmx: %s\n", why);
			anvil_free(gw.anvil);
			return 2;
		}
		if (ccf.ask)
			gw.cluster = &ccf;
		else
			LOGW("--limits-redis %s: no --client-*-rate to keep there; not used",
			     conf.limits_redis);
	}
	for (unsigned i = 0; i < conf.nlisten; i++)
		gw.nproxy += conf.listen[i].proxy;
	gw.nworkers = conf.threads;
	gw.argc = argc;
	gw.argv = argv;
	if (conf.verify_all || conf.verify_domains.ndomains) {
		gw.vcache = verify_cache_new(conf.verify_cache_size);
		if (!gw.vcache) {
			fprintf(stderr, "ringmx: out of memory for the verification cache\n");
			return 2;
		}
		LOGI("verify: recipients of %s are verified with their next hop (cache of %u, "
		     "positive %us, negative %us%s)",
		     conf.verify_all ? "every accepted domain" : "the --verify-recipients domains",
		     conf.verify_cache_size, conf.verify_positive_ttl, conf.verify_negative_ttl,
		     conf.verify_fail_open ? ", fail open" : "");
	}
	reload_scf(&gw, &conf, gw.tls != NULL, &gw.scf);
	gw.scf.rate_ask = !gw.cluster
	                      ? 0
	                      : (ccf.ask & (1u << CLUSTER_RATE_MSG) ? SMTP_RATE_MSG : 0) |
	                            (ccf.ask & (1u << CLUSTER_RATE_RCPT) ? SMTP_RATE_RCPT : 0);
	gw.tables->conf = &conf;
	gw.tables->scf = gw.scf;
	gw.tables->anvil = gw.anvil;
	for (unsigned i = 0; i < gw.nmilters; i++)
		LOGI("milter %u: %s (timeout %us, default action %s)", i + 1, gw.milters[i].text,
		     conf.milter_timeout,
		     conf.milter_default_action == CONF_MILTER_ACCEPT   ? "accept"
		     : conf.milter_default_action == CONF_MILTER_REJECT ? "reject"
		                                                        : "tempfail");
	LOGI("ringmx %s starting: hostname %s, spool %s, %u workers, allocator %s", RINGMX_VERSION,
	     conf.hostname, conf.spool, conf.threads, allocator_name());
	if (conf.durability_none)
		LOGW("--durability none: messages are acknowledged WITHOUT fdatasync; a crash or "
		     "power loss loses them. For benchmarks only.");
	if (gw.relay.nroutes)
		relay_conf_log(&gw.relay);
	else
		LOGI("no --relay-to: accepted mail stays in the spool");
	if (gw.tables->recipients)
		LOGI("recipient tables: %zu entries in %zu domains, %zu KB",
		     recipients_entries(gw.tables->recipients),
		     recipients_domains(gw.tables->recipients),
		     recipients_memory(gw.tables->recipients) / 1024);
	reload_relay_start(&gw);
	rc = gateway_run(&gw);
	verify_cache_free(gw.vcache);
	anvil_free(gw.anvil);
	tables_unref(gw.tables);
	relay_conf_unref(gw.relay_cur);
	relay_conf_free(&gw.relay);
	relay_hop_names_fini(&gw.hopnames);
	relay_dns_free(gw.dns);
	tls_ctx_free(gw.tls);
	conf_fini(&conf);
	return rc;
}

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
#include "io/tls.h"
#include "io/cluster.h"
#include "io/control.h"
#include "io/gateway.h"
#include "queue/spool.h"

static int queue_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"flush", no_argument, NULL, 'f'},
	    {"delete", required_argument, NULL, 'd'},
	    {"spool", required_argument, NULL, 's'},
	    {"count", no_argument, NULL, 'c'},
	    {"all", no_argument, NULL, 'a'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *spool = CONF_DEF_SPOOL;
	bool count = false, all = false, flush = false;
	const char *del = NULL;
	int opt, err;

	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			spool = optarg;
			break;
		case 'c':
			count = true;
			break;
		case 'a':
			all = true;
			break;
		case 'f':
			flush = true;
			break;
		case 'd':
			del = optarg;
			break;
		case 'h':
			printf(
			    "Usage: ringmx queue [--spool DIR] [--count] [--all]\n"
			    "       ringmx queue [--spool DIR] --flush | --delete ID\n"
			    "Lists the messages in the spool waiting for delivery (queue id,\n"
			    "size, sender, age, recipients), or with --count only their number;\n"
			    "--all adds the done ones, with their state as a sixth field. Reads\n"
			    "the spool directly: works whether the gateway runs or not.\n"
			    "--flush asks the running gateway to retry deferred messages now;\n"
			    "--delete ID marks one message deleted and tells a running\n"
			    "gateway to forget it (one already being delivered may still go).\n");
			return 0;
		case ':':
			fprintf(stderr, "ringmx queue: option '%s' needs an argument\n",
			        argv[optind - 1]);
			return 2;
		default:
			fprintf(stderr, "ringmx queue: unknown option '%s'\n", argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ringmx queue: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (del) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		err = spool_delete(spool, del,
		                   (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
		if (err) {
			fprintf(stderr, "ringmx queue: --delete %s: %s\n", del,
			        err == -ENOENT ? "no such message waiting" : strerror(-err));
			return 1;
		}
		printf("%s: deleted\n", del);
		control_request_drop(spool, del);
		return 0;
	}
	if (flush)
		return control_request_flush(spool);
	err = spool_list(spool, (count ? SPOOL_LIST_COUNT : 0) | (all ? SPOOL_LIST_ALL : 0), stdout,
	                 time(NULL));
	if (err) {
		fprintf(stderr, "ringmx queue: %s: %s\n", spool, strerror(-err));
		return 1;
	}
	return 0;
}

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
	char err[512], host[256];
	long ncpu;
	int rc;

	if (argc > 1 && strcmp(argv[1], "queue") == 0)
		return queue_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "reload") == 0)
		return reload_main(argc - 1, argv + 1);

	rc = conf_parse(&conf, argc, argv, stdout, err, sizeof(err));
	if (rc == CONF_EXIT)
		return 0;
	if (rc != CONF_OK) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	log_threshold = conf.log_level;
	if (conf.threads == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		conf.threads = ncpu > 0 ? (unsigned)ncpu : 1;
		/* As --threads allows: the ring table and the queue id's worker
		 * byte hold 256 workers at most. */
		if (conf.threads > 256) {
			LOGW("%u cores: starting 256 workers, the most there can be", conf.threads);
			conf.threads = 256;
		}
	}
	if (!conf.hostname) {
		if (gethostname(host, sizeof(host)) != 0 || !host[0])
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		conf.hostname = host;
	}
	if (conf.spool_min_free == CONF_DEF_SPOOL_MIN_FREE)
		conf.spool_min_free =
		    conf.max_message_size ? 2 * conf.max_message_size : 64ull << 20;
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
	if (relay_conf_build(&gw.relay, &conf, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		relay_conf_free(&gw.relay);
		tls_ctx_free(gw.tls);
		conf_fini(&conf);
		return 2;
	}
	if (tables_load(&conf, &gw.tables, err, sizeof(err))) {
		fprintf(stderr, "ringmx: %s\n", err);
		relay_conf_free(&gw.relay);
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
	if (conf.client_max_sessions || conf.client_conn_rate.n || conf.client_msg_rate.n ||
	    conf.client_rcpt_rate.n) {
		gw.anvil = anvil_new(&(struct anvil_conf){
		    .prefix4 = conf.client_prefix4,
		    .prefix6 = conf.client_prefix6,
		    .max_sessions = conf.client_max_sessions,
		    .conn = conf.client_conn_rate,
		    .msg = conf.client_msg_rate,
		    .rcpt = conf.client_rcpt_rate,
		    .max_entries = conf.client_table_size,
		});
		if (!gw.anvil) {
			fprintf(stderr, "ringmx: out of memory for the per-client table\n");
			return 2;
		}
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
	gw.scf = (struct smtp_server_conf){
	    .hostname = conf.hostname,
	    .policy = &conf.policy,
	    .max_message_size = conf.max_message_size,
	    .max_recipients = conf.max_recipients,
	    .max_errors = conf.max_errors,
	    .error_delay_ms = conf.error_delay_ms,
	    .overload_max_errors = conf.overload_max_errors,
	    .max_line = conf.max_line_length,
	    .bare_policy = conf.bare_policy,
	    .long_line_policy = conf.long_line_policy,
	    .nul_strip = conf.nul_strip,
	    .anvil = conf.client_msg_rate.n || conf.client_rcpt_rate.n ? gw.anvil : NULL,
	    .rate_ask = !gw.cluster
	                    ? 0
	                    : (ccf.ask & (1u << CLUSTER_RATE_MSG) ? SMTP_RATE_MSG : 0) |
	                          (ccf.ask & (1u << CLUSTER_RATE_RCPT) ? SMTP_RATE_RCPT : 0),
	    .tls_available = gw.tls != NULL,
	    .allow_untrusted_routing = conf.allow_untrusted_routing,
	    .max_unknown = conf.max_unknown_recipients,
	    .unknown_delay_ms = conf.unknown_recipient_delay_ms,
	};
	LOGI("ringmx %s starting: hostname %s, spool %s, %u workers, allocator %s", RINGMX_VERSION,
	     conf.hostname, conf.spool, conf.threads, allocator_name());
	if (conf.durability_none)
		LOGW("--durability none: messages are acknowledged WITHOUT fdatasync; a crash or "
		     "power loss loses them. For benchmarks only.");
	if (gw.relay.nroutes)
		for (unsigned i = 0; i < gw.relay.nroutes; i++)
			for (unsigned k = 0; k < gw.relay.routes[i].nhops; k++)
				LOGI("relay: %s next hop %u: %s",
				     gw.relay.routes[i].domain ? gw.relay.routes[i].domain
				                               : "default route",
				     k + 1, gw.relay.routes[i].hops[k].text);
	else
		LOGI("no --relay-to: accepted mail stays in the spool");
	if (gw.tables->recipients)
		LOGI("recipient tables: %zu entries in %zu domains, %zu KB",
		     recipients_entries(gw.tables->recipients),
		     recipients_domains(gw.tables->recipients),
		     recipients_memory(gw.tables->recipients) / 1024);
	rc = gateway_run(&gw);
	anvil_free(gw.anvil);
	tables_unref(gw.tables);
	relay_conf_free(&gw.relay);
	tls_ctx_free(gw.tls);
	conf_fini(&conf);
	return rc;
}

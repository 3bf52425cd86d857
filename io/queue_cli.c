/* queue_cli: `ringmx queue`, the operator's tool for the queue. See
 * queue_cli.h. Every changing command (hold, release, delete) is durable
 * in the spool before it returns (hold log, done log: queue/spool.h), and
 * only then told to the running gateway (io/control: a request file and
 * SIGUSR2), which acts on it at once; requeue only tells the gateway. The
 * tool never writes a file the gateway writes. */
#include "io/queue_cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/conf.h"
#include "core/qtool.h"
#include "io/control.h"
#include "queue/spool.h"

static const char usage[] =
    "Usage: ringmx queue [--spool DIR] [SELECTORS] [--count] [--all] [--json]\n"
    "       ringmx queue [--spool DIR] show ID... | show SELECTORS\n"
    "       ringmx queue [--spool DIR] shape [--sender] [SELECTORS]\n"
    "       ringmx queue [--spool DIR] hold|release|requeue|delete ID... | --all | SELECTORS\n"
    "       ringmx queue [--spool DIR] --flush | --delete ID\n"
    "Lists the messages in the spool waiting for delivery, one per line (queue\n"
    "id, size, sender, age, recipients, state: active, deferred or held), or\n"
    "with --count only their number; --all adds the done ones; --json writes\n"
    "one JSON object per message per line (postqueue -j's fields). Reads the\n"
    "spool directly: works whether the gateway runs or not.\n"
    "  show ID...       envelope, state, deferral history and headers\n"
    "  shape            messages by recipient domain (--sender: sender domain)\n"
    "                   and age in minutes, as Postfix's qshape\n"
    "  hold ID...       never delivered nor expired until released\n"
    "  release ID...    back to delivery, tried at once\n"
    "  requeue ID...    deliver now (a deferred message; not a held one)\n"
    "  delete ID...     removed from the queue for good\n"
    "  --all            (hold, release, requeue, delete) every message selected\n"
    "Selectors (together: all must match):\n"
    "  --from ADDR      sender: a@b, @b or b (its domain), <> (null sender)\n"
    "  --to ADDR        a recipient, the same way\n"
    "  --older-than D   arrived at least D ago: 90, 90s, 5m, 2h, 3d, 1w\n"
    "  --state S        active, deferred or held (comma-separated for several)\n"
    "hold, release and delete are durable in the spool when they return, and a\n"
    "running gateway acts on them at once (one being delivered may still go).\n"
    "--flush asks the running gateway to retry every deferred message now;\n"
    "--delete ID is delete ID.\n";

enum cmd { C_LIST, C_SHOW, C_SHAPE, C_HOLD, C_RELEASE, C_REQUEUE, C_DELETE };

static const char *const cmd_names[] = {
    [C_LIST] = "list",       [C_SHOW] = "show",       [C_SHAPE] = "shape",   [C_HOLD] = "hold",
    [C_RELEASE] = "release", [C_REQUEUE] = "requeue", [C_DELETE] = "delete",
};

static int parse_states(const char *s, unsigned *out)
{
	char *copy = strdup(s), *save = NULL;
	int err = 0;

	if (!copy)
		return -ENOMEM;
	*out = 0;
	for (char *t = strtok_r(copy, ",", &save); t && !err; t = strtok_r(NULL, ",", &save)) {
		if (!strcmp(t, "active"))
			*out |= SPOOL_SEL_ACTIVE;
		else if (!strcmp(t, "deferred"))
			*out |= SPOOL_SEL_DEFERRED;
		else if (!strcmp(t, "held") || !strcmp(t, "hold"))
			*out |= SPOOL_SEL_HELD;
		else
			err = -EINVAL;
	}
	free(copy);
	return err || !*out ? -EINVAL : 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Whether the action applies to a message in <state>; else why not. */
static const char *skip_why(enum cmd c, unsigned state)
{
	if (c == C_HOLD && state == SPOOL_SEL_HELD)
		return "already held";
	if (c == C_RELEASE && state != SPOOL_SEL_HELD)
		return "not held";
	if (c == C_REQUEUE && state == SPOOL_SEL_HELD)
		return "held: release it instead";
	return NULL;
}

static const char *const done_words[] = {
    [C_HOLD] = "held",
    [C_RELEASE] = "released",
    [C_REQUEUE] = "requeued",
    [C_DELETE] = "deleted",
};

static const enum qtool_op ops[] = {
    [C_HOLD] = QTOOL_HOLD,
    [C_RELEASE] = QTOOL_RELEASE,
    [C_REQUEUE] = QTOOL_REQUEUE,
    [C_DELETE] = QTOOL_DELETE,
};

/* hold, release, requeue, delete on what <sel> selects. */
static int act(const char *spool, enum cmd c, const struct spool_select *sel)
{
	struct spool_pick *v = NULL;
	struct buf req = BUF_INIT;
	size_t n = 0, k = 0, skipped = 0;
	uint64_t start = now_ns();
	int err, rc = 0;

	err = spool_pick(spool, sel, time(NULL), c == C_DELETE, &v, &n);
	if (err) {
		fprintf(stderr, "ringmx queue: %s: %s\n", spool, strerror(-err));
		return 1;
	}
	for (size_t i = 0; i < sel->nids; i++) {
		bool found = false;

		for (size_t j = 0; j < n && !found; j++)
			found = !strcmp(v[j].qid, sel->ids[i]);
		if (!found) {
			fprintf(stderr, "ringmx queue: %s: no such message waiting%s\n",
			        sel->ids[i],
			        sel->states || sel->from || sel->to || sel->older_than
			            ? " (that the selectors pick)"
			            : "");
			rc = 1;
		}
	}
	/* The messages the action applies to, first in <v>. */
	for (size_t i = 0; i < n; i++) {
		const char *why = skip_why(c, v[i].state);

		if (why) {
			printf("%s: %s\n", v[i].qid, why);
			skipped++;
			continue;
		}
		v[k++] = v[i];
	}
	if (c == C_HOLD || c == C_RELEASE)
		err = spool_hold_picks(spool, v, k, c == C_HOLD, start, start);
	else if (c == C_DELETE)
		err = spool_delete_picks(spool, v, k, start);
	if (err) {
		fprintf(stderr, "ringmx queue: %s: %s: nothing changed\n", cmd_names[c],
		        strerror(-err));
		free(v);
		return 1;
	}
	for (size_t i = 0; i < k && !err; i++) {
		printf("%s: %s\n", v[i].qid, done_words[c]);
		err = qtool_req_format(&req, ops[c], v[i].qid);
	}
	free(v);
	if (!err && k) {
		err = control_request(spool, &req);
		if (err == 0)
			printf("no gateway running on %s: %s\n", spool,
			       c == C_REQUEUE ? "messages are tried when it starts"
			                      : "it reads the change when it starts");
		err = err > 0 ? 0 : err;
	}
	buf_free(&req);
	if (err < 0) {
		fprintf(stderr,
		        "ringmx queue: cannot tell the gateway: %s (%s is in the spool: "
		        "the gateway reads it at its next start)\n",
		        strerror(-err), c == C_REQUEUE ? "nothing" : "the change");
		return 1;
	}
	if (!k && !skipped && !sel->nids)
		printf("no message selected\n");
	return rc;
}

int queue_cli_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"flush", no_argument, NULL, 'f'},
	    {"delete", required_argument, NULL, 'd'},
	    {"spool", required_argument, NULL, 's'},
	    {"count", no_argument, NULL, 'c'},
	    {"all", no_argument, NULL, 'a'},
	    {"json", no_argument, NULL, 'j'},
	    {"sender", no_argument, NULL, 'S'},
	    {"from", required_argument, NULL, 'F'},
	    {"to", required_argument, NULL, 'T'},
	    {"older-than", required_argument, NULL, 'o'},
	    {"state", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct spool_select sel = {0};
	const char *spool = CONF_DEF_SPOOL, *del = NULL;
	bool count = false, all = false, flush = false, json = false, sender = false;
	enum cmd c = C_LIST;
	int opt, err, first;

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
		case 'j':
			json = true;
			break;
		case 'S':
			sender = true;
			break;
		case 'f':
			flush = true;
			break;
		case 'd':
			del = optarg;
			break;
		case 'F':
			sel.from = optarg;
			break;
		case 'T':
			sel.to = optarg;
			break;
		case 'o':
			if (qtool_duration(optarg, &sel.older_than)) {
				fprintf(stderr,
				        "ringmx queue: --older-than '%s': a duration such as "
				        "90s, 5m, 2h, 3d\n",
				        optarg);
				return 2;
			}
			break;
		case 't':
			if (parse_states(optarg, &sel.states)) {
				fprintf(stderr,
				        "ringmx queue: --state '%s': active, deferred or held\n",
				        optarg);
				return 2;
			}
			break;
		case 'h':
			fputs(usage, stdout);
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
	first = optind;
	if (first < argc) {
		bool known = false;

		for (unsigned i = C_LIST; i <= C_DELETE && !known; i++)
			if (!strcmp(argv[first], cmd_names[i])) {
				c = (enum cmd)i;
				known = true;
			}
		if (!known) {
			fprintf(stderr,
			        "ringmx queue: unexpected argument '%s' (commands: show, shape, "
			        "hold, release, requeue, delete)\n",
			        argv[first]);
			return 2;
		}
		first++;
	}
	if (del) {
		if (c != C_LIST || first < argc) {
			fprintf(stderr, "ringmx queue: --delete ID takes no command or other id\n");
			return 2;
		}
		c = C_DELETE;
	}
	if (first < argc) {
		if (c == C_LIST || c == C_SHAPE) {
			fprintf(stderr, "ringmx queue: %s takes no queue id: '%s' (use show)\n",
			        cmd_names[c], argv[first]);
			return 2;
		}
		sel.ids = (const char *const *)(argv + first);
		sel.nids = (size_t)(argc - first);
	} else if (del) {
		sel.ids = &del;
		sel.nids = 1;
	}
	for (size_t i = 0; i < sel.nids; i++)
		if (!qtool_qid_ok(sel.ids[i], strlen(sel.ids[i]))) {
			fprintf(stderr, "ringmx queue: '%s' is not a queue id\n", sel.ids[i]);
			return 2;
		}
	if (flush) {
		if (c != C_LIST || sel.nids) {
			fprintf(stderr,
			        "ringmx queue: --flush takes no command (requeue ID retries "
			        "one)\n");
			return 2;
		}
		return control_request_flush(spool);
	}
	if (c >= C_HOLD) {
		if (!sel.nids && !all && !sel.from && !sel.to && !sel.older_than && !sel.states) {
			fprintf(stderr, "ringmx queue: %s needs queue ids, --all or a selector\n",
			        cmd_names[c]);
			return 2;
		}
		if (all && sel.nids) {
			fprintf(stderr, "ringmx queue: %s: queue ids or --all, not both\n",
			        cmd_names[c]);
			return 2;
		}
		return act(spool, c, &sel);
	}
	if (c == C_SHOW && !sel.nids && !sel.from && !sel.to && !sel.older_than && !sel.states) {
		fprintf(stderr, "ringmx queue: show needs queue ids or a selector\n");
		return 2;
	}
	if ((json && (count || c != C_LIST)) || (sender && c != C_SHAPE) || (all && c != C_LIST) ||
	    (count && c != C_LIST)) {
		fprintf(stderr, "ringmx queue: --json, --count and --all go with the listing, "
		                "--sender with shape\n");
		return 2;
	}
	if (c == C_LIST && !json)
		err = spool_list_sel(spool, &sel,
		                     (count ? SPOOL_LIST_COUNT : 0) | (all ? SPOOL_LIST_ALL : 0),
		                     stdout, time(NULL));
	else
		err = spool_report(spool, &sel,
		                   c == C_SHOW ? SPOOL_REPORT_SHOW
		                   : c == C_SHAPE
		                       ? (sender ? SPOOL_REPORT_SHAPE_SENDER : SPOOL_REPORT_SHAPE)
		                       : SPOOL_REPORT_JSON,
		                   stdout, time(NULL));
	if (err) {
		fprintf(stderr, "ringmx queue: %s: %s\n", spool, strerror(-err));
		return 1;
	}
	if (c == C_SHOW && sel.nids) {
		/* An id that showed nothing is an error, as for the actions. */
		struct spool_pick *v = NULL;
		size_t n = 0;
		int rc = 0;

		if (spool_pick(spool, &sel, time(NULL), false, &v, &n))
			return 1;
		for (size_t i = 0; i < sel.nids; i++) {
			bool found = false;

			for (size_t j = 0; j < n && !found; j++)
				found = !strcmp(v[j].qid, sel.ids[i]);
			if (!found) {
				fprintf(stderr, "ringmx queue: %s: no such message waiting\n",
				        sel.ids[i]);
				rc = 1;
			}
		}
		free(v);
		return rc;
	}
	return 0;
}

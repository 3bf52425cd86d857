/* conf_print: the views of core/conf.c's option table: --help, `ringmx
 * config` (every key, the changed ones, or one), the example ringmx.conf,
 * and the keys two configurations differ in (a reload's report). libc
 * only. See conf.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/conf-int.h"
#include "core/conf.h"

#define FIELD(c, k, type) ((const type *)(const void *)((const char *)(c) + (k)->off))

/* A size as a user would write it: 64m, 256k, 10240000. */
static void size_format(uint64_t v, char *out, size_t outlen)
{
	if (v && v % (1ull << 30) == 0)
		snprintf(out, outlen, "%" PRIu64 "g", v >> 30);
	else if (v && v % (1ull << 20) == 0)
		snprintf(out, outlen, "%" PRIu64 "m", v >> 20);
	else if (v && v % (1ull << 10) == 0 && v < (1ull << 20))
		snprintf(out, outlen, "%" PRIu64 "k", v >> 10);
	else
		snprintf(out, outlen, "%" PRIu64, v);
}

/* The values given to list key <k>, joined by <sep>; its default if none
 * was given. */
static void list_format(const struct conf *c, const struct conf_key *k, const char *sep, char *out,
                        size_t outlen)
{
	size_t n = 0;
	bool any = false;

	out[0] = '\0';
	for (unsigned i = 0; i < c->ngiven && n < outlen; i++) {
		if (&conf_keys[c->given[i].key] != k)
			continue;
		n += (size_t)snprintf(out + n, outlen - n, "%s%s", any ? sep : "", c->given[i].val);
		any = true;
	}
	if (!any && k->def)
		snprintf(out, outlen, "%s", k->def);
}

void conf_key_format(const struct conf *c, const struct conf_key *k, char *out, size_t outlen)
{
	const char *s;

	switch (k->type) {
	case CT_FLAG:
		snprintf(out, outlen, "%s", *FIELD(c, k, bool) ? "yes" : "no");
		return;
	case CT_UINT:
		snprintf(out, outlen, "%u", *FIELD(c, k, unsigned));
		return;
	case CT_SIZE:
		if (*FIELD(c, k, uint64_t) == UINT64_MAX && k->def && !strcmp(k->def, "auto"))
			snprintf(out, outlen, "auto");
		else
			size_format(*FIELD(c, k, uint64_t), out, outlen);
		return;
	case CT_ENUM:
		snprintf(out, outlen, "%s",
		         k->words[k->boolean ? *FIELD(c, k, bool) : *FIELD(c, k, int)]);
		return;
	case CT_STR:
		s = *(const char *const *)(const void *)((const char *)c + k->off);
		snprintf(out, outlen, "%s", s ? s : "");
		return;
	case CT_LIST:
		list_format(c, k, ", ", out, outlen);
		return;
	default:
		out[0] = '\0';
		return;
	}
}

/* Option column 2-29, text from column 30, at most 100 columns in all. A
 * second line under an option adds detail; the default stays on the first. */
static void usage_key(FILE *out, const struct conf_key *k)
{
	char col[64], text[256];
	const char *def = k->defdoc ? k->defdoc : k->def;

	if (k->id < 256)
		snprintf(col, sizeof(col), "-%c, --%s", k->id, k->name);
	else
		snprintf(col, sizeof(col), "--%s%s%s", k->name, k->metavar ? " " : "",
		         k->metavar ? k->metavar : "");
	if (def && def[0])
		snprintf(text, sizeof(text), "%s (default: %s)", k->help, def);
	else
		snprintf(text, sizeof(text), "%s", k->help);
	if (2 + strlen(col) + 2 + strlen(text) > 100) {
		fprintf(out, "  %s\n", col);
		col[0] = '\0';
	}
	fprintf(out, "  %-26s  %s\n", col, text);
	if (k->more)
		fprintf(out, "  %-26s  %s\n", "", k->more);
}

void conf_usage(FILE *out)
{
	fprintf(out, "Usage: ringmx [OPTIONS]\n"
	             "       ringmx queue --spool DIR [--count] [--all] [--json]\n"
	             "       ringmx queue --spool DIR show|shape|hold|release|requeue|delete ...\n"
	             "       ringmx reload --spool DIR\n"
	             "       ringmx config [OPTIONS] [-n] [KEY...]\n"
	             "\n"
	             "An SMTP inbound gateway: accepts mail for its domains, and for any domain\n"
	             "from relay networks, stores it in the spool and relays it to the next hops.\n"
	             "Every option is also a key of the configuration file (key = value).\n"
	             "\n"
	             "Options:\n");
	for (size_t i = 0; i < conf_nkeys; i++)
		usage_key(out, &conf_keys[i]);
	fprintf(out, "\n"
	             "Configuration:\n");
	fprintf(out, "  %-26s  %s\n", "ringmx config", "print the effective configuration");
	fprintf(out, "  %-26s  %s\n", "             -n", "only what differs from the defaults");
	fprintf(out, "  %-26s  %s\n", "             KEY...", "only these keys");
	fprintf(out, "  %-26s  %s\n", "             --example",
	        "an example file: every key, commented out");
	fprintf(out, "  %-26s  %s\n", "ringmx reload --spool DIR",
	        "the running gateway reads its file again (SIGHUP)");
	fprintf(out, "\n"
	             "Queue:\n");
	static const char *const queue[][2] = {
	    {"ringmx queue --spool DIR",
	     "list the spooled messages: id, size, sender, age, recipients, state"},
	    {"             --count", "print only the number of messages"},
	    {"             --all", "also the done ones, with their state"},
	    {"             --json", "one JSON object per message per line (as postqueue)"},
	    {"ringmx queue show ID...", "envelope, state, deferral history and headers"},
	    {"ringmx queue shape", "counts by recipient domain and age (qshape);"},
	    {"", "--sender: by sender domain"},
	    {"ringmx queue hold ID...", "never delivered nor expired until released"},
	    {"ringmx queue release ID...", "back to delivery, tried at once"},
	    {"ringmx queue requeue ID...", "a deferred message is tried now"},
	    {"ringmx queue delete ID...", "removed for good (--delete ID: the same)"},
	    {"", "hold, release, requeue, delete: ID..., --all or selectors"},
	    {"  --from ADDR, --to ADDR", "selectors: sender, a recipient (a@b, @b, b, <>)"},
	    {"  --older-than DURATION", "arrived at least that long ago (90s, 5m, 2h, 3d)"},
	    {"  --state STATE", "active, deferred or held"},
	    {"ringmx queue --flush", "the running gateway retries deferred messages now"},
	};

	for (size_t i = 0; i < sizeof(queue) / sizeof(queue[0]); i++)
		fprintf(out, "  %-26s  %s\n", queue[i][0], queue[i][1]);
}

static bool wanted(const struct conf_key *k, const char *const *keys, size_t nkeys)
{
	if (!nkeys)
		return true;
	for (size_t i = 0; i < nkeys; i++) {
		if (!strcmp(keys[i], k->name))
			return true;
	}
	return false;
}

int conf_print(const struct conf *c, FILE *out, bool changed_only, const char *const *keys,
               size_t nkeys, char *err, size_t errlen)
{
	static struct conf defaults;
	char v[4096], d[4096];

	for (size_t i = 0; i < nkeys; i++) {
		const struct conf_key *k = conf_key_find(keys[i], strlen(keys[i]));

		if (!k || k->type == CT_ACTION) {
			snprintf(err, errlen, "unknown key '%.100s'", keys[i]);
			return -ENOENT;
		}
	}
	conf_defaults_into(&defaults);
	for (size_t i = 0; i < conf_nkeys; i++) {
		const struct conf_key *k = &conf_keys[i];
		bool any = false;

		if (k->type == CT_ACTION || !wanted(k, keys, nkeys))
			continue;
		conf_key_format(c, k, v, sizeof(v));
		conf_key_format(&defaults, k, d, sizeof(d));
		if (changed_only && !strcmp(v, d))
			continue;
		/* A list: one line per value, as a file repeats the key. */
		for (unsigned g = 0; k->type == CT_LIST && g < c->ngiven; g++) {
			if (&conf_keys[c->given[g].key] == k) {
				fprintf(out, "%s = %s\n", k->name, c->given[g].val);
				any = true;
			}
		}
		if (!any)
			fprintf(out, "%s =%s%s\n", k->name, v[0] ? " " : "", v);
	}
	conf_fini(&defaults);
	return 0;
}

void conf_example(FILE *out)
{
	static struct conf defaults;
	char d[4096];

	conf_defaults_into(&defaults);
	fprintf(out, "# ringmx.conf: the configuration of the ringmx SMTP gateway; see\n"
	             "# ringmx.conf(5). Each key is a long option of ringmx(8) without its\n"
	             "# \"--\": \"key = value\"; a list may be split over lines that start with\n"
	             "# white space, its items separated by commas or spaces. Options on the\n"
	             "# command line replace the keys here. Every key is shown commented out\n"
	             "# with its default; `ringmx config -n` prints what a file changes.\n"
	             "# Generated from the option table by `ringmx config --example`.\n");
	for (size_t i = 0; i < conf_nkeys; i++) {
		const struct conf_key *k = &conf_keys[i];

		if (k->type == CT_ACTION)
			continue;
		conf_key_format(&defaults, k, d, sizeof(d));
		fprintf(out, "\n# %s%s\n", k->help, k->flags & CK_LIVE ? "" : " [restart]");
		if (k->more)
			fprintf(out, "# %s\n", k->more);
		fprintf(out, "#%s =%s%s\n", k->name, d[0] ? " " : "", d);
	}
	conf_fini(&defaults);
}

size_t conf_changed(const struct conf *a, const struct conf *b, const char **names, bool *live,
                    size_t max)
{
	char va[4096], vb[4096];
	size_t n = 0;

	for (size_t i = 0; i < conf_nkeys; i++) {
		const struct conf_key *k = &conf_keys[i];

		if (k->type == CT_ACTION)
			continue;
		if (k->type == CT_LIST) {
			list_format(a, k, "\n", va, sizeof(va));
			list_format(b, k, "\n", vb, sizeof(vb));
		} else {
			conf_key_format(a, k, va, sizeof(va));
			conf_key_format(b, k, vb, sizeof(vb));
		}
		if (!strcmp(va, vb))
			continue;
		if (n < max) {
			names[n] = k->name;
			if (live)
				live[n] = k->flags & CK_LIVE;
		}
		n++;
	}
	return n;
}

/* rmx_testmilter: a small filter on the real libmilter (Debian's
 * libmilter-dev) for tests/integration/it_milter.py. What it does is
 * chosen by the message:
 *
 * - a recipient whose local part is "reject-rcpt" or "tempfail-rcpt" is
 *   refused at RCPT (5xx / 4xx);
 * - a header "X-Test" (or "X-Test-<name>" with -n name) lists actions,
 *   comma-separated, taken at end of message: accept, reject-multi (a
 *   two-line 550 5.7.1 reply), reject, tempfail, discard, addheader,
 *   insheader, chgheader (Subject), delheader (X-Delete-Me), chgfrom,
 *   addrcpt, delrcpt (del@example.com), replbody, quarantine, progress
 *   (3 s of smfi_progress() every 0.5 s), sleep (5 s, past the client's
 *   timeout), macros (an X-Macros header with what the macros said);
 * - -c: every message gets "X-Chain-<name>: saw=<X- headers seen>
 *   len=<body octets> chunks=<body chunks>", so that a filter chained
 *   after another shows what it was given;
 * - skip (an action too): the body callback answers SKIP after the first
 *   chunk;
 * - -q: it asks for the quarantine action at negotiation;
 * - -l FILE: a line per body chunk, "body <octets> <octets so far>
 *   <seconds since the epoch>", and "eom <octets>" at the end of message,
 *   each flushed at once: a test sees when the body reached the filter.
 *
 * Usage: rmx_testmilter -p SOCKET [-n NAME] [-c] [-q] [-l FILE]   (SOCKET as libmilter:
 * inet:PORT@127.0.0.1 or unix:/path). Runs until killed. */
#include <libmilter/mfapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>

static const char *name = "";
static char hdr_name[64] = "X-Test";
static int chain;
static FILE *chunk_log;

struct priv {
	char actions[512];
	char seen[1024];
	char macros[1024];
	size_t body_len;
	unsigned chunks;
};

static struct priv *priv_of(SMFICTX *ctx)
{
	struct priv *p = smfi_getpriv(ctx);

	if (!p) {
		p = calloc(1, sizeof(*p));
		smfi_setpriv(ctx, p);
	}
	return p;
}

static int has(const struct priv *p, const char *act)
{
	char tmp[512], *save = NULL;

	snprintf(tmp, sizeof(tmp), "%s", p->actions);
	for (char *t = strtok_r(tmp, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save))
		if (!strcasecmp(t, act))
			return 1;
	return 0;
}

static void note_macros(SMFICTX *ctx, struct priv *p, const char *const *names)
{
	for (; *names; names++) {
		char *v = smfi_getsymval(ctx, (char *)*names);
		size_t n = strlen(p->macros);

		if (v)
			snprintf(p->macros + n, sizeof(p->macros) - n, "%s%s=%s", n ? "; " : "",
			         *names, v);
	}
}

static sfsistat on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
	static const char *const m[] = {
	    "j",         "_", "{daemon_name}", "{client_addr}", "{client_port}", "{client_name}",
	    "{if_addr}", NULL};
	struct priv *p = priv_of(ctx);

	(void)sa;
	memset(p, 0, sizeof(*p));
	note_macros(ctx, p, m);
	size_t n = strlen(p->macros);
	snprintf(p->macros + n, sizeof(p->macros) - n, "; host=%s", host);
	return SMFIS_CONTINUE;
}

static sfsistat on_helo(SMFICTX *ctx, char *helo)
{
	static const char *const m[] = {"{tls_version}", "{cipher}", "{cipher_bits}", NULL};
	struct priv *p = priv_of(ctx);
	size_t n = strlen(p->macros);

	snprintf(p->macros + n, sizeof(p->macros) - n, "; helo=%s", helo);
	note_macros(ctx, p, m);
	return SMFIS_CONTINUE;
}

static sfsistat on_mail(SMFICTX *ctx, char **argv)
{
	static const char *const m[] = {"{mail_addr}", NULL};
	struct priv *p = priv_of(ctx);
	char keep[1024];

	/* A new message: what the connection stages noted stays. */
	snprintf(keep, sizeof(keep), "%s", p->macros);
	p->actions[0] = p->seen[0] = '\0';
	p->body_len = 0;
	p->chunks = 0;
	snprintf(p->macros, sizeof(p->macros), "%s; from=%s", keep, argv[0]);
	note_macros(ctx, p, m);
	return SMFIS_CONTINUE;
}

static sfsistat on_rcpt(SMFICTX *ctx, char **argv)
{
	static const char *const m[] = {"{rcpt_addr}", NULL};
	struct priv *p = priv_of(ctx);

	note_macros(ctx, p, m);
	if (!strncasecmp(argv[0], "<reject-rcpt@", 13))
		return SMFIS_REJECT;
	if (!strncasecmp(argv[0], "<tempfail-rcpt@", 15))
		return SMFIS_TEMPFAIL;
	return SMFIS_CONTINUE;
}

static sfsistat on_header(SMFICTX *ctx, char *h, char *v)
{
	struct priv *p = priv_of(ctx);

	if (!strcasecmp(h, hdr_name))
		snprintf(p->actions, sizeof(p->actions), "%s", v);
	if (!strncasecmp(h, "X-", 2)) {
		size_t n = strlen(p->seen);

		snprintf(p->seen + n, sizeof(p->seen) - n, "%s%s", n ? "," : "", h);
	}
	return SMFIS_CONTINUE;
}

static sfsistat on_body(SMFICTX *ctx, unsigned char *b, size_t len)
{
	struct priv *p = priv_of(ctx);

	(void)b;
	p->body_len += len;
	p->chunks++;
	if (chunk_log) {
		struct timeval tv;

		gettimeofday(&tv, NULL);
		fprintf(chunk_log, "body %zu %zu %ld.%06ld\n", len, p->body_len, (long)tv.tv_sec,
		        (long)tv.tv_usec);
		fflush(chunk_log);
	}
	if (has(p, "skip"))
		return SMFIS_SKIP;
	return SMFIS_CONTINUE;
}

static sfsistat on_eom(SMFICTX *ctx)
{
	static const char *const m[] = {"i", NULL};
	struct priv *p = priv_of(ctx);
	char v[1200];

	if (chunk_log) {
		fprintf(chunk_log, "eom %zu\n", p->body_len);
		fflush(chunk_log);
	}
	if (chain) {
		char h[80];

		snprintf(h, sizeof(h), "X-Chain-%s", name);
		snprintf(v, sizeof(v), "saw=%s len=%zu chunks=%u", p->seen, p->body_len, p->chunks);
		smfi_addheader(ctx, h, v);
	}
	if (has(p, "progress")) {
		for (int i = 0; i < 6; i++) {
			usleep(500000);
			smfi_progress(ctx);
		}
	}
	if (has(p, "sleep"))
		sleep(5);
	if (has(p, "macros")) {
		note_macros(ctx, p, m);
		smfi_addheader(ctx, "X-Macros", p->macros);
	}
	if (has(p, "reject-multi")) {
		smfi_setmlreply(ctx, "550", "5.7.1", "rejected by the test filter",
		                "second line of the reply", NULL);
		return SMFIS_REJECT;
	}
	if (has(p, "reject"))
		return SMFIS_REJECT;
	if (has(p, "tempfail"))
		return SMFIS_TEMPFAIL;
	if (has(p, "discard"))
		return SMFIS_DISCARD;
	if (has(p, "addheader"))
		smfi_addheader(ctx, "X-Added", "added by the filter");
	if (has(p, "insheader"))
		smfi_insheader(ctx, 0, "X-Inserted", "at the top");
	if (has(p, "chgheader"))
		smfi_chgheader(ctx, "Subject", 1, "changed subject");
	if (has(p, "delheader"))
		smfi_chgheader(ctx, "X-Delete-Me", 1, NULL);
	if (has(p, "chgfrom"))
		smfi_chgfrom(ctx, "<new-sender@example.org>", NULL);
	if (has(p, "addrcpt"))
		smfi_addrcpt(ctx, "<added@example.com>");
	if (has(p, "delrcpt"))
		smfi_delrcpt(ctx, "<del@example.com>");
	if (has(p, "replbody")) {
		static unsigned char nb[] = "replaced body\r\nsecond line\r\n";

		smfi_replacebody(ctx, nb, sizeof(nb) - 1);
	}
	if (has(p, "quarantine"))
		smfi_quarantine(ctx, "held by the test filter");
	if (has(p, "accept"))
		return SMFIS_ACCEPT;
	return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx)
{
	free(smfi_getpriv(ctx));
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

int main(int argc, char **argv)
{
	struct smfiDesc d = {
	    .xxfi_name = "rmx_testmilter",
	    .xxfi_version = SMFI_VERSION,
	    .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT |
	                  SMFIF_DELRCPT | SMFIF_CHGFROM,
	    .xxfi_connect = on_connect,
	    .xxfi_helo = on_helo,
	    .xxfi_envfrom = on_mail,
	    .xxfi_envrcpt = on_rcpt,
	    .xxfi_header = on_header,
	    .xxfi_body = on_body,
	    .xxfi_eom = on_eom,
	    .xxfi_close = on_close,
	};
	const char *sock = NULL;
	int opt;

	while ((opt = getopt(argc, argv, "p:n:cql:")) != -1) {
		switch (opt) {
		case 'p':
			sock = optarg;
			break;
		case 'n':
			name = optarg;
			snprintf(hdr_name, sizeof(hdr_name), "X-Test-%s", name);
			break;
		case 'c':
			chain = 1;
			break;
		case 'q':
			d.xxfi_flags |= SMFIF_QUARANTINE;
			break;
		case 'l':
			chunk_log = fopen(optarg, "a");
			if (!chunk_log) {
				perror(optarg);
				return 2;
			}
			break;
		default:
			fprintf(stderr, "usage: %s -p SOCKET [-n NAME] [-c] [-q] [-l FILE]\n",
			        argv[0]);
			return 2;
		}
	}
	if (!sock) {
		fprintf(stderr, "usage: %s -p SOCKET [-n NAME] [-c] [-q] [-l FILE]\n", argv[0]);
		return 2;
	}
	if (smfi_setconn((char *)sock) == MI_FAILURE || smfi_register(d) == MI_FAILURE ||
	    smfi_opensocket(1) == MI_FAILURE) {
		fprintf(stderr, "%s: cannot listen on %s\n", argv[0], sock);
		return 1;
	}
	/* The test waits for this line before it connects. */
	printf("ready\n");
	fflush(stdout);
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}

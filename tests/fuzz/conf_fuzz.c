/* libFuzzer target for the configuration file (core/conf, --config): the
 * file reader and every key's parser on arbitrary bytes. Checks that
 *   - conf_parse() answers CONF_OK or CONF_ERR (a file never asks for
 *     --help), with one line starting "ringmx: " on error, and a line
 *     number, where it names one, that the input has;
 *   - a parsed file round-trips: `ringmx config -n`'s output (conf_print()),
 *     read back as a file, gives the same `ringmx config` output;
 *   - nothing leaks or overflows (ASan, UBSan).
 * Inputs naming domains or recipient files (-file keys) are skipped: they
 * would read this machine's files. The text goes in a memfd, read through
 * /proc/self/fd like a path.
 * Build and run: tests/fuzz/run.sh [SECONDS]. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		fprintf(stderr, "conf_fuzz: " __VA_ARGS__);                                        \
		fputc('\n', stderr);                                                               \
		abort();                                                                           \
	} while (0)

/* A memfd holding <p, n>; its path into <path>. */
static int memfd_of(const void *p, size_t n, char *path, size_t pathlen)
{
	int fd = memfd_create("conf", MFD_CLOEXEC);

	if (fd < 0 || write(fd, p, n) != (ssize_t)n)
		FAIL("memfd");
	snprintf(path, pathlen, "/proc/self/fd/%d", fd);
	return fd;
}

static int parse_file(struct conf *c, const char *path, char *err, size_t errlen)
{
	char *argv[] = {(char *)"ringmx", (char *)"--config", (char *)path, NULL};

	return conf_parse(c, 3, argv, stderr, err, errlen);
}

static char *print(const struct conf *c, bool changed, size_t *len)
{
	char *s = NULL, why[256];
	FILE *f = open_memstream(&s, len);

	if (!f || conf_print(c, f, changed, NULL, 0, why, sizeof(why)) != 0)
		FAIL("conf_print");
	fclose(f);
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conf c, again;
	char path[64], path2[64], err[1024];
	size_t lines = 1, n1, n2, nfull;
	char *changed, *full, *full2;
	int fd, fd2, rc;

	if (memmem(data, size, "-file", 5))
		return 0;
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	fd = memfd_of(data, size, path, sizeof(path));
	rc = parse_file(&c, path, err, sizeof(err));
	if (rc == CONF_ERR) {
		const char *at = strstr(err, path);

		if (strncmp(err, "ringmx: ", 8) != 0 || strchr(err, '\n'))
			FAIL("bad error line '%s'", err);
		if (at && at[strlen(path)] == ':' && at[strlen(path) + 1] >= '0' &&
		    at[strlen(path) + 1] <= '9' && strtoul(at + strlen(path) + 1, NULL, 10) > lines)
			FAIL("'%s' names a line past the %zu of the input", err, lines);
		conf_fini(&c);
		close(fd);
		return 0;
	}
	if (rc != CONF_OK)
		FAIL("rc %d", rc);
	changed = print(&c, true, &n1);
	full = print(&c, false, &nfull);
	fd2 = memfd_of(changed, n1, path2, sizeof(path2));
	rc = parse_file(&again, path2, err, sizeof(err));
	if (rc != CONF_OK)
		FAIL("the -n output does not parse: %s\n%s", err, changed);
	full2 = print(&again, false, &n2);
	if (n2 != nfull || memcmp(full, full2, nfull) != 0)
		FAIL("round trip differs:\n%s\n---\n%s", full, full2);
	free(changed);
	free(full);
	free(full2);
	conf_fini(&again);
	conf_fini(&c);
	close(fd2);
	close(fd);
	return 0;
}

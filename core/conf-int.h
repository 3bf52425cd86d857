/* conf-int: the option table that core/conf.c parses with and
 * core/conf_print.c prints from (Postfix's postconf model: one table,
 * many views). Internal to core/conf*.c. */
#ifndef RINGMX_CORE_CONF_INT_H
#define RINGMX_CORE_CONF_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct conf;

/* How a key's value is stored and shown. */
enum conf_type {
	CT_FLAG,   /* bool; no argument on the command line, yes/no in a file */
	CT_UINT,   /* unsigned in [min, max] */
	CT_SIZE,   /* uint64_t bytes with k/m/g in [smin, smax] (0 too where zero_ok) */
	CT_ENUM,   /* int (or bool where <boolean>): the index of one of <words> */
	CT_STR,    /* const char *, as given */
	CT_LIST,   /* custom setter; shown as the values given, in order */
	CT_ACTION, /* command line only: --help, --version, --check, --config */
};

#define CK_REPEAT 0x1u /* may be given more than once; the values add up */
#define CK_SPLIT                                                                                   \
	0x2u          /* in a file, a value is a list of values: split at commas and spaces        \
	               * (keys whose one value is a list, as domains, need not) */
#define CK_LIVE  0x4u /* a reload changes it in the running gateway */
#define CK_EMPTY 0x8u /* an empty value is a value ("" recipient delimiter) */

struct conf_key;
/* Applies <arg> to <c>. Returns CONF_OK, CONF_EXIT or CONF_ERR with
 * "--name: reason" in <err> (no "ringmx: " prefix: the caller adds it and,
 * for a file, the file and line). */
typedef int conf_set_fn(struct conf *c, const struct conf_key *k, const char *arg, char *err,
                        size_t errlen);

struct conf_key {
	const char *name; /* the long option and the file key */
	int id;           /* getopt value; a char for -h and -V */
	uint8_t type;     /* enum conf_type */
	uint8_t flags;    /* CK_* */
	bool boolean;     /* CT_ENUM stored in a bool */
	size_t off;       /* offsetof(struct conf, field) for the typed ones */
	unsigned min, max;
	uint64_t smin, smax;
	bool zero_ok;
	const char *const *words; /* CT_ENUM, NULL-terminated */
	conf_set_fn *set;         /* CT_LIST, CT_ACTION, and typed keys with a check */
	const char *metavar;      /* NULL: no argument */
	const char *def;          /* default in file syntax; NULL: unset */
	const char *defdoc;       /* --help's "(default: ...)"; NULL: <def>; "": none */
	const char *help, *more;  /* --help's first line and an optional second */
};

extern const struct conf_key conf_keys[];
extern const size_t conf_nkeys;

/* <c> with every default (as conf_parse() starts); conf_fini() after. */
void conf_defaults_into(struct conf *c);
/* The key named <name> (<len> bytes), or NULL. */
const struct conf_key *conf_key_find(const char *name, size_t len);
/* The value of typed key <k> in <c> in file syntax, into <out>. */
void conf_key_format(const struct conf *c, const struct conf_key *k, char *out, size_t outlen);

#endif

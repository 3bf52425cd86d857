/* policy: which recipient domains this gateway accepts and which client
 * networks may relay to any domain. Built once at startup, then read-only
 * and shared by every worker. libc only. */
#ifndef RINGMX_CORE_POLICY_H
#define RINGMX_CORE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/sv.h"

struct policy_net {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network address, host bits cleared */
	unsigned prefix;  /* prefix length in bits */
};

struct policy {
	char **domains; /* lower-case, sorted, unique; owned */
	size_t ndomains;
	struct policy_net *nets; /* owned */
	size_t nnets;
};

void policy_init(struct policy *p);
void policy_fini(struct policy *p);

/* Adds domains from a list separated by commas and/or white space. Domains
 * are compared case-insensitively; a trailing dot is ignored. Returns 0, or
 * -EINVAL with a one-line reason in <err>. */
int policy_add_domains(struct policy *p, const char *list, char *err, size_t errlen);
/* Adds domains from a file: one per line, '#' starts a comment, blank lines
 * ignored. Returns 0, or -errno / -EINVAL with a reason in <err>. */
int policy_load_domains_file(struct policy *p, const char *path, char *err, size_t errlen);
/* Adds networks ("10.0.0.0/8, 127.0.0.1, ::1/128, [2001:db8::]/32"); a bare
 * address is a host route. Returns 0, or -EINVAL with a reason in <err>. */
int policy_add_networks(struct policy *p, const char *list, char *err, size_t errlen);
/* Sorts and de-duplicates the domain list; call once after the adds. */
void policy_finish(struct policy *p);

/* Checks a domain name's syntax (a trailing dot allowed): letters, digits,
 * '-' and octets >= 0x80 (UTF-8 IDN) in labels of 1-63 characters, none
 * starting or ending with '-', 253 characters at most. Returns NULL when
 * valid, else a static one-line reason. Any thread. */
const char *policy_domain_invalid(struct sv domain);

/* True when <domain> (as written after '@', without brackets) is accepted.
 * Case-insensitive, a trailing dot ignored. Address literals are never
 * accepted this way. Any thread. */
bool policy_domain_accepted(const struct policy *p, struct sv domain);
/* True when the client address lies in a relay network. IPv4-mapped IPv6
 * addresses match IPv4 networks. Any thread. */
bool policy_client_may_relay(const struct policy *p, const struct sockaddr *sa);

#endif

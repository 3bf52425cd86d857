/* relay_dns: the next hops' names, looked up on the main thread with c-ares
 * (--dns-server, else /etc/resolv.conf): /etc/hosts first, then A and AAAA
 * with their TTLs, and MX in preference order with the implicit MX of
 * RFC 5321 section 5.1 and the null MX of RFC 7505. Each lookup waits at
 * most RELAY_DNS_WAIT_MS: the main thread has no ring and no session waits
 * on it, and the workers never resolve a next hop (they are handed the
 * addresses: io/relay_conf, io/reload). io/ only. */
#ifndef RINGMX_IO_RELAY_DNS_H
#define RINGMX_IO_RELAY_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/conf.h"

#define RELAY_DNS_WAIT_MS  5000u  /* one lookup waits at most this */
#define RELAY_DNS_BUILD_MS 10000u /* and all of relay_dns_begin()'s together */
#define RELAY_DNS_FILE_TTL 300u   /* seconds: a name from /etc/hosts is read again after */
#define RELAY_DNS_MIN_TTL  1u     /* seconds: no name is asked for more often */
#define RELAY_DNS_MAX_TTL  86400u /* nor less often */

struct relay_dns;

struct relay_addr {
	struct sockaddr_storage sa;
	socklen_t len;
};

/* One exchange of an MX record set. */
struct relay_mx {
	char host[256];
	unsigned pref;
};

/* A resolver for the servers of <c> (--dns-server) or the system's.
 * Returns NULL with one line in <err>. Main thread. */
struct relay_dns *relay_dns_new(const struct conf *c, char *err, size_t errlen);
void relay_dns_free(struct relay_dns *d);
/* The lookups from now on (of one build of the next hops) end within
 * RELAY_DNS_BUILD_MS together: a DNS server that does not answer delays
 * the main thread (signals, reloads) by that much at most. */
void relay_dns_begin(struct relay_dns *d);

/* The addresses of <host> with <port>: A records first, then AAAA (at most
 * <max>, in the answers' order), into <out>; the smallest TTL into *<ttl>
 * (RELAY_DNS_FILE_TTL for /etc/hosts). Returns how many (>= 1), or -errno
 * with one line in <err> (-ENOENT: no such name or no address; -EAGAIN:
 * no answer or SERVFAIL). */
int relay_dns_addrs(struct relay_dns *d, const char *host, unsigned port, struct relay_addr *out,
                    unsigned max, uint32_t *ttl, char *err, size_t errlen);

/* The MX records of <domain>, lowest preference first (at most <max>),
 * into <out>, their TTL into *<ttl>. Returns how many; 0 when the domain
 * has none (its own address is the implicit MX); -ENXIO for a null MX
 * (the domain takes no mail); -ENOENT for no such domain; -EAGAIN for no
 * answer; with one line in <err>. */
int relay_dns_mx(struct relay_dns *d, const char *domain, struct relay_mx *out, unsigned max,
                 uint32_t *ttl, char *err, size_t errlen);

#endif

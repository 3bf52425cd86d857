/* proxy: the PROXY protocol header (HAProxy's proxy-protocol.txt, versions
 * 1 and 2) that a TCP load balancer sends before anything else, naming
 * the client it accepted the connection from. Sans-I/O, resumable on
 * partial input: the caller keeps the bytes received so far and calls
 * again with all of them. libc only; no allocation. */
#ifndef RINGMX_CORE_PROXY_H
#define RINGMX_CORE_PROXY_H

#include <stddef.h>
#include <stdint.h>

/* Return values besides a length (STYLE.md: incremental parsers). */
#define PROXY_AGAIN (-2) /* a valid beginning: more bytes are needed */
#define PROXY_BAD   (-1) /* not a PROXY header, or a malformed one */

/* The largest header taken: v1 is 107 octets at most; v2 is 16 + its
 * length, whose TLVs (ALPN, authority, TLS details, ...) are skipped, and
 * more than this is refused rather than buffered. */
#define PROXY_MAX 4096u

struct proxy_hdr {
	int version; /* 1 or 2 */
	/* AF_INET or AF_INET6: the client and the address it connected to,
	 * network byte order; AF_UNSPEC: the header names no client (v1
	 * "UNKNOWN", v2 LOCAL or UNSPEC, a UNIX or UDP one): the connection's
	 * own addresses stand. */
	int family;
	uint8_t src[16], dst[16];
	uint16_t src_port, dst_port; /* host byte order */
};

/* Parses the header at the start of the <len> bytes at <p>. Returns its
 * length (> 0; the SMTP stream starts right after it) and fills <h>,
 * PROXY_AGAIN or PROXY_BAD. Any thread. */
int proxy_parse(const char *p, size_t len, struct proxy_hdr *h);

#endif

/* session_dns: the DNS checks of a server session on the worker's ring
 * (io/dns, core/dnsbl): at connect, the --dnsbl scores and the client's
 * forward-confirmed name (the greeting waits for them, C_DNSQ); at MAIL,
 * the sender domain (--reject-unknown-sender-domain, --rhsbl-sender:
 * SMTP_ACT_DNS). Settings from the session's snapshot (live); the
 * resolver is the worker's (--dns-server: restart-only). Worker thread
 * only. */
#ifndef RINGMX_IO_SESSION_DNS_H
#define RINGMX_IO_SESSION_DNS_H

#include <stdbool.h>

#include "io/types-t.h"

/* The worker's resolver and verdict cache (w->sdns). Returns 0 or -1
 * (logged). */
int session_dns_init(struct worker *w);
/* After the loop (nothing more dispatched): they go. */
void session_dns_fini(struct worker *w);
/* A session is past its limits: its connect checks start (C_DNSQ), or
 * the verdict kept for its address applies at once. */
void session_dns_start(struct worker *w, struct conn *c);
/* True (and the greeting noted as due) while the connect checks run. */
bool session_dns_holds_greet(struct conn *c);
/* SMTP_ACT_DNS: the sender domain's questions go out, unless they are out. */
void session_dns_sender(struct worker *w, struct conn *c);
/* The conn is freed: its DNS state goes. */
void session_dns_free(struct worker *w, struct conn *c);
/* Completions: the resolver's socket polls and timer, the checks' deadlines. */
void session_dns_on_poll(struct worker *w, void *p, struct io_uring_cqe *cqe);
void session_dns_on_timer(struct worker *w, void *p, struct io_uring_cqe *cqe);
void session_dns_on_wait(struct worker *w, void *p, struct io_uring_cqe *cqe);

#endif

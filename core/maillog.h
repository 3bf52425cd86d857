/* maillog: the log lines of mail events, one per event, keyed by queue
 * id, in the words Postfix writes (so pflogsumm, qshape-minded greps and
 * log pipelines read them as they read Postfix's), or as JSON objects
 * with the same fields (core/log: --log-format). Each call is one line at
 * info level, nothing below it. Any thread. libc only.
 *
 *   smtpd:   connect from unknown[192.0.2.1]
 *   smtpd:   QID: client=unknown[192.0.2.1]
 *   cleanup: QID: message-id=<x@y>
 *   qmgr:    QID: from=<a@b>, size=1234, nrcpt=2 (queue active)
 *   smtp:    QID: to=<x@y>, relay=mx[192.0.2.9]:25, delay=1, delays=0/0.01/0.02/0.05,
 *            dsn=2.0.0, status=sent (250 2.0.0 Ok)
 *   qmgr:    QID: removed
 *   smtpd:   disconnect from unknown[192.0.2.1] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6
 *   smtpd:   NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 <x@y>: ...;
 *            from=<a@b> to=<x@y> proto=ESMTP helo=<h>
 *   bounce:  QID: sender non-delivery notification: QID2
 *
 * A client is "unknown[ADDR]": there is no reverse DNS lookup. */
#ifndef RINGMX_CORE_MAILLOG_H
#define RINGMX_CORE_MAILLOG_H

#include <stddef.h>
#include <stdint.h>

#include "core/sv.h"

void maillog_connect(const char *addr);

/* Commands of a session for its disconnect line: <n> verbs, lower case
 * names[i], of which ok[i] of sent[i] succeeded (a verb never sent is left
 * out). Text: "ehlo=1 rcpt=1/2 ... commands=5/6" (ok/sent when they differ). */
struct maillog_cmds {
	const char *const *names;
	const uint32_t *ok, *sent;
	unsigned n;
};
void maillog_disconnect(const char *addr, const struct maillog_cmds *c);

void maillog_client(const char *qid, const char *addr);
/* <id>: the Message-ID header's value, as found (angle brackets and all). */
void maillog_message_id(const char *qid, struct sv id);
/* The Message-ID header's value in the header section at the start of
 * <p>/<n> (up to the first empty line), blanks around it trimmed, folding
 * not undone; p NULL if there is none. */
struct sv maillog_message_id_find(const char *p, size_t n);
/* <from>: the reverse-path without <>, "" for the null sender. */
void maillog_queued(const char *qid, const char *from, uint64_t size, unsigned nrcpt);

/* The lines of a message now durable: client=, message-id= (when
 * <content>, the message's start, has one; p NULL: not at hand), from=. */
void maillog_accepted(const char *qid, const char *addr, struct sv content, const char *from,
                      uint64_t size, unsigned nrcpt);

/* One recipient's delivery attempt. */
struct maillog_dlv {
	const char *qid, *to;
	const char *relay;  /* "host[addr]:port", or "none" (no next hop reached) */
	const char *status; /* "sent", "deferred" or "bounced" */
	const char *reply;  /* the next hop's reply ("250 2.0.0 Ok") or our reason */
	long long delay_s;  /* since arrival (whole seconds: the spool keeps them) */
	/* Postfix's delays=a/b/c/d, in ms: in the spool before this attempt
	 * (whole seconds), waiting for a connection, that connection's set-up
	 * (0 when it was reused), the transaction. */
	int64_t delays_ms[4]; /* JSON: "delays_ms":[a,b,c,d] beside "delays" */
	unsigned attempt;     /* 1 for the first */
};
void maillog_delivery(const struct maillog_dlv *d);

void maillog_removed(const char *qid);
void maillog_bounce(const char *qid, const char *bounce_qid);

/* A refused command: "NOQUEUE: reject: <verb> from unknown[<addr>]:
 * <reply>; from=<from> to=<to> proto=ESMTP helo=<helo>" (from, to only
 * when given: p NULL otherwise). */
struct maillog_reject {
	const char *verb, *addr;
	struct sv reply; /* "550 5.1.1 <x@y>: Recipient address rejected: User unknown" */
	struct sv from, to;
	const char *proto, *helo;
};
void maillog_reject(const struct maillog_reject *r);

/* The enhanced status code in <reply> ("250 2.1.5 Ok" or "4.4.1 ...") into
 * <out> (at least 12 bytes); else <dflt>. */
void maillog_dsn_of(const char *reply, const char *dflt, char *out, size_t len);

#endif
